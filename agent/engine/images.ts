import type { Config } from '../config.js';
import { invalid } from '../errors.js';

/**
 * Which images a new database may run. The config is the operator's: `postgres.image` and the
 * images in `postgres.allowedImages`, whoever asks (an API token holder or `bpg db create --image`
 * on the host). Checked before anything is reserved or pulled.
 */

/**
 * The full name Docker means by a reference, so `postgres:17`, `library/postgres:17` and
 * `docker.io/library/postgres:17` compare equal: registry `docker.io` (and `library/` for one-part
 * names on it) unless the first part names a host, and tag `latest` unless a tag or digest is given.
 * Only spellings Docker itself treats as the same image are made equal; anything else stays apart.
 */
export function canonicalImage(ref: string): string {
  const at = ref.indexOf('@');
  const digest = at >= 0 ? ref.slice(at) : '';
  let name = at >= 0 ? ref.slice(0, at) : ref;
  const slash = name.lastIndexOf('/');
  const colon = name.lastIndexOf(':');
  let tag = '';
  if (colon > slash) {
    tag = name.slice(colon);
    name = name.slice(0, colon);
  } else if (!digest) {
    tag = ':latest';
  }
  const parts = name.split('/');
  const first = parts[0]!;
  const hasHost = parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost');
  let host = hasHost ? first : 'docker.io';
  if (host === 'index.docker.io') host = 'docker.io';
  let path = (hasHost ? parts.slice(1) : parts).join('/');
  if (host === 'docker.io' && !path.includes('/')) path = `library/${path}`;
  return `${host}/${path}${tag}${digest}`;
}

/** postgres.image first, then postgres.allowedImages, as configured. */
export function allowedImages(cfg: Config): string[] {
  return [...new Set([cfg.postgres.image, ...cfg.postgres.allowedImages])];
}

/** Refuses (400 over the API, one line on the CLI) an image the config does not allow. */
export function checkImage(cfg: Config, image: string): void {
  const wanted = canonicalImage(image);
  const allowed = allowedImages(cfg);
  if (allowed.some((a) => canonicalImage(a) === wanted)) return;
  throw invalid(
    `image '${image}' is not allowed: new databases run postgres.image or one of postgres.allowedImages (${allowed.map((a) => `'${a}'`).join(', ')})`,
  );
}

import { chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContainerSpec } from '../drivers/docker.js';
import { hardening } from '../drivers/hardening.js';
import type { EngineContext } from './context.js';
import { labels } from './containers.js';
import { isOutOfSpace } from './limits.js';

/** The branch fields initdb needs: its id (names the one-shot and its labels) and the superuser's password. */
export type InitdbTarget = { id: string; database: string; branch: string; password: string };

/** initdb in a one-shot container of the image, so files belong to the image's postgres user. */
export async function initdb(
  ctx: EngineContext,
  b: InitdbTarget,
  image: string,
  dataDir: string,
  pgdata: string,
): Promise<void> {
  const tmp = ctx.layout.tmpDir();
  await mkdir(tmp, { recursive: true, mode: 0o700 });
  const pwfile = join(tmp, `pw-${b.id}`);
  await writeFile(pwfile, b.password + '\n', { mode: 0o600 });
  await chown(pwfile, ctx.cfg.postgres.uid, ctx.cfg.postgres.gid);
  try {
    const spec: ContainerSpec = {
      name: `bpg-initdb-${b.id}`,
      image,
      user: `${ctx.cfg.postgres.uid}:${ctx.cfg.postgres.gid}`,
      entrypoint: ['initdb'],
      cmd: [
        '-D',
        pgdata,
        '-U',
        ctx.cfg.postgres.superuser,
        '--pwfile=/run/bpg-pwfile',
        '--auth-local=trust',
        '--auth-host=scram-sha-256',
        '-E',
        'UTF8',
        '--locale=C',
      ],
      binds: [`${dataDir}:${pgdata}`, `${pwfile}:/run/bpg-pwfile:ro`],
      labels: labels(ctx, b),
      ...hardening(ctx.cfg, { oneShot: true }),
    };
    const res = await ctx.docker.runOnce(spec);
    if (res.exitCode !== 0) {
      const lines = res.output.trim().split('\n');
      // A full disk is reported early in the output, then buried under clean-up lines.
      const last = lines.find((l) => isOutOfSpace(new Error(l))) ?? lines.slice(-3).join(' / ');
      throw new Error(`initdb exited with ${res.exitCode}: ${last}`);
    }
  } finally {
    await rm(pwfile, { force: true });
  }
}

import { createHash, timingSafeEqual } from 'node:crypto';
import { invalid } from '../errors.js';
import type { Principal, Role } from './roles.js';

export interface ApiToken {
  /** Who holds it: logged with each operation. */
  name: string;
  token: string;
  /** What it may do (roles.ts); default admin. */
  role?: Role;
  /** The only databases it may use (absent or null: every database). */
  databases?: readonly string[] | null;
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/**
 * Bearer tokens, kept only as SHA-256 digests. Comparing digests makes both sides 32 bytes, so
 * `timingSafeEqual` applies and the time taken says nothing about a token's length or prefix.
 */
export class TokenChecker {
  private readonly known: Array<{ who: Principal; digest: Buffer }>;

  constructor(tokens: readonly ApiToken[]) {
    this.known = tokens.map((t) => ({
      who: Object.freeze({
        name: t.name,
        role: t.role ?? 'admin',
        databases: t.databases ? new Set(t.databases) : null,
      }),
      digest: digest(t.token),
    }));
  }

  get count(): number {
    return this.known.length;
  }

  /** Who holds the token of an `Authorization` header value (name, role, databases), or null. */
  check(header: string | undefined): Principal | null {
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? '');
    if (!m) return null;
    const presented = digest(m[1]!);
    let found: Principal | null = null;
    // No early exit: every known token is compared whatever matches.
    for (const k of this.known) {
      if (timingSafeEqual(presented, k.digest) && found === null) found = k.who;
    }
    return found;
  }
}

/** Tokens from the config plus BPG_API_TOKEN (named `env`), for `bpg serve`. */
export function collectTokens(configured: readonly ApiToken[], env: NodeJS.ProcessEnv): ApiToken[] {
  const out = [...configured];
  const fromEnv = env.BPG_API_TOKEN?.trim();
  if (fromEnv) {
    if (fromEnv.length < 16 || /\s/.test(fromEnv))
      throw invalid('BPG_API_TOKEN must be at least 16 characters without spaces');
    out.push({
      name: configured.some((t) => t.name === 'env') ? 'env-BPG_API_TOKEN' : 'env',
      token: fromEnv,
      role: 'admin',
    });
  }
  return out;
}

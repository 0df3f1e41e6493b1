import type { EngineContext } from './context.js';
import { getBranch } from './reads.js';
import { requireBranch } from './rules.js';
import { conflict, invalid } from '../errors.js';
import { refName, type BranchRef } from '../names.js';
import type { BranchRecord } from '../state/schema.js';
import type { BranchView } from './view.js';

/**
 * A branch's expiry and protection: what `bpg branch set`, `PATCH` and a `PUT` of an existing
 * branch change. Housekeeping (housekeeping.ts) enforces them.
 */

export interface BranchSettings {
  /** Expire this long from `now` (ms); null: never; undefined: unchanged. */
  ttlMs?: number | null;
  /** undefined: unchanged. */
  protect?: boolean;
}

const PR_BRANCH = /^pr-\d+$/;

/** main lives as long as its database and is never reaped: refuse what would say otherwise. */
function checkMain(ref: BranchRef, s: BranchSettings): void {
  if (ref.branch !== 'main') return;
  if (s.ttlMs !== undefined && s.ttlMs !== null)
    throw invalid(`'main' cannot expire: it lives as long as its database (bpg db delete ${ref.database})`);
  if (s.protect === false) throw invalid(`'main' is always protected: it is never expired nor stopped when idle`);
}

function writable(b: BranchRecord): void {
  if (b.status === 'creating' || b.status === 'deleting') throw conflict(`branch '${refName(b)}' is ${b.status}`);
}

/** `bpg branch set`, `PATCH .../branches/{branch}`: sets the TTL (from now) and/or protection. */
export async function setBranchSettings(
  ctx: EngineContext,
  ref: BranchRef,
  s: BranchSettings,
  now = Date.now(),
): Promise<BranchView> {
  if (s.ttlMs === undefined && s.protect === undefined)
    throw invalid('nothing to change: give --ttl <duration>|none, --protect or --no-protect');
  checkMain(ref, s);
  await ctx.store.update((st) => {
    const b = requireBranch(st, ref);
    writable(b);
    if (s.ttlMs !== undefined) b.expiresAt = s.ttlMs === null ? null : new Date(now + s.ttlMs).toISOString();
    if (s.protect !== undefined) b.protected = s.protect;
  });
  return getBranch(ctx, ref);
}

/**
 * A PUT of a branch that exists: the Action and the webhook receiver PUT on every push, so this
 * is where an active pull request keeps its branch. An explicit `ttl` sets the expiry from now;
 * without one, an expiring `pr-<n>` branch is renewed by `expiry.prBranchTtl` (extended, never
 * shortened; a branch someone made permanent stays permanent). `protect` is applied when given.
 * The PUT also counts as activity for the idle stop. Answers the new values, and whether the
 * expiry or protection changed.
 */
export async function renewOnPut(
  ctx: EngineContext,
  ref: BranchRef,
  s: BranchSettings,
  now = Date.now(),
): Promise<{ changed: boolean; expiresAt: string | null; protected: boolean; lastActiveAt: string | null }> {
  checkMain(ref, s);
  return ctx.store.update((st) => {
    const b = requireBranch(st, ref);
    writable(b);
    const before = { expiresAt: b.expiresAt, protected: b.protected };
    if (s.ttlMs !== undefined) {
      b.expiresAt = s.ttlMs === null ? null : new Date(now + s.ttlMs).toISOString();
    } else if (b.expiresAt !== null && PR_BRANCH.test(b.branch) && ctx.cfg.expiry.prBranchTtl !== null) {
      const renewed = new Date(now + ctx.cfg.expiry.prBranchTtl).toISOString();
      if (renewed > b.expiresAt) b.expiresAt = renewed;
    }
    if (s.protect !== undefined) b.protected = s.protect;
    b.lastActiveAt = new Date(now).toISOString();
    const changed = b.expiresAt !== before.expiresAt || b.protected !== before.protected;
    return { changed, expiresAt: b.expiresAt, protected: b.protected, lastActiveAt: b.lastActiveAt };
  });
}

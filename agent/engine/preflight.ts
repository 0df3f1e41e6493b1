import { unavailable } from '../errors.js';
import type { EngineContext } from './context.js';

/**
 * A check that passed is trusted this long by the same process (bpg serve's operations in a row):
 * it is there to refuse early with a clear message, and anything that goes away within it still
 * fails the step that needs it, whose undo runs.
 */
const PASSED_TTL_MS = 2000;
const passedAt = new WeakMap<EngineContext, number>();

/** ZFS pool and Docker engine must be there before anything is reserved. */
export async function preflight(ctx: EngineContext): Promise<void> {
  const last = passedAt.get(ctx);
  if (last !== undefined && performance.now() - last < PASSED_TTL_MS) return;
  const [docker, pool] = await Promise.allSettled([ctx.docker.ping(), ctx.zfs.poolExists(ctx.cfg.zfs.pool)]);
  if (docker.status === 'rejected') throw docker.reason;
  if (pool.status === 'rejected' || !pool.value) {
    throw unavailable(`ZFS pool '${ctx.cfg.zfs.pool}' does not exist (create it, or run scripts/setup-host.sh)`);
  }
  passedAt.set(ctx, performance.now());
}

import { unavailable } from '../errors.js';
import type { EngineContext } from './context.js';

/** ZFS pool and Docker engine must be there before anything is reserved. */
export async function preflight(ctx: EngineContext): Promise<void> {
  const [docker, pool] = await Promise.allSettled([ctx.docker.ping(), ctx.zfs.poolExists(ctx.cfg.zfs.pool)]);
  if (docker.status === 'rejected') throw docker.reason;
  if (pool.status === 'rejected' || !pool.value) {
    throw unavailable(`ZFS pool '${ctx.cfg.zfs.pool}' does not exist (create it, or run scripts/setup-host.sh)`);
  }
}

import { unavailable } from '../errors.js';
import type { EngineContext } from './context.js';
import { recoverInterrupted } from './recovery.js';
import { migrateLegacyWal } from './wal-migration.js';

/** ZFS pool and Docker engine must be there before anything is reserved. */
export async function preflight(ctx: EngineContext): Promise<void> {
  const [docker, pool] = await Promise.allSettled([ctx.docker.ping(), ctx.zfs.poolExists(ctx.cfg.zfs.pool)]);
  if (docker.status === 'rejected') throw docker.reason;
  if (pool.status === 'rejected' || !pool.value) {
    throw unavailable(`ZFS pool '${ctx.cfg.zfs.pool}' does not exist (create it, or run scripts/setup-host.sh)`);
  }
}

/**
 * Before every mutating operation: the pool and Docker are there, no dead process left work
 * behind (recovery.ts), and WAL folders of an older install are on datasets (wal-migration.ts).
 */
export async function begin(ctx: EngineContext): Promise<void> {
  await preflight(ctx);
  await recoverInterrupted(ctx);
  await migrateLegacyWal(ctx);
}

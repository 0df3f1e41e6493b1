import type { EngineContext } from './context.js';
import { preflight } from './preflight.js';
import { recoverInterrupted } from './recovery.js';
import { migrateLegacyWal } from './wal-migration.js';

/**
 * Before every mutating operation: the pool and Docker are there, no dead process left work
 * behind (recovery.ts), and WAL folders of an older install are on datasets (wal-migration.ts).
 */
export async function begin(ctx: EngineContext): Promise<void> {
  await preflight(ctx);
  await recoverInterrupted(ctx);
  await migrateLegacyWal(ctx);
}

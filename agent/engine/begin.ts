import type { EngineContext } from './context.js';
import { preflight } from './preflight.js';
import { recoverInterrupted } from './recovery.js';
import { migrateLegacyWal } from './wal-migration.js';

/**
 * Before every mutating operation: the pool and Docker are there, no dead process left work
 * behind (recovery.ts), and WAL folders of an older install are on datasets (wal-migration.ts).
 * True when recovery or the migration changed anything (datasets removed or moved: free space too).
 */
export async function begin(ctx: EngineContext): Promise<boolean> {
  await preflight(ctx);
  const recovered = await recoverInterrupted(ctx);
  const migrated = await migrateLegacyWal(ctx);
  return recovered.length > 0 || migrated.length > 0;
}

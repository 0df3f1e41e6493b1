import { refName } from '../names.js';
import type { BranchRecord } from '../state/schema.js';
import type { EngineContext } from './context.js';
import { removeImportLeftovers } from './import-build.js';
import { removeSlot } from './port-slots.js';
import { snapshotInUse } from './rules.js';
import { builderName } from './schema-only.js';
import { Steps } from './steps.js';

/**
 * Removes everything a branch owns, tolerating parts already gone, then its record. Every step is
 * idempotent, so a delete killed anywhere is finished by running this again (recovery does).
 */
export async function destroyBranch(ctx: EngineContext, b: BranchRecord): Promise<void> {
  const steps = new Steps('branch delete', ctx.log);
  await steps.step('remove container', async () => {
    await ctx.docker.remove(b.container);
    if (b.schemaOnly) await ctx.docker.remove(builderName(b.id)); // a schema-only build interrupted half-way
    await removeSlot(ctx, b.port, b.id);
  });
  // An import killed half-way leaves its temporary containers on main's dataset, and a work folder.
  if (b.parent === null) await steps.step('remove import leftovers', () => removeImportLeftovers(ctx, b.id));
  await steps.step('destroy dataset', () => ctx.zfs.destroy(b.dataset, { recursive: true })); // with its kept snapshots
  await steps.step('remove WAL folder', () => ctx.wal.destroy(b.id));
  const snap = b.origin?.snapshot;
  await steps.step('forget', () =>
    ctx.store.update(async (s) => {
      delete s.branches[refName(b)];
      for (const k of Object.keys(s.snapshots)) if (s.snapshots[k]!.branchId === b.id) delete s.snapshots[k];
      // The origin snapshot goes too, unless another branch was cloned from it or it is kept.
      if (snap && !snapshotInUse(s, snap)) await ctx.zfs.destroy(snap);
    }),
  );
  ctx.log.info(`deleted branch ${refName(b)}`);
}

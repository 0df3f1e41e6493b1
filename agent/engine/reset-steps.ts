import { rename as mv, rm, stat } from 'node:fs/promises';
import { refName } from '../names.js';
import type { BranchRecord } from '../state/schema.js';
import { startBranchContainer } from './containers.js';
import type { EngineContext } from './context.js';
import { mkdirOwned } from './datadir.js';
import { snapshotInUse } from './rules.js';
import { builderName } from './schema-only.js';
import { Steps } from './steps.js';

/** What a reset makes and how it ends: the plan journalled for recovery, the clean-up after the commit, the undo. */

/** Names of everything one reset makes; kept in the operation's journal entry for recovery. */
export function resetPlan(ctx: EngineContext, b: BranchRecord, parent: BranchRecord, tag: string) {
  return {
    tag,
    // A schema-only branch is rebuilt from the template, not cloned from its parent: no snapshot.
    snap: b.schemaOnly ? '' : `${parent.dataset}@bpg-${b.id}-${tag}`,
    fresh: `${b.dataset}.reset-${tag}`, // '.' never occurs in branch names: no collision
    old: `${b.dataset}.old-${tag}`,
    oldWal: `${ctx.layout.walDataset(b.id)}.old-${tag}`, // '.' never occurs in an id: no collision
    prevOrigin: b.origin?.snapshot ?? '',
  };
}
export type ResetPlan = ReturnType<typeof resetPlan>;

/** After the commit: drop the old clone, its WAL and its origin snapshot (unless still used). */
export async function finishReset(
  ctx: EngineContext,
  key: string,
  plan: ResetPlan,
  steps = new Steps('branch reset', ctx.log),
): Promise<void> {
  await steps.step('drop old dataset', () => ctx.zfs.destroy(plan.old, { recursive: true }));
  // A plan journalled before WAL datasets names a folder (an absolute path); now a dataset.
  await steps.step('drop old WAL', () =>
    plan.oldWal.startsWith('/')
      ? rm(plan.oldWal, { recursive: true, force: true })
      : ctx.wal.destroyDataset(plan.oldWal),
  );
  await steps.step('drop old origin', async () => {
    const st = await ctx.store.read();
    if (plan.prevOrigin && !snapshotInUse(st, plan.prevOrigin)) await ctx.zfs.destroy(plan.prevOrigin);
  });
  await ctx.store.update((s) => {
    const cur = s.branches[key];
    if (cur) cur.operation = null;
  });
}

/**
 * A reset whose process died: before the commit it is undone (the old clone, WAL folder and
 * container come back; the new clone and snapshot go), after it the clean-up is finished.
 */
export async function recoverReset(ctx: EngineContext, b: BranchRecord, data: Record<string, string>): Promise<void> {
  const plan = data as unknown as ResetPlan & { phase: string };
  const key = refName(b);
  if (plan.phase === 'committed') {
    await finishReset(ctx, key, plan);
    return;
  }
  const walDir = ctx.layout.walDir(b.id);
  await ctx.docker.remove(b.container);
  if (b.schemaOnly) await ctx.docker.remove(builderName(b.id)); // it holds the fresh dataset
  if (await ctx.zfs.exists(plan.old)) {
    // The swap began: whatever sits at the branch's name now is the new clone.
    if (await ctx.zfs.exists(b.dataset)) await ctx.zfs.destroy(b.dataset, { recursive: true });
    await ctx.zfs.rename(plan.old, b.dataset);
  }
  await ctx.zfs.destroy(plan.fresh, { recursive: true });
  if (plan.oldWal.startsWith('/')) {
    // journalled before WAL datasets: folders on the host
    if (await exists(plan.oldWal)) {
      await rm(walDir, { recursive: true, force: true });
      await mv(plan.oldWal, walDir);
      await mkdirOwned(walDir, { uid: ctx.cfg.postgres.uid, gid: ctx.cfg.postgres.gid });
    }
  } else if (await ctx.zfs.exists(plan.oldWal)) {
    await ctx.wal.destroy(b.id);
    await ctx.wal.rename(plan.oldWal, ctx.layout.walDataset(b.id));
  }
  const st = await ctx.store.read();
  if (plan.snap && !snapshotInUse(st, plan.snap)) await ctx.zfs.destroy(plan.snap);
  await ctx.store.update((s) => {
    const cur = s.branches[key];
    if (cur) cur.operation = null;
  });
  if (b.status === 'running') await startBranchContainer(ctx, b);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

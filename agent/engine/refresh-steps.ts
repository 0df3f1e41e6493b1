import type { BranchRecord, State } from '../state/schema.js';
import { startBranchContainer } from './containers.js';
import type { EngineContext } from './context.js';
import { Steps } from './steps.js';
import { tempServerName } from './temp-server.js';

/** What a refresh makes and how it ends: the plan journalled for recovery, the finish after the commit, the undo. */

/**
 * Names of everything one refresh makes; kept in the database's journal entry for recovery. The new
 * main gets a dataset name of its own and the old one keeps its name: zfs-fuse refuses to rename a
 * dataset that clones were made from ("dataset is busy"), and no rename keeps the swap short.
 */
export function refreshPlan(ctx: EngineContext, main: BranchRecord, generation: number, tag: string) {
  return {
    tag,
    /** The new main ('.' never occurs in branch names: no collision). */
    fresh: `${ctx.layout.branchDataset(main.database, 'main')}.g${generation + 1}-${tag}`,
    /** The old main's dataset, kept while branches cloned from it exist. */
    retired: main.dataset,
    oldWal: `${ctx.layout.walDataset(main.id)}.old-${tag}`,
    generation: String(generation),
  };
}
export type RefreshPlan = ReturnType<typeof refreshPlan>;

/** The commit, as one change of the state: main's dataset and generation, the retired dataset, main's kept snapshots. */
export function commitRefresh(s: State, name: string, plan: RefreshPlan, at: string): void {
  const db = s.databases[name]!;
  const main = s.branches[`${name}/main`]!;
  // main's kept snapshots went with the old dataset (a new main's history starts at the refresh).
  for (const k of Object.keys(s.snapshots)) if (s.snapshots[k]!.branchId === main.id) delete s.snapshots[k];
  db.retired = [...db.retired, { dataset: plan.retired, generation: db.generation, retiredAt: at }];
  db.generation += 1;
  db.refreshedAt = at;
  main.generation = db.generation;
  main.dataset = plan.fresh;
  main.status = 'running';
  main.stoppedBy = null;
  main.lastActiveAt = at;
  main.operation = null;
  db.operation = { ...db.operation!, data: { ...plan, phase: 'committed' } };
}

/** Retired mains nothing is cloned from any more (a branch's origin, a kept snapshot of a branch). */
export function unusedRetired(s: State, name: string): string[] {
  const db = s.databases[name];
  if (!db) return [];
  return db.retired
    .map((r) => r.dataset)
    .filter((ds) => !Object.values(s.branches).some((b) => b.origin?.snapshot.startsWith(`${ds}@`)));
}

/** Destroys the retired mains of a database nothing depends on any more; returns their names. */
export async function dropUnusedRetired(ctx: EngineContext, name: string): Promise<string[]> {
  const unused = unusedRetired(await ctx.store.read(), name);
  const dropped: string[] = [];
  for (const ds of unused) {
    await ctx.zfs.destroy(ds, { recursive: true });
    dropped.push(ds);
  }
  if (dropped.length)
    await ctx.store.update((s) => {
      const db = s.databases[name];
      if (db) db.retired = db.retired.filter((r) => !dropped.includes(r.dataset));
    });
  return dropped;
}

/** After the commit: drop the old WAL archive and the old main if nothing was cloned from it. */
export async function finishRefresh(
  ctx: EngineContext,
  name: string,
  plan: RefreshPlan,
  steps = new Steps('db refresh', ctx.log),
): Promise<void> {
  await steps.step('drop old WAL', () => ctx.wal.destroyDataset(plan.oldWal));
  await steps.step('drop unused generations', () => dropUnusedRetired(ctx, name));
  await ctx.store.update((s) => {
    const db = s.databases[name];
    if (db) db.operation = null;
  });
}

/**
 * A refresh whose process died: after the commit it is finished; before it, undone: the new main's
 * dataset, temporary containers and WAL go, the old main (dataset, WAL archive, container) comes back.
 */
export async function recoverRefresh(ctx: EngineContext, name: string, data: Record<string, string>): Promise<void> {
  const plan = data as unknown as RefreshPlan & { phase: string };
  if (plan.phase === 'committed') {
    await finishRefresh(ctx, name, plan);
    return;
  }
  const st = await ctx.store.read();
  const main = st.branches[`${name}/main`];
  if (!main) {
    await clear(ctx, name);
    return;
  }
  for (const c of [tempServerName(main, plan.tag), `bpg-once-${main.id}-${plan.tag}`]) await ctx.docker.remove(c);
  if (plan.phase === 'swap') {
    // Before the commit the state still names the old dataset: its container comes back on it.
    await ctx.docker.remove(main.container);
    if (await ctx.zfs.exists(plan.oldWal)) {
      await ctx.wal.destroy(main.id);
      await ctx.wal.rename(plan.oldWal, ctx.layout.walDataset(main.id));
    }
  }
  await ctx.zfs.destroy(plan.fresh, { recursive: true });
  await clear(ctx, name);
  if (plan.phase === 'swap' && main.status === 'running') await startBranchContainer(ctx, main);
}

async function clear(ctx: EngineContext, name: string): Promise<void> {
  await ctx.store.update((s) => {
    const db = s.databases[name];
    if (db) db.operation = null;
    const main = s.branches[`${name}/main`];
    if (main?.operation?.kind.endsWith('refresh')) main.operation = null;
  });
}

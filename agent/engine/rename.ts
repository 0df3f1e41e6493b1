import { conflict } from '../errors.js';
import { refName, type BranchRef } from '../names.js';
import { newOperation } from '../state/operation.js';
import { begin } from './begin.js';
import type { EngineContext } from './context.js';
import { undoAndFail } from './failure.js';
import { ZFS_PROP } from './layout.js';
import { getBranch, getDatabase } from './reads.js';
import { moveInState, startAll, stopAndRemove } from './rename-steps.js';
import { assertBranchIdle, requireBranch, requireDatabase } from './rules.js';
import { Steps } from './steps.js';
import type { BranchView, DatabaseView } from './view.js';

/**
 * Renames move datasets (unmounted first: zfs-fuse refuses to rename a mounted filesystem) and
 * containers (recreated: their bind mounts name the dataset's path), and rewrite the state. Ports,
 * passwords, data and WAL archives (named by the branch's stable id) stay as they are.
 */

export async function renameBranch(ctx: EngineContext, from: BranchRef, to: BranchRef): Promise<BranchView> {
  await begin(ctx);
  if (from.database !== to.database)
    throw conflict(`a branch stays in its database: '${refName(to)}' is not in '${from.database}'`);
  if (from.branch === 'main' || to.branch === 'main') throw conflict(`'main' cannot be renamed`);
  const b = await ctx.store.update((s) => {
    const b = requireBranch(s, from);
    assertBranchIdle(b);
    if (b.status !== 'running' && b.status !== 'stopped') throw conflict(`branch '${refName(from)}' is ${b.status}`);
    if (s.branches[refName(to)]) throw conflict(`branch '${refName(to)}' already exists`);
    const target = ctx.layout.branchDataset(to.database, to.branch);
    b.operation = newOperation('rename', { to: refName(to), target });
    return { ...b };
  });
  const target = ctx.layout.branchDataset(to.database, to.branch);
  const steps = new Steps('branch rename', ctx.log);
  let running: string[] = [];
  try {
    running = await steps.step(
      'remove container',
      () => stopAndRemove(ctx, [b]),
      async () => startAll(ctx, [b], new Set(running), refName),
    );
    await steps.step(
      'zfs rename',
      async () => {
        await ctx.zfs.rename(b.dataset, target);
        await ctx.zfs.set(target, { [ZFS_PROP.branch]: to.branch });
      },
      () => ctx.zfs.rename(target, b.dataset),
    );
    await ctx.store.update((s) => {
      if (s.branches[refName(to)]) throw conflict(`branch '${refName(to)}' already exists`);
      moveInState(s, [{ from: b, to }], ctx);
      s.branches[refName(to)]!.operation = null;
    });
  } catch (err) {
    await undoAndFail(ctx, steps, err, async (s) => {
      const cur = s.branches[refName(from)];
      if (cur) cur.operation = null;
    });
  }
  await startAll(ctx, [b], new Set(running), () => refName(to));
  return getBranch(ctx, to);
}

export async function renameDatabase(ctx: EngineContext, from: string, to: string): Promise<DatabaseView> {
  await begin(ctx);
  const { branches, retired } = await ctx.store.update((s) => {
    const db = requireDatabase(s, from);
    if (s.databases[to]) throw conflict(`database '${to}' already exists`);
    const list = Object.values(s.branches).filter((b) => b.database === from);
    for (const b of list) assertBranchIdle(b);
    db.operation = newOperation('rename', { to });
    return { branches: list.map((b) => ({ ...b })), retired: db.retired.map((r) => r.dataset) };
  });
  const steps = new Steps('db rename', ctx.log);
  const running = new Set<string>();
  const fromDs = ctx.layout.databaseDataset(from);
  const toDs = ctx.layout.databaseDataset(to);
  try {
    await steps.step(
      'remove containers',
      async () => (await stopAndRemove(ctx, branches)).forEach((n) => running.add(n)),
      () => startAll(ctx, branches, running, refName),
    );
    await steps.step(
      'zfs rename',
      async () => {
        // children first: zfs-fuse will not rename a dataset with anything mounted below it
        for (const b of branches) await ctx.zfs.umount(b.dataset);
        for (const ds of retired) await ctx.zfs.umount(ds);
        await ctx.zfs.rename(fromDs, toDs);
        for (const b of branches) await ctx.zfs.mount(b.dataset.replace(fromDs + '/', toDs + '/'));
        for (const ds of retired) await ctx.zfs.mount(ds.replace(fromDs + '/', toDs + '/'));
        await ctx.zfs.set(toDs, { [ZFS_PROP.database]: to });
        for (const b of branches)
          await ctx.zfs.set(b.dataset.replace(fromDs + '/', toDs + '/'), { [ZFS_PROP.database]: to });
      },
      async () => {
        for (const b of branches) await ctx.zfs.umount(b.dataset.replace(fromDs + '/', toDs + '/')).catch(() => {});
        await ctx.zfs.rename(toDs, fromDs);
        for (const b of branches) await ctx.zfs.mount(b.dataset);
      },
    );
    await ctx.store.update((s) => {
      if (s.databases[to]) throw conflict(`database '${to}' already exists`);
      const db = s.databases[from]!;
      delete s.databases[from];
      // The PostgreSQL database inside keeps its name, so connection strings stay valid.
      const moved = (ds: string) => ds.replace(`${fromDs}/`, `${toDs}/`);
      s.databases[to] = {
        ...db,
        name: to,
        operation: null,
        retired: db.retired.map((r) => ({ ...r, dataset: moved(r.dataset) })),
      };
      // Origins in old mains a refresh kept move with them.
      for (const b of Object.values(s.branches))
        if (b.origin?.snapshot.startsWith(`${fromDs}/`)) b.origin = { ...b.origin, snapshot: moved(b.origin.snapshot) };
      moveInState(
        s,
        branches.map((b) => ({ from: b, to: { database: to, branch: b.branch } })),
        ctx,
      );
    });
  } catch (err) {
    await undoAndFail(ctx, steps, err, async (s) => {
      const db = s.databases[from];
      if (db) db.operation = null;
    });
  }
  await startAll(ctx, branches, running, (b) => `${to}/${b.branch}`);
  return getDatabase(ctx, to);
}

import { refName } from '../names.js';
import type { BranchRecord, State } from '../state/schema.js';
import { startBranchContainer, startContainer, waitBranchReady } from './containers.js';
import type { EngineContext } from './context.js';
import { Layout, ZFS_PROP } from './layout.js';

/**
 * What branch and database renames share with their recovery: moving records in the state,
 * stopping and starting containers around the dataset rename, and putting a rename killed half-way back.
 */

/** Rewrites every reference to a dataset prefix in the state: records, parents, origins. */
export function moveInState(
  s: State,
  moves: Array<{ from: BranchRecord; to: { database: string; branch: string } }>,
  ctx: EngineContext,
): void {
  const rename = new Map(moves.map((m) => [refName(m.from), refName(m.to)]));
  // A database rename moves every dataset under it (a refreshed main's is not named after the branch).
  const target = (m: (typeof moves)[number]) =>
    m.from.database !== m.to.database
      ? m.from.dataset.replace(
          `${ctx.layout.databaseDataset(m.from.database)}/`,
          `${ctx.layout.databaseDataset(m.to.database)}/`,
        )
      : ctx.layout.branchDataset(m.to.database, m.to.branch);
  const dsMap = new Map(moves.map((m) => [m.from.dataset, target(m)]));
  for (const m of moves) {
    const rec = s.branches[refName(m.from)]!;
    delete s.branches[refName(m.from)];
    rec.database = m.to.database;
    rec.branch = m.to.branch;
    rec.dataset = target(m);
    rec.container = ctx.layout.container(m.to.database, m.to.branch);
    s.branches[refName(m.to)] = rec;
  }
  for (const b of Object.values(s.branches)) {
    if (b.parent && rename.has(b.parent)) b.parent = rename.get(b.parent)!;
    if (b.origin) {
      const [ds, snap] = b.origin.snapshot.split('@') as [string, string];
      if (dsMap.has(ds)) b.origin.snapshot = `${dsMap.get(ds)}@${snap}`;
    }
  }
}

export async function stopAndRemove(ctx: EngineContext, branches: BranchRecord[]): Promise<string[]> {
  const wasRunning: string[] = [];
  for (const b of branches) {
    if ((await ctx.docker.state(b.container))?.running) wasRunning.push(refName(b));
    await ctx.docker.stop(b.container, ctx.cfg.postgres.stopTimeoutSeconds);
    await ctx.docker.remove(b.container);
  }
  return wasRunning;
}

export async function startAll(
  ctx: EngineContext,
  branches: BranchRecord[],
  running: Set<string>,
  keyOf: (b: BranchRecord) => string,
): Promise<void> {
  const s = await ctx.store.read();
  for (const old of branches) {
    const b = s.branches[keyOf(old)] ?? old;
    if (!running.has(refName(old))) continue;
    const { pgdata } = await ctx.docker.ensureImage(b.image);
    await startContainer(ctx, b, pgdata, Layout.dataDir(await ctx.zfs.mountedFolder(b.dataset)));
    await waitBranchReady(ctx, b, s.databases[b.database]!);
  }
}

/** A branch rename whose process died before it was recorded: the dataset goes back to its old name. */
export async function recoverBranchRename(
  ctx: EngineContext,
  b: BranchRecord,
  data: Record<string, string>,
): Promise<void> {
  if (!(await ctx.zfs.exists(b.dataset)) && (await ctx.zfs.exists(data.target!)))
    await ctx.zfs.rename(data.target!, b.dataset);
  if (await ctx.zfs.exists(b.dataset)) await ctx.zfs.set(b.dataset, { [ZFS_PROP.branch]: b.branch });
  await ctx.store.update((s) => {
    const cur = s.branches[refName(b)];
    if (cur) cur.operation = null;
  });
  if (b.status === 'running') await startBranchContainer(ctx, b);
}

/** A database rename whose process died before it was recorded: the datasets go back to the old name. */
export async function recoverDatabaseRename(
  ctx: EngineContext,
  from: string,
  data: Record<string, string>,
): Promise<void> {
  const fromDs = ctx.layout.databaseDataset(from);
  const toDs = ctx.layout.databaseDataset(data.to!);
  const branches = Object.values((await ctx.store.read()).branches).filter((b) => b.database === from);
  if (!(await ctx.zfs.exists(fromDs)) && (await ctx.zfs.exists(toDs))) {
    for (const b of branches) await ctx.zfs.umount(b.dataset.replace(fromDs + '/', toDs + '/')).catch(() => {});
    await ctx.zfs.rename(toDs, fromDs);
    for (const b of branches) await ctx.zfs.mount(b.dataset);
  }
  if (await ctx.zfs.exists(fromDs)) {
    await ctx.zfs.set(fromDs, { [ZFS_PROP.database]: from });
    for (const b of branches)
      if (await ctx.zfs.exists(b.dataset)) await ctx.zfs.set(b.dataset, { [ZFS_PROP.database]: from });
  }
  await ctx.store.update((s) => {
    if (s.databases[from]) s.databases[from]!.operation = null;
  });
  for (const b of branches) if (b.status === 'running') await startBranchContainer(ctx, b);
}

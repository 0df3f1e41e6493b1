import { conflict } from '../errors.js';
import { refName, type BranchRef } from '../names.js';
import type { BranchRecord, State } from '../state/schema.js';
import type { BranchView, DatabaseView } from './view.js';
import type { Engine } from './engine.js';
import { Layout, ZFS_PROP } from './layout.js';
import { Steps } from './steps.js';
import { newOperation } from '../state/operation.js';

/**
 * Renames move datasets (unmounted first: zfs-fuse refuses to rename a mounted filesystem) and
 * containers (recreated: their bind mounts name the dataset's path), and rewrite the state. Ports,
 * passwords, data and WAL folders (named by the branch's stable id) stay as they are.
 */

/** Rewrites every reference to a dataset prefix in the state: records, parents, origins. */
function moveInState(s: State, moves: Array<{ from: BranchRecord; to: { database: string; branch: string } }>, e: Engine): void {
  const rename = new Map(moves.map((m) => [refName(m.from), refName(m.to)]));
  const dsMap = new Map(moves.map((m) => [m.from.dataset, e.layout.branchDataset(m.to.database, m.to.branch)]));
  for (const m of moves) {
    const rec = s.branches[refName(m.from)]!;
    delete s.branches[refName(m.from)];
    rec.database = m.to.database;
    rec.branch = m.to.branch;
    rec.dataset = e.layout.branchDataset(m.to.database, m.to.branch);
    rec.container = e.layout.container(m.to.database, m.to.branch);
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

async function stopAndRemove(e: Engine, branches: BranchRecord[]): Promise<string[]> {
  const wasRunning: string[] = [];
  for (const b of branches) {
    if ((await e.docker.state(b.container))?.running) wasRunning.push(refName(b));
    await e.docker.stop(b.container, e.cfg.postgres.stopTimeoutSeconds);
    await e.docker.remove(b.container);
  }
  return wasRunning;
}

async function startAll(e: Engine, branches: BranchRecord[], running: Set<string>, keyOf: (b: BranchRecord) => string): Promise<void> {
  const s = await e.store.read();
  for (const old of branches) {
    const b = s.branches[keyOf(old)] ?? old;
    if (!running.has(refName(old))) continue;
    const { pgdata } = await e.docker.ensureImage(b.image);
    await e.zfs.mount(b.dataset);
    await e.startContainer(b, pgdata, Layout.dataDir(await e.zfs.mountpoint(b.dataset)));
    await e.waitBranchReady(b, s.databases[b.database]!);
  }
}

export async function renameBranch(e: Engine, from: BranchRef, to: BranchRef): Promise<BranchView> {
  await e.begin();
  if (from.database !== to.database) throw conflict(`a branch stays in its database: '${refName(to)}' is not in '${from.database}'`);
  if (from.branch === 'main' || to.branch === 'main') throw conflict(`'main' cannot be renamed`);
  const b = await e.store.update((s) => {
    const b = e.requireBranch(s, from);
    e.assertIdleFor(b);
    if (b.status !== 'running' && b.status !== 'stopped') throw conflict(`branch '${refName(from)}' is ${b.status}`);
    if (s.branches[refName(to)]) throw conflict(`branch '${refName(to)}' already exists`);
    const target = e.layout.branchDataset(to.database, to.branch);
    b.operation = newOperation('rename', { to: refName(to), target });
    return { ...b };
  });
  const target = e.layout.branchDataset(to.database, to.branch);
  const steps = new Steps('branch rename', e.log);
  let running: string[] = [];
  try {
    running = await steps.step('remove container', () => stopAndRemove(e, [b]), async () => startAll(e, [b], new Set(running), refName));
    await steps.step('zfs rename', async () => {
      await e.zfs.rename(b.dataset, target);
      await e.zfs.set(target, { [ZFS_PROP.branch]: to.branch });
    }, () => e.zfs.rename(target, b.dataset));
    await e.store.update((s) => {
      if (s.branches[refName(to)]) throw conflict(`branch '${refName(to)}' already exists`);
      moveInState(s, [{ from: b, to }], e);
      s.branches[refName(to)]!.operation = null;
    });
  } catch (err) {
    await e.undo(steps, err, async (s) => {
      const cur = s.branches[refName(from)];
      if (cur) cur.operation = null;
    });
  }
  await startAll(e, [b], new Set(running), () => refName(to));
  return e.getBranch(to);
}

export async function renameDatabase(e: Engine, from: string, to: string): Promise<DatabaseView> {
  await e.begin();
  const branches = await e.store.update((s) => {
    const db = e.requireDatabase(s, from);
    if (s.databases[to]) throw conflict(`database '${to}' already exists`);
    const list = Object.values(s.branches).filter((b) => b.database === from);
    for (const b of list) e.assertIdleFor(b);
    db.operation = newOperation('rename', { to });
    return list.map((b) => ({ ...b }));
  });
  const steps = new Steps('db rename', e.log);
  const running = new Set<string>();
  const fromDs = e.layout.databaseDataset(from);
  const toDs = e.layout.databaseDataset(to);
  try {
    await steps.step('remove containers', async () => (await stopAndRemove(e, branches)).forEach((n) => running.add(n)), () => startAll(e, branches, running, refName));
    await steps.step('zfs rename', async () => {
      // children first: zfs-fuse will not rename a dataset with anything mounted below it
      for (const b of branches) await e.zfs.umount(b.dataset);
      await e.zfs.rename(fromDs, toDs);
      for (const b of branches) await e.zfs.mount(b.dataset.replace(fromDs + '/', toDs + '/'));
      await e.zfs.set(toDs, { [ZFS_PROP.database]: to });
      for (const b of branches) await e.zfs.set(b.dataset.replace(fromDs + '/', toDs + '/'), { [ZFS_PROP.database]: to });
    }, async () => {
      for (const b of branches) await e.zfs.umount(b.dataset.replace(fromDs + '/', toDs + '/')).catch(() => {});
      await e.zfs.rename(toDs, fromDs);
      for (const b of branches) await e.zfs.mount(b.dataset);
    });
    await e.store.update((s) => {
      if (s.databases[to]) throw conflict(`database '${to}' already exists`);
      const db = s.databases[from]!;
      delete s.databases[from];
      // The PostgreSQL database inside keeps its name, so connection strings stay valid.
      s.databases[to] = { ...db, name: to, operation: null };
      moveInState(s, branches.map((b) => ({ from: b, to: { database: to, branch: b.branch } })), e);
    });
  } catch (err) {
    await e.undo(steps, err, async (s) => {
      const db = s.databases[from];
      if (db) db.operation = null;
    });
  }
  await startAll(e, branches, running, (b) => `${to}/${b.branch}`);
  return e.getDatabase(to);
}

/** A branch rename whose process died before it was recorded: the dataset goes back to its old name. */
export async function recoverBranchRename(e: Engine, b: BranchRecord, data: Record<string, string>): Promise<void> {
  if (!(await e.zfs.exists(b.dataset)) && (await e.zfs.exists(data.target!))) await e.zfs.rename(data.target!, b.dataset);
  if (await e.zfs.exists(b.dataset)) await e.zfs.set(b.dataset, { [ZFS_PROP.branch]: b.branch });
  await e.store.update((s) => {
    const cur = s.branches[refName(b)];
    if (cur) cur.operation = null;
  });
  if (b.status === 'running') await e.startBranchContainer(b);
}

/** A database rename whose process died before it was recorded: the datasets go back to the old name. */
export async function recoverDatabaseRename(e: Engine, from: string, data: Record<string, string>): Promise<void> {
  const fromDs = e.layout.databaseDataset(from);
  const toDs = e.layout.databaseDataset(data.to!);
  const branches = Object.values((await e.store.read()).branches).filter((b) => b.database === from);
  if (!(await e.zfs.exists(fromDs)) && (await e.zfs.exists(toDs))) {
    for (const b of branches) await e.zfs.umount(b.dataset.replace(fromDs + '/', toDs + '/')).catch(() => {});
    await e.zfs.rename(toDs, fromDs);
    for (const b of branches) await e.zfs.mount(b.dataset);
  }
  if (await e.zfs.exists(fromDs)) {
    await e.zfs.set(fromDs, { [ZFS_PROP.database]: from });
    for (const b of branches) if (await e.zfs.exists(b.dataset)) await e.zfs.set(b.dataset, { [ZFS_PROP.database]: from });
  }
  await e.store.update((s) => {
    if (s.databases[from]) s.databases[from]!.operation = null;
  });
  for (const b of branches) if (b.status === 'running') await e.startBranchContainer(b);
}

import { notFound } from '../errors.js';
import { refName, type BranchRef } from '../names.js';
import { operationDead } from '../state/operation.js';
import type { BranchRecord, DatabaseRecord, State } from '../state/schema.js';
import type { EngineContext } from './context.js';
import { requireBranch } from './rules.js';
import { branchView, type BranchView, type DatabaseView, type Space } from './view.js';

/** What the reads show: the state, with each branch's container state and space as they are now. */

export interface LiveInfo {
  containers: Map<string, string>;
  /** Space of every dataset under the root, branch and WAL datasets alike. */
  space: Map<string, Space>;
}

/** `zfs get used,available,quota` of one dataset as numbers (quota 0: none). */
export function spaceOf(p: Record<string, string>): Space {
  const quota = Number(p.quota);
  return { used: Number(p.used), available: Number(p.available), quota: quota > 0 ? quota : null };
}

/** One Docker list and one `zfs get` for every read, however many branches. */
export async function liveInfo(ctx: EngineContext): Promise<LiveInfo> {
  const containers = new Map<string, string>();
  const space = new Map<string, Space>();
  await Promise.all([
    ctx.docker
      .listManaged()
      .then((l) => l.forEach((c) => containers.set(c.name, c.state)))
      .catch(() => {}),
    ctx.zfs
      .getTree(ctx.layout.root, ['used', 'available', 'quota'])
      .then((rows) => rows.forEach((p, n) => space.set(n, spaceOf(p))))
      .catch(() => {}),
  ]);
  return { containers, space };
}

/** The status a branch shows: its recorded one, corrected by what its container is doing. */
export function liveStatus(b: BranchRecord, live: LiveInfo): string {
  let status: string = b.status;
  if (b.status === 'running' || b.status === 'stopped') {
    const c = live.containers.get(b.container);
    status = c === undefined ? 'missing' : c === 'running' ? 'running' : b.status === 'running' ? 'down' : 'stopped';
    if (c === 'restarting') status = 'restarting';
  }
  if (operationDead(b.operation)) status = 'interrupted';
  return status;
}

export function viewOf(ctx: EngineContext, state: State, b: BranchRecord, live: LiveInfo): BranchView {
  const db = state.databases[b.database]!;
  return branchView(ctx.cfg, db, b, {
    status: liveStatus(b, live),
    disk: live.space.get(b.dataset) ?? null,
    wal: live.space.get(ctx.layout.walDataset(b.id)) ?? null,
  });
}

function databaseViewOf(ctx: EngineContext, state: State, db: DatabaseRecord, live: LiveInfo): DatabaseView {
  const branches = Object.values(state.branches)
    .filter((b) => b.database === db.name)
    .sort((a, b) => (a.branch === 'main' ? -1 : b.branch === 'main' ? 1 : a.branch.localeCompare(b.branch)))
    .map((b) => viewOf(ctx, state, b, live));
  return { name: db.name, image: db.image, createdAt: db.createdAt, branches };
}

export async function listDatabases(ctx: EngineContext): Promise<DatabaseView[]> {
  const state = await ctx.store.read();
  const live = await liveInfo(ctx);
  return Object.values(state.databases)
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((db) => databaseViewOf(ctx, state, db, live));
}

export async function getDatabase(ctx: EngineContext, name: string): Promise<DatabaseView> {
  const state = await ctx.store.read();
  const db = state.databases[name];
  if (!db) throw notFound(`database '${name}' does not exist`);
  return databaseViewOf(ctx, state, db, await liveInfo(ctx));
}

/** Whether the state records the branch (no Docker or ZFS look-up): for a quick refusal. A missing database is a not-found. */
export async function branchRecorded(ctx: EngineContext, ref: BranchRef): Promise<boolean> {
  const state = await ctx.store.read();
  if (!state.databases[ref.database]) throw notFound(`database '${ref.database}' does not exist`);
  return state.branches[refName(ref)] !== undefined;
}

export async function listBranches(ctx: EngineContext, database?: string): Promise<BranchView[]> {
  const state = await ctx.store.read();
  if (database !== undefined && !state.databases[database]) throw notFound(`database '${database}' does not exist`);
  const live = await liveInfo(ctx);
  return Object.values(state.branches)
    .filter((b) => database === undefined || b.database === database)
    .sort((a, b) => refName(a).localeCompare(refName(b)))
    .map((b) => viewOf(ctx, state, b, live));
}

export async function getBranch(ctx: EngineContext, ref: BranchRef): Promise<BranchView> {
  const state = await ctx.store.read();
  return viewOf(ctx, state, requireBranch(state, ref), await liveInfo(ctx));
}

/** A dataset's space now, or null when it cannot be read. */
export function spaceNow(ctx: EngineContext, dataset: string): Promise<Space | null> {
  return ctx.zfs.get(dataset, ['used', 'available', 'quota']).then(spaceOf, () => null);
}

/**
 * The view of a branch this process just started: no Docker listing needed, one `zfs get` (`space`:
 * one the caller started already, while it waited for the branch).
 */
export async function freshView(
  ctx: EngineContext,
  ref: BranchRef,
  o: { space?: Promise<Space | null> } = {},
): Promise<BranchView> {
  const state = await ctx.store.read();
  const b = requireBranch(state, ref);
  const space = await (o.space ?? spaceNow(ctx, b.dataset));
  const live: LiveInfo = {
    containers: new Map([[b.container, 'running']]),
    space: new Map(space === null ? [] : [[b.dataset, space]]),
  };
  return viewOf(ctx, state, b, live);
}

import { BpgError, conflict, describe } from '../errors.js';
import { refName, type BranchRef } from '../names.js';
import type { BranchRecord, DatabaseRecord, SnapshotRecord, State } from '../state/schema.js';
import { preflight } from './preflight.js';
import { target } from './containers.js';
import { fillSpares } from './port-slots.js';
import type { EngineContext } from './context.js';
import { deleteBranch } from './delete.js';
import { stop } from './lifecycle.js';
import { liveInfo } from './reads.js';
import { refreshDatabase } from './refresh.js';
import { dropUnusedRetired, unusedRetired } from './refresh-steps.js';
import { createSnapshot, deleteSnapshot, usersOf } from './snapshots.js';
import { walCleanup } from './wal.js';

/**
 * One housekeeping pass: the rules the daemon (`bpg serve`) applies every `housekeeping.interval`
 * and `bpg housekeep` applies once.
 *
 * 1. Expiry: branches past `expiresAt` are deleted. Never main, never a protected branch; a branch
 *    whose child branches are not all expired (and deletable) is kept and reported.
 * 2. Idle stop (`expiry.idleStopAfter`): a running branch (not main, not protected) on which no
 *    client has been seen for that long is stopped with `stoppedBy: 'idle'`; port and password stay.
 *    Clients are client backends in pg_stat_activity other than the agent's own sessions
 *    (application_name 'betterpg'); seeing one updates `lastActiveAt`. Idle time counts from the
 *    latest of lastActiveAt, the container's last start and the branch's creation.
 * 3. Scheduled snapshots (`databases.<db>.snapshots ?? snapshots`) of each database's main branch,
 *    then retention: scheduled snapshots beyond `keep` are deleted oldest first, except those a
 *    branch was cloned from; manual snapshots are never touched.
 * 4. WAL retention of main, tied to 3: archived segments older than the first segment the oldest
 *    kept snapshot needs are removed.
 * 5. Scheduled refreshes (`databases.<db>.refresh.every`): main is refreshed from its source when
 *    its last refresh (or its creation) is that old (refresh.ts); then old mains a refresh kept
 *    for branches cloned from them are destroyed once no branch is.
 *
 * Every pass takes an explicit `now`, so a test (or `bpg housekeep --dry-run --now <time>`) need not
 * wait. One item failing never stops the others: the report says what was done, skipped and why.
 */

export type HousekeepingAction =
  'expire' | 'idle-stop' | 'snapshot' | 'prune' | 'wal' | 'refresh' | 'generations' | 'slots' | 'pass';

/** What a change touches, so the daemon can hold its per-branch locks around it. */
export type HousekeepingTarget = { database: string; branch: string } | { snapshot: string };

export interface HousekeepingOptions {
  now?: Date;
  /** Decide and report, change nothing. */
  dryRun?: boolean;
  /** Runs each change; the daemon wraps it in the locks its API requests take. */
  around?: <T>(target: HousekeepingTarget, fn: () => Promise<T>) => Promise<T>;
  /** Checked between items: stop early (the daemon is shutting down). */
  shouldStop?: () => boolean;
  /**
   * Client connections the daemon's router relays (open now, last opened or closed): a branch
   * with one open is active, and one closed a moment ago counts as activity even if
   * pg_stat_activity never saw it.
   */
  activity?: (ref: BranchRef) => { open: number; lastSeenAt: number | null };
}

export interface HousekeepingReport {
  now: string;
  dryRun: boolean;
  /** Expired branches deleted (children before parents). */
  deleted: Array<{ branch: string; expiresAt: string | null }>;
  /** Branches stopped for being idle. */
  stopped: Array<{ branch: string; idleSince: string }>;
  /** Running branches a client was seen on (their lastActiveAt was updated). */
  active: string[];
  /** Scheduled snapshots taken (id null in a dry run). */
  snapshots: Array<{ branch: string; id: string | null }>;
  /** Scheduled snapshots removed by retention. */
  pruned: Array<{ branch: string; id: string; createdAt: string }>;
  /** Archived WAL of main removed by retention. */
  wal: Array<{ branch: string; removed: number; removedBytes: number; keptFrom: string | null }>;
  /** Scheduled refreshes of main run (generation null in a dry run). */
  refreshed: Array<{ database: string; generation: number | null }>;
  /** Old mains (kept by a refresh) destroyed: nothing is cloned from them any more. */
  retired: string[];
  skipped: Array<{ action: HousekeepingAction; target: string; reason: string }>;
  errors: Array<{ action: HousekeepingAction; target: string; error: string }>;
  ms: number;
}

/** Within this much (5% of `every`, at most a minute) a snapshot is due, so the schedule does not drift by the pass interval. */
const slackMs = (every: number) => Math.min(every * 0.05, 60_000);

const direct = <T>(_t: HousekeepingTarget, fn: () => Promise<T>) => fn();
const isBusy = (e: unknown) => e instanceof BpgError && e.code === 'conflict';

export async function housekeep(e: EngineContext, o: HousekeepingOptions = {}): Promise<HousekeepingReport> {
  const t0 = performance.now();
  const now = o.now ?? new Date();
  const dryRun = o.dryRun === true;
  const report: HousekeepingReport = {
    now: now.toISOString(),
    dryRun,
    deleted: [],
    stopped: [],
    active: [],
    snapshots: [],
    pruned: [],
    wal: [],
    refreshed: [],
    retired: [],
    skipped: [],
    errors: [],
    ms: 0,
  };
  const ctx: Ctx = {
    e,
    now,
    dryRun,
    report,
    around: o.around ?? direct,
    stop: o.shouldStop ?? (() => false),
    activity: o.activity ?? (() => ({ open: 0, lastSeenAt: null })),
  };
  try {
    await preflight(e);
    await expire(ctx);
    if (!ctx.stop()) await idleStop(ctx);
    if (!ctx.stop()) await schedule(ctx);
    if (!ctx.stop()) await walAge(ctx);
    if (!ctx.stop()) await scheduledRefresh(ctx);
    if (!ctx.stop()) await oldGenerations(ctx);
    if (!ctx.stop() && !dryRun) await spareSlots(ctx);
  } catch (err) {
    // Only what is outside any one item gets here: the pool or Docker is gone, the state unreadable.
    report.errors.push({ action: 'pass', target: e.cfg.zfs.pool, error: describe(err) });
  }
  report.ms = Math.round(performance.now() - t0);
  return report;
}

interface Ctx {
  e: EngineContext;
  now: Date;
  dryRun: boolean;
  report: HousekeepingReport;
  around: <T>(target: HousekeepingTarget, fn: () => Promise<T>) => Promise<T>;
  stop: () => boolean;
  activity: NonNullable<HousekeepingOptions['activity']>;
}

/** Runs one item; a busy branch is skipped (it is retried next pass), anything else is an error. */
async function item(c: Ctx, action: HousekeepingAction, target: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if (isBusy(err)) c.report.skipped.push({ action, target, reason: describe(err) });
    else c.report.errors.push({ action, target, error: describe(err) });
  }
}

const refOf = (b: BranchRecord): BranchRef => ({ database: b.database, branch: b.branch });

// ------------------------------------------------------------------------------------- expiry

function isExpired(b: BranchRecord, now: Date): boolean {
  return b.branch !== 'main' && !b.protected && b.expiresAt !== null && Date.parse(b.expiresAt) <= now.getTime();
}

async function expire(c: Ctx): Promise<void> {
  const s = await c.e.store.read();
  const all = Object.values(s.branches);
  const children = (key: string) => all.filter((b) => b.parent === key);
  const due = all.filter(
    (b) => b.branch !== 'main' && b.expiresAt !== null && Date.parse(b.expiresAt) <= c.now.getTime(),
  );
  for (const b of due.filter((x) => x.protected))
    c.report.skipped.push({ action: 'expire', target: refName(b), reason: 'expired but protected' });

  // Deletable: expired, at rest, and every descendant deletable too (so a subtree goes children first).
  const memo = new Map<string, string | null>();
  const blocker = (b: BranchRecord): string | null => {
    const key = refName(b);
    if (memo.has(key)) return memo.get(key)!;
    let why: string | null = null;
    if (!isExpired(b, c.now)) why = b.protected ? 'protected' : 'not expired';
    else if (b.status !== 'running' && b.status !== 'stopped') why = `${b.status}`;
    else if (b.operation) why = `busy: '${b.operation.kind}' in progress`;
    else {
      const kept = children(key).filter((x) => blocker(x) !== null);
      if (kept.length)
        why = `has child branches that stay: ${kept.map((x) => `${refName(x)} (${blocker(x)})`).join(', ')}`;
    }
    memo.set(key, why);
    return why;
  };
  const deletable = due.filter((b) => !b.protected && blocker(b) === null);
  for (const b of due.filter((x) => !x.protected && blocker(x) !== null)) {
    c.report.skipped.push({ action: 'expire', target: refName(b), reason: blocker(b)! });
  }
  const set = new Set(deletable.map(refName));
  const roots = deletable.filter((b) => !(b.parent && set.has(b.parent)));
  for (const root of roots) {
    if (c.stop()) return;
    const subtree = [root, ...descendants(all, refName(root))];
    if (c.dryRun) {
      for (const b of subtree.reverse()) c.report.deleted.push({ branch: refName(b), expiresAt: b.expiresAt });
      continue;
    }
    await item(c, 'expire', refName(root), async () => {
      const expiresAt = new Map(subtree.map((b) => [refName(b), b.expiresAt]));
      // Re-checked under the state lock: a PUT may have renewed it since we looked.
      const stillExpired = (b: BranchRecord) => {
        if (!isExpired(b, c.now))
          throw conflict(`branch '${refName(b)}' is no longer expired (renewed or protected meanwhile)`);
      };
      const gone = await c.around(refOf(root), () =>
        deleteBranch(c.e, refOf(root), { force: true, onlyIf: stillExpired }),
      );
      for (const name of gone) c.report.deleted.push({ branch: name, expiresAt: expiresAt.get(name) ?? null });
    });
  }
}

function descendants(all: BranchRecord[], key: string): BranchRecord[] {
  const out: BranchRecord[] = [];
  for (const b of all) if (b.parent === key) out.push(b, ...descendants(all, refName(b)));
  return out;
}

// ------------------------------------------------------------------------------------- idle stop

const CLIENTS_SQL = `SELECT count(*)::int AS n FROM pg_stat_activity
  WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
    AND application_name IS DISTINCT FROM 'betterpg'`;

async function idleStop(c: Ctx): Promise<void> {
  const after = c.e.cfg.expiry.idleStopAfter;
  if (after === null) return;
  const s = await c.e.store.read();
  const gone = new Set(c.report.deleted.map((d) => d.branch));
  const live = await liveInfo(c.e);
  const candidates = Object.values(s.branches).filter(
    (b) =>
      b.branch !== 'main' &&
      !b.protected &&
      b.status === 'running' &&
      !b.operation &&
      !gone.has(refName(b)) &&
      live.containers.get(b.container) === 'running',
  );
  const seen: string[] = [];
  const idle: Array<{ b: BranchRecord; since: number }> = [];
  await mapLimit(candidates, 4, async (b) => {
    const routed = c.activity(refOf(b));
    if (routed.open > 0) {
      seen.push(refName(b));
      return;
    }
    let clients: number;
    try {
      clients = await countClients(c.e, s, b);
    } catch (err) {
      c.report.skipped.push({
        action: 'idle-stop',
        target: refName(b),
        reason: `could not ask PostgreSQL for its clients: ${describe(err)}`,
      });
      return;
    }
    if (clients > 0) {
      seen.push(refName(b));
      return;
    }
    const started = (await c.e.docker.state(b.container).catch(() => null))?.startedAt ?? null;
    const since = Math.max(
      ...[b.lastActiveAt, started, b.createdAt].filter((x): x is string => x !== null).map((x) => Date.parse(x)),
      routed.lastSeenAt ?? 0,
    );
    if (c.now.getTime() - since >= after) idle.push({ b, since });
  });
  c.report.active.push(...seen.sort());
  if (seen.length && !c.dryRun) {
    // The moment a client was really seen, whatever `now` the pass was given.
    const at = new Date().toISOString();
    await c.e.store.update((st) => {
      for (const key of seen) if (st.branches[key]) st.branches[key]!.lastActiveAt = at;
    });
  }
  idle.sort((a, b) => refName(a.b).localeCompare(refName(b.b)));
  for (const { b, since } of idle) {
    if (c.stop()) return;
    const idleSince = new Date(since).toISOString();
    if (c.dryRun) {
      c.report.stopped.push({ branch: refName(b), idleSince });
      continue;
    }
    await item(c, 'idle-stop', refName(b), async () => {
      const stopped = await c.around(refOf(b), async () => {
        // A client may have connected through the router since the pass looked.
        if (c.activity(refOf(b)).open > 0) return false;
        await stop(c.e, refOf(b), 'idle');
        return true;
      });
      if (stopped) c.report.stopped.push({ branch: refName(b), idleSince });
      else
        c.report.skipped.push({
          action: 'idle-stop',
          target: refName(b),
          reason: 'a client connected through the router',
        });
    });
  }
}

async function countClients(e: EngineContext, s: State, b: BranchRecord): Promise<number> {
  const db = s.databases[b.database]!;
  return e.pg.withClient(target(e, b, db), async (cl) => (await cl.query<{ n: number }>(CLIENTS_SQL)).rows[0]!.n);
}

async function mapLimit<T>(items: T[], limit: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

// ------------------------------------------------------------------------- refreshes

/** When a database's main is due for its scheduled refresh (null: no schedule). Pure. */
export function refreshDueAt(cfg: EngineContext['cfg'], db: DatabaseRecord): number | null {
  const every = cfg.databases[db.name]?.refresh?.every;
  if (every === undefined) return null;
  return Date.parse(db.refreshedAt ?? db.createdAt) + every - slackMs(every);
}

async function scheduledRefresh(c: Ctx): Promise<void> {
  const s = await c.e.store.read();
  for (const db of Object.values(s.databases).sort((a, b) => a.name.localeCompare(b.name))) {
    if (c.stop()) return;
    const due = refreshDueAt(c.e.cfg, db);
    if (due === null) continue;
    if (c.now.getTime() < due) {
      c.report.skipped.push({
        action: 'refresh',
        target: db.name,
        reason: `not due until ${new Date(due).toISOString()}`,
      });
    } else if (c.dryRun) {
      c.report.refreshed.push({ database: db.name, generation: null });
    } else {
      await item(c, 'refresh', db.name, async () => {
        const ref = { database: db.name, branch: 'main' };
        const r = await c.around(ref, () => refreshDatabase(c.e, db.name));
        c.report.refreshed.push({ database: db.name, generation: r.generation });
      });
    }
  }
}

async function oldGenerations(c: Ctx): Promise<void> {
  const s = await c.e.store.read();
  for (const db of Object.values(s.databases)) {
    if (!db.retired.length || db.operation || c.stop()) continue;
    if (c.dryRun) {
      c.report.retired.push(...unusedRetired(s, db.name));
      continue;
    }
    await item(c, 'generations', db.name, async () => {
      c.report.retired.push(...(await dropUnusedRetired(c.e, db.name)));
    });
  }
}

/** Spare port slots back to postgres.warmSlots (port-slots.ts): the daemon's keeper, else here. */
async function spareSlots(c: Ctx): Promise<void> {
  if (c.e.spares) return c.e.spares.poke({ trim: true });
  await item(c, 'slots', c.e.cfg.postgres.portRange.join('-'), async () => {
    await fillSpares(c.e, { trim: true });
  });
}

// ------------------------------------------------------------------------- scheduled snapshots

/** A database's schedule: its own entry (null turns it off), else the default. */
export function scheduleFor(e: EngineContext, database: string): { every: number; keep: number } | null {
  const own = e.cfg.databases[database]?.snapshots;
  return own !== undefined ? own : e.cfg.snapshots;
}

async function schedule(c: Ctx): Promise<void> {
  const s = await c.e.store.read();
  for (const name of Object.keys(s.databases).sort()) {
    if (c.stop()) return;
    const sched = scheduleFor(c.e, name);
    if (!sched) continue;
    const main = s.branches[`${name}/main`];
    if (!main) continue;
    const ref = { database: name, branch: 'main' };
    const target = refName(ref);
    const scheduled = (st: State) =>
      Object.values(st.snapshots)
        .filter((k) => k.branchId === main.id && k.scheduled)
        .sort((a, b) => a.createdAt.localeCompare(b.createdAt));

    // Take one when the newest scheduled snapshot is `every` old.
    const newest = scheduled(s).at(-1);
    const dueAt = newest ? Date.parse(newest.createdAt) + sched.every - slackMs(sched.every) : -Infinity;
    let taken = false;
    if (c.now.getTime() < dueAt) {
      c.report.skipped.push({ action: 'snapshot', target, reason: `not due until ${new Date(dueAt).toISOString()}` });
    } else if (main.status !== 'running') {
      c.report.skipped.push({ action: 'snapshot', target, reason: `main is ${main.status}` });
    } else if (c.dryRun) {
      c.report.snapshots.push({ branch: target, id: null });
      taken = true;
    } else {
      await item(c, 'snapshot', target, async () => {
        const snap = await c.around(ref, () => createSnapshot(c.e, ref, { label: 'scheduled', scheduled: true }));
        c.report.snapshots.push({ branch: target, id: snap.id });
        taken = true;
      });
    }
    if (c.stop()) return;

    // Retention: the newest `keep` scheduled snapshots stay (a dry run counts the one it would take).
    const st = await c.e.store.read();
    const list = scheduled(st);
    const excess = list.slice(0, Math.max(0, list.length + (c.dryRun && taken ? 1 : 0) - sched.keep));
    const prunedIds = new Set<string>();
    for (const k of excess) {
      const users = usersOf(st, k);
      if (users.length) {
        c.report.skipped.push({
          action: 'prune',
          target: k.id,
          reason: `branch(es) ${users.join(', ')} were cloned from it`,
        });
        continue;
      }
      if (c.dryRun) {
        c.report.pruned.push({ branch: target, id: k.id, createdAt: k.createdAt });
        prunedIds.add(k.id);
        continue;
      }
      await item(c, 'prune', k.id, async () => {
        await c.around({ snapshot: k.id }, () => deleteSnapshot(c.e, k.id));
        c.report.pruned.push({ branch: target, id: k.id, createdAt: k.createdAt });
        prunedIds.add(k.id);
      });
    }
    if (c.stop()) return;
    await item(c, 'wal', target, () => walRetention(c, ref, main, prunedIds));
  }
}

/** Removes main's archived WAL that no kept snapshot (scheduled or manual) needs any more. */
async function walRetention(c: Ctx, ref: BranchRef, main: BranchRecord, pruned: ReadonlySet<string>): Promise<void> {
  const st = await c.e.store.read();
  const kept: SnapshotRecord[] = Object.values(st.snapshots).filter(
    (k) => k.branchId === main.id && k.backup && !pruned.has(k.id),
  );
  if (kept.length === 0) {
    // Without a snapshot to start from, archived WAL is all there is: never remove it blindly.
    c.report.skipped.push({ action: 'wal', target: refName(ref), reason: 'no kept snapshot with a backup label yet' });
    return;
  }
  const r = await walCleanup(c.e, ref, 0, c.dryRun, { nowMs: c.now.getTime(), ignore: pruned });
  const keptFrom = kept.map((k) => k.backup!.firstSegment).sort()[0] ?? null;
  if (r.removed.length)
    c.report.wal.push({ branch: r.branch, removed: r.removed.length, removedBytes: r.removedBytes, keptFrom });
}

// ------------------------------------------------------------------------------------- WAL age

/**
 * Every branch's archived WAL older than housekeeping.walMaxAge goes, except what its kept
 * snapshots need (walCleanup keeps everything from the oldest one's first segment). Mains of
 * databases with a schedule were trimmed harder by their retention above.
 */
async function walAge(c: Ctx): Promise<void> {
  const maxAge = c.e.cfg.housekeeping.walMaxAge;
  if (maxAge === null) return;
  const s = await c.e.store.read();
  for (const b of Object.values(s.branches).sort((x, y) => refName(x).localeCompare(refName(y)))) {
    if (c.stop()) return;
    if (b.operation || (b.branch === 'main' && scheduleFor(c.e, b.database))) continue;
    const ref = refOf(b);
    await item(c, 'wal', refName(b), async () => {
      const r = await walCleanup(c.e, ref, maxAge / 864e5, c.dryRun, { nowMs: c.now.getTime() });
      if (r.removed.length)
        c.report.wal.push({
          branch: r.branch,
          removed: r.removed.length,
          removedBytes: r.removedBytes,
          keptFrom: null,
        });
    });
  }
}

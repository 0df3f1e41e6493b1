import { invalid } from '../errors.js';
import { sleep } from '../drivers/exec.js';
import { refName, shown, type BranchRef } from '../names.js';
import type { BranchRecord, SnapshotRecord, State } from '../state/schema.js';
import { target } from './containers.js';
import type { EngineContext } from './context.js';
import { requireBranch } from './rules.js';
import { snapshotsOf } from './snapshots.js';
import { segments } from './wal.js';

/** Point-in-time recovery: when it can reach, which kept snapshot it starts from. */

/** `2026-10-07T14:30:00Z` (a time zone is required) or `2 hours ago`. */
export function parseTime(text: string, nowMs = Date.now()): Date {
  const rel = /^\s*(\d+)\s*(second|sec|s|minute|min|m|hour|h|day|d|week|w)s?\s+ago\s*$/i.exec(text);
  if (rel) {
    const unit = rel[2]!.toLowerCase();
    const ms = {
      s: 1e3,
      sec: 1e3,
      second: 1e3,
      m: 6e4,
      min: 6e4,
      minute: 6e4,
      h: 36e5,
      hour: 36e5,
      d: 864e5,
      day: 864e5,
      w: 6048e5,
      week: 6048e5,
    }[unit]!;
    return new Date(nowMs - Number(rel[1]) * ms);
  }
  if (!/^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)$/i.test(text.trim())) {
    throw invalid(
      `invalid time '${shown(text)}': use ISO 8601 with a time zone (2026-10-07T14:30:00Z) or e.g. '2 hours ago'`,
    );
  }
  const d = new Date(text.trim().replace(' ', 'T'));
  if (Number.isNaN(d.getTime())) throw invalid(`invalid time '${shown(text)}'`);
  return d;
}

/**
 * The pure part of planning: which kept snapshot a recovery to `target` starts from, or why it
 * cannot. `archivedUntil`: the newest archived segment's time when the source is stopped (null:
 * it runs, so its WAL reaches now).
 */
export function choosePitrSnapshot(
  branch: string,
  snaps: SnapshotRecord[],
  target: Date,
  o: { nowMs: number; archivedUntil: string | null },
): SnapshotRecord {
  const usable = snaps.filter((k) => k.backup).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  if (usable.length === 0) {
    throw invalid(
      `branch '${branch}' has no snapshot to recover from: take one with 'bpg snapshot create ${branch}' (recovery starts at a snapshot)`,
    );
  }
  const oldest = usable[0]!.createdAt;
  const running = o.archivedUntil === null;
  const end = o.archivedUntil ?? new Date(o.nowMs).toISOString();
  const range = `recoverable range for ${branch}: ${oldest} .. ${running ? 'now' : end}`;
  const t = target.toISOString();
  if (target.getTime() > o.nowMs + 1000) throw invalid(`recovery target ${t} is in the future; ${range}`);
  if (t < oldest) throw invalid(`recovery target ${t} is before the oldest snapshot; ${range}`);
  if (!running && t > end) throw invalid(`recovery target ${t} is past the archived WAL; ${range}`);
  return [...usable].reverse().find((k) => k.createdAt <= t)!;
}

/**
 * Picks the snapshot for a point-in-time recovery and makes sure the source's WAL up to now is
 * archived. Errors name the recoverable range.
 */
export async function planPitr(
  ctx: EngineContext,
  from: BranchRef,
  target: Date,
): Promise<{ target: Date; snapshot: SnapshotRecord }> {
  const s = await ctx.store.read();
  const b = requireBranch(s, from);
  const snaps = snapshotsOf(s, b);
  const running = (await ctx.docker.state(b.container))?.running === true;
  let archivedUntil: string | null = null;
  if (!running) {
    const { segs } = await segments(ctx.layout.walDir(b.id));
    const last = segs[segs.length - 1];
    archivedUntil = last
      ? new Date(last.mtimeMs).toISOString()
      : (snaps.find((k) => k.backup)?.createdAt ?? new Date(0).toISOString());
  }
  const snapshot = choosePitrSnapshot(refName(b), snaps, target, { nowMs: Date.now(), archivedUntil });
  if (running) await archiveCurrentWal(ctx, b, s);
  return { target, snapshot };
}

/** Switches to a new WAL segment on the source and waits until the finished one is archived. */
async function archiveCurrentWal(ctx: EngineContext, b: BranchRecord, s: State): Promise<void> {
  const db = s.databases[b.database]!;
  await ctx.pg.withClient(target(ctx, b, db), async (c) => {
    const seg = (await c.query<{ f: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS f')).rows[0]!.f;
    const deadline = Date.now() + 60_000;
    for (;;) {
      const r = (await c.query<{ a: string | null }>('SELECT last_archived_wal AS a FROM pg_stat_archiver')).rows[0]!;
      if (r.a && r.a.slice(8) >= seg.slice(8)) return;
      if (Date.now() > deadline)
        throw new Error(`WAL segment ${seg} of ${refName(b)} was not archived within 60 s (see 'bpg wal info')`);
      await sleep(100);
    }
  });
}

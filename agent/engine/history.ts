import { randomBytes } from 'node:crypto';
import { lstat, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { conflict, invalid, notFound } from '../errors.js';
import { refName, shown, type BranchRef } from '../names.js';
import { withClient } from '../drivers/postgres.js';
import { sleep } from '../drivers/exec.js';
import type { BranchRecord, SnapshotRecord, State } from '../state/schema.js';
import type { Engine } from './engine.js';
import { Steps } from './steps.js';
import { newOperation } from '../state/operation.js';

/**
 * History: kept snapshots, the WAL archive, and what point-in-time recovery can reach.
 * WAL retention follows snapshot retention: WAL that a kept snapshot needs is never removed.
 */

export interface SnapshotView {
  id: string;
  branch: string;
  label: string | null;
  createdAt: string;
  usedBytes: number | null;
  consistency: 'application' | 'crash';
  zfsSnapshot: string;
  usedBy: string[];
  /** Taken by the schedule, pruned by its retention. */
  scheduled: boolean;
}

const SEGMENT = /^[0-9A-F]{24}$/;

/** `2026-10-07T14:30:00Z` (a time zone is required) or `2 hours ago`. */
export function parseTime(text: string, nowMs = Date.now()): Date {
  const rel = /^\s*(\d+)\s*(second|sec|s|minute|min|m|hour|h|day|d|week|w)s?\s+ago\s*$/i.exec(text);
  if (rel) {
    const unit = rel[2]!.toLowerCase();
    const ms = { s: 1e3, sec: 1e3, second: 1e3, m: 6e4, min: 6e4, minute: 6e4, h: 36e5, hour: 36e5, d: 864e5, day: 864e5, w: 6048e5, week: 6048e5 }[unit]!;
    return new Date(nowMs - Number(rel[1]) * ms);
  }
  if (!/^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)$/i.test(text.trim())) {
    throw invalid(`invalid time '${shown(text)}': use ISO 8601 with a time zone (2026-10-07T14:30:00Z) or e.g. '2 hours ago'`);
  }
  const d = new Date(text.trim().replace(' ', 'T'));
  if (Number.isNaN(d.getTime())) throw invalid(`invalid time '${shown(text)}'`);
  return d;
}

function branchById(s: State, id: string): BranchRecord | undefined {
  return Object.values(s.branches).find((b) => b.id === id);
}

export function snapshotsOf(s: State, b: BranchRecord): SnapshotRecord[] {
  return Object.values(s.snapshots)
    .filter((k) => k.branchId === b.id)
    .sort((a, c) => a.createdAt.localeCompare(c.createdAt));
}

/** Branches cloned from a kept snapshot (they keep it alive). */
export function usersOf(s: State, snap: SnapshotRecord): string[] {
  const owner = branchById(s, snap.branchId);
  if (!owner) return [];
  const full = `${owner.dataset}@${snap.name}`;
  return Object.values(s.branches)
    .filter((b) => b.origin?.snapshot === full)
    .map(refName);
}

/** `scheduled`: taken by housekeeping's schedule, so its retention may prune it (manual ones never). */
export async function createSnapshot(e: Engine, ref: BranchRef, o: { label?: string; scheduled?: boolean } = {}): Promise<SnapshotView> {
  await e.begin();
  if (o.label !== undefined && (o.label.length > 200 || /[\x00-\x1f]/.test(o.label))) throw invalid('--label must be printable and at most 200 characters');
  const id = `snap-${randomBytes(4).toString('hex')}`;
  const { b, db } = await e.store.update((s) => {
    const b = e.requireBranch(s, ref);
    if (b.status !== 'running' && b.status !== 'stopped') throw conflict(`branch '${refName(b)}' is ${b.status}`);
    e.assertIdleFor(b);
    // The marker names the ZFS snapshot, so recovery can drop it if this process dies before recording it.
    b.operation = newOperation('snapshot', { snapshot: `${b.dataset}@bpg-${id}` });
    return { b: { ...b }, db: { ...s.databases[ref.database]! } };
  });
  const name = `bpg-${id}`;
  const full = `${b.dataset}@${name}`;
  const steps = new Steps('snapshot create', e.log);
  let backup: Awaited<ReturnType<Engine["snapshotParent"]>> = null;
  try {
    backup = await e.snapshotParent(steps, b, db, full, { fast: false, label: `betterpg ${id}`, by: ref, waitForArchive: true });
    await e.store.update((s) => {
      const cur = s.branches[refName(ref)];
      if (!cur || cur.id !== b.id) throw conflict(`branch '${refName(ref)}' changed while it was being snapshotted`);
      cur.operation = null;
      s.snapshots[id] = {
        id,
        branchId: b.id,
        name,
        label: o.label ?? null,
        consistency: 'application',
        backup: backup ? { ...backup } : null,
        createdAt: new Date().toISOString(),
        scheduled: o.scheduled === true,
      };
    });
  } catch (err) {
    await e.undo(steps, err, async (s) => {
      const cur = s.branches[refName(ref)];
      if (cur && cur.id === b.id) cur.operation = null;
    });
  }
  return (await listSnapshots(e)).find((x) => x.id === id)!;
}

export async function listSnapshots(e: Engine, ref?: BranchRef): Promise<SnapshotView[]> {
  const s = await e.store.read();
  const only = ref ? e.requireBranch(s, ref) : null;
  const out: SnapshotView[] = [];
  for (const snap of Object.values(s.snapshots).sort((a, c) => a.createdAt.localeCompare(c.createdAt))) {
    const owner = branchById(s, snap.branchId);
    if (!owner || (only && owner.id !== only.id)) continue;
    const full = `${owner.dataset}@${snap.name}`;
    const used = await e.zfs.get(full, ['used']).then((p) => Number(p.used), () => null);
    out.push({
      id: snap.id,
      branch: refName(owner),
      label: snap.label,
      createdAt: snap.createdAt,
      usedBytes: used,
      consistency: snap.consistency,
      zfsSnapshot: full,
      usedBy: usersOf(s, snap),
      scheduled: snap.scheduled,
    });
  }
  return out;
}

export async function deleteSnapshot(e: Engine, id: string): Promise<void> {
  if (!/^snap-[a-f0-9]{8}$/.test(id)) throw invalid(`invalid snapshot id '${shown(id)}' (ids look like snap-1a2b3c4d)`);
  const full = await e.store.update((s) => {
    const snap = s.snapshots[id];
    if (!snap) throw notFound(`snapshot '${id}' does not exist`);
    const users = usersOf(s, snap);
    if (users.length) throw conflict(`snapshot '${id}' is in use: branch(es) ${users.join(', ')} were cloned from it; delete them first`);
    const owner = branchById(s, snap.branchId)!;
    delete s.snapshots[id];
    return `${owner.dataset}@${snap.name}`;
  });
  await e.zfs.destroy(full);
}

// ------------------------------------------------------------------------------------------ WAL

export interface WalInfo {
  branch: string;
  folder: string;
  segments: number;
  bytes: number;
  oldest: { segment: string; time: string } | null;
  newest: { segment: string; time: string } | null;
  gaps: Array<{ timeline: string; from: string; to: string; missing: number }>;
  historyFiles: number;
  /** The last failed archive attempt, and why when the agent can tell. */
  lastFailure: { segment: string; time: string; reason: string | null } | null;
  lastArchived: { segment: string; time: string } | null;
  /** The archive dataset's quota (null: none) and whether it is full (archiving then fails). */
  quotaBytes: number | null;
  full: boolean;
}

interface SegFile {
  name: string;
  bytes: number;
  mtimeMs: number;
}

async function segments(dir: string): Promise<{ segs: SegFile[]; history: number; segSize: number }> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const segs: SegFile[] = [];
  let history = 0;
  for (const n of names) {
    if (/^[0-9A-F]{8}\.history$/.test(n)) history++;
    if (!SEGMENT.test(n)) continue;
    // lstat: a branch can plant links in its own archive; only regular files are segments.
    const st = await lstat(join(dir, n)).catch(() => null);
    if (st?.isFile()) segs.push({ name: n, bytes: st.size, mtimeMs: st.mtimeMs });
  }
  segs.sort((a, b) => a.name.localeCompare(b.name));
  return { segs, history, segSize: segs[0]?.bytes || 16 * 1024 * 1024 };
}

/** Position of a segment in its timeline's sequence. */
function segNo(name: string, segSize: number): bigint {
  const perId = 0x100000000n / BigInt(segSize);
  return BigInt('0x' + name.slice(8, 16)) * perId + BigInt('0x' + name.slice(16, 24));
}

export async function walInfo(e: Engine, ref?: BranchRef): Promise<WalInfo[]> {
  const s = await e.store.read();
  const list = ref ? [e.requireBranch(s, ref)] : Object.values(s.branches).sort((a, b) => refName(a).localeCompare(refName(b)));
  const out: WalInfo[] = [];
  const usage = await e.wal.usage();
  for (const b of list) {
    const folder = e.layout.walDir(b.id);
    const { segs, history, segSize } = await segments(folder);
    const gaps: WalInfo['gaps'] = [];
    for (let i = 1; i < segs.length; i++) {
      const a = segs[i - 1]!.name;
      const c = segs[i]!.name;
      if (a.slice(0, 8) !== c.slice(0, 8)) continue; // a new timeline starts where the old one ended
      const missing = segNo(c, segSize) - segNo(a, segSize) - 1n;
      if (missing > 0n) gaps.push({ timeline: a.slice(0, 8), from: a, to: c, missing: Number(missing) });
    }
    let lastFailure: WalInfo['lastFailure'] = null;
    let lastArchived: WalInfo['lastArchived'] = null;
    if (b.status === 'running') {
      const db = s.databases[b.database]!;
      const row = await withClient(e.target(b, db), async (c) => (await c.query('SELECT last_archived_wal, last_archived_time, last_failed_wal, last_failed_time FROM pg_stat_archiver')).rows[0]).catch(() => null);
      if (row?.last_failed_wal && (!row.last_archived_time || row.last_failed_time > row.last_archived_time)) {
        const seg = String(row.last_failed_wal);
        lastFailure = { segment: seg, time: new Date(row.last_failed_time).toISOString(), reason: null };
        const there = segs.find((x) => x.name === seg);
        if (there) {
          lastFailure.reason = `a different ${seg} (${there.bytes} bytes) is already in the archive: archiving is stuck until it is moved away (compare it with pg_wal/${seg} of the branch)`;
        } else if (usage.get(b.id)?.quota && usage.get(b.id)!.available < 16 * 1024 * 1024) {
          lastFailure.reason = `the WAL archive is full (postgres.walQuota ${usage.get(b.id)!.quota} bytes)`;
        }
      }
      if (row?.last_archived_wal) lastArchived = { segment: row.last_archived_wal, time: new Date(row.last_archived_time).toISOString() };
    }
    const first = segs[0];
    const last = segs[segs.length - 1];
    out.push({
      branch: refName(b),
      folder,
      segments: segs.length,
      bytes: segs.reduce((n, x) => n + x.bytes, 0),
      oldest: first ? { segment: first.name, time: new Date(first.mtimeMs).toISOString() } : null,
      newest: last ? { segment: last.name, time: new Date(last.mtimeMs).toISOString() } : null,
      gaps,
      historyFiles: history,
      lastFailure,
      lastArchived,
      quotaBytes: usage.get(b.id)?.quota ?? null,
      full: !!usage.get(b.id)?.quota && usage.get(b.id)!.available < 16 * 1024 * 1024,
    });
  }
  return out;
}

export interface WalCleanup {
  branch: string;
  dryRun: boolean;
  removed: string[];
  removedBytes: number;
  kept: Array<{ segments: number; reason: string }>;
  /** Temporary files of archive copies that were killed half-way (older than an hour), removed. */
  removedTemp: string[];
}

/** basic_archive's temporary names, and the shell archive command's (see datadir.ts). */
const ARCHIVE_TEMP = /^(archtemp\.[0-9A-F]{24}.*|\.[0-9A-F]{24}\.tmp)$/;
const TEMP_MAX_AGE_MS = 3600_000;

/**
 * Removes archived segments older than `days`, except those a kept snapshot of the branch still
 * needs: recovery from a snapshot replays from its backup's first segment onwards. `ignore`:
 * snapshots to count as gone already (housekeeping's dry run, which prunes nothing).
 */
export async function walCleanup(
  e: Engine,
  ref: BranchRef,
  days: number,
  dryRun: boolean,
  o: { nowMs?: number; ignore?: ReadonlySet<string> } = {},
): Promise<WalCleanup> {
  if (!Number.isFinite(days) || days < 0) throw invalid('--days must be a number of days, 0 or more');
  const s = await e.store.read();
  const b = e.requireBranch(s, ref);
  const folder = e.layout.walDir(b.id);
  const { segs, segSize } = await segments(folder);
  const cutoff = (o.nowMs ?? Date.now()) - days * 864e5;
  const snaps = snapshotsOf(s, b).filter((k) => k.backup && !o.ignore?.has(k.id));
  const oldestNeeded = snaps[0];
  const neededFrom = oldestNeeded ? segNo(oldestNeeded.backup!.firstSegment, segSize) : null;
  const removed: SegFile[] = [];
  let keptForSnapshot = 0;
  let keptRecent = 0;
  for (const seg of segs) {
    if (seg.mtimeMs >= cutoff) {
      keptRecent++;
      continue;
    }
    if (neededFrom !== null && segNo(seg.name, segSize) >= neededFrom) {
      keptForSnapshot++;
      continue;
    }
    removed.push(seg);
  }
  if (!dryRun) for (const seg of removed) await unlink(join(folder, seg.name)).catch(() => {});
  const removedTemp: string[] = [];
  for (const n of (await readdir(folder).catch(() => [] as string[])).filter((x) => ARCHIVE_TEMP.test(x))) {
    const st = await lstat(join(folder, n)).catch(() => null);
    if (!st || st.mtimeMs > (o.nowMs ?? Date.now()) - TEMP_MAX_AGE_MS) continue;
    if (!dryRun) await unlink(join(folder, n)).catch(() => {}); // unlink never follows a link
    removedTemp.push(n);
  }
  const kept: WalCleanup['kept'] = [];
  if (keptRecent) kept.push({ segments: keptRecent, reason: `younger than ${days} day(s)` });
  if (keptForSnapshot) {
    kept.push({ segments: keptForSnapshot, reason: `needed by snapshot ${oldestNeeded!.id} (${oldestNeeded!.createdAt}), the oldest kept, from segment ${oldestNeeded!.backup!.firstSegment}` });
  }
  return { branch: refName(b), dryRun, removed: removed.map((x) => x.name), removedBytes: removed.reduce((n, x) => n + x.bytes, 0), kept, removedTemp };
}

// ------------------------------------------------------------------------------------------ PITR

/**
 * Picks the snapshot for a point-in-time recovery and makes sure the source's WAL up to now is
 * archived. Errors name the recoverable range.
 */
export async function planPitr(e: Engine, from: BranchRef, target: Date): Promise<{ target: Date; snapshot: SnapshotRecord }> {
  const s = await e.store.read();
  const b = e.requireBranch(s, from);
  const snaps = snapshotsOf(s, b).filter((k) => k.backup);
  if (snaps.length === 0) {
    throw invalid(`branch '${refName(b)}' has no snapshot to recover from: take one with 'bpg snapshot create ${refName(b)}' (recovery starts at a snapshot)`);
  }
  const oldest = snaps[0]!.createdAt;
  const nowMs = Date.now();
  const running = (await e.docker.state(b.container))?.running === true;
  let end = running ? new Date(nowMs).toISOString() : null;
  if (!running) {
    const { segs } = await segments(e.layout.walDir(b.id));
    const last = segs[segs.length - 1];
    end = last ? new Date(last.mtimeMs).toISOString() : oldest;
  }
  const range = `recoverable range for ${refName(b)}: ${oldest} .. ${running ? 'now' : end}`;
  if (target.getTime() > nowMs + 1000) throw invalid(`recovery target ${target.toISOString()} is in the future; ${range}`);
  if (target.toISOString() < oldest) throw invalid(`recovery target ${target.toISOString()} is before the oldest snapshot; ${range}`);
  if (!running && target.toISOString() > end!) throw invalid(`recovery target ${target.toISOString()} is past the archived WAL; ${range}`);
  const snapshot = [...snaps].reverse().find((k) => k.createdAt <= target.toISOString())!;
  if (running) await archiveCurrentWal(e, b, s);
  return { target, snapshot };
}

/** Switches to a new WAL segment on the source and waits until the finished one is archived. */
async function archiveCurrentWal(e: Engine, b: BranchRecord, s: State): Promise<void> {
  const db = s.databases[b.database]!;
  await withClient(e.target(b, db), async (c) => {
    const seg = (await c.query<{ f: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS f')).rows[0]!.f;
    const deadline = Date.now() + 60_000;
    for (;;) {
      const r = (await c.query<{ a: string | null }>('SELECT last_archived_wal AS a FROM pg_stat_archiver')).rows[0]!;
      if (r.a && r.a.slice(8) >= seg.slice(8)) return;
      if (Date.now() > deadline) throw new Error(`WAL segment ${seg} of ${refName(b)} was not archived within 60 s (see 'bpg wal info')`);
      await sleep(100);
    }
  });
}

import { lstat, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { invalid } from '../errors.js';
import { refName, type BranchRef } from '../names.js';
import { target } from './containers.js';
import type { EngineContext } from './context.js';
import { requireBranch } from './rules.js';
import { snapshotsOf } from './snapshots.js';

/**
 * Each branch's WAL archive: what is in it (segments, gaps, the archiver's last success and
 * failure, and why), and its retention: WAL that a kept snapshot needs is never removed.
 */

const SEGMENT = /^[0-9A-F]{24}$/;

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

export async function segments(dir: string): Promise<{ segs: SegFile[]; history: number; segSize: number }> {
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

export async function walInfo(ctx: EngineContext, ref?: BranchRef): Promise<WalInfo[]> {
  const s = await ctx.store.read();
  const list = ref
    ? [requireBranch(s, ref)]
    : Object.values(s.branches).sort((a, b) => refName(a).localeCompare(refName(b)));
  const out: WalInfo[] = [];
  const usage = await ctx.wal.usage();
  for (const b of list) {
    const folder = ctx.layout.walDir(b.id);
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
      const row = await ctx.pg
        .withClient(
          target(ctx, b, db),
          async (c) =>
            (
              await c.query(
                'SELECT last_archived_wal, last_archived_time, last_failed_wal, last_failed_time FROM pg_stat_archiver',
              )
            ).rows[0],
        )
        .catch(() => null);
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
      if (row?.last_archived_wal)
        lastArchived = { segment: row.last_archived_wal, time: new Date(row.last_archived_time).toISOString() };
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
  ctx: EngineContext,
  ref: BranchRef,
  days: number,
  dryRun: boolean,
  o: { nowMs?: number; ignore?: ReadonlySet<string> } = {},
): Promise<WalCleanup> {
  if (!Number.isFinite(days) || days < 0) throw invalid('--days must be a number of days, 0 or more');
  const s = await ctx.store.read();
  const b = requireBranch(s, ref);
  const folder = ctx.layout.walDir(b.id);
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
    kept.push({
      segments: keptForSnapshot,
      reason: `needed by snapshot ${oldestNeeded!.id} (${oldestNeeded!.createdAt}), the oldest kept, from segment ${oldestNeeded!.backup!.firstSegment}`,
    });
  }
  return {
    branch: refName(b),
    dryRun,
    removed: removed.map((x) => x.name),
    removedBytes: removed.reduce((n, x) => n + x.bytes, 0),
    kept,
    removedTemp,
  };
}

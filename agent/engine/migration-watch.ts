import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { conflict, describe } from '../errors.js';
import { refName, type BranchRef } from '../names.js';
import { target } from './containers.js';
import type { EngineContext } from './context.js';
import { LockTracker, buildReport, type SafetyReport, type TableInfo } from './lock-report.js';
import { requireBranch } from './rules.js';

/**
 * Watching a migration: from `startWatch` to `stop()`, a separate agent session samples the
 * branch's `pg_locks` every `intervalMs` (50 ms catches a lock held 100 ms at least once), and at
 * the end compares the tables' storage (relfilenode) and counts the rows of every table touched.
 * The branch's SQL is hostile: names are quoted by PostgreSQL (format %I), the number of tables
 * looked at is bounded, and every statement of the watch has a time limit.
 */

export interface Watch {
  id: string;
  branch: string;
  startedAt: string;
  /** Ends the sampling and builds the report (once; later calls answer the same report). */
  stop(): Promise<SafetyReport>;
}

export interface WatchOptions {
  /** Locks that block writes held longer than this are flagged (default: review.maxLockSeconds). */
  maxLockSeconds?: number;
  intervalMs?: number;
}

/** At most this many tables are followed (a PR may make 100k). */
const MAX_TABLES = 20_000;
/** Rows are counted exactly for at most this many touched tables, each within COUNT_TIMEOUT. */
const MAX_COUNTED = 50;

const TABLES_SQL = `SELECT c.oid::bigint AS oid,
    CASE WHEN n.nspname = 'public' THEN format('%I', c.relname) ELSE format('%I.%I', n.nspname, c.relname) END AS name,
    format('%I.%I', n.nspname, c.relname) AS qname,
    c.relfilenode::bigint AS relfilenode
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  ORDER BY c.oid LIMIT ${MAX_TABLES}`;

const LOCKS_SQL = `SELECT relation::bigint AS oid, mode FROM pg_locks
  WHERE locktype = 'relation' AND granted AND pid <> pg_backend_pid()
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`;

interface Row {
  oid: string;
  name: string;
  qname: string;
  relfilenode: string;
}

const tablesOf = async (c: pg.Client) =>
  (await c.query<Row>(TABLES_SQL)).rows.map((r) => ({
    oid: Number(r.oid),
    name: r.name,
    qname: r.qname,
    relfilenode: Number(r.relfilenode),
  }));

export async function startWatch(ctx: EngineContext, ref: BranchRef, o: WatchOptions = {}): Promise<Watch> {
  const s = await ctx.store.read();
  const b = requireBranch(s, ref);
  if (b.status !== 'running') throw conflict(`branch '${refName(ref)}' is ${b.status}: start it first`);
  const db = s.databases[ref.database]!;
  const intervalMs = o.intervalMs ?? 50;
  const maxLockSeconds = o.maxLockSeconds ?? ctx.cfg.review.maxLockSeconds;

  const client = await ctx.pg.connect(target(ctx, b, db));
  let before: Array<TableInfo & { qname: string }>;
  try {
    await client.query("SET statement_timeout = '10s'");
    before = await tablesOf(client);
  } catch (e) {
    await client.end().catch(() => {});
    throw e;
  }
  const tracker = new LockTracker(intervalMs);
  const t0 = performance.now();
  const startedAt = new Date().toISOString();
  let stopping = false;
  let incomplete: string | null = null;

  const loop = (async () => {
    while (!stopping) {
      const t = performance.now();
      try {
        const r = await client.query<{ oid: string; mode: string }>(LOCKS_SQL);
        tracker.observe(
          Date.now(),
          r.rows.map((x) => ({ oid: Number(x.oid), mode: x.mode })),
        );
      } catch (e) {
        incomplete = `lock sampling stopped: ${describe(e)}`;
        return;
      }
      const wait = intervalMs - (performance.now() - t);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  })();

  let report: Promise<SafetyReport> | null = null;
  const finish = async (): Promise<SafetyReport> => {
    stopping = true;
    await loop;
    const durationMs = performance.now() - t0;
    const held = tracker.finish(Date.now());
    try {
      let after: Array<TableInfo & { qname: string }> = [];
      const rows = new Map<number, { rows: number | null; estimated: boolean }>();
      if (incomplete === null) {
        after = await tablesOf(client);
        const touched = new Set<number>([...held.keys()].map((k) => Number(k.split(':')[0])));
        const beforeBy = new Map(before.map((t) => [t.oid, t]));
        for (const t of after) if (beforeBy.get(t.oid)?.relfilenode !== t.relfilenode) touched.add(t.oid);
        const afterBy = new Map(after.map((t) => [t.oid, t]));
        await client.query("SET statement_timeout = '5s'; SET lock_timeout = '1s'");
        let counted = 0;
        for (const oid of touched) {
          const t = afterBy.get(oid);
          if (!t || !beforeBy.has(oid)) continue;
          rows.set(oid, await countRows(client, t, counted++ < MAX_COUNTED));
        }
      }
      return buildReport({
        before,
        after: incomplete === null ? after : before,
        held,
        rows,
        durationMs,
        maxLockSeconds,
        samples: tracker.samples,
        intervalMs,
        incomplete,
      });
    } finally {
      await client.end().catch(() => {});
    }
  };

  return {
    id: `watch-${randomBytes(6).toString('hex')}`,
    branch: refName(ref),
    startedAt,
    stop() {
      report ??= finish();
      return report;
    },
  };
}

/** Exactly with count(*) within the statement timeout, else the planner's estimate. */
async function countRows(
  c: pg.Client,
  t: { oid: number; qname: string },
  exact: boolean,
): Promise<{ rows: number | null; estimated: boolean }> {
  if (exact) {
    try {
      // qname is PostgreSQL's own quoting (format %I) of the catalog's names.
      const r = await c.query<{ n: string }>(`SELECT count(*)::bigint AS n FROM ${t.qname}`);
      return { rows: Number(r.rows[0]!.n), estimated: false };
    } catch {
      // too slow or locked: the estimate below
    }
  }
  try {
    const r = await c.query<{ n: string }>('SELECT reltuples::bigint AS n FROM pg_class WHERE oid = $1', [t.oid]);
    const n = Number(r.rows[0]?.n ?? -1);
    return { rows: n >= 0 ? n : null, estimated: true };
  } catch {
    return { rows: null, estimated: true };
  }
}

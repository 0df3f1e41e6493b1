/**
 * The migration safety report, as pure logic: what a migration did to tables that existed before
 * it, from samples of `pg_locks` (taken by migration-watch.ts on a separate connection) and the
 * tables' `relfilenode` before and after. Flagged: a lock that blocks writes held longer than
 * `maxLockSeconds` (on production those writes would wait that long), with the table rewrite said.
 */

/** PostgreSQL's table lock modes, weakest first, as `pg_locks.mode` names them. */
export const LOCK_MODES = [
  'AccessShareLock',
  'RowShareLock',
  'RowExclusiveLock',
  'ShareUpdateExclusiveLock',
  'ShareLock',
  'ShareRowExclusiveLock',
  'ExclusiveLock',
  'AccessExclusiveLock',
] as const;

/** What other sessions cannot do on the table while the lock is held (null: plain reads and writes go on). */
export function blocks(mode: string): 'reads and writes' | 'writes' | null {
  if (mode === 'AccessExclusiveLock') return 'reads and writes';
  if (mode === 'ExclusiveLock' || mode === 'ShareRowExclusiveLock' || mode === 'ShareLock') return 'writes';
  return null;
}

/** `AccessExclusiveLock` → `ACCESS EXCLUSIVE` (the name `LOCK TABLE` and the docs use). */
export function modeName(mode: string): string {
  return mode
    .replace(/Lock$/, '')
    .replace(/([a-z])([A-Z])/g, '$1 $2')
    .toUpperCase();
}

export interface TableInfo {
  oid: number;
  /** `schema.table`, quoted where needed */
  name: string;
  relfilenode: number;
}

export interface HeldLock {
  table: string;
  mode: string;
  /** The longest stretch it was seen held, in seconds (sampling granularity: one interval). */
  seconds: number;
  blocks: 'reads and writes' | 'writes' | null;
}

export interface SafetyReport {
  durationMs: number;
  /** The strongest lock on each table that existed before, held longest first. */
  locks: HeldLock[];
  /** Tables whose storage was rewritten (relfilenode changed): ALTER COLUMN TYPE, a volatile default, VACUUM FULL, TRUNCATE. */
  rewritten: string[];
  /** Tables that existed before and are gone. */
  dropped: string[];
  /** Row counts after the migration of every table it locked or rewrote (null: could not count in time). */
  rows: Array<{ table: string; rows: number | null; estimated: boolean }>;
  /** One line per problem: `ACCESS EXCLUSIVE on orders for 3.2 s (table rewrite): blocks reads and writes on production`. */
  flagged: string[];
  maxLockSeconds: number;
  samples: number;
  intervalMs: number;
  /** Set when sampling stopped early (the branch went away): the report covers less than the whole migration. */
  incomplete: string | null;
}

/** Continuous stretches of each (table, mode) lock across samples. */
export class LockTracker {
  private readonly open = new Map<string, number>(); // key → first seen
  private readonly longest = new Map<string, number>(); // key → ms
  private last: number | null = null;
  samples = 0;

  constructor(private readonly intervalMs: number) {}

  /** One sample at `at` ms: the granted relation locks of other sessions. */
  observe(at: number, locks: Array<{ oid: number; mode: string }>): void {
    this.samples++;
    const seen = new Set(locks.map((l) => `${l.oid}:${l.mode}`));
    for (const [key, since] of this.open) {
      if (!seen.has(key)) {
        this.close(key, since, this.last ?? at);
        this.open.delete(key);
      }
    }
    for (const key of seen) if (!this.open.has(key)) this.open.set(key, at);
    this.last = at;
  }

  /** Closes what is still open; every stretch counts one interval more than first-to-last seen. */
  finish(at: number): Map<string, number> {
    for (const [key, since] of this.open) this.close(key, since, this.last ?? at);
    this.open.clear();
    return this.longest;
  }

  private close(key: string, since: number, lastSeen: number) {
    const ms = lastSeen - since + this.intervalMs;
    this.longest.set(key, Math.max(this.longest.get(key) ?? 0, ms));
  }
}

export function buildReport(o: {
  before: TableInfo[];
  after: TableInfo[];
  held: Map<string, number>;
  rows: Map<number, { rows: number | null; estimated: boolean }>;
  durationMs: number;
  maxLockSeconds: number;
  samples: number;
  intervalMs: number;
  incomplete?: string | null;
}): SafetyReport {
  const byOid = new Map(o.before.map((t) => [t.oid, t]));
  const afterByOid = new Map(o.after.map((t) => [t.oid, t]));
  const rewritten = o.before.filter((t) => {
    const a = afterByOid.get(t.oid);
    return a !== undefined && a.relfilenode !== t.relfilenode && t.relfilenode !== 0;
  });
  const rewrittenOids = new Set(rewritten.map((t) => t.oid));
  const dropped = o.before.filter((t) => !afterByOid.has(t.oid)).map((t) => t.name);

  // The strongest mode per table (then the longest of it): one line per table.
  const strongest = new Map<number, { mode: string; ms: number }>();
  for (const [key, ms] of o.held) {
    const [oidText, mode] = key.split(':') as [string, string];
    const oid = Number(oidText);
    if (!byOid.has(oid)) continue; // a table the migration made: nobody else was using it
    const cur = strongest.get(oid);
    const rank = LOCK_MODES.indexOf(mode as (typeof LOCK_MODES)[number]);
    const curRank = cur ? LOCK_MODES.indexOf(cur.mode as (typeof LOCK_MODES)[number]) : -2;
    if (!cur || rank > curRank || (rank === curRank && ms > cur.ms)) strongest.set(oid, { mode, ms });
  }
  const locks: HeldLock[] = [...strongest]
    .map(([oid, l]) => ({
      table: byOid.get(oid)!.name,
      mode: l.mode,
      seconds: Math.round(l.ms / 100) / 10,
      blocks: blocks(l.mode),
    }))
    .sort((a, b) => b.seconds - a.seconds || a.table.localeCompare(b.table));

  const flagged = locks
    .filter((l) => l.blocks !== null && l.seconds > o.maxLockSeconds)
    .map((l) => {
      const oid = [...byOid.values()].find((t) => t.name === l.table)!.oid;
      const why = rewrittenOids.has(oid) ? ' (table rewrite)' : '';
      return `${modeName(l.mode)} on ${l.table} for ${l.seconds.toFixed(1)} s${why}: blocks ${l.blocks} on production`;
    });

  const touched = new Set([...strongest.keys(), ...rewrittenOids]);
  const rows = [...touched]
    .filter((oid) => afterByOid.has(oid))
    .map((oid) => ({ table: byOid.get(oid)!.name, ...(o.rows.get(oid) ?? { rows: null, estimated: false }) }))
    .sort((a, b) => a.table.localeCompare(b.table));

  return {
    durationMs: Math.round(o.durationMs),
    locks,
    rewritten: rewritten.map((t) => t.name).sort(),
    dropped: dropped.sort(),
    rows,
    flagged,
    maxLockSeconds: o.maxLockSeconds,
    samples: o.samples,
    intervalMs: o.intervalMs,
    incomplete: o.incomplete ?? null,
  };
}

/** Text for people: aligned tables and short units. output.ts writes it; nothing here writes. */
import type { BranchView, DatabaseView } from '../engine/view.js';
import type { SystemStatus } from '../engine/status.js';
import { plain, type Paint } from './colour.js';

/**
 * Aligned columns. `style(cell, row, column)` colours a cell after its width is measured (escape
 * codes take no room on a terminal), e.g. the heading and the status column.
 */
export function table(rows: string[][], style?: (cell: string, row: number, column: number) => string): string {
  if (rows.length === 0) return '';
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const cell = (c: string, row: number, i: number) => (style ? style(c, row, i) : c);
  return (
    rows
      .map((r, row) =>
        r.map((c, i) => cell(c, row, i) + (i === r.length - 1 ? '' : ' '.repeat(widths[i]! - c.length))).join('  '),
      )
      .join('\n') + '\n'
  );
}

/** A table with a heading row in bold and the column `status` coloured by status (-1: none). */
export const styled =
  (paint: Paint, status: number) =>
  (cell: string, row: number, column: number): string =>
    row === 0 ? paint.head(cell) : column === status ? paint.status(cell) : cell;

export function bytes(n: number | null): string {
  if (n === null || !Number.isFinite(n)) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 && i > 0 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** 90061000 -> '1d 1h'; two units at most, as people read a countdown. */
export function span(ms: number): string {
  const parts: string[] = [];
  let rest = Math.max(0, Math.round(ms / 1000));
  for (const [u, n] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    if (rest >= n || (u === 's' && parts.length === 0)) {
      parts.push(`${Math.floor(rest / n)}${u}`);
      rest %= n;
    }
    if (parts.length === 2) break;
  }
  return parts.join(' ');
}

/** 'in 6d 23h', 'overdue 5m' (housekeeping deletes it at its next pass), 'never (protected)', '-'. */
export function expiry(b: Pick<BranchView, 'expiresAt' | 'protected'>, now = Date.now()): string {
  if (b.protected) return 'never (protected)';
  if (b.expiresAt === null) return '-';
  const left = Date.parse(b.expiresAt) - now;
  return left > 0 ? `in ${span(left)}` : `overdue ${span(-left)}`;
}

/** 'stopped (idle)' for a branch the idle stop stopped: `bpg start` brings it back. */
const branchStatus = (b: BranchView) =>
  b.status === 'stopped' && b.stoppedBy === 'idle' ? 'stopped (idle)' : b.status;
/** `12 MiB of 20 GiB (FULL)`: a full quota is what PostgreSQL's "Disk quota exceeded" errors mean. */
const withQuota = (used: number | null, quota: number | null, full: boolean) =>
  `${bytes(used)}${quota !== null ? ` of ${bytes(quota)}` : ''}${full ? ' (FULL)' : ''}`;

export function branchTable(branches: BranchView[], paint: Paint = plain): string {
  if (branches.length === 0) return 'no branches\n';
  return table(
    [
      ['NAME', 'STATUS', 'PORT', 'PARENT', 'USED', 'EXPIRES', 'CREATED'],
      ...branches.map((b) => [
        b.name,
        branchStatus(b),
        String(b.port),
        b.parent ?? '-',
        bytes(b.usedBytes),
        expiry(b),
        b.createdAt,
      ]),
    ],
    styled(paint, 1),
  );
}

/**
 * How to connect: the router's host, port, `<db>@<branch>` and sslmode when the agent runs one,
 * plus the branch's own port for use on the box; else the branch's own port.
 */
function connectionRows(b: BranchView): string[][] {
  const c = b.connection;
  if (c.via !== 'router')
    return [
      ['host', c.host],
      ['port', String(b.port)],
      ['user', c.user],
      ['database', c.database],
      ['uri', c.uri],
    ];
  const d = c.direct;
  return [
    ['via', 'router'],
    ['host', c.host],
    ['port', String(c.port)],
    ['user', c.user],
    ['database', c.database],
    ['sslmode', c.sslmode ?? '-'],
    ['uri', c.uri],
    ['direct', `${d.host}:${d.port}, database ${d.database} (the branch's own port, for use on this box)`],
  ];
}

/** `on port 15433`, or with the router `on port 15433 (router: db.example.com:6432, database app@pr-1)`. */
export function where(b: BranchView): string {
  const c = b.connection;
  return c.via === 'router'
    ? `on port ${b.port} (router: ${c.host}:${c.port}, database ${c.database})`
    : `on port ${b.port}`;
}

export function branchDetail(b: BranchView, paint: Paint = plain): string {
  return table(
    [
      ['name', b.name],
      ['status', branchStatus(b)],
      ['parent', b.parent ?? '-'],
      ['consistency', b.consistency ?? '-'],
      ...connectionRows(b),
      ['dataset', b.dataset],
      ['container', b.container],
      ['image', b.image],
      ['used', withQuota(b.usedBytes, b.diskQuotaBytes, b.diskFull)],
      ['wal archive', withQuota(b.walBytes, b.walQuotaBytes, b.walFull)],
      ['created', b.createdAt],
      ['expires', b.expiresAt && !b.protected ? `${b.expiresAt} (${expiry(b)})` : expiry(b)],
      ['protected', b.protected ? 'yes' : 'no'],
      ['last active', b.lastActiveAt ?? '-'],
    ],
    (cell, row, column) => (row === 1 && column === 1 ? paint.status(cell) : cell),
  );
}

export function databaseTable(dbs: DatabaseView[], paint: Paint = plain): string {
  if (dbs.length === 0) return 'no databases\n';
  return table(
    [
      ['NAME', 'BRANCHES', 'IMAGE', 'CREATED'],
      ...dbs.map((d) => [d.name, String(d.branches.length), d.image, d.createdAt]),
    ],
    styled(paint, -1),
  );
}

const pct = (part: number, whole: number) => (whole > 0 ? `${Math.round((part / whole) * 1000) / 10}%` : '-');

/** `bpg status` for people: pool, counts, limits, then one row per branch. */
export function statusText(s: SystemStatus, paint: Paint = plain): string {
  const lines: string[] = [];
  const p = s.pool;
  lines.push(
    p
      ? `pool ${p.pool}: ${bytes(p.sizeBytes)}, ${bytes(p.allocatedBytes)} used (${p.usedPercent}%), ${bytes(p.freeBytes)} free`
      : `pool: not available`,
  );
  const d = s.datasetBase;
  if (d) {
    const quota = d.quotaBytes ? `, quota ${bytes(d.quotaBytes)} (${pct(d.usedBytes, d.quotaBytes)} used)` : '';
    lines.push(`datasets ${d.dataset}: ${bytes(d.usedBytes)} used, ${bytes(d.availableBytes)} available${quota}`);
    if (d.availableBytes < s.limits.minFreeBytes)
      lines.push(
        `  creates are refused: ${bytes(d.availableBytes)} available is below limits.minFreeBytes (${bytes(s.limits.minFreeBytes)})`,
      );
  }
  lines.push(`docker: ${s.docker.reachable ? 'reachable' : 'NOT reachable (branches show as missing)'}`);
  const by = Object.entries(s.counts.byStatus)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, n]) => `${n} ${k}`)
    .join(', ');
  lines.push(`databases: ${s.counts.databases}, branches: ${s.counts.branches}${by ? ` (${by})` : ''}`);
  const l = s.limits;
  lines.push(
    `limits: branches ${s.counts.branches}/${l.branchesTotal ?? 'unlimited'} in total, ${l.branchesPerDatabase ?? 'unlimited'} per database; ` +
      `memory up to ${l.maxMemory === null ? 'unlimited' : bytes(l.maxMemory)}, cpus up to ${l.maxCpus ?? 'unlimited'}; creates need ${bytes(l.minFreeBytes)} free`,
  );
  lines.push('');
  const rows = s.branches.length
    ? table(
        [
          ['NAME', 'STATUS', 'USED', 'WAL', 'EXPIRES', 'PORT'],
          ...s.branches.map((b) => [
            b.name,
            b.status,
            withQuota(b.usedBytes, b.diskQuotaBytes, b.diskFull),
            withQuota(b.walBytes, b.walQuotaBytes, b.walFull),
            b.expiresAt ?? (b.protected ? 'never (protected)' : 'never'),
            String(b.port),
          ]),
        ],
        styled(paint, 1),
      )
    : 'no branches\n';
  const full = s.branches.filter((b) => b.diskFull || b.walFull);
  for (const b of full) {
    lines.push(
      `${b.name}: ${b.diskFull ? 'its disk quota is used up (writes fail with "Disk quota exceeded")' : 'its WAL archive is full (archiving fails)'}`,
    );
  }
  return lines.join('\n') + '\n' + rows;
}

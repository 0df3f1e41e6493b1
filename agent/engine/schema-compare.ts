import { diffArrays } from 'diff';
import { printable } from '../names.js';
import {
  columnDefSql,
  compareKeys,
  SCHEMA_KINDS,
  type ColumnDef,
  type ModelObject,
  type SchemaKind,
  type SchemaModel,
} from './schema-model.js';

/**
 * The diff of two schema models (schema-model.ts): which objects a branch added, dropped or altered
 * compared with another branch, with short details of each change, and a normalised SQL diff. Pure:
 * the unit tier tests it on models made by hand. Its result is the JSON of
 * `GET .../schema-diff` and `bpg branch diff --json` (agent/api/schemas.ts mirrors it).
 */

export type ChangeKind = 'added' | 'dropped' | 'altered';

export interface SchemaChange {
  kind: SchemaKind;
  change: ChangeKind;
  /** Quoted as PostgreSQL quotes it; qualified with its schema, except a column's, constraint's or trigger's own name. */
  name: string;
  /** The table of a column, index, constraint or trigger (qualified), else null. */
  table: string | null;
  /**
   * Short notes on what changed in an altered object ("type: integer → bigint"); for an added or
   * dropped column, its definition ("bigint DEFAULT 0 NOT NULL"); otherwise empty.
   */
  details: string[];
  /** Columns only: the column before and after (null where it did not exist). */
  column: { before: ColumnDef | null; after: ColumnDef | null } | null;
}

export interface ChangeCounts {
  added: number;
  dropped: number;
  altered: number;
}

export interface SchemaDiff {
  /** `<db>/<branch>`: the branch whose schema is described. */
  branch: string;
  /** `<db>/<branch>` it is compared with (by default its parent). */
  against: string;
  /** No change at all (in what was read: see `truncated`). */
  identical: boolean;
  /** Per kind, every change counted (even those `changes` leaves out). */
  counts: Record<SchemaKind, ChangeCounts>;
  /** In kind order (SCHEMA_KINDS), then by name; a table's column changes follow the table. */
  changes: SchemaChange[];
  /** Changes not listed in `changes` (past its limit); they are counted and in `sql`. */
  changesOmitted: number;
  /**
   * The normalised SQL diff: for each added, dropped or altered object a `@@ <change> <kind> <name> @@`
   * line, then its SQL with `+` (in the branch), `-` (in the other) or ` ` before each line. Control
   * characters are escaped. Empty when identical.
   */
  sql: string;
  /** Something is left out: a kind past the read limits (`truncatedKinds`), changes past the list's limit, or the SQL past its own. */
  truncated: boolean;
  /** Kinds of which a branch has more objects than the agent reads; the diff covers them in name order up to where it stopped. */
  truncatedKinds: SchemaKind[];
}

export interface CompareLimits {
  /** Changes listed in `changes` (all are counted). */
  maxChanges: number;
  /** Characters of `sql`. */
  maxSqlChars: number;
  /** Characters of one object's part of `sql` (a longer one is cut, so that the objects after it are shown too). */
  maxObjectChars: number;
  /** Characters of one line of `sql`. */
  maxLineChars: number;
  /** Unchanged lines shown around a change inside an altered object. */
  context: number;
}

export const DEFAULT_COMPARE_LIMITS: CompareLimits = {
  maxChanges: 1000,
  maxSqlChars: 256 * 1024,
  maxObjectChars: 16 * 1024,
  maxLineChars: 1000,
  context: 3,
};

const keyId = (k: readonly string[]) => JSON.stringify(k);
const MAX_DETAIL_VALUE = 200;

const shortValue = (v: string | null) => {
  if (v === null) return 'none';
  return v.length > MAX_DETAIL_VALUE ? `${v.slice(0, MAX_DETAIL_VALUE)}…` : v;
};

/** The details of an altered object: each field that differs, and an enum's labels one by one. */
export function changeDetails(a: ModelObject, b: ModelObject): string[] {
  if (a.kind === 'enum') return enumDetails(JSON.parse(a.fields.labels!), JSON.parse(b.fields.labels!));
  const out: string[] = [];
  const fields = [...new Set([...Object.keys(a.fields), ...Object.keys(b.fields)])];
  for (const f of fields) {
    const x = a.fields[f] ?? null;
    const y = b.fields[f] ?? null;
    if (x === y) continue;
    if (a.long?.includes(f) || b.long?.includes(f)) out.push(`${f} changed`);
    else out.push(`${f}: ${shortValue(x)} → ${shortValue(y)}`);
  }
  return out;
}

function enumDetails(a: string[], b: string[]): string[] {
  const before = new Set(a);
  const after = new Set(b);
  const out = [
    ...b.filter((l) => !before.has(l)).map((l) => `value '${shortValue(l)}' added`),
    ...a.filter((l) => !after.has(l)).map((l) => `value '${shortValue(l)}' dropped`),
  ];
  const common = (xs: string[], other: Set<string>) => xs.filter((l) => other.has(l)).join('\u0000');
  if (common(a, after) !== common(b, before)) out.push('values reordered');
  return out;
}

/** Where comparing a kind stops: undefined when both sides were read whole, null when nothing can be compared. */
function cutoffOf(kind: SchemaKind, a: SchemaModel, b: SchemaModel): string[] | null | undefined {
  const cuts = [a.cut[kind], b.cut[kind]].filter((c) => c !== undefined);
  if (cuts.length === 0) return undefined;
  if (cuts.some((c) => c === null)) return null;
  return (cuts as string[][]).reduce((m, c) => (compareKeys(c, m) < 0 ? c : m));
}

interface Pair {
  change: ChangeKind;
  before: ModelObject | null;
  after: ModelObject | null;
}

/** Objects of one kind, matched by key; unchanged ones left out. Both lists are sorted by key. */
function pairs(before: ModelObject[], after: ModelObject[]): Pair[] {
  const out: Pair[] = [];
  const b = new Map(after.map((o) => [keyId(o.key), o]));
  const a = new Map(before.map((o) => [keyId(o.key), o]));
  const all = [...before, ...after.filter((o) => !a.has(keyId(o.key)))].sort((x, y) => compareKeys(x.key, y.key));
  for (const o of all) {
    const id = keyId(o.key);
    const x = a.get(id) ?? null;
    const y = b.get(id) ?? null;
    if (x && y) {
      if (x.digest !== y.digest) out.push({ change: 'altered', before: x, after: y });
    } else out.push({ change: x ? 'dropped' : 'added', before: x, after: y });
  }
  return out;
}

const emptyCounts = (): Record<SchemaKind, ChangeCounts> =>
  Object.fromEntries(SCHEMA_KINDS.map((k) => [k, { added: 0, dropped: 0, altered: 0 }])) as Record<
    SchemaKind,
    ChangeCounts
  >;

/**
 * What `branch` (the model `after`) changed compared with `against` (the model `before`): added
 * objects are in the branch only, dropped ones in the other only.
 */
export function compareSchemas(
  before: SchemaModel,
  after: SchemaModel,
  names: { branch: string; against: string },
  limits: CompareLimits = DEFAULT_COMPARE_LIMITS,
): SchemaDiff {
  const counts = emptyCounts();
  const truncatedKinds: SchemaKind[] = [];
  const perKind = new Map<SchemaKind, Pair[]>();

  for (const kind of SCHEMA_KINDS) {
    if (kind === 'column') continue;
    const cut = cutoffOf(kind, before, after);
    if (cut !== undefined) truncatedKinds.push(kind);
    const within = (o: ModelObject) => cut === undefined || (cut !== null && compareKeys(o.key, cut) <= 0);
    perKind.set(kind, pairs(before.objects[kind].filter(within), after.objects[kind].filter(within)));
  }

  // Columns of the tables both sides have (an added or dropped table brings or takes its columns).
  const alteredTables = new Set(
    perKind
      .get('table')!
      .filter((p) => p.change === 'altered')
      .map((p) => keyId(p.after!.key)),
  );
  const ofAlteredTable = (o: ModelObject) => alteredTables.has(keyId(o.key.slice(0, 2)));
  const columnPairs = pairs(before.objects.column.filter(ofAlteredTable), after.objects.column.filter(ofAlteredTable));
  const columnsOf = new Map<string, Pair[]>();
  for (const p of columnPairs) {
    const t = keyId((p.after ?? p.before)!.key.slice(0, 2));
    columnsOf.set(t, [...(columnsOf.get(t) ?? []), p]);
  }

  const ordered: Pair[] = [];
  for (const kind of SCHEMA_KINDS) {
    if (kind === 'column') continue;
    for (const p of perKind.get(kind)!) {
      ordered.push(p);
      if (kind === 'table' && p.change === 'altered') ordered.push(...(columnsOf.get(keyId(p.after!.key)) ?? []));
    }
  }

  const changes: SchemaChange[] = [];
  for (const p of ordered) {
    const o = (p.after ?? p.before)!;
    counts[o.kind][p.change]++;
    if (changes.length >= limits.maxChanges) continue;
    changes.push(toChange(p, columnsOf.get(keyId(o.key)) ?? []));
  }
  const changesOmitted = ordered.length - changes.length;

  const { text: sql, cut: sqlCut } = sqlDiff(
    ordered.filter((p) => p.after?.kind !== 'column' && p.before?.kind !== 'column'),
    names,
    limits,
  );
  return {
    branch: names.branch,
    against: names.against,
    identical: ordered.length === 0,
    counts,
    changes,
    changesOmitted,
    sql,
    truncated: truncatedKinds.length > 0 || changesOmitted > 0 || sqlCut,
    truncatedKinds,
  };
}

function toChange(p: Pair, columns: Pair[]): SchemaChange {
  const o = (p.after ?? p.before)!;
  let details: string[] = [];
  if (p.change === 'altered') {
    details = changeDetails(p.before!, p.after!);
    if (o.kind === 'table' && columns.length > 0) {
      const n = (c: ChangeKind) => columns.filter((x) => x.change === c).length;
      const parts = (['added', 'dropped', 'altered'] as const).filter((c) => n(c) > 0).map((c) => `${n(c)} ${c}`);
      details.push(`columns: ${parts.join(', ')}`);
    }
  }
  const def = (x: ModelObject | null): ColumnDef | null =>
    x === null
      ? null
      : {
          type: x.fields.type!,
          default: x.fields.default ?? null,
          nullable: x.fields['not null'] !== 'yes',
          identity: (x.fields.identity ?? null) as ColumnDef['identity'],
          generated: x.fields.generated ?? null,
          collation: x.fields.collation ?? null,
        };
  const column = o.kind === 'column' ? { before: def(p.before), after: def(p.after) } : null;
  if (column && p.change !== 'altered') details = [columnDefSql((column.after ?? column.before)!)];
  return { kind: o.kind, change: p.change, name: o.name, table: o.table, details, column };
}

/** A name inside a one-line header: no newline nor any other control character. */
const headerText = (s: string) => printable(s).replace(/\n/g, '\\u000a').replace(/\t/g, '\\u0009');
const withoutComma = (l: string) => l.replace(/,$/, '');

/** The lines of one altered object: unchanged lines near a change kept, longer runs folded. */
function alteredLines(a: string, b: string, context: number): string[] {
  const x = a.split('\n');
  const y = b.split('\n');
  // A trailing comma comes and goes with the next column: not a change of the line.
  const parts = diffArrays(x, y, { comparator: (l, r) => withoutComma(l) === withoutComma(r), maxEditLength: 2000 });
  const lines: Array<{ p: ' ' | '-' | '+'; l: string }> = [];
  if (parts === undefined) {
    lines.push(...x.map((l) => ({ p: '-' as const, l })), ...y.map((l) => ({ p: '+' as const, l })));
  } else {
    for (const part of parts) {
      const p = part.added ? '+' : part.removed ? '-' : ' ';
      for (const l of part.value) lines.push({ p, l });
    }
  }
  const near = lines.map(() => false);
  lines.forEach((line, i) => {
    if (line.p === ' ') return;
    for (let j = Math.max(0, i - context); j <= Math.min(lines.length - 1, i + context); j++) near[j] = true;
  });
  const out: string[] = [];
  let skipped = 0;
  lines.forEach((line, i) => {
    if (!near[i]) {
      skipped++;
      return;
    }
    if (skipped > 0) out.push(` -- (${skipped} unchanged line${skipped === 1 ? '' : 's'})`);
    skipped = 0;
    out.push(line.p + line.l);
  });
  if (skipped > 0) out.push(` -- (${skipped} unchanged line${skipped === 1 ? '' : 's'})`);
  return out;
}

/** Cut at `max` characters, not inside a surrogate pair. */
function cutAt(s: string, max: number): string {
  const end = /[\udc00-\udfff]/.test(s[max] ?? '') ? max - 1 : max;
  return s.slice(0, end);
}

/** One object's lines within the per-line and per-object limits. */
function fitted(lines: string[], limits: CompareLimits): string[] {
  const out: string[] = [];
  let size = 0;
  for (let i = 0; i < lines.length; i++) {
    let l = lines[i]!;
    if (l.length > limits.maxLineChars)
      l = `${cutAt(l, limits.maxLineChars)}… (${l.length - limits.maxLineChars} more characters)`;
    if (i > 0 && size + l.length + 1 > limits.maxObjectChars) {
      out.push(` -- (${lines.length - i} more line${lines.length - i === 1 ? '' : 's'} not shown)`);
      break;
    }
    out.push(l);
    size += l.length + 1;
  }
  return out;
}

function sqlDiff(
  ordered: Pair[],
  names: { branch: string; against: string },
  limits: CompareLimits,
): { text: string; cut: boolean } {
  if (ordered.length === 0) return { text: '', cut: false };
  const out: string[] = [`--- ${headerText(names.against)}`, `+++ ${headerText(names.branch)}`];
  let size = out[0]!.length + out[1]!.length + 2;
  for (let i = 0; i < ordered.length; i++) {
    const p = ordered[i]!;
    const o = (p.after ?? p.before)!;
    const where = o.table !== null && o.kind !== 'index' ? ` on ${o.table}` : '';
    const lines = [`@@ ${p.change} ${o.kind} ${headerText(o.name)}${headerText(where)} @@`];
    if (p.change === 'added') lines.push(...p.after!.sql.split('\n').map((l) => `+${l}`));
    else if (p.change === 'dropped') lines.push(...p.before!.sql.split('\n').map((l) => `-${l}`));
    else lines.push(...alteredLines(p.before!.sql, p.after!.sql, limits.context));
    const block = printable(fitted(lines, limits).join('\n'));
    if (size + block.length + 1 > limits.maxSqlChars) {
      out.push(`@@ truncated: ${ordered.length - i} more object${ordered.length - i === 1 ? '' : 's'} not shown @@`);
      return { text: out.join('\n') + '\n', cut: true };
    }
    out.push(block);
    size += block.length + 1;
  }
  return { text: out.join('\n') + '\n', cut: false };
}

import type pg from 'pg';
import type { BoundedText, CatalogColumn, CatalogSnapshot, CatalogTable, SchemaKind } from './schema-model.js';

/**
 * Reads a branch's schema from its catalogs (pg_catalog queries, definitions from the server's own
 * pg_get_*def functions), for schema-model.ts. Nothing is parsed out of a process's output.
 *
 * The branch's SQL is the pull request's: names may hold anything, and it may have made 100k tables
 * or a view a megabyte long. So every query is bounded: at most `maxObjects` objects and
 * `maxBytesPerKind` bytes per kind, read in name order ("C" collation), and where it stops the kind
 * is marked cut at the last key read (the diff compares up to there and says "truncated"); each
 * definition is cut at `maxText` characters with the md5 of the whole kept for comparing. Only user
 * schemas are read (not pg_catalog, information_schema, pg_toast, pg_temp), and no object that
 * belongs to an extension (the extension itself is listed).
 */

export interface CatalogLimits {
  /** Objects read per kind. */
  maxObjects: number;
  /** Bytes read per kind (the rows as text), so a few huge objects cannot fill memory either. */
  maxBytesPerKind: number;
  /** Columns read in all (they also count against maxBytesPerKind). */
  maxColumns: number;
  /** Characters of one definition (longer ones are cut, their md5 kept). */
  maxText: number;
  /** Labels read per enum. */
  maxEnumLabels: number;
  /** statement_timeout of each query, ms. */
  statementTimeoutMs: number;
}

export const CATALOG_LIMITS: CatalogLimits = {
  maxObjects: 5000,
  maxBytesPerKind: 4 * 1024 * 1024,
  maxColumns: 50_000,
  maxText: 16_384,
  maxEnumLabels: 1000,
  statementTimeoutMs: 30_000,
};

/** The oldest server whose catalogs these queries know (attgenerated came in 12). */
export const MIN_SERVER_VERSION = 120000;

const userSchema = (n: string) => `${n}.nspname <> 'information_schema' AND left(${n}.nspname, 3) <> 'pg_'`;
const notInExtension = (catalog: string, oid: string) =>
  `NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.${catalog}'::pg_catalog.regclass ` +
  `AND e.objid = ${oid} AND e.deptype = 'e')`;
const qualified = (n: string, c: string, col = 'relname') =>
  `pg_catalog.quote_ident(${n}.nspname) || '.' || pg_catalog.quote_ident(${c}.${col})`;
/** `x.d` (a definition computed once in a LATERAL) cut at the limit, with the md5 of the whole when cut. */
const boundedDef = (max: number, as = 'def') =>
  `pg_catalog.left(x.d, ${max}) AS ${as}, CASE WHEN pg_catalog.length(x.d) > ${max} THEN pg_catalog.md5(x.d) END AS ${as}_md5`;

/**
 * One kind's query, bounded: rows in key order, at most $1 of them and $2 bytes (counted as the
 * rows' text), with the number there is in all (`total_`) to tell whether it stopped early.
 */
function bounded(inner: string, order: string[]): string {
  const by = order.map((k) => (k.startsWith('#') ? `q.${k.slice(1)}` : `q.${k} COLLATE "C"`)).join(', ');
  return `SELECT * FROM (
    SELECT q.*, pg_catalog.row_number() OVER w AS rn_,
      pg_catalog.sum(pg_catalog.octet_length(q::text)) OVER w AS bytes_, pg_catalog.count(*) OVER () AS total_
    FROM (${inner}) q
    WINDOW w AS (ORDER BY ${by} ROWS UNBOUNDED PRECEDING)
  ) b WHERE b.rn_ <= $1 AND b.bytes_ <= $2 ORDER BY b.rn_`;
}

// ---------------------------------------------------------------- the queries, one per kind

const SCHEMAS = bounded(
  `SELECT n.nspname::text AS nsp, pg_catalog.quote_ident(n.nspname) AS q
   FROM pg_catalog.pg_namespace n
   WHERE ${userSchema('n')} AND ${notInExtension('pg_namespace', 'n.oid')}`,
  ['nsp'],
);

const EXTENSIONS = bounded(
  `SELECT x.extname::text AS name, pg_catalog.quote_ident(x.extname) AS q,
     pg_catalog.quote_ident(n.nspname) AS qschema, pg_catalog.left(x.extversion, 256) AS version
   FROM pg_catalog.pg_extension x JOIN pg_catalog.pg_namespace n ON n.oid = x.extnamespace`,
  ['name'],
);

const TABLES = bounded(
  `SELECT c.oid::text AS oid, n.nspname::text AS nsp, c.relname::text AS name, ${qualified('n', 'c')} AS q,
     c.relkind::text AS kind, c.relpersistence = 'u' AS unlogged,
     CASE WHEN c.relkind = 'p' THEN pg_catalog.left(pg_catalog.pg_get_partkeydef(c.oid), 2048) END AS partkey,
     CASE WHEN c.relispartition THEN (
       SELECT ${qualified('pn', 'pc')} FROM pg_catalog.pg_inherits i
       JOIN pg_catalog.pg_class pc ON pc.oid = i.inhparent JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
       WHERE i.inhrelid = c.oid LIMIT 1) END AS parent,
     CASE WHEN c.relispartition THEN pg_catalog.left(pg_catalog.pg_get_expr(c.relpartbound, c.oid), 2048) END AS bound,
     pg_catalog.left(pg_catalog.array_to_string(c.reloptions, ', '), 2048) AS options,
     c.relrowsecurity AS rls, c.relforcerowsecurity AS force_rls
   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p', 'f') AND ${userSchema('n')} AND ${notInExtension('pg_class', 'c.oid')}`,
  ['nsp', 'name'],
);

const COLUMNS = bounded(
  `SELECT n.nspname::text AS nsp, c.relname::text AS tbl, a.attnum::int AS pos, a.attname::text AS name,
     pg_catalog.quote_ident(a.attname) AS q,
     pg_catalog.left(pg_catalog.format_type(a.atttypid, a.atttypmod), 1024) AS type,
     CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN (
       SELECT ${qualified('cn', 'co', 'collname')} FROM pg_catalog.pg_collation co
       JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) END AS collation,
     ${boundedDef(2048, 'expr')},
     a.attnotnull AS notnull, a.attidentity::text AS identity, a.attgenerated::text AS generated
   FROM pg_catalog.pg_attribute a
   JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
   LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
   CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) AS d) x
   WHERE a.attrelid = ANY ($3::pg_catalog.oid[]) AND a.attnum > 0 AND NOT a.attisdropped`,
  ['nsp', 'tbl', '#pos'],
);

const indexes = (max: number) =>
  bounded(
    `SELECT n.nspname::text AS nsp, ic.relname::text AS name, ${qualified('n', 'ic')} AS q,
       ${qualified('tn', 'tc')} AS qtable, ${boundedDef(max)}, i.indisvalid AS valid
     FROM pg_catalog.pg_index i
     JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
     JOIN pg_catalog.pg_class tc ON tc.oid = i.indrelid JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace
     CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_indexdef(i.indexrelid) AS d) x
     WHERE ${userSchema('n')} AND ${notInExtension('pg_class', 'tc.oid')} AND ${notInExtension('pg_class', 'ic.oid')}
       -- an index that backs a constraint is the constraint's (listed as a constraint)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                       WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x'))
       -- a partition's copy of its parent's index is the parent's
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.indexrelid)`,
    ['nsp', 'name'],
  );

const constraints = (max: number) =>
  bounded(
    `SELECT n.nspname::text AS nsp, c.relname::text AS tbl, k.conname::text AS name,
       pg_catalog.quote_ident(k.conname) AS q, ${qualified('n', 'c')} AS qtable, ${boundedDef(max)}
     FROM pg_catalog.pg_constraint k
     JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_constraintdef(k.oid) AS d) x
     WHERE k.contype IN ('c', 'f', 'p', 'u', 'x') AND k.conparentid = 0 AND k.conislocal
       AND ${userSchema('n')} AND ${notInExtension('pg_class', 'c.oid')}`,
    ['nsp', 'tbl', 'name'],
  );

const views = (max: number) =>
  bounded(
    `SELECT n.nspname::text AS nsp, c.relname::text AS name, ${qualified('n', 'c')} AS q,
       c.relkind = 'm' AS materialized, pg_catalog.left(pg_catalog.array_to_string(c.reloptions, ', '), 2048) AS options,
       ${boundedDef(max)}
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_viewdef(c.oid, true) AS d) x
     WHERE c.relkind IN ('v', 'm') AND ${userSchema('n')} AND ${notInExtension('pg_class', 'c.oid')}`,
    ['nsp', 'name'],
  );

const functions = (max: number) =>
  bounded(
    `SELECT n.nspname::text AS nsp, p.proname::text AS name,
       pg_catalog.left(pg_catalog.pg_get_function_identity_arguments(p.oid), 2048) AS args,
       ${qualified('n', 'p', 'proname')} AS q, ${boundedDef(max)}
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     CROSS JOIN LATERAL (SELECT CASE WHEN p.prokind = 'a' THEN (
         SELECT 'CREATE AGGREGATE ' || ${qualified('n', 'p', 'proname')}
           || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ') (SFUNC = ' || a.aggtransfn::pg_catalog.regproc::text
           || ', STYPE = ' || pg_catalog.format_type(a.aggtranstype, NULL)
           || CASE WHEN a.aggfinalfn::pg_catalog.oid <> 0 THEN ', FINALFUNC = ' || a.aggfinalfn::pg_catalog.regproc::text ELSE '' END
           || CASE WHEN a.agginitval IS NOT NULL THEN ', INITCOND = ' || pg_catalog.quote_literal(a.agginitval) ELSE '' END
           || ')'
         FROM pg_catalog.pg_aggregate a WHERE a.aggfnoid = p.oid)
       ELSE pg_catalog.pg_get_functiondef(p.oid) END AS d) x
     WHERE ${userSchema('n')} AND ${notInExtension('pg_proc', 'p.oid')}
       -- a range type's constructors come with the type
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend i
                       WHERE i.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND i.objid = p.oid AND i.deptype = 'i')`,
    ['nsp', 'name', 'args'],
  );

const types = (max: number) =>
  bounded(
    `SELECT n.nspname::text AS nsp, t.typname::text AS name, ${qualified('n', 't', 'typname')} AS q,
       t.typtype::text AS kind, ${boundedDef(max, 'body')}
     FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
     CROSS JOIN LATERAL (SELECT CASE t.typtype
       WHEN 'c' THEN (
         SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname) || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
         FROM pg_catalog.pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped)
       WHEN 'd' THEN pg_catalog.format_type(t.typbasetype, t.typtypmod)
         || CASE WHEN t.typdefault IS NOT NULL THEN ' DEFAULT ' || t.typdefault ELSE '' END
         || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END
         || coalesce((SELECT pg_catalog.string_agg(' CONSTRAINT ' || pg_catalog.quote_ident(k.conname) || ' ' || pg_catalog.pg_get_constraintdef(k.oid), '' ORDER BY k.conname::text COLLATE "C")
                      FROM pg_catalog.pg_constraint k WHERE k.contypid = t.oid AND k.contype = 'c'), '')
       WHEN 'r' THEN (SELECT 'SUBTYPE = ' || pg_catalog.format_type(r.rngsubtype, NULL) FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid)
       ELSE 'INPUT = ' || t.typinput::text || ', OUTPUT = ' || t.typoutput::text END AS d) x
     WHERE t.typtype IN ('b', 'c', 'd', 'r') AND ${userSchema('n')} AND ${notInExtension('pg_type', 't.oid')}
       -- a table's row type is the table's; an array type comes with its element type
       AND (t.typtype <> 'c' OR EXISTS (SELECT 1 FROM pg_catalog.pg_class r WHERE r.oid = t.typrelid AND r.relkind = 'c'))
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e WHERE e.typarray = t.oid)`,
    ['nsp', 'name'],
  );

const enums = (maxLabels: number) =>
  bounded(
    `SELECT n.nspname::text AS nsp, t.typname::text AS name, ${qualified('n', 't', 'typname')} AS q,
       ARRAY(SELECT l.enumlabel::text FROM pg_catalog.pg_enum l WHERE l.enumtypid = t.oid
             ORDER BY l.enumsortorder LIMIT ${maxLabels + 1}) AS labels
     FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
     WHERE t.typtype = 'e' AND ${userSchema('n')} AND ${notInExtension('pg_type', 't.oid')}`,
    ['nsp', 'name'],
  );

const SEQUENCES = bounded(
  `SELECT n.nspname::text AS nsp, c.relname::text AS name, ${qualified('n', 'c')} AS q,
     pg_catalog.format_type(s.seqtypid, NULL) AS type, s.seqstart::text AS seq_start,
     s.seqincrement::text AS seq_increment, s.seqmin::text AS seq_min, s.seqmax::text AS seq_max,
     s.seqcache::text AS seq_cache, s.seqcycle AS seq_cycle,
     (SELECT ${qualified('tn', 'tc')} || '.' || pg_catalog.quote_ident(a.attname)
      FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_class tc ON tc.oid = d.refobjid JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace
      JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
      WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
        AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype = 'a' LIMIT 1) AS owned_by
   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid
   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind = 'S' AND ${userSchema('n')} AND ${notInExtension('pg_class', 'c.oid')}
     -- an identity column's sequence is the column's (shown as GENERATED ... AS IDENTITY)
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'i')`,
  ['nsp', 'name'],
);

const triggers = (max: number, version: number) =>
  bounded(
    `SELECT n.nspname::text AS nsp, c.relname::text AS tbl, t.tgname::text AS name,
       pg_catalog.quote_ident(t.tgname) AS q, ${qualified('n', 'c')} AS qtable, ${boundedDef(max)},
       t.tgenabled::text AS enabled
     FROM pg_catalog.pg_trigger t
     JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_triggerdef(t.oid) AS d) x
     WHERE NOT t.tgisinternal ${version >= 130000 ? 'AND t.tgparentid = 0' : ''}
       AND ${userSchema('n')} AND ${notInExtension('pg_class', 'c.oid')}`,
    ['nsp', 'tbl', 'name'],
  );

// ---------------------------------------------------------------- reading

type Row = Record<string, any>;

const text = (r: Row, col = 'def'): BoundedText => ({ text: String(r[col] ?? ''), md5: r[`${col}_md5`] ?? null });

/**
 * Reads one branch's schema on `c` (a session of the agent's: search_path=pg_catalog), in one
 * read-only repeatable-read transaction, so every query sees the same moment.
 */
export async function readCatalog(c: pg.Client, limits: CatalogLimits = CATALOG_LIMITS): Promise<CatalogSnapshot> {
  const version = Number(
    (await c.query<{ v: string }>("SELECT pg_catalog.current_setting('server_version_num') AS v")).rows[0]?.v,
  );
  if (!(version >= MIN_SERVER_VERSION))
    throw new Error(`a schema diff needs PostgreSQL 12 or newer (server: ${version})`);
  const cut: CatalogSnapshot['cut'] = {};
  const read = async (kind: SchemaKind, sql: string, key: (r: Row) => string[], params: unknown[] = []) => {
    const rows = (await c.query<Row>(sql, [limits.maxObjects, limits.maxBytesPerKind, ...params])).rows;
    const total = rows.length === 0 ? 0 : Number(rows[0]!.total_);
    if (rows.length < total) cut[kind] = rows.length === 0 ? null : key(rows[rows.length - 1]!);
    return rows;
  };
  const byName = (r: Row) => [String(r.nsp), String(r.name)];
  const byTable = (r: Row) => [String(r.nsp), String(r.tbl), String(r.name)];

  await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    await c.query(`SET LOCAL statement_timeout = ${Math.round(limits.statementTimeoutMs)}`);
    await c.query('SET LOCAL lock_timeout = 10000');
    await c.query('SET LOCAL search_path = pg_catalog');

    const schemas = (await read('schema', SCHEMAS, (r) => [String(r.nsp)])).map((r) => ({
      name: String(r.nsp),
      q: String(r.q),
    }));
    const extensions = (await read('extension', EXTENSIONS, (r) => [String(r.name)])).map((r) => ({
      name: String(r.name),
      q: String(r.q),
      schema: String(r.qschema),
      version: String(r.version),
    }));
    const tables = await readTables(c, limits, cut, read);
    const indexRows = await read('index', indexes(limits.maxText), byName);
    const constraintRows = await read('constraint', constraints(limits.maxText), byTable);
    const viewRows = await read('view', views(limits.maxText), byName);
    const functionRows = await read('function', functions(limits.maxText), (r) => [
      String(r.nsp),
      String(r.name),
      String(r.args),
    ]);
    const typeRows = await read('type', types(limits.maxText), byName);
    const enumRows = await read('enum', enums(limits.maxEnumLabels), byName);
    const sequenceRows = await read('sequence', SEQUENCES, byName);
    const triggerRows = await read('trigger', triggers(limits.maxText, version), byTable);

    return {
      schemas,
      extensions,
      tables,
      indexes: indexRows.map((r) => ({
        schema: String(r.nsp),
        name: String(r.name),
        q: String(r.q),
        table: String(r.qtable),
        def: text(r),
        valid: r.valid === true,
      })),
      constraints: constraintRows.map((r) => ({
        schema: String(r.nsp),
        table: String(r.tbl),
        name: String(r.name),
        q: String(r.q),
        qtable: String(r.qtable),
        def: text(r),
      })),
      views: viewRows.map((r) => ({
        schema: String(r.nsp),
        name: String(r.name),
        q: String(r.q),
        materialized: r.materialized === true,
        options: r.options || null,
        def: text(r),
      })),
      functions: functionRows.map((r) => ({
        schema: String(r.nsp),
        name: String(r.name),
        args: String(r.args),
        q: String(r.q),
        def: text(r),
      })),
      types: typeRows.map((r) => ({
        schema: String(r.nsp),
        name: String(r.name),
        q: String(r.q),
        kind: String(r.kind),
        body: text(r, 'body'),
      })),
      enums: enumRows.map((r) => {
        const labels = (r.labels as unknown[]).map(String);
        return {
          schema: String(r.nsp),
          name: String(r.name),
          q: String(r.q),
          labels: labels.slice(0, limits.maxEnumLabels),
          cut: labels.length > limits.maxEnumLabels,
        };
      }),
      sequences: sequenceRows.map((r) => ({
        schema: String(r.nsp),
        name: String(r.name),
        q: String(r.q),
        type: String(r.type),
        start: String(r.seq_start),
        increment: String(r.seq_increment),
        min: String(r.seq_min),
        max: String(r.seq_max),
        cache: String(r.seq_cache),
        cycle: r.seq_cycle === true,
        ownedBy: r.owned_by ?? null,
      })),
      triggers: triggerRows.map((r) => ({
        schema: String(r.nsp),
        table: String(r.tbl),
        name: String(r.name),
        q: String(r.q),
        qtable: String(r.qtable),
        def: text(r),
        enabled: String(r.enabled),
      })),
      cut,
    };
  } finally {
    await c.query('ROLLBACK').catch(() => {});
  }
}

/**
 * Tables with their columns. The columns are read for the tables read, in the same order, within
 * their own bound: when it stops inside a table, that table and those after it are left out, and
 * the tables are marked cut at the last whole one.
 */
async function readTables(
  c: pg.Client,
  limits: CatalogLimits,
  cut: CatalogSnapshot['cut'],
  read: (kind: SchemaKind, sql: string, key: (r: Row) => string[], params?: unknown[]) => Promise<Row[]>,
): Promise<CatalogTable[]> {
  const rows = await read('table', TABLES, (r) => [String(r.nsp), String(r.name)]);
  if (rows.length === 0) return [];
  const columnRows = (
    await c.query<Row>(COLUMNS, [limits.maxColumns, limits.maxBytesPerKind, rows.map((r) => String(r.oid))])
  ).rows;
  const id = (nsp: unknown, name: unknown) => JSON.stringify([String(nsp), String(name)]);
  const columns = new Map<string, CatalogColumn[]>();
  let tables = rows;
  const columnsCut = columnRows.length > 0 && columnRows.length < Number(columnRows[0]!.total_);
  if (columnsCut) {
    const last = columnRows[columnRows.length - 1]!;
    const partial = id(last.nsp, last.tbl);
    const at = rows.findIndex((r) => id(r.nsp, r.name) === partial);
    tables = rows.slice(0, Math.max(0, at));
    cut.table = tables.length === 0 ? null : [String(tables.at(-1)!.nsp), String(tables.at(-1)!.name)];
  }
  for (const r of columnRows) {
    const k = id(r.nsp, r.tbl);
    if (!columns.has(k)) columns.set(k, []);
    columns.get(k)!.push({
      name: String(r.name),
      q: String(r.q),
      type: String(r.type),
      collation: r.collation ?? null,
      expr: r.expr === null || r.expr === undefined ? null : text(r, 'expr'),
      notNull: r.notnull === true,
      identity: String(r.identity ?? ''),
      generated: String(r.generated ?? ''),
    });
  }
  return tables.map((r) => ({
    schema: String(r.nsp),
    name: String(r.name),
    q: String(r.q),
    kind: String(r.kind),
    unlogged: r.unlogged === true,
    partitionKey: r.partkey ?? null,
    parent: r.parent ?? null,
    bound: r.bound ?? null,
    options: r.options || null,
    rls: r.rls === true,
    forceRls: r.force_rls === true,
    columns: columns.get(id(r.nsp, r.name)) ?? [],
  }));
}

/**
 * The canonical model of a branch's schema: what schema-catalog.ts reads from the catalogs, turned
 * into one sorted list of objects per kind, each with the SQL that defines it. Pure (no I/O): the
 * diff (schema-compare.ts) and the SQL text are both derived from it, and the unit tier tests it.
 *
 * Canonical means: objects sorted by their names in byte order (PostgreSQL's "C" collation, which
 * the catalog queries sort by too), no OIDs, no comments, no owners or grants, definitions as the
 * server's own pg_get_*def functions print them with search_path=pg_catalog (so every name is
 * schema-qualified and quoted the one way PostgreSQL quotes it).
 */

/** Every kind of object the diff knows, in the order the diff lists them. */
export const SCHEMA_KINDS = [
  'schema',
  'extension',
  'type',
  'enum',
  'sequence',
  'table',
  'column',
  'constraint',
  'index',
  'view',
  'function',
  'trigger',
] as const;
export type SchemaKind = (typeof SCHEMA_KINDS)[number];

// ------------------------------------------------------------------ what the catalog reader returns

/** A definition read with a bound: `text` is at most the cap; `md5` (of the whole) is set when it was cut. */
export interface BoundedText {
  text: string;
  md5: string | null;
}

export interface CatalogColumn {
  name: string;
  /** quote_ident(name) */
  q: string;
  type: string;
  /** Only when it differs from the type's default collation. */
  collation: string | null;
  /** The default, or the generation expression of a generated column. */
  expr: BoundedText | null;
  notNull: boolean;
  /** pg_attribute.attidentity: '' | 'a' (always) | 'd' (by default) */
  identity: string;
  /** pg_attribute.attgenerated: '' | 's' (stored) */
  generated: string;
}

export interface CatalogTable {
  schema: string;
  name: string;
  /** The qualified, quoted name: quote_ident(schema) || '.' || quote_ident(name) */
  q: string;
  /** pg_class.relkind: r (table), p (partitioned), f (foreign) */
  kind: string;
  unlogged: boolean;
  partitionKey: string | null;
  /** A partition: its parent (qualified, quoted) and bound. */
  parent: string | null;
  bound: string | null;
  /** reloptions, joined */
  options: string | null;
  rls: boolean;
  forceRls: boolean;
  /** In attnum order. */
  columns: CatalogColumn[];
}

export interface CatalogSnapshot {
  schemas: Array<{ name: string; q: string }>;
  extensions: Array<{ name: string; q: string; schema: string; version: string }>;
  tables: CatalogTable[];
  indexes: Array<{ schema: string; name: string; q: string; table: string; def: BoundedText; valid: boolean }>;
  constraints: Array<{
    schema: string;
    table: string;
    name: string;
    q: string;
    /** The table, qualified and quoted. */
    qtable: string;
    def: BoundedText;
  }>;
  views: Array<{
    schema: string;
    name: string;
    q: string;
    materialized: boolean;
    options: string | null;
    def: BoundedText;
  }>;
  /** `def` is pg_get_functiondef's (an aggregate's is made by the reader). `args`: identity arguments. */
  functions: Array<{ schema: string; name: string; args: string; q: string; def: BoundedText }>;
  /** Composite (c), domain (d), range (r) and base (b) types; `body` is what follows the name. */
  types: Array<{ schema: string; name: string; q: string; kind: string; body: BoundedText }>;
  /** `cut`: more labels than were read. */
  enums: Array<{ schema: string; name: string; q: string; labels: string[]; cut: boolean }>;
  sequences: Array<{
    schema: string;
    name: string;
    q: string;
    type: string;
    start: string;
    increment: string;
    min: string;
    max: string;
    cache: string;
    cycle: boolean;
    /** `schema.table.column` (quoted) of an OWNED BY, else null. */
    ownedBy: string | null;
  }>;
  triggers: Array<{
    schema: string;
    table: string;
    name: string;
    q: string;
    qtable: string;
    def: BoundedText;
    enabled: string;
  }>;
  /**
   * Kinds of which the branch has more objects than were read: the key of the last object read
   * (null: none was). Objects are read in key order, so everything up to that key is complete.
   */
  cut: Partial<Record<SchemaKind, string[] | null>>;
}

// ------------------------------------------------------------------ the model

export interface ModelObject {
  kind: SchemaKind;
  /** Identity and order: the raw names (schema, [table,] name[, arguments]). */
  key: string[];
  /** How people see it: qualified and quoted (`public.orders`, `public.f(integer)`); a column's, constraint's or trigger's own name. */
  name: string;
  /** The table of a column, index, constraint or trigger (qualified, quoted). */
  table: string | null;
  /** The canonical SQL that makes it. */
  sql: string;
  /** What is compared field by field for the details of a change; `sql` decides whether it changed at all. */
  fields: Record<string, string | null>;
  /** Fields too long to print in a detail line ("definition changed"). */
  long?: readonly string[];
  /** Equal objects have equal digests: the SQL, plus the md5 of any text cut at the read bound. */
  digest: string;
}

export interface SchemaModel {
  /** Per kind, sorted by key in byte order. */
  objects: Record<SchemaKind, ModelObject[]>;
  /** As CatalogSnapshot.cut; columns follow their tables. */
  cut: Partial<Record<SchemaKind, string[] | null>>;
}

/** PostgreSQL's "C" collation: UTF-8 bytes, compared as unsigned. The catalog queries sort the same way. */
export function compareText(a: string, b: string): number {
  if (a === b) return 0;
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export function compareKeys(a: readonly string[], b: readonly string[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const c = compareText(a[i]!, b[i]!);
    if (c !== 0) return c;
  }
  return a.length - b.length;
}

const lit = (s: string) => `'${s.replace(/'/g, "''")}'`;
const cutMark = (t: BoundedText) => (t.md5 === null ? '' : `\n-- (cut at the read limit; md5 of the whole: ${t.md5})`);
const shownText = (t: BoundedText) => t.text + cutMark(t);
/** The definition as printed, ending with one `;` and no trailing blank. */
const statement = (t: BoundedText) => {
  const body = t.text.replace(/\s+$/, '');
  return (body.endsWith(';') ? body : `${body};`) + cutMark(t);
};
const digestOf = (sql: string, ...texts: Array<BoundedText | null>) =>
  [sql, ...texts.map((t) => t?.md5 ?? '')].join('\u0000');

function make(o: Omit<ModelObject, 'digest'>, ...texts: Array<BoundedText | null>): ModelObject {
  return { ...o, digest: digestOf(o.sql, ...texts) };
}

/** A column as the diff shows it: type, default, nullability and the rest. */
export interface ColumnDef {
  type: string;
  default: string | null;
  nullable: boolean;
  /** GENERATED ... AS IDENTITY */
  identity: 'always' | 'by default' | null;
  /** A generated column's expression. */
  generated: string | null;
  collation: string | null;
}

export function columnDef(c: CatalogColumn): ColumnDef {
  const expr = c.expr === null ? null : shownText(c.expr);
  const generated = c.generated === 's';
  return {
    type: c.type,
    default: generated ? null : expr,
    nullable: !c.notNull,
    identity: c.identity === 'a' ? 'always' : c.identity === 'd' ? 'by default' : null,
    generated: generated ? expr : null,
    collation: c.collation,
  };
}

/** `type COLLATE c DEFAULT x NOT NULL ...`: a column's definition after its name, as in a CREATE TABLE. */
export function columnDefSql(d: ColumnDef): string {
  const parts = [d.type];
  if (d.collation !== null) parts.push(`COLLATE ${d.collation}`);
  if (d.generated !== null) parts.push(`GENERATED ALWAYS AS (${d.generated}) STORED`);
  if (d.default !== null) parts.push(`DEFAULT ${d.default}`);
  if (!d.nullable) parts.push('NOT NULL');
  if (d.identity !== null) parts.push(`GENERATED ${d.identity.toUpperCase()} AS IDENTITY`);
  return parts.join(' ');
}

export const columnSql = (c: CatalogColumn): string => `${c.q} ${columnDefSql(columnDef(c))}`;

function tableSql(t: CatalogTable): string {
  const head = t.kind === 'f' ? 'CREATE FOREIGN TABLE' : t.unlogged ? 'CREATE UNLOGGED TABLE' : 'CREATE TABLE';
  const cols = t.columns.map((c, i) => `    ${columnSql(c)}${i < t.columns.length - 1 ? ',' : ''}`);
  let tail = ')';
  if (t.partitionKey !== null) tail += ` PARTITION BY ${t.partitionKey}`;
  if (t.options) tail += ` WITH (${t.options})`;
  const lines = [`${head} ${t.q} (`, ...cols, `${tail};`];
  if (t.parent !== null) lines.push(`ALTER TABLE ONLY ${t.parent} ATTACH PARTITION ${t.q} ${t.bound ?? ''};`);
  if (t.rls) lines.push(`ALTER TABLE ${t.q} ENABLE ROW LEVEL SECURITY;`);
  if (t.forceRls) lines.push(`ALTER TABLE ${t.q} FORCE ROW LEVEL SECURITY;`);
  return lines.join('\n');
}

const yesNo = (b: boolean) => (b ? 'yes' : 'no');

/** The model of one branch's schema. */
export function buildModel(c: CatalogSnapshot): SchemaModel {
  const objects = Object.fromEntries(SCHEMA_KINDS.map((k) => [k, [] as ModelObject[]])) as Record<
    SchemaKind,
    ModelObject[]
  >;
  const add = (o: ModelObject) => objects[o.kind].push(o);

  for (const s of c.schemas)
    add(make({ kind: 'schema', key: [s.name], name: s.q, table: null, sql: `CREATE SCHEMA ${s.q};`, fields: {} }));

  for (const e of c.extensions)
    add(
      make({
        kind: 'extension',
        key: [e.name],
        name: e.q,
        table: null,
        sql: `CREATE EXTENSION ${e.q} WITH SCHEMA ${e.schema} VERSION ${lit(e.version)};`,
        fields: { version: e.version, schema: e.schema },
      }),
    );

  for (const t of c.types) {
    const sql =
      t.kind === 'd'
        ? `CREATE DOMAIN ${t.q} AS ${shownText(t.body)};`
        : t.kind === 'c'
          ? `CREATE TYPE ${t.q} AS (${shownText(t.body)});`
          : t.kind === 'r'
            ? `CREATE TYPE ${t.q} AS RANGE (${shownText(t.body)});`
            : `CREATE TYPE ${t.q} (${shownText(t.body)});`;
    const kind = { d: 'domain', c: 'composite', r: 'range', b: 'base' }[t.kind] ?? t.kind;
    add(
      make(
        {
          kind: 'type',
          key: [t.schema, t.name],
          name: t.q,
          table: null,
          sql,
          fields: { kind, definition: shownText(t.body) },
          long: ['definition'],
        },
        t.body,
      ),
    );
  }

  for (const e of c.enums) {
    const labels = e.labels.map(lit).join(', ') + (e.cut ? ', ...' : '');
    add(
      make({
        kind: 'enum',
        key: [e.schema, e.name],
        name: e.q,
        table: null,
        sql: `CREATE TYPE ${e.q} AS ENUM (${labels});`,
        // The labels themselves are compared one by one (enumChanges in schema-compare.ts).
        fields: { labels: JSON.stringify(e.labels) },
        long: ['labels'],
      }),
    );
  }

  for (const s of c.sequences) {
    const fields = {
      type: s.type,
      start: s.start,
      increment: s.increment,
      min: s.min,
      max: s.max,
      cache: s.cache,
      cycle: yesNo(s.cycle),
      'owned by': s.ownedBy,
    };
    const lines = [
      `CREATE SEQUENCE ${s.q} AS ${s.type} START WITH ${s.start} INCREMENT BY ${s.increment} ` +
        `MINVALUE ${s.min} MAXVALUE ${s.max} CACHE ${s.cache}${s.cycle ? ' CYCLE' : ''};`,
    ];
    if (s.ownedBy !== null) lines.push(`ALTER SEQUENCE ${s.q} OWNED BY ${s.ownedBy};`);
    add(make({ kind: 'sequence', key: [s.schema, s.name], name: s.q, table: null, sql: lines.join('\n'), fields }));
  }

  for (const t of c.tables) {
    add(
      make(
        {
          kind: 'table',
          key: [t.schema, t.name],
          name: t.q,
          table: null,
          sql: tableSql(t),
          fields: {
            kind: { r: 'table', p: 'partitioned table', f: 'foreign table' }[t.kind] ?? t.kind,
            unlogged: yesNo(t.unlogged),
            'partition key': t.partitionKey,
            'partition of': t.parent === null ? null : `${t.parent} ${t.bound ?? ''}`,
            options: t.options,
            'row level security': t.rls ? (t.forceRls ? 'forced' : 'enabled') : null,
          },
        },
        ...t.columns.map((col) => col.expr),
      ),
    );
    for (const col of t.columns) {
      const d = columnDef(col);
      add(
        make(
          {
            kind: 'column',
            key: [t.schema, t.name, col.name],
            name: col.q,
            table: t.q,
            sql: columnSql(col),
            fields: {
              type: d.type,
              collation: d.collation,
              default: d.default,
              'not null': yesNo(!d.nullable),
              identity: d.identity,
              generated: d.generated,
            },
          },
          col.expr,
        ),
      );
    }
  }

  for (const k of c.constraints)
    add(
      make(
        {
          kind: 'constraint',
          key: [k.schema, k.table, k.name],
          name: k.q,
          table: k.qtable,
          sql: `ALTER TABLE ${k.qtable} ADD CONSTRAINT ${k.q} ${statement(k.def)}`,
          fields: { definition: shownText(k.def) },
          long: ['definition'],
        },
        k.def,
      ),
    );

  for (const i of c.indexes)
    add(
      make(
        {
          kind: 'index',
          key: [i.schema, i.name],
          name: i.q,
          table: i.table,
          // An index a CREATE INDEX CONCURRENTLY left behind when it failed: it exists, and is never used.
          sql:
            statement(i.def) +
            (i.valid ? '' : '\n-- INVALID: not used by queries (a failed CREATE INDEX CONCURRENTLY?)'),
          fields: { definition: shownText(i.def), valid: yesNo(i.valid) },
          long: ['definition'],
        },
        i.def,
      ),
    );

  for (const v of c.views) {
    const head = `CREATE ${v.materialized ? 'MATERIALIZED VIEW' : 'VIEW'} ${v.q}${v.options ? ` WITH (${v.options})` : ''} AS`;
    add(
      make(
        {
          kind: 'view',
          key: [v.schema, v.name],
          name: v.q,
          table: null,
          sql: `${head}\n${statement(v.def)}`,
          fields: {
            kind: v.materialized ? 'materialized view' : 'view',
            options: v.options,
            definition: shownText(v.def),
          },
          long: ['definition'],
        },
        v.def,
      ),
    );
  }

  for (const f of c.functions)
    add(
      make(
        {
          kind: 'function',
          key: [f.schema, f.name, f.args],
          name: `${f.q}(${f.args})`,
          table: null,
          sql: statement(f.def),
          fields: { definition: shownText(f.def) },
          long: ['definition'],
        },
        f.def,
      ),
    );

  for (const t of c.triggers)
    add(
      make(
        {
          kind: 'trigger',
          key: [t.schema, t.table, t.name],
          name: t.q,
          table: t.qtable,
          sql:
            statement(t.def) +
            (t.enabled === 'D'
              ? `\nALTER TABLE ${t.qtable} DISABLE TRIGGER ${t.q};`
              : t.enabled === 'A'
                ? `\nALTER TABLE ${t.qtable} ENABLE ALWAYS TRIGGER ${t.q};`
                : t.enabled === 'R'
                  ? `\nALTER TABLE ${t.qtable} ENABLE REPLICA TRIGGER ${t.q};`
                  : ''),
          fields: {
            definition: shownText(t.def),
            enabled: { O: 'yes', D: 'no', A: 'always', R: 'replica' }[t.enabled] ?? t.enabled,
          },
          long: ['definition'],
        },
        t.def,
      ),
    );

  for (const k of SCHEMA_KINDS) objects[k].sort((a, b) => compareKeys(a.key, b.key));
  return { objects, cut: { ...c.cut } };
}

/** The whole schema as SQL, one object after another in the canonical order (for people and tests). */
export function schemaSql(m: SchemaModel): string {
  return SCHEMA_KINDS.filter((k) => k !== 'column')
    .flatMap((k) => m.objects[k].map((o) => o.sql))
    .join('\n\n');
}

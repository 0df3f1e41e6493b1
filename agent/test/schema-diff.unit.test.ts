import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as S from '../api/schemas.js';
import { schemaDiffText } from '../cli/render-schema-diff.js';
import { compareSchemas, DEFAULT_COMPARE_LIMITS, type SchemaDiff } from '../engine/schema-compare.js';
import {
  buildModel,
  compareText,
  SCHEMA_KINDS,
  schemaSql,
  type CatalogColumn,
  type CatalogSnapshot,
  type CatalogTable,
} from '../engine/schema-model.js';
import { printable } from '../names.js';

/**
 * The schema model and its diff, on catalogs made by hand: no PostgreSQL. What the catalogs of a
 * real branch read into is tested on the stack (schema-diff.test.ts).
 */

const names = { branch: 'api/pr-1', against: 'api/main' };
const q = (s: string) => (/^[a-z_][a-z0-9_]*$/.test(s) ? s : `"${s.replace(/"/g, '""')}"`);
const def = (text: string, md5: string | null = null) => ({ text, md5 });

function snap(o: Partial<CatalogSnapshot> = {}): CatalogSnapshot {
  return {
    schemas: [],
    extensions: [],
    tables: [],
    indexes: [],
    constraints: [],
    views: [],
    functions: [],
    types: [],
    enums: [],
    sequences: [],
    triggers: [],
    cut: {},
    ...o,
  };
}

function col(name: string, type: string, o: Partial<CatalogColumn> = {}): CatalogColumn {
  return { name, q: q(name), type, collation: null, expr: null, notNull: false, identity: '', generated: '', ...o };
}

function table(name: string, columns: CatalogColumn[], o: Partial<CatalogTable> = {}): CatalogTable {
  return {
    schema: 'public',
    name,
    q: `public.${q(name)}`,
    kind: 'r',
    unlogged: false,
    partitionKey: null,
    parent: null,
    bound: null,
    options: null,
    rls: false,
    forceRls: false,
    columns,
    ...o,
  };
}

const diff = (a: Partial<CatalogSnapshot>, b: Partial<CatalogSnapshot>, limits = DEFAULT_COMPARE_LIMITS) =>
  compareSchemas(buildModel(snap(a)), buildModel(snap(b)), names, limits);

const brief = (d: SchemaDiff) => d.changes.map((c) => `${c.change} ${c.kind} ${c.table ? `${c.table}.` : ''}${c.name}`);

describe('schema model', () => {
  it('sorts every kind by name in byte order (PostgreSQL\'s "C" collation), whatever order the rows came in', () => {
    const tables = ['é', 'a', 'B', '_x', 'ab'].map((n) => table(n, []));
    const m = buildModel(snap({ tables }));
    assert.deepEqual(
      m.objects.table.map((o) => o.key[1]),
      ['B', '_x', 'a', 'ab', 'é'],
    );
    assert.ok(compareText('Z', 'a') < 0 && compareText('a', 'é') < 0 && compareText('\uffff', '😀') < 0);
    const again = buildModel(snap({ tables: [...tables].reverse() }));
    assert.equal(schemaSql(again), schemaSql(m));
  });

  it('writes canonical SQL: a table with its columns, then each other kind as its own statement', () => {
    const m = buildModel(
      snap({
        schemas: [{ name: 'app', q: 'app' }],
        extensions: [{ name: 'pg_trgm', q: 'pg_trgm', schema: 'public', version: '1.6' }],
        tables: [
          table('orders', [
            col('id', 'bigint', { notNull: true, identity: 'a' }),
            col('total', 'numeric(12,2)', { notNull: true, expr: def('0') }),
            col('total2', 'numeric', { generated: 's', expr: def('(total * 2)') }),
            col('Note', 'text', { collation: 'pg_catalog."C"' }),
          ]),
          table('p', [col('d', 'date')], { kind: 'p', partitionKey: 'RANGE (d)' }),
          table('p1', [col('d', 'date')], {
            parent: 'public.p',
            bound: "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
          }),
        ],
        sequences: [
          {
            schema: 'public',
            name: 's',
            q: 'public.s',
            type: 'bigint',
            start: '1',
            increment: '1',
            min: '1',
            max: '9223372036854775807',
            cache: '1',
            cycle: false,
            ownedBy: 'public.orders.id',
          },
        ],
        enums: [{ schema: 'public', name: 'mood', q: 'public.mood', labels: ["it's", 'ok'], cut: false }],
        indexes: [
          {
            schema: 'public',
            name: 'i',
            q: 'public.i',
            table: 'public.orders',
            def: def('CREATE INDEX i ON public.orders USING btree (total)'),
            valid: false,
          },
        ],
      }),
    );
    const sql = schemaSql(m);
    assert.match(
      sql,
      /CREATE TABLE public\.orders \(\n {4}id bigint NOT NULL GENERATED ALWAYS AS IDENTITY,\n {4}total numeric\(12,2\) DEFAULT 0 NOT NULL,\n {4}total2 numeric GENERATED ALWAYS AS \(\(total \* 2\)\) STORED,\n {4}"Note" text COLLATE pg_catalog."C"\n\);/,
    );
    assert.match(sql, /CREATE TABLE public\.p \(\n {4}d date\n\) PARTITION BY RANGE \(d\);/);
    assert.match(sql, /ALTER TABLE ONLY public\.p ATTACH PARTITION public\.p1 FOR VALUES FROM/);
    assert.match(sql, /CREATE EXTENSION pg_trgm WITH SCHEMA public VERSION '1\.6';/);
    assert.match(sql, /ALTER SEQUENCE public\.s OWNED BY public\.orders\.id;/);
    assert.match(sql, /CREATE TYPE public\.mood AS ENUM \('it''s', 'ok'\);/);
    assert.match(sql, /CREATE INDEX i ON public\.orders USING btree \(total\);\n-- INVALID/);
    // order of kinds: schema, extension, ..., sequence before table, index after
    assert.ok(sql.indexOf('CREATE SCHEMA') < sql.indexOf('CREATE EXTENSION'));
    assert.ok(sql.indexOf('CREATE SEQUENCE') < sql.indexOf('CREATE TABLE'));
    assert.ok(sql.indexOf('CREATE TABLE') < sql.indexOf('CREATE INDEX'));
  });

  it('the kinds and the JSON are the same on both sides of the API', () => {
    assert.deepEqual([...S.SCHEMA_KINDS], [...SCHEMA_KINDS]);
    const d = diff({}, { tables: [table('t', [col('a', 'int')])] });
    assert.deepEqual(S.SchemaDiff.parse(JSON.parse(JSON.stringify(d))), d);
  });
});

describe('schema diff', () => {
  const base = (): Partial<CatalogSnapshot> => ({
    extensions: [
      { name: 'hstore', q: 'hstore', schema: 'public', version: '1.7' },
      { name: 'citext', q: 'citext', schema: 'public', version: '1.6' },
    ],
    tables: [
      table('orders', [col('id', 'bigint', { notNull: true }), col('total', 'integer'), col('status', 'text')]),
      table('old', [col('id', 'integer')]),
    ],
    enums: [{ schema: 'public', name: 'mood', q: 'public.mood', labels: ['sad', 'ok'], cut: false }],
    functions: [
      {
        schema: 'public',
        name: 'f',
        args: 'x integer',
        q: 'public.f',
        def: def('CREATE FUNCTION public.f(x integer)\nAS $$x*2$$'),
      },
    ],
  });

  it('identical schemas: no change, no SQL, every kind counted as zero', () => {
    const d = diff(base(), base());
    assert.equal(d.identical, true);
    assert.deepEqual(d.changes, []);
    assert.equal(d.sql, '');
    assert.equal(d.truncated, false);
    assert.deepEqual(Object.keys(d.counts), [...SCHEMA_KINDS]);
    assert.ok(Object.values(d.counts).every((c) => c.added + c.dropped + c.altered === 0));
    assert.equal(schemaDiffText(d), 'api/pr-1 compared with api/main: same schema\n');
  });

  it('added, dropped and altered objects; a table is altered by its columns, which follow it', () => {
    const b = base();
    b.extensions = [
      { name: 'hstore', q: 'hstore', schema: 'public', version: '1.8' },
      { name: 'pg_trgm', q: 'pg_trgm', schema: 'public', version: '1.6' },
    ];
    b.tables = [
      table('orders', [
        col('id', 'bigint', { notNull: true }),
        col('total', 'numeric(12,2)', { notNull: true, expr: def('0') }),
        col('created', 'timestamp with time zone', { notNull: true, expr: def('now()') }),
      ]),
      table('fresh', [col('a', 'integer')]),
    ];
    b.enums = [{ schema: 'public', name: 'mood', q: 'public.mood', labels: ['sad', 'ok', 'happy'], cut: false }];
    b.functions = [{ ...base().functions![0]!, def: def('CREATE FUNCTION public.f(x integer)\nAS $$x+x$$') }];
    const d = diff(base(), b);
    assert.deepEqual(brief(d), [
      'dropped extension citext',
      'altered extension hstore',
      'added extension pg_trgm',
      'altered enum public.mood',
      'added table public.fresh',
      'dropped table public.old',
      'altered table public.orders',
      'added column public.orders.created',
      'dropped column public.orders.status',
      'altered column public.orders.total',
      'altered function public.f(x integer)',
    ]);
    const by = (name: string) => d.changes.find((c) => c.name === name)!;
    assert.deepEqual(by('hstore').details, ['version: 1.7 → 1.8']);
    assert.deepEqual(by('public.mood').details, ["value 'happy' added"]);
    assert.deepEqual(by('public.orders').details, ['columns: 1 added, 1 dropped, 1 altered']);
    assert.deepEqual(by('total').details, ['type: integer → numeric(12,2)', 'default: none → 0', 'not null: no → yes']);
    assert.deepEqual(by('total').column, {
      before: { type: 'integer', default: null, nullable: true, identity: null, generated: null, collation: null },
      after: { type: 'numeric(12,2)', default: '0', nullable: false, identity: null, generated: null, collation: null },
    });
    assert.deepEqual(by('created').details, ['timestamp with time zone DEFAULT now() NOT NULL']);
    assert.deepEqual(by('status').column, {
      before: { type: 'text', default: null, nullable: true, identity: null, generated: null, collation: null },
      after: null,
    });
    assert.deepEqual(by('public.f(x integer)').details, ['definition changed']);
    assert.deepEqual(d.counts.table, { added: 1, dropped: 1, altered: 1 });
    assert.deepEqual(d.counts.column, { added: 1, dropped: 1, altered: 1 });
    assert.deepEqual(d.counts.extension, { added: 1, dropped: 1, altered: 1 });
    // an added or dropped table's columns are the table's, not column changes
    assert.ok(!d.changes.some((c) => c.kind === 'column' && c.table === 'public.fresh'));
    assert.deepEqual(S.schemaCountLines(d.counts), [
      'extensions: 1 added, 1 dropped, 1 altered',
      'enums: 1 altered',
      'tables: 1 added, 1 dropped, 1 altered',
      'columns: 1 added, 1 dropped, 1 altered',
      'functions: 1 altered',
    ]);
  });

  it('the SQL diff: one hunk per object, + for the branch, - for the other, only the lines that changed', () => {
    const a = { tables: [table('t', [col('a', 'integer'), col('b', 'text')])] };
    const b = { tables: [table('t', [col('a', 'integer'), col('b', 'text'), col('c', 'date')])] };
    const d = diff(a, b);
    assert.equal(
      d.sql,
      [
        '--- api/main',
        '+++ api/pr-1',
        '@@ altered table public.t @@',
        ' CREATE TABLE public.t (',
        '     a integer,',
        // the comma that comes with the next column is not a change of this line
        '     b text,',
        '+    c date',
        ' );',
        '',
      ].join('\n'),
    );
    const added = diff({}, { tables: [table('n', [col('x', 'int')])] });
    assert.equal(
      added.sql,
      '--- api/main\n+++ api/pr-1\n@@ added table public.n @@\n+CREATE TABLE public.n (\n+    x int\n+);\n',
    );
    const dropped = diff({ tables: [table('n', [col('x', 'int')])] }, {});
    assert.match(dropped.sql, /@@ dropped table public\.n @@\n-CREATE TABLE public\.n \(\n- {4}x int\n-\);\n$/);
  });

  it('a long object shows the lines near a change and folds the rest', () => {
    const body = (x: string) =>
      ['CREATE FUNCTION public.f()', ...Array.from({ length: 30 }, (_, i) => `line ${i}`), x].join('\n');
    const fn = (x: string) => ({ schema: 'public', name: 'f', args: '', q: 'public.f', def: def(body(x)) });
    const d = diff({ functions: [fn('old')] }, { functions: [fn('new')] });
    assert.match(
      d.sql,
      /@@ altered function public\.f\(\) @@\n -- \(28 unchanged lines\)\n line 27\n line 28\n line 29\n-old;\n\+new;\n$/,
    );
  });

  it('enum labels one by one: added, dropped, reordered', () => {
    const e = (labels: string[]) => ({ enums: [{ schema: 'public', name: 'e', q: 'public.e', labels, cut: false }] });
    assert.deepEqual(diff(e(['a', 'b', 'c']), e(['a', 'c', 'd'])).changes[0]!.details, [
      "value 'd' added",
      "value 'b' dropped",
    ]);
    assert.deepEqual(diff(e(['a', 'b']), e(['b', 'a'])).changes[0]!.details, ['values reordered']);
  });

  it('definitions cut at the read limit still compare by the md5 of the whole', () => {
    const v = (md5: string) => ({
      views: [
        { schema: 'public', name: 'v', q: 'public.v', materialized: false, options: null, def: def(' SELECT 1', md5) },
      ],
    });
    assert.equal(diff(v('aaa'), v('aaa')).identical, true);
    const d = diff(v('aaa'), v('bbb'));
    assert.deepEqual(brief(d), ['altered view public.v']);
    assert.match(d.sql, /-- \(cut at the read limit; md5 of the whole: aaa\)/);
  });

  it('a kind read only in part is compared up to where the reading stopped, and says so', () => {
    const many = (names: string[]) => names.map((n) => table(n, [col('id', 'int')]));
    // The branch has t1..t5, t9 and x; it was read up to t5. The other has t1..t4, t6, x, read whole.
    const before = { tables: many(['t1', 't2', 't3', 't4', 't6', 'x']) };
    const after = { tables: many(['t1', 't2', 't3', 't4', 't5']), cut: { table: ['public', 't5'] } };
    const d = diff(before, after);
    // t6 and x are past the cut: unknown on the branch, so neither "dropped" nor compared
    assert.deepEqual(brief(d), ['added table public.t5']);
    assert.deepEqual(d.truncatedKinds, ['table']);
    assert.equal(d.truncated, true);
    assert.match(schemaDiffText(d), /truncated: a branch has more tables than the agent reads/);
    // nothing read at all on one side: nothing of that kind is compared
    const none = diff(before, { cut: { table: null } });
    assert.deepEqual(none.changes, []);
    assert.deepEqual(none.truncatedKinds, ['table']);
  });

  it('a long list of changes is cut but every change is counted; a long SQL diff ends with a truncated line', () => {
    const tables = Array.from({ length: 50 }, (_, i) => table(`t${String(i).padStart(2, '0')}`, [col('id', 'int')]));
    const d = diff({}, { tables }, { ...DEFAULT_COMPARE_LIMITS, maxChanges: 10, maxSqlChars: 1000 });
    assert.equal(d.changes.length, 10);
    assert.equal(d.changesOmitted, 40);
    assert.deepEqual(d.counts.table, { added: 50, dropped: 0, altered: 0 });
    assert.equal(d.truncated, true);
    assert.ok(d.sql.length <= 1000 + 80, `${d.sql.length}`);
    assert.match(d.sql, /\n@@ truncated: \d+ more objects not shown @@\n$/);
    assert.match(schemaDiffText(d), /\.\.\. and 40 more \(counted above, and in the SQL diff\)/);
  });

  it('one huge object is cut in the SQL diff, so the objects after it are shown too', () => {
    const v = (name: string, text: string) => ({
      schema: 'public',
      name,
      q: `public.${name}`,
      materialized: false,
      options: null,
      def: def(text),
    });
    const huge = v(
      'a_huge',
      ` SELECT '${'x'.repeat(50_000)}'::text AS x\n${Array.from({ length: 5000 }, (_, i) => `-- ${i}`).join('\n')}`,
    );
    const d = diff({}, { views: [huge, v('b_small', ' SELECT 1')] });
    assert.equal(d.truncated, false);
    assert.ok(d.sql.length < DEFAULT_COMPARE_LIMITS.maxObjectChars + 2000, `${d.sql.length}`);
    assert.match(d.sql, /\+ SELECT 'x{900,}… \(\d+ more characters\)\n/);
    assert.match(
      d.sql,
      /\n -- \(\d+ more lines not shown\)\n@@ added view public\.b_small @@\n\+CREATE VIEW public\.b_small AS\n\+ SELECT 1;\n$/,
    );
  });

  it("the branch's names and SQL cannot put control characters on a terminal or forge a header line", () => {
    const evil = 'evil\x1b[2J\nDROP TABLE users; --\u202e';
    const d = diff(
      {},
      {
        tables: [table(evil, [col('c\rx', 'int')])],
        functions: [
          {
            schema: 'public',
            name: 'f',
            args: '',
            q: 'public.f',
            def: def("CREATE FUNCTION public.f()\nAS $$SELECT 'a\x07b'$$"),
          },
        ],
      },
    );
    // the JSON keeps the names as they are; the SQL diff and the text for people escape them
    assert.equal(d.changes[0]!.name, `public."${evil}"`);
    for (const text of [d.sql, schemaDiffText(d)]) {
      assert.doesNotMatch(text, /[\x00-\x08\x0b-\x1f\x7f\u202e]/);
      assert.match(text, /\\u001b\[2J/);
      assert.match(text, /\\u202e/);
      assert.match(text, /\\u0007/);
    }
    // a header is one line: the newline in the name is escaped there
    assert.match(d.sql, /^@@ added table public\."evil\\u001b\[2J\\u000aDROP TABLE users; --\\u202e" @@$/m);
    // every line of an object's SQL carries its mark, so a name cannot start a line of its own
    const body = d.sql.split('\n').slice(2, -1);
    assert.ok(
      body.every((l) => /^(@@ |[+])/.test(l)),
      body.join('\n'),
    );
    // one line per change in the text for people
    assert.match(schemaDiffText(d), /^\+ table public\."evil\\u001b\[2J\\u000aDROP TABLE users; --\\u202e"$/m);
  });

  it('printable() escapes what moves a cursor or reorders text, and keeps newlines, tabs and other scripts', () => {
    assert.equal(printable('a\tb\nc'), 'a\tb\nc');
    assert.equal(printable('\x1b[31m\r\x00\x7f\x9b'), '\\u001b[31m\\u000d\\u0000\\u007f\\u009b');
    assert.equal(printable('\u202e\u2066\u2028'), '\\u202e\\u2066\\u2028');
    assert.equal(printable('héllo → 😀 日本'), 'héllo → 😀 日本');
  });
});

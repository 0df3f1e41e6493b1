import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { BpgApiError, BpgClient } from '../api/client.js';
import * as S from '../api/schemas.js';
import { serve, type RunningServer } from '../api/serve.js';
import type { Config } from '../config.js';
import { withClient } from '../drivers/postgres.js';
import { readCatalog, type CatalogLimits } from '../engine/schema-catalog.js';
import { compareSchemas } from '../engine/schema-compare.js';
import { buildModel } from '../engine/schema-model.js';
import type { BranchView } from '../engine/view.js';
import { cli, config, ok, okJson, query, recorder, uniqueDb } from './helpers.js';

/**
 * `bpg branch diff` and GET .../schema-diff on the real stack: a database whose main gets a schema,
 * a branch of it that changes objects of every kind (and names one with control characters), both
 * read from their own PostgreSQL servers, through the HTTP API and the CLI.
 */

const TOKEN = `tok-${randomBytes(16).toString('hex')}`;
const db = uniqueDb('sd');
const log = recorder();

const PARENT_SQL = `
CREATE EXTENSION hstore VERSION '1.7';
CREATE EXTENSION citext;
CREATE SCHEMA app;
CREATE TYPE app.mood AS ENUM ('sad', 'ok');
CREATE TYPE app.pair AS (a int, b text);
CREATE DOMAIN app.posint AS integer CHECK (VALUE > 0);
CREATE SEQUENCE app.counter INCREMENT BY 1;
CREATE TABLE app.customers (id int PRIMARY KEY, email text);
CREATE TABLE app.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, total integer,
  note text NOT NULL DEFAULT '', status text);
CREATE TABLE app.old_table (id serial PRIMARY KEY);
CREATE INDEX orders_status_idx ON app.orders (status);
CREATE INDEX orders_note_idx ON app.orders (note);
CREATE VIEW app.big_orders AS SELECT id, total FROM app.orders WHERE total > 100;
CREATE FUNCTION app.double(x integer) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT x * 2';
CREATE FUNCTION app.gone() RETURNS int LANGUAGE sql AS 'SELECT 1';
`;

/** A name with an escape sequence and a newline: the pull request's SQL chooses its names. */
const EVIL = 'evil\x1b[2J\nDROP TABLE users; --';

const BRANCH_SQL = `
CREATE EXTENSION pg_trgm;
ALTER EXTENSION hstore UPDATE TO '1.8';
DROP EXTENSION citext;
CREATE SCHEMA audit;
ALTER TYPE app.mood ADD VALUE 'happy';
CREATE TYPE app.color AS ENUM ('red');
DROP TYPE app.pair;
CREATE TYPE app.span AS RANGE (subtype = int4);
ALTER DOMAIN app.posint ADD CONSTRAINT small CHECK (VALUE < 1000000);
CREATE SEQUENCE app.tickets START 100;
ALTER SEQUENCE app.counter INCREMENT BY 5;
CREATE TABLE app.new_table (id int, payload jsonb);
DROP TABLE app.old_table;
CREATE TABLE app.events (d date) PARTITION BY RANGE (d);
CREATE TABLE app.events_2026 PARTITION OF app.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE INDEX events_d_idx ON app.events (d);
DROP VIEW app.big_orders;
ALTER TABLE app.orders ALTER COLUMN total TYPE numeric(12,2), ALTER COLUMN total SET DEFAULT 0,
  ALTER COLUMN total SET NOT NULL;
ALTER TABLE app.orders ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE app.orders DROP COLUMN status;
ALTER TABLE app.orders ALTER COLUMN note DROP NOT NULL;
CREATE INDEX orders_total_idx ON app.orders (total);
DROP INDEX app.orders_note_idx;
CREATE INDEX orders_note_idx ON app.orders (lower(note));
ALTER TABLE app.orders ADD CONSTRAINT total_positive CHECK (total >= 0);
ALTER TABLE app.customers ADD CONSTRAINT customers_email_key UNIQUE (email);
ALTER TABLE app.orders ADD COLUMN customer_id int REFERENCES app.customers(id);
CREATE VIEW app.big_orders AS SELECT id, total FROM app.orders WHERE total > 500;
CREATE MATERIALIZED VIEW app.mv AS SELECT count(*) AS n FROM app.orders;
CREATE OR REPLACE FUNCTION app.double(x integer) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT x + x';
DROP FUNCTION app.gone();
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.created_at = now(); RETURN NEW; END$$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON app.orders FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE TABLE app."${EVIL.replace(/"/g, '""')}" ("c\rx" int DEFAULT 1);
`;

const EVIL_Q = `app."${EVIL}"`;

/** Every change the branch makes, in the order the diff lists them. */
const EXPECTED = [
  'added schema audit',
  'dropped extension citext',
  'altered extension hstore',
  'added extension pg_trgm',
  'dropped type app.pair',
  'altered type app.posint',
  'added type app.span',
  'added enum app.color',
  'altered enum app.mood',
  'altered sequence app.counter',
  'dropped sequence app.old_table_id_seq',
  'added sequence app.tickets',
  'added table app.events',
  'added table app.events_2026',
  `added table ${EVIL_Q}`,
  'added table app.new_table',
  'dropped table app.old_table',
  'altered table app.orders',
  'added column app.orders.created_at',
  'added column app.orders.customer_id',
  'altered column app.orders.note',
  'dropped column app.orders.status',
  'altered column app.orders.total',
  'added constraint app.customers.customers_email_key',
  'dropped constraint app.old_table.old_table_pkey',
  'added constraint app.orders.orders_customer_id_fkey',
  'added constraint app.orders.total_positive',
  'added index app.events_d_idx',
  'altered index app.orders_note_idx',
  'dropped index app.orders_status_idx',
  'added index app.orders_total_idx',
  'altered view app.big_orders',
  'added view app.mv',
  'altered function app.double(x integer)',
  'dropped function app.gone()',
  'added function app.touch()',
  'added trigger app.orders.orders_touch',
];

const brief = (d: S.SchemaDiff) =>
  d.changes.map((c) => `${c.change} ${c.kind} ${c.table !== null && c.kind !== 'index' ? `${c.table}.` : ''}${c.name}`);

async function exec(b: BranchView, sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: b.connection.uri, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** How the agent itself reaches a branch: its own port on this host. */
const direct = (b: BranchView) => b.connection.direct;

describe('bpg branch diff and GET .../schema-diff on the stack', () => {
  let cfg: Config;
  let srv: RunningServer;
  let client: BpgClient;
  let main: BranchView;
  let pr: BranchView;
  const env = () => ({ BPG_CONFIG: process.env.BPG_CONFIG });

  before(async () => {
    const base = await config();
    cfg = { ...base, api: { ...base.api, listen: '127.0.0.1:0', tokens: [{ name: 'tests', token: TOKEN }] } };
    srv = await serve(cfg, { listen: '127.0.0.1:0', log, handleSignals: false, env: {} });
    client = new BpgClient({ baseUrl: srv.url, token: TOKEN });
    await ok(['db', 'create', db]);
    main = await okJson(['branch', 'get', `${db}/main`]);
    // The extensions this test changes are in the image (it would prove nothing if they were not).
    const avail = await query<{ name: string; version: string }>(
      main,
      "SELECT name, version FROM pg_available_extension_versions WHERE name IN ('hstore', 'citext', 'pg_trgm')",
    );
    for (const [n, v] of [
      ['hstore', '1.7'],
      ['hstore', '1.8'],
      ['citext', null],
      ['pg_trgm', null],
    ] as const)
      assert.ok(
        avail.some((a) => a.name === n && (v === null || a.version === v)),
        `extension ${n} ${v ?? ''} is not in the image`,
      );
    await exec(main, PARENT_SQL);
    // pr-2: a branch of the same schema, to compare with as it is
    await ok(['branch', 'create', `${db}/pr-2`, '--fast']);
    pr = await okJson(['branch', 'create', `${db}/pr-1`, '--fast']);
    await exec(pr, BRANCH_SQL);
  });

  after(async () => {
    await cli(['db', 'delete', db, '--force'], env());
    await srv?.close();
  });

  it('lists every kind added, dropped and altered against the parent, over HTTP', async () => {
    const d = await client.schemaDiff(db, 'pr-1');
    assert.equal(d.branch, `${db}/pr-1`);
    assert.equal(d.against, `${db}/main`);
    assert.equal(d.identical, false);
    assert.equal(d.truncated, false);
    assert.deepEqual(brief(d), EXPECTED);
    const by = (kind: string, name: string) => d.changes.find((c) => c.kind === kind && c.name === name)!;
    // columns: type, default and nullability
    assert.deepEqual(by('column', 'total').details, [
      'type: integer → numeric(12,2)',
      'default: none → 0',
      'not null: no → yes',
    ]);
    assert.deepEqual(by('column', 'total').column, {
      before: { type: 'integer', default: null, nullable: true, identity: null, generated: null, collation: null },
      after: { type: 'numeric(12,2)', default: '0', nullable: false, identity: null, generated: null, collation: null },
    });
    assert.deepEqual(by('column', 'note').details, ['not null: yes → no']);
    assert.deepEqual(by('column', 'created_at').details, ['timestamp with time zone DEFAULT now() NOT NULL']);
    assert.deepEqual(by('table', 'app.orders').details, ['columns: 2 added, 1 dropped, 2 altered']);
    assert.deepEqual(by('extension', 'hstore').details, ['version: 1.7 → 1.8']);
    assert.deepEqual(by('enum', 'app.mood').details, ["value 'happy' added"]);
    assert.deepEqual(by('sequence', 'app.counter').details, ['increment: 1 → 5']);
    assert.deepEqual(by('index', 'app.orders_note_idx').table, 'app.orders');
    // counts cover every kind
    assert.deepEqual(d.counts.column, { added: 2, dropped: 1, altered: 2 });
    assert.deepEqual(d.counts.table, { added: 4, dropped: 1, altered: 1 });
    assert.deepEqual(d.counts.extension, { added: 1, dropped: 1, altered: 1 });
    // the SQL diff, normalised: the server's own definitions, qualified names
    for (const hunk of [
      "@@ altered extension hstore @@\n-CREATE EXTENSION hstore WITH SCHEMA public VERSION '1.7';\n+CREATE EXTENSION hstore WITH SCHEMA public VERSION '1.8';",
      '-    total integer,',
      '+    total numeric(12,2) DEFAULT 0 NOT NULL,',
      '@@ altered index app.orders_note_idx @@\n-CREATE INDEX orders_note_idx ON app.orders USING btree (note);\n+CREATE INDEX orders_note_idx ON app.orders USING btree (lower(note));',
      '+ALTER TABLE app.orders ADD CONSTRAINT orders_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES app.customers(id);',
      "-CREATE TYPE app.mood AS ENUM ('sad', 'ok');\n+CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');",
      '+ALTER TABLE ONLY app.events ATTACH PARTITION app.events_2026 FOR VALUES FROM',
      '+CREATE TRIGGER orders_touch BEFORE UPDATE ON app.orders FOR EACH ROW EXECUTE FUNCTION app.touch();',
      '-AS $function$SELECT x * 2$function$;\n+AS $function$SELECT x + x$function$;',
    ])
      assert.ok(d.sql.includes(hunk), `missing from the SQL diff:\n${hunk}\n---\n${d.sql}`);
    // extension members (pg_trgm's and hstore's functions and types) are the extension's
    assert.doesNotMatch(d.sql, /similarity|gtrgm|hstore_in/);
    // the name is returned as it is in JSON, escaped in the SQL text
    assert.ok(d.changes.some((c) => c.name === EVIL_Q));
    assert.doesNotMatch(d.sql, /[\x00-\x08\x0b-\x1f\x7f]/);
    assert.match(d.sql, /@@ added table app\."evil\\u001b\[2J\\u000aDROP TABLE users; --" @@/);
  });

  it('the CLI prints the same object with --json, and a readable, escaped text without', async () => {
    const json = JSON.parse((await ok(['branch', 'diff', `${db}/pr-1`, '--json'], env())).stdout);
    assert.deepEqual(json, await client.schemaDiff(db, 'pr-1'));
    const r = await ok(['branch', 'diff', `${db}/pr-1`], env());
    assert.equal(r.stderr, '');
    const text = r.stdout;
    assert.match(text, new RegExp(`^${db}/pr-1 compared with ${db}/main: ${EXPECTED.length} changes\n`));
    for (const line of [
      '  columns: 2 added, 1 dropped, 2 altered',
      '~ extension hstore: version: 1.7 → 1.8',
      '+ extension pg_trgm',
      '~ table app.orders: columns: 2 added, 1 dropped, 2 altered',
      '    ~ column total: type: integer → numeric(12,2); default: none → 0; not null: no → yes',
      '    + column created_at: timestamp with time zone DEFAULT now() NOT NULL',
      '    - column status: text',
      '+ index app.orders_total_idx on app.orders',
      "~ enum app.mood: value 'happy' added",
      '+ table app."evil\\u001b[2J\\u000aDROP TABLE users; --"',
      'SQL diff:',
      '--- ' + `${db}/main`,
    ])
      assert.ok(text.split('\n').includes(line), `missing line: ${line}\n---\n${text}`);
    assert.doesNotMatch(text, /[\x00-\x08\x0b-\x1f\x7f]/, 'no control character reaches the terminal');
  });

  it('a branch made from the parent has the same schema; --against compares with any branch of the database', async () => {
    const same = await client.schemaDiff(db, 'pr-2');
    assert.equal(same.identical, true);
    assert.equal(same.sql, '');
    assert.equal(
      (await ok(['branch', 'diff', `${db}/pr-2`], env())).stdout,
      `${db}/pr-2 compared with ${db}/main: same schema\n`,
    );
    // the other way round: what pr-1 added, main lacks
    const back = await client.schemaDiff(db, 'main', { against: 'pr-1' });
    assert.equal(back.against, `${db}/pr-1`);
    assert.deepEqual(back.counts.table, { added: 1, dropped: 4, altered: 1 });
    assert.deepEqual(back.counts.extension, { added: 1, dropped: 1, altered: 1 });
    const cliBack = JSON.parse(
      (await ok(['branch', 'diff', `${db}/main`, '--against', `${db}/pr-1`, '--json'], env())).stdout,
    );
    assert.deepEqual(cliBack, back);
    assert.equal((await client.schemaDiff(db, 'pr-1', { against: `${db}/pr-2` })).counts.table.added, 4);
  });

  it('main without --against, another database, unknown branches and bad names are one clear error each', async () => {
    const fails = async (args: string[], re: RegExp, code: number) => {
      const r = await cli(args, env());
      assert.equal(r.code, code, r.stdout); // exit codes by kind: 2 invalid, 3 not found
      assert.equal(r.stdout, '');
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    };
    await fails(['branch', 'diff', `${db}/main`], /^error: branch '.*\/main' has no parent to compare with/, 2);
    await fails(
      ['branch', 'diff', `${db}/pr-1`, '--against', 'otherdb/main'],
      /compares two branches of one database/,
      2,
    );
    await fails(['branch', 'diff', `${db}/nosuch`], /branch '.*\/nosuch' does not exist/, 3);
    await fails(['branch', 'diff', `${db}/pr-1`, '--against', 'a;b'], /invalid name/, 2);
    const status = async (p: Promise<unknown>) => {
      const e = await p.then(
        () => null,
        (x: unknown) => x,
      );
      assert.ok(e instanceof BpgApiError, String(e));
      return [e.status, e.code, e.message] as const;
    };
    const [s1, c1, m1] = await status(client.schemaDiff(db, 'main'));
    assert.deepEqual([s1, c1], [400, 'invalid']);
    assert.match(m1, /no parent/);
    assert.deepEqual((await status(client.schemaDiff(db, 'pr-1', { against: 'otherdb/main' }))).slice(0, 2), [
      400,
      'invalid',
    ]);
    assert.deepEqual((await status(client.schemaDiff(db, 'nosuch'))).slice(0, 2), [404, 'not_found']);
    assert.deepEqual((await status(client.schemaDiff(db, 'pr-1', { against: 'nosuch' }))).slice(0, 2), [
      404,
      'not_found',
    ]);
    assert.deepEqual((await status(client.schemaDiff(db, 'pr-1', { against: '../x' }))).slice(0, 2), [400, 'invalid']);
    const raw = await fetch(`${srv.url}/v1/databases/${db}/branches/pr-1/schema-diff?nosuch=1`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(raw.status, 400);
  });

  it('a stopped branch is a 409 that says how to start it', async () => {
    await ok(['stop', `${db}/pr-2`], env());
    try {
      const r = await cli(['branch', 'diff', `${db}/pr-2`], env());
      assert.equal(r.code, 4);
      assert.match(
        r.stderr,
        /^error: branch '.*\/pr-2' is stopped: start it \('bpg start .*\/pr-2'\) to read its schema\n$/,
      );
      const e = await client.schemaDiff(db, 'pr-1', { against: 'pr-2' }).then(
        () => null,
        (x: unknown) => x as BpgApiError,
      );
      assert.equal(e?.status, 409);
      assert.match(e!.message, /bpg start/);
    } finally {
      await ok(['start', `${db}/pr-2`], env());
    }
  });

  it('reads are bounded: a kind past the limits is compared up to where it stopped, and a server that sends too much is cut off', async () => {
    const small: CatalogLimits = {
      maxObjects: 10,
      maxBytesPerKind: 1 << 20,
      // customers (2 columns), events (1), events_2026 (1), the evil table (1), then new_table (2): cut inside new_table
      maxColumns: 6,
      maxText: 64,
      maxEnumLabels: 1,
      statementTimeoutMs: 30_000,
    };
    const full = buildModel(await withClient(direct(main), (c) => readCatalog(c)));
    const part = await withClient(direct(pr), (c) => readCatalog(c, small));
    assert.deepEqual(part.cut, { table: ['app', EVIL] });
    assert.deepEqual(
      part.tables.map((t) => t.name),
      ['customers', 'events', 'events_2026', EVIL],
    );
    assert.ok(part.functions.every((f) => f.def.text.length <= 64 && f.def.md5 !== null));
    assert.deepEqual(
      part.enums.find((e) => e.name === 'mood'),
      { schema: 'app', name: 'mood', q: 'app.mood', labels: ['sad'], cut: true },
    );
    const d = compareSchemas(full, buildModel(part), { branch: 'b', against: 'a' });
    assert.equal(d.truncated, true);
    assert.deepEqual(d.truncatedKinds, ['table']);
    // old_table and orders are past the cut: not reported as dropped or altered
    assert.deepEqual(
      d.changes.filter((c) => c.kind === 'table' || c.kind === 'column').map((c) => c.name),
      ['app.events', 'app.events_2026', EVIL_Q],
    );
    // the session's own bound: the branch's server cannot make the agent read without end
    await assert.rejects(
      withClient(direct(pr), (c) => readCatalog(c), { maxReadBytes: 4096 }),
      /the server sent more than 4096 bytes on one session/,
    );
  });

  it("a branch that replaced the catalog functions the bounds use is still cut off by the session's read bound", async () => {
    // A superuser may replace pg_catalog functions: here the ones that cut definitions and count bytes.
    await exec(
      pr,
      `CREATE OR REPLACE FUNCTION pg_catalog.left(text, integer) RETURNS text LANGUAGE sql AS 'SELECT $1';
       CREATE OR REPLACE FUNCTION pg_catalog.octet_length(text) RETURNS integer LANGUAGE sql AS 'SELECT 1';
       CREATE VIEW app.huge AS SELECT '${'x'.repeat(3 << 20)}'::text AS x;`,
    );
    await assert.rejects(
      withClient(direct(pr), (c) => readCatalog(c), { maxReadBytes: 1 << 20 }),
      /the server sent more than 1 MiB on one session/,
    );
    // the API and the CLI stay answerable: the whole read is within the agent's own bound (64 MiB)
    const d = await client.schemaDiff(db, 'pr-1');
    assert.ok(d.changes.some((c) => c.kind === 'view' && c.name === 'app.huge'));
  });

  it('GET /v1/openapi.json documents the route and its response', async () => {
    const doc = (await client.openapi()) as any;
    const op = doc.paths['/v1/databases/{db}/branches/{branch}/schema-diff'].get;
    assert.equal(op.operationId, 'schemaDiff');
    assert.deepEqual(op.responses['200'].content['application/json'].schema, {
      $ref: '#/components/schemas/SchemaDiff',
    });
    assert.ok(doc.components.schemas.SchemaDiff.properties.counts);
    assert.ok(
      srv.api.routes.some((r) => r.method === 'GET' && r.path === '/v1/databases/{db}/branches/{branch}/schema-diff'),
    );
  });

  it('logs no password or token', () => {
    const text = JSON.stringify(log.lines);
    assert.ok(!text.includes(TOKEN));
    assert.ok(!text.includes(pr.connection.password));
  });
});

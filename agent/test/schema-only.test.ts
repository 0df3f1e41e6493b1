import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { BpgApiError, BpgClient } from '../api/client.js';
import { serve, type RunningServer } from '../api/serve.js';
import { loadConfig, type Config } from '../config.js';
import { Layout } from '../engine/layout.js';
import type { BranchView } from '../engine/view.js';
import { payload, runBundle } from '../../action/test/bundle.js';
import { FakeGitHub } from '../../shared/test/fake-github.js';
import {
  cli,
  datasetsUnder,
  leftovers,
  ok,
  okJson,
  ownStateConfig,
  query,
  queryOne,
  recorder,
  sh,
  uniqueDb,
} from './helpers.js';

/**
 * Schema-only branches on the real stack: the parent's structure (compared with the schema diff
 * code), none of its rows anywhere in the branch's files (raw bytes of every file of its dataset and
 * WAL archive, checked against a full branch where the same search finds them), a seed, reset to the
 * parent's new structure plus the seed, a failing seed that leaves nothing, and the HTTP API.
 */

const TOKEN = `tok-${randomBytes(16).toString('hex')}`;
const CFG = ownStateConfig('schemaonly', 46);
const env = { BPG_CONFIG: CFG };
const db = uniqueDb('so');
const log = recorder();
/** Every value of the parent's rows carries it: found in a file means a row leaked. */
const MARK = `bpgrow${randomBytes(6).toString('hex')}`;

const PARENT_SQL = `
CREATE ROLE app_owner NOLOGIN;
CREATE EXTENSION hstore;
CREATE SCHEMA app AUTHORIZATION app_owner;
CREATE TYPE app.mood AS ENUM ('sad', 'ok');
CREATE SEQUENCE app.counter;
CREATE TABLE app.customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE, note text, tags hstore);
ALTER TABLE app.customers OWNER TO app_owner;
CREATE TABLE app.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  customer_id int REFERENCES app.customers(id), total numeric(12,2) NOT NULL DEFAULT 0, mood app.mood);
CREATE INDEX orders_total_idx ON app.orders (total);
CREATE VIEW app.big_orders AS SELECT id, total FROM app.orders WHERE total > 100;
CREATE MATERIALIZED VIEW app.emails AS SELECT email FROM app.customers;
CREATE FUNCTION app.double(x integer) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT x * 2';
GRANT SELECT ON app.orders TO app_owner;
-- rows: repeated values (pg_statistic's most-common values), long ones (TOAST), dead and updated ones
INSERT INTO app.customers (email, note, tags)
  SELECT '${MARK}-' || (g % 10) || '-' || g || '@example.com', repeat('${MARK}-note ', 400), hstore('k', '${MARK}')
  FROM generate_series(1, 2000) g;
INSERT INTO app.orders (customer_id, total, mood) SELECT g, g * 3, 'ok' FROM generate_series(1, 2000) g;
UPDATE app.customers SET note = '${MARK}-updated' WHERE id <= 100;
DELETE FROM app.orders WHERE id > 1900;
SELECT nextval('app.counter') FROM generate_series(1, 42);
SELECT lo_from_bytea(0, convert_to('${MARK}-large-object', 'UTF8'));
REFRESH MATERIALIZED VIEW app.emails;
ANALYZE;
CHECKPOINT;
`;

async function exec(b: BranchView, sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: b.connection.uri, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** Every regular file under `dir` (not following links). */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesUnder(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** The files under `dirs` whose raw bytes contain `needle` (chunks overlap, so no match is missed at a boundary). */
async function filesContaining(dirs: string[], needle: string): Promise<string[]> {
  const n = Buffer.from(needle);
  const hits: string[] = [];
  for (const dir of dirs)
    for (const f of await filesUnder(dir)) {
      const fh = await open(f, 'r');
      try {
        const buf = Buffer.alloc(1024 * 1024 + n.length);
        let pos = 0;
        let carry = 0;
        for (;;) {
          const { bytesRead } = await fh.read(buf, carry, buf.length - carry, pos);
          if (bytesRead === 0) break;
          const len = carry + bytesRead;
          if (buf.subarray(0, len).includes(n)) {
            hits.push(f);
            break;
          }
          pos += bytesRead;
          carry = Math.min(n.length - 1, len);
          buf.copy(buf, 0, len - carry, len);
        }
      } finally {
        await fh.close();
      }
    }
  return hits;
}

/** The branch's dataset mount point and its WAL archive folder: every file a branch can read. */
async function branchDirs(cfg: Config, b: BranchView): Promise<string[]> {
  const state = JSON.parse(await readFile(join(cfg.stateDir, 'state.json'), 'utf8'));
  const id: string = state.branches[b.name].id;
  const mp = sh('zfs', ['get', '-H', '-o', 'value', 'mountpoint', b.dataset]).trim();
  return [mp, new Layout(cfg).walDir(id)];
}

const diffOf = async (name: string) =>
  okJson<{ identical: boolean; changes: Array<{ change: string; kind: string; name: string }> }>(
    ['branch', 'diff', name],
    env,
  );

describe('schema-only branches on the stack', () => {
  let cfg: Config;
  let srv: RunningServer;
  let client: BpgClient;
  let main: BranchView;
  let seedPath: string;

  before(async () => {
    cfg = await loadConfig(CFG);
    const apiCfg = { ...cfg, api: { ...cfg.api, listen: '127.0.0.1:0', tokens: [{ name: 'tests', token: TOKEN }] } };
    await ok(['db', 'create', db], env);
    srv = await serve(apiCfg, { listen: '127.0.0.1:0', log, handleSignals: false, env: {} });
    client = new BpgClient({ baseUrl: srv.url, token: TOKEN });
    main = await okJson(['branch', 'get', `${db}/main`], env);
    await exec(main, PARENT_SQL);
    seedPath = join(cfg.stateDir, 'seed.sql');
    await writeFile(
      seedPath,
      "INSERT INTO app.customers (email, note) VALUES ('seed@example.com', 'seeded');\nSELECT setval('app.counter', 7);\n",
    );
  });

  after(async () => {
    await cli(['db', 'delete', db, '--force'], env);
    await srv?.close();
    // the template stays for later branches; this state's root goes with the run (scripts/test.sh)
  });

  it("has the parent's structure and roles, and none of its rows in any file", async () => {
    const so = await okJson(['branch', 'create', `${db}/bare`, '--schema-only'], env);
    assert.equal(so.schemaOnly, true);
    assert.equal(so.seed, null);
    assert.equal(so.consistency, null);
    assert.equal(so.parent, `${db}/main`);
    const d = await diffOf(`${db}/bare`);
    assert.equal(d.identical, true, `differs from main: ${JSON.stringify(d.changes)}`);
    // owners and grants came along (roles without passwords)
    const owner = await queryOne<{ o: string }>(
      so,
      "SELECT tableowner AS o FROM pg_tables WHERE tablename = 'customers'",
    );
    assert.equal(owner.o, 'app_owner');
    const pw = await queryOne<{ n: number }>(
      so,
      "SELECT count(*)::int AS n FROM pg_authid WHERE rolname = 'app_owner' AND rolpassword IS NULL",
    );
    assert.equal(pw.n, 1);
    // no rows, no large object, no statistics, sequences at their start
    const counts = await queryOne<Record<string, number>>(
      so,
      `SELECT (SELECT count(*) FROM app.customers)::int AS customers, (SELECT count(*) FROM app.orders)::int AS orders,
              (SELECT count(*) FROM pg_largeobject_metadata)::int AS lobs,
              (SELECT count(*) FROM pg_statistic s JOIN pg_class c ON c.oid = s.starelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'app')::int AS stats,
              (SELECT last_value FROM app.counter)::int AS counter, (SELECT is_called FROM app.counter) AS called`,
    );
    assert.deepEqual(counts, { customers: 0, orders: 0, lobs: 0, stats: 0, counter: 1, called: false });
    const mv = await queryOne<{ populated: boolean }>(
      so,
      "SELECT ispopulated AS populated FROM pg_matviews WHERE matviewname = 'emails'",
    );
    assert.equal(mv.populated, false);

    // The search finds the rows where they are (a full branch: a clone of main) ...
    const full = await okJson(['branch', 'create', `${db}/full`, '--fast'], env);
    const inFull = await filesContaining(await branchDirs(cfg, full), MARK);
    assert.ok(inFull.length > 0, 'the search found no row in a full branch: it would prove nothing');
    // ... and in the schema-only branch, nowhere: data files, WAL, statistics, free space, archive.
    await exec(so, 'CHECKPOINT');
    assert.deepEqual(await filesContaining(await branchDirs(cfg, so), MARK), []);
    await ok(['branch', 'delete', `${db}/full`], env);
  });

  it('runs the seed after the structure, and again on reset against the parent’s new structure', async () => {
    const so = await okJson(['branch', 'create', `${db}/seeded`, '--schema-only', '--seed', seedPath], env);
    assert.equal(so.schemaOnly, true);
    assert.equal(so.seed?.bytes, (await readFile(seedPath)).length);
    assert.deepEqual(await query(so, 'SELECT email, note FROM app.customers'), [
      { email: 'seed@example.com', note: 'seeded' },
    ]);
    assert.equal((await queryOne<{ v: number }>(so, 'SELECT last_value::int AS v FROM app.counter')).v, 7);

    // The branch's own changes go; the parent's new structure and the seed come.
    await exec(so, "INSERT INTO app.customers (email) VALUES ('pr-row@example.com'); CREATE TABLE app.pr_only (x int)");
    await exec(main, 'ALTER TABLE app.orders ADD COLUMN shipped_at timestamptz; CREATE TABLE app.later (id int)');
    const reset = await okJson(['branch', 'reset', `${db}/seeded`], env);
    assert.equal(reset.port, so.port);
    assert.equal(reset.connection.password, so.connection.password, 'the password stays');
    assert.equal(reset.schemaOnly, true);
    assert.deepEqual(await query(reset, 'SELECT email FROM app.customers'), [{ email: 'seed@example.com' }]);
    assert.equal((await diffOf(`${db}/seeded`)).identical, true);
    assert.deepEqual(await filesContaining(await branchDirs(cfg, reset), MARK), []);
    await assert.rejects(() => exec(reset, 'SELECT 1 FROM app.pr_only'), /does not exist/);
    await ok(['branch', 'delete', `${db}/seeded`], env);
  });

  it('a failing seed says so in one line and leaves nothing behind', async () => {
    const bad = join(cfg.stateDir, 'bad-seed.sql');
    await writeFile(bad, 'INSERT INTO app.no_such_table VALUES (1);\n');
    const r = await cli(['branch', 'create', `${db}/badseed`, '--schema-only', '--seed', bad], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /the seed failed .*no_such_table/);
    assert.equal(r.stdout, '');
    const left = await leftovers(db, CFG);
    assert.ok(!left.datasets.some((d) => d.endsWith('/badseed')), `left: ${left.datasets.join(', ')}`);
    assert.ok(!left.containers.some((c) => /badseed|bpg-schema/.test(c)), `left: ${left.containers.join(', ')}`);
    const names = (await okJson<BranchView[]>(['branch', 'list', db], env)).map((b) => b.branch);
    assert.ok(!names.includes('badseed'));
    // options that do not go together are refused before anything is made
    const noSchema = await cli(['branch', 'create', `${db}/x`, '--seed', bad], env);
    assert.equal(noSchema.code, 2);
    assert.match(noSchema.stderr, /a seed applies to schema-only branches only/);
    const fast = await cli(['branch', 'create', `${db}/x`, '--schema-only', '--fast'], env);
    assert.equal(fast.code, 2);
    assert.match(fast.stderr, /--schema-only takes the parent's current structure/);
  });

  it('over HTTP: schemaOnly and seed on PUT, the kind kept on the next PUT, delete', async () => {
    const put = await client.putBranch(db, 'pr-7', {
      schemaOnly: true,
      seed: 'INSERT INTO app.orders (total) VALUES (5);',
    });
    assert.equal(put.created, true);
    assert.equal(put.branch.schemaOnly, true);
    assert.equal(put.branch.seed?.bytes, 42);
    assert.deepEqual(await query(put.branch, 'SELECT total::int AS t FROM app.orders'), [{ t: 5 }]);
    const again = await client.putBranch(db, 'pr-7', { schemaOnly: true });
    assert.equal(again.created, false);
    await assert.rejects(
      () => client.putBranch(db, 'pr-7', { schemaOnly: false }),
      (e: unknown) => e instanceof BpgApiError && e.status === 409 && /exists as a schema-only branch/.test(e.message),
    );
    await assert.rejects(
      () => client.putBranch(db, 'pr-8', { seed: 'SELECT 1' }),
      (e: unknown) =>
        e instanceof BpgApiError && e.status === 400 && /a seed applies to schema-only branches only/.test(e.message),
    );
    await client.deleteBranch(db, 'pr-7');
    const left = datasetsUnder(`${cfg.zfs.pool}/${cfg.zfs.datasetBase}/${db}`);
    assert.ok(!left.some((d) => d.includes('pr-7')), `left: ${left.join(', ')}`);
    // the template cluster stays for the next schema-only branch, and doctor leaves it alone
    assert.ok(datasetsUnder(`${cfg.zfs.pool}/${cfg.zfs.datasetBase}/_template`).some((d) => d.endsWith('@empty')));
    const doctor = await okJson<{ findings: Array<{ subject: string }> }>(['doctor'], env);
    assert.deepEqual(
      doctor.findings.filter((f) => f.subject.includes('_template')),
      [],
    );
  });

  it('the Action (the committed bundle): schema_only and seed_file from the workspace, a link out of it refused', async () => {
    const GH_TOKEN = `ghs_${randomBytes(18).toString('hex')}`;
    const gh = new FakeGitHub(GH_TOKEN);
    await gh.start();
    gh.repo('octo/public-app', { private: false });
    const work = await mkdtemp(join(tmpdir(), 'bpg-so-action-'));
    try {
      await mkdir(join(work, 'db'));
      await writeFile(
        join(work, 'db', 'seed.sql'),
        "INSERT INTO app.customers (email) VALUES ('action-seed@example.com');\n",
      );
      await writeFile(join(cfg.stateDir, 'runner-secret'), `SELECT '${TOKEN}';\n`);
      await symlink(join(cfg.stateDir, 'runner-secret'), join(work, 'db', 'evil.sql'));
      const step = (pr: number, inputs: Record<string, string>) =>
        runBundle({
          label: `schema-only-${pr}`,
          work,
          eventName: 'pull_request',
          event: payload({ owner: 'octo', repo: 'public-app', pr }, 'pull_request', 'opened'),
          inputs: { agent_url: srv.url, agent_token: TOKEN, database: db, github_token: GH_TOKEN, ...inputs },
          env: { GITHUB_REPOSITORY: 'octo/public-app', GITHUB_API_URL: gh.url },
        });
      const r = await step(31, { schema_only: 'true', seed_file: 'db/seed.sql' });
      assert.equal(r.code, 0, r.stderr || r.stdout);
      const b = await client.getBranch(db, 'pr-31');
      assert.equal(b.schemaOnly, true);
      assert.deepEqual(await query(b, 'SELECT email FROM app.customers'), [{ email: 'action-seed@example.com' }]);
      // one comment on the public repository's PR, without the branch's password
      const comments = gh.botComments('octo/public-app', 31);
      assert.equal(comments.length, 1);
      assert.ok(!comments[0]!.body.includes(b.connection.password), 'the comment hides the password');
      const evil = await step(32, { schema_only: 'true', seed_file: 'db/evil.sql' });
      assert.notEqual(evil.code, 0);
      assert.match(evil.stdout + evil.stderr, /input seed_file: db\/evil.sql is outside the workspace/);
      await assert.rejects(
        () => client.getBranch(db, 'pr-32'),
        (e: unknown) => e instanceof BpgApiError && e.status === 404,
      );
      await client.deleteBranch(db, 'pr-31');
    } finally {
      await gh.close();
      await rm(work, { recursive: true, force: true });
    }
  });
});

import assert from 'node:assert/strict';
import { lstatSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import YAML from 'yaml';
import type { BranchView } from '../engine/view.js';
import { BpgApiError, BpgClient } from '../api/client.js';
import { serve } from '../api/serve.js';
import { loadConfig } from '../config.js';
import { cli, isSpareSlot, ok, okJson, ownStateConfig, query, queryOne, recorder, sh, uniqueDb } from './helpers.js';
import { SourcePg } from './refresh-source.js';

/**
 * Issue 16, refresh and masking on the real stack, against a source PostgreSQL the test starts
 * (source-pg.ts): a refresh with live branches and a client connected to main, masking that
 * fails (old main kept, nothing left over), and masking that works: no original value in any byte
 * of main's dataset, a new branch's dataset or main's WAL archive.
 */
const MASK_SQL = fileURLToPath(new URL('../../../examples/masking/mask.sql', import.meta.url));

/** Every original value contains this token; the masked ones never do. */
const TOKEN = `Qz${Math.random().toString(36).slice(2, 10)}Kw`;
const ROWS = 200;

/** Files under `dir` (links and special files skipped) whose bytes contain `needle`. */
function filesWith(dir: string, needle: string): string[] {
  const hit: string[] = [];
  const want = Buffer.from(needle);
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && readFileSync(p).includes(want)) hit.push(p);
    }
  };
  walk(dir);
  return hit;
}

const mountpoint = (ds: string) => sh('zfs', ['get', '-H', '-o', 'value', 'mountpoint', ds]).trim();

describe('db refresh: a new main from the source, masked, swapped in', () => {
  const env = { BPG_CONFIG: ownStateConfig('refresh', 48) };
  const raw = YAML.parse(readFileSync(env.BPG_CONFIG, 'utf8'));
  const root = `${raw.zfs.pool}/${raw.zfs.datasetBase}`;
  const db = uniqueDb('rf');
  const src = new SourcePg();
  const view = (b: string, d = db) => okJson<BranchView>(['branch', 'get', `${d}/${b}`], env);
  const dbM = uniqueDb('rm');
  const dbB = uniqueDb('rb');
  const writeConfig = (change: (r: Record<string, any>) => void) => {
    const r = YAML.parse(readFileSync(env.BPG_CONFIG, 'utf8'));
    change(r);
    writeFileSync(env.BPG_CONFIG, YAML.stringify(r), { mode: 0o600 });
  };

  before(async () => {
    await src.start();
    await src.query('postgres', 'CREATE DATABASE src');
    await src.query(
      'src',
      `CREATE TABLE customers (id int PRIMARY KEY, email text UNIQUE, full_name text, phone text, notes text, photo oid);
       ALTER TABLE customers ALTER COLUMN notes SET STORAGE EXTERNAL;
       CREATE INDEX ON customers (full_name);
       CREATE TABLE audit_log (id serial PRIMARY KEY, who text, what text);`,
    );
    // notes: over 2 kB, stored out of line uncompressed (TOAST); photo: a large object.
    await src.query(
      'src',
      `INSERT INTO customers
         SELECT g, 'person' || g || '.${TOKEN}@corp.test', 'Name${TOKEN} ' || g, '+44 20 ${TOKEN} ' || g,
                repeat('free text of ${TOKEN} ', 120) || g, lo_from_bytea(0, convert_to('photo ${TOKEN} ' || g, 'UTF8'))
         FROM generate_series(1, ${ROWS}) g;
       INSERT INTO audit_log (who, what) SELECT 'person' || g || '.${TOKEN}@corp.test', 'login' FROM generate_series(1, 50) g;
       ANALYZE;`,
    );
    await ok(['db', 'create', db], env);
  });
  after(async () => {
    for (const d of [db, dbM, dbB]) await cli(['db', 'delete', d, '--force'], env);
    await src.stop();
  });

  it('imports the source into main without masking; the source password is in no state or output', async () => {
    const r = await cli(['db', 'refresh', db, '--from-url', src.urlWithPassword('src'), '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout) as { generation: number; interruptionMs: number; masked: boolean };
    assert.equal(res.generation, 1);
    assert.equal(res.masked, false);
    const main = await view('main');
    assert.equal((await queryOne<{ n: number }>(main, 'SELECT count(*)::int AS n FROM customers')).n, ROWS);
    assert.deepEqual(main.refresh, { generation: 1, current: true, refreshedAt: main.refresh!.refreshedAt });
    const state = readFileSync(join(raw.stateDir, 'state.json'), 'utf8');
    assert.ok(!state.includes(src.password), 'the source password is not in state.json');
    assert.ok(!r.stderr.includes(src.password) && !r.stdout.includes(src.password));
  });

  it('masking that fails: the refresh aborts, old main as it was, nothing left over', async () => {
    const bad = join(raw.stateDir, 'bad-mask.sql');
    writeFileSync(bad, "UPDATE customers SET full_name = 'x';\nUPDATE no_such_table SET a = 1;\n");
    const before = await view('main');
    const r = await cli(['db', 'refresh', db, '--from-url', src.urlWithPassword('src'), '--masking-sql', bad], env);
    assert.notEqual(r.code, 0);
    const line = r.stderr.trim().split('\n').pop()!;
    assert.match(line, /masking SQL .*bad-mask\.sql failed: relation "no_such_table" does not exist/);
    assert.ok(!r.stderr.includes(src.password));
    const main = await view('main');
    assert.equal(main.refresh!.generation, 1);
    assert.equal(main.port, before.port);
    assert.equal(main.dataset, before.dataset);
    assert.equal(
      (await queryOne<{ n: number }>(main, "SELECT count(*)::int AS n FROM customers WHERE full_name = 'x'")).n,
      0,
    );
    assert.deepEqual(
      sh('zfs', ['list', '-H', '-o', 'name', '-r', `${root}/${db}`])
        .split('\n')
        .filter(Boolean)
        .sort(),
      [`${root}/${db}`, main.dataset].sort(),
      'no new dataset left (and the empty main of before the first refresh is gone: nothing was cloned from it)',
    );
    assert.deepEqual(
      sh('docker', ['ps', '-a', '--filter', `label=io.betterpg.root=${root}`, '--format', '{{.Names}}'])
        .split('\n')
        .filter((n) => n && !isSpareSlot(n, [main.port]))
        .sort(),
      [main.container, `bpg-slot-${main.port}.${main.container.split('.').pop()}`].sort(),
      "main's container and its port slot, nothing else",
    );
    const st = JSON.parse(readFileSync(join(raw.stateDir, 'state.json'), 'utf8'));
    assert.equal(st.databases[db].operation, null);
    assert.equal(st.branches[`${db}/main`].operation, null);
  });

  it('refresh with masking while a branch lives and a client is connected to main; no original value survives', async () => {
    await ok(['branch', 'create', `${db}/old`], env);
    const old = await view('old');
    // The source moves on: the refresh brings the new row.
    await src.query(
      'src',
      `INSERT INTO customers VALUES (${ROWS + 1}, 'late.${TOKEN}@corp.test', 'Late${TOKEN}', NULL, NULL, NULL)`,
    );

    // A client of main that queries all the time: its longest gap is main's interruption.
    const main0 = await view('main');
    let stop = false;
    let longest = 0;
    let reconnects = 0;
    const client = (async () => {
      let c: pg.Client | null = null;
      let lastOk = performance.now();
      while (!stop) {
        try {
          if (!c) {
            c = new pg.Client({ connectionString: main0.connection.direct.uri, connectionTimeoutMillis: 2000 });
            c.on('error', () => {});
            await c.connect();
          }
          await c.query('SELECT 1');
          const t = performance.now();
          longest = Math.max(longest, t - lastOk);
          lastOk = t;
        } catch {
          await c?.end().catch(() => {});
          c = null;
          reconnects++;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      await c?.end().catch(() => {});
    })();
    const r = await cli(
      ['db', 'refresh', db, '--from-url', src.urlWithPassword('src'), '--masking-sql', MASK_SQL, '--json'],
      env,
    );
    stop = true;
    await client;
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout) as {
      generation: number;
      interruptionMs: number;
      masked: boolean;
      totalMs: number;
    };
    console.log(
      `refresh: ${res.totalMs} ms in all; main did not answer for ${res.interruptionMs} ms (agent's measure), the client's longest gap ${Math.round(longest)} ms, ${reconnects} failed attempts`,
    );
    assert.equal(res.generation, 2);
    assert.ok(res.masked);
    assert.ok(reconnects > 0, 'the client was cut off and reconnected');

    // main: same port and password, the new (masked) data.
    const main = await view('main');
    assert.equal(main.port, main0.port);
    assert.equal(main.connection.password, main0.connection.password);
    assert.equal((await queryOne<{ n: number }>(main, 'SELECT count(*)::int AS n FROM customers')).n, ROWS + 1);
    assert.equal(
      (
        await queryOne<{ n: number }>(
          main,
          "SELECT count(*)::int AS n FROM customers WHERE email LIKE '%@example.invalid'",
        )
      ).n,
      ROWS + 1,
    );
    // the old branch keeps its data and says it comes from an older refresh
    const oldNow = await view('old');
    assert.equal(oldNow.port, old.port);
    assert.equal((await queryOne<{ n: number }>(oldNow, 'SELECT count(*)::int AS n FROM customers')).n, ROWS);
    assert.equal(
      (await queryOne<{ e: string }>(oldNow, 'SELECT email AS e FROM customers WHERE id = 1')).e,
      `person1.${TOKEN}@corp.test`,
    );
    assert.deepEqual([oldNow.refresh!.generation, oldNow.refresh!.current], [1, false]);
    // a new branch sees the new data
    await ok(['branch', 'create', `${db}/new`], env);
    const fresh = await view('new');
    assert.equal((await queryOne<{ n: number }>(fresh, 'SELECT count(*)::int AS n FROM customers')).n, ROWS + 1);
    assert.deepEqual([fresh.refresh!.generation, fresh.refresh!.current], [2, true]);

    // Some writes on main, archived: the WAL archive only ever sees post-masking WAL.
    await query(main, 'CREATE TABLE after_refresh AS SELECT g FROM generate_series(1, 1000) g');
    await query(main, 'SELECT pg_switch_wal()');
    const walDir = join(
      raw.stateDir,
      'wal',
      (
        JSON.parse(readFileSync(join(raw.stateDir, 'state.json'), 'utf8')) as {
          branches: Record<string, { id: string }>;
        }
      ).branches[`${db}/main`]!.id,
    );
    for (let i = 0; i < 200 && readdirSync(walDir).filter((f) => /^[0-9A-F]{24}$/.test(f)).length === 0; i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.ok(
      readdirSync(walDir).some((f) => /^[0-9A-F]{24}$/.test(f)),
      "main's WAL archive has segments",
    );

    // The grep works: the old branch (a clone of the unmasked generation) has the token in its files.
    assert.ok(filesWith(mountpoint(oldNow.dataset), TOKEN).length > 0, 'the grep finds originals where they are');
    // No original value in any byte of main's dataset, the new branch's, or main's WAL archive.
    await ok(['stop', `${db}/new`], env); // its files at rest (shutdown checkpoint written)
    assert.deepEqual(filesWith(mountpoint(main.dataset), TOKEN), [], "main's dataset");
    assert.deepEqual(filesWith(mountpoint(fresh.dataset), TOKEN), [], "the new branch's dataset");
    assert.deepEqual(filesWith(walDir, TOKEN), [], "main's WAL archive");

    // reset of the old branch goes to the new main
    await ok(['branch', 'reset', `${db}/old`], env);
    const reset = await view('old');
    assert.equal((await queryOne<{ n: number }>(reset, 'SELECT count(*)::int AS n FROM customers')).n, ROWS + 1);
    assert.deepEqual([reset.refresh!.generation, reset.refresh!.current], [2, true]);
    // nothing is cloned from generation 1 any more: housekeeping drops it
    await ok(['housekeep'], env);
    assert.deepEqual(
      sh('zfs', ['list', '-H', '-o', 'name', '-t', 'filesystem', '-r', `${root}/${db}`])
        .split('\n')
        .filter(Boolean)
        .sort(),
      [`${root}/${db}`, main.dataset, `${root}/${db}/new`, `${root}/${db}/old`].sort(),
      'the old main (generation 1) is gone with the last branch cloned from it',
    );
    assert.notEqual(oldNow.dataset, main.dataset);
    const again = await cli(['doctor', '--json'], env);
    assert.deepEqual(JSON.parse(again.stdout).findings, []);
  });

  it('db create --from-url --masking-sql masks the import; a scheduled refresh with a masking command runs from housekeeping', async () => {
    const r = await cli(
      ['db', 'create', dbM, '--from-url', src.urlWithPassword('src'), '--masking-sql', MASK_SQL, '--json'],
      env,
    );
    assert.equal(r.code, 0, r.stderr);
    const main0 = await view('main', dbM);
    const masked = (b: BranchView) =>
      queryOne<{ n: number; m: number }>(
        b,
        "SELECT count(*)::int AS n, count(*) FILTER (WHERE email LIKE '%@example.invalid')::int AS m FROM customers",
      );
    const m0 = await masked(main0);
    assert.ok(m0.n > 0);
    assert.equal(m0.m, m0.n, 'every email masked on import');
    assert.deepEqual(filesWith(mountpoint(main0.dataset), TOKEN), [], "no original value in the imported main's files");

    // A schedule and a masking command (argv, no shell) in the config: housekeeping refreshes main when due.
    const psql = '/usr/lib/postgresql/15/bin/psql';
    writeConfig((c) => {
      c.databases = {
        [dbM]: {
          refresh: { every: '1s' },
          masking: {
            command: [
              psql,
              '-X',
              '-q',
              '-v',
              'ON_ERROR_STOP=1',
              '-f',
              MASK_SQL,
              '-c',
              "UPDATE customers SET full_name = 'by-command'",
            ],
          },
        },
      };
    });
    try {
      await new Promise((res) => setTimeout(res, 1500)); // the schedule's 1 s has passed since the import
      const h = await cli(['housekeep', '--json'], env);
      assert.equal(h.code, 0, h.stderr);
      const report = JSON.parse(h.stdout) as { refreshed: Array<{ database: string; generation: number | null }> };
      const main = await view('main', dbM);
      assert.deepEqual(
        report.refreshed.filter((x) => x.database === dbM),
        [{ database: dbM, generation: main.refresh!.generation }],
      );
      assert.equal(main.refresh!.generation, main0.refresh!.generation + 1);
      assert.equal(main.port, main0.port);
      const m = await masked(main);
      assert.equal(m.m, m.n, 'the command ran the masking SQL');
      assert.equal(
        (
          await queryOne<{ n: number }>(
            main,
            "SELECT count(*)::int AS n FROM customers WHERE full_name <> 'by-command'",
          )
        ).n,
        0,
        'and its own statement',
      );
    } finally {
      writeConfig((c) => delete c.databases);
    }
  });

  it("refresh over the API (202, polled); a base backup keeps none of the source's logs or other files", async () => {
    const LOGTOKEN = `Lg${Math.random().toString(36).slice(2, 10)}Zx`;
    // What a source's server leaves in its data directory: logs with queries and their values, and more.
    src.plant(
      'log/postgresql-planted.log',
      `LOG:  statement: UPDATE customers SET email = 'x.${LOGTOKEN}@corp.test'\n`,
    );
    src.plant('current_logfiles', 'stderr log/postgresql-planted.log\n');
    src.plant('pg_log/old.log', `ERROR: duplicate key ${LOGTOKEN}\n`);
    src.plant('notes-of-the-admin.txt', `${LOGTOKEN}\n`);
    const r = await cli(
      ['db', 'create', dbB, '--from-url', src.urlWithPassword('src'), '--method', 'basebackup', '--json'],
      env,
    );
    assert.equal(r.code, 0, r.stderr);
    const main0 = await view('main', dbB);
    const top = (b: BranchView) => readdirSync(join(mountpoint(b.dataset), 'data')).sort();
    const leftOf = (b: BranchView) =>
      top(b).filter(
        (n) => ['log', 'pg_log', 'current_logfiles', 'notes-of-the-admin.txt'].includes(n) || n.endsWith('.source'),
      );
    assert.deepEqual(leftOf(main0), [], 'the import keeps none of them');
    assert.deepEqual(filesWith(mountpoint(main0.dataset), LOGTOKEN), []);
    assert.ok(top(main0).includes('base') && top(main0).includes('PG_VERSION'));

    const cfg = await loadConfig(env.BPG_CONFIG);
    const WRITE = `w-${Math.random().toString(36).slice(2)}-token-write`;
    const srv = await serve(
      { ...cfg, api: { ...cfg.api, listen: '127.0.0.1:0', tokens: [{ name: 'writer', token: WRITE, role: 'write' }] } },
      { listen: '127.0.0.1:0', log: recorder(), handleSignals: false, env: {} },
    );
    try {
      const writer = new BpgClient({ baseUrl: srv.url, token: WRITE });
      // naming a source (or a file of the agent's host) is admin's
      await assert.rejects(
        writer.startRefreshDatabase(dbB, { from: src.url('src') }),
        (e: unknown) => e instanceof BpgApiError && e.status === 403,
      );
      await assert.rejects(
        writer.startRefreshDatabase(dbB, { maskingSql: MASK_SQL }),
        (e: unknown) => e instanceof BpgApiError && e.status === 403,
      );
      await assert.rejects(
        writer.startRefreshDatabase('no-such-db'),
        (e: unknown) => e instanceof BpgApiError && e.status === 404,
      );
      // from what was recorded: write is enough
      const op = await writer.startRefreshDatabase(dbB);
      assert.equal(op.kind, 'refresh-database');
      assert.equal(op.database, dbB);
      assert.equal(op.status, 'running');
      const done = await writer.waitOperation(op.id, { pollMs: 200 });
      assert.equal(done.status, 'succeeded');
      const mainView = done.result!.branches.find((b) => b.branch === 'main')!;
      assert.equal(mainView.refresh!.generation, main0.refresh!.generation + 1);
      assert.equal(mainView.port, main0.port);
      const main = await view('main', dbB);
      assert.notEqual(main.dataset, main0.dataset);
      assert.deepEqual(leftOf(main), [], 'the refresh keeps none of them either');
      assert.deepEqual(filesWith(mountpoint(main.dataset), LOGTOKEN), []);
      assert.ok((await queryOne<{ n: number }>(main, 'SELECT count(*)::int AS n FROM pg_database')).n > 0);
    } finally {
      await srv.close();
    }
  });
});

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BpgApiError, BpgClient } from '../api/client.js';
import * as S from '../api/schemas.js';
import { serve, type RunningServer } from '../api/serve.js';
import type { Config } from '../config.js';
import { DockerDriver } from '../drivers/docker.js';
import { Engine } from '../engine/engine.js';
import { State } from '../state/schema.js';
import { cli, config, freePort, leftovers, query, recorder, sh, uniqueDb } from './helpers.js';

/**
 * The HTTP API over real HTTP, against the real engine, ZFS, Docker and PostgreSQL. The server runs
 * in this process on a free port with a token made up here; the CLI (a separate process) shares its
 * state, as it would on a real host.
 */

const TOKEN = `tok-${randomBytes(16).toString('hex')}`;
const WRONG = `tok-${randomBytes(16).toString('hex')}`;
const db = uniqueDb('ap');
const BAD_NAMES = ['../x', 'a;rm -rf', '$(id)'];

const log = recorder();

function withApi(cfg: Config, change: Partial<Config> = {}): Config {
  return { ...cfg, ...change, api: { ...cfg.api, listen: '127.0.0.1:0', tokens: [{ name: 'tests', token: TOKEN }] } };
}

function start(cfg: Config, opts: { engine?: Engine; listen?: string } = {}): Promise<RunningServer> {
  return serve(cfg, { listen: '127.0.0.1:0', log, handleSignals: false, env: {}, ...opts });
}

interface Reply {
  status: number;
  body: any;
  headers: Headers;
}

/** A raw request, for what the typed client would never send. */
async function http(
  base: string,
  method: string,
  path: string,
  o: { token?: string | null; body?: unknown; raw?: string } = {},
): Promise<Reply> {
  const headers: Record<string, string> = {};
  const token = o.token === undefined ? TOKEN : o.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  let body: string | undefined = o.raw;
  if (o.body !== undefined) body = JSON.stringify(o.body);
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(base + path, { method, headers, body });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
}

function assertError(r: Reply, status: number, code: string, message?: RegExp): void {
  assert.equal(r.status, status, JSON.stringify(r.body));
  const body = S.ErrorBody.parse(r.body);
  assert.deepEqual(Object.keys(r.body), ['error']);
  assert.equal(body.error.code, code);
  assert.ok(body.error.message.length > 0);
  assert.doesNotMatch(body.error.message, /\n|\bat .*\.js:\d+/, 'no stack trace');
  if (message) assert.match(body.error.message, message);
}

const enc = encodeURIComponent;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function readState(cfg: Config): State {
  return State.parse(JSON.parse(readFileSync(join(cfg.stateDir, 'state.json'), 'utf8')));
}

/**
 * What this file's database and the bad names have in the state, ZFS and Docker: proof that nothing
 * was made. Other test files run at the same time on the same root, so only names that are ours
 * or that carry a bad name's characters count.
 */
function footprint(cfg: Config): string[] {
  const root = `${cfg.zfs.pool}/${cfg.zfs.datasetBase}`;
  const state = readState(cfg);
  const all = [
    ...Object.keys(state.databases),
    ...Object.keys(state.branches),
    ...sh('zfs', ['list', '-H', '-o', 'name', '-t', 'all', '-r', root]).split('\n'),
    ...sh('docker', ['ps', '-a', '--filter', `label=io.betterpg.root=${root}`, '--format', '{{.Names}}']).split('\n'),
  ];
  return all.filter((n) => n.includes(db) || /[;$() ]|\.\./.test(n)).sort();
}

describe('HTTP API', () => {
  let cfg: Config;
  let srv: RunningServer;
  let client: BpgClient;
  const passwords = new Set<string>();
  const seen = (b: S.BranchView) => (passwords.add(b.connection.password), b);

  before(async () => {
    cfg = withApi(await config());
    srv = await start(cfg);
    client = new BpgClient({ baseUrl: srv.url, token: TOKEN });
  });

  after(async () => {
    await client?.deleteDatabase(db, { force: true }).catch(() => {});
    await srv?.close();
  });

  // ---------------------------------------------------------------- auth

  it('GET /v1/health answers without a token', async () => {
    const r = await http(srv.url, 'GET', '/v1/health', { token: null });
    assert.equal(r.status, 200);
    assert.deepEqual(S.Health.parse(r.body), { status: 'ok' });
  });

  it('refuses a missing or wrong token with 401 that says nothing about resources', async () => {
    const paths = [
      '/v1/databases',
      `/v1/databases/${db}`,
      '/v1/databases/nosuchdb/branches/x',
      '/v1/no-such-route',
      '/v1/openapi.json',
    ];
    const bodies = new Set<string>();
    for (const token of [null, WRONG, TOKEN.slice(0, -1), `${TOKEN}x`, '']) {
      for (const p of paths) {
        const r = await http(srv.url, 'GET', p, { token });
        assertError(r, 401, 'unauthorized');
        assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer/);
        bodies.add(JSON.stringify(r.body));
      }
      // Writes are refused before their body is even read.
      assertError(
        await http(srv.url, 'PUT', `/v1/databases/${db}/branches/x`, { token, raw: '{bad' }),
        401,
        'unauthorized',
      );
      assertError(await http(srv.url, 'POST', '/v1/databases', { token, body: { name: db } }), 401, 'unauthorized');
    }
    assert.equal(bodies.size, 1, 'the same answer whatever was asked');
    const raw = await fetch(`${srv.url}/v1/databases`, { headers: { authorization: `Basic ${TOKEN}` } });
    assert.equal(raw.status, 401);
    assert.equal((await http(srv.url, 'GET', '/v1/databases')).status, 200);
  });

  // ---------------------------------------------------------------- databases

  it('POST /v1/databases creates a database (201), a second time is a 409', async () => {
    const r = await http(srv.url, 'POST', '/v1/databases', { body: { name: db } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const view = S.DatabaseView.parse(r.body);
    assert.equal(view.name, db);
    assert.equal(r.headers.get('location'), `/v1/databases/${db}`);
    assert.deepEqual(
      view.branches.map((b) => [b.name, b.status, b.parent]),
      [[`${db}/main`, 'running', null]],
    );
    seen(view.branches[0]!);
    assert.deepEqual(await query(view.branches[0]!, 'SELECT 1 AS ok'), [{ ok: 1 }]);
    await assert.rejects(
      client.createDatabase({ name: db }),
      (e: BpgApiError) => e.status === 409 && e.code === 'conflict',
    );
  });

  it('GET /v1/databases, /v1/databases/{db} and its branches', async () => {
    const all = await client.listDatabases();
    assert.ok(all.some((d) => d.name === db));
    const one = await client.getDatabase(db);
    assert.equal(one.branches.length, 1);
    const branches = await client.listBranches(db);
    assert.deepEqual(
      branches.map((b) => b.name),
      [`${db}/main`],
    );
    const main = await client.getBranch(db, 'main');
    assert.equal(main.port, one.branches[0]!.port);
    assertError(
      await http(srv.url, 'GET', '/v1/databases/nosuchdb'),
      404,
      'not_found',
      /database 'nosuchdb' does not exist/,
    );
    assertError(await http(srv.url, 'GET', '/v1/databases/nosuchdb/branches'), 404, 'not_found');
    assertError(
      await http(srv.url, 'GET', `/v1/databases/${db}/branches/nosuch`),
      404,
      'not_found',
      new RegExp(`branch '${db}/nosuch' does not exist`),
    );
    assertError(await http(srv.url, 'GET', '/v1/nope'), 404, 'not_found', /no route GET \/v1\/nope/);
  });

  // ---------------------------------------------------------------- branches

  it('PUT creates a branch (201), then answers 200 created:false with the same branch', async (t) => {
    let t0 = performance.now();
    const first = await http(srv.url, 'PUT', `/v1/databases/${db}/branches/b1`, { body: { from: 'main', ttl: '7d' } });
    const msCreate = performance.now() - t0;
    assert.equal(first.status, 201, JSON.stringify(first.body));
    const created = S.PutBranchResponse.parse(first.body);
    assert.equal(created.created, true);
    assert.equal(created.branch.parent, `${db}/main`);
    assert.equal(created.branch.consistency, 'application');
    assert.equal(first.headers.get('location'), `/v1/databases/${db}/branches/b1`);
    seen(created.branch);

    t0 = performance.now();
    const again = await client.putBranch(db, 'b1', { from: `${db}/main`, fast: true });
    const msExisting = performance.now() - t0;
    assert.equal(again.created, false);
    assert.equal(again.branch.port, created.branch.port);
    assert.equal(again.branch.createdAt, created.branch.createdAt);
    assert.equal(again.branch.connection.password, created.branch.connection.password);
    assert.equal((await client.putBranch(db, 'b1')).created, false, 'no from means main');
    t.diagnostic(
      `PUT create (application-consistent): ${Math.round(msCreate)} ms; PUT existing: ${Math.round(msExisting)} ms`,
    );

    t0 = performance.now();
    const fast = await client.putBranch(db, 'f1', { fast: true });
    t.diagnostic(`PUT create (fast): ${Math.round(performance.now() - t0)} ms`);
    assert.equal(fast.created, true);
    assert.equal(fast.branch.consistency, 'crash');
    seen(fast.branch);
  });

  it('the API answers the very object the CLI prints with --json', async () => {
    const cliView = JSON.parse(
      (await cli(['branch', 'get', `${db}/b1`, '--json'], { BPG_CONFIG: process.env.BPG_CONFIG })).stdout,
    );
    const apiView = await client.getBranch(db, 'b1');
    // usedBytes and walBytes move as PostgreSQL writes and archives; everything else must be identical.
    assert.deepEqual({ ...apiView, usedBytes: 0, walBytes: 0 }, { ...cliView, usedBytes: 0, walBytes: 0 });
    assert.deepEqual(Object.keys(apiView), Object.keys(cliView));
  });

  it('PUT of a branch that exists with another parent is a 409, not a silent reuse', async () => {
    const child = await client.putBranch(db, 'c1', { from: 'b1', fast: true });
    assert.equal(child.created, true);
    assert.equal(child.branch.parent, `${db}/b1`);
    seen(child.branch);
    assertError(
      await http(srv.url, 'PUT', `/v1/databases/${db}/branches/c1`, { body: {} }),
      409,
      'conflict',
      /exists with parent '.*\/b1', not '.*\/main'/,
    );
    assertError(
      await http(srv.url, 'PUT', `/v1/databases/${db}/branches/b1`, { body: { from: 'f1' } }),
      409,
      'conflict',
    );
    assert.equal((await client.putBranch(db, 'c1', { from: `${db}/b1` })).created, false);
    // main is the database itself: PUT finds it, and it has no parent to name.
    assert.equal((await client.putBranch(db, 'main')).created, false);
    assertError(
      await http(srv.url, 'PUT', `/v1/databases/${db}/branches/main`, { body: { from: 'b1' } }),
      409,
      'conflict',
    );
    assertError(
      await http(srv.url, 'PUT', `/v1/databases/${db}/branches/x1`, { body: { from: 'nosuch' } }),
      404,
      'not_found',
    );
    assertError(await http(srv.url, 'PUT', `/v1/databases/nosuchdb/branches/x1`, { body: {} }), 404, 'not_found');
    assertError(
      await http(srv.url, 'PUT', `/v1/databases/${db}/branches/x1`, { body: { from: 'other/main' } }),
      400,
      'invalid',
    );
  });

  it('POST start, stop, restart, reset (port and password stay)', async () => {
    const stopped = await client.stopBranch(db, 'f1');
    assert.equal(stopped.status, 'stopped');
    const started = await client.startBranch(db, 'f1');
    assert.equal(started.status, 'running');
    assert.equal(started.port, stopped.port);
    const restarted = await client.restartBranch(db, 'f1');
    assert.equal(restarted.status, 'running');
    assert.deepEqual(await query(restarted, 'SELECT 1 AS ok'), [{ ok: 1 }]);
    await query(restarted, 'CREATE TABLE only_on_f1 (x int)');
    const reset = await client.resetBranch(db, 'f1');
    assert.equal(reset.port, restarted.port);
    assert.equal(reset.connection.uri, restarted.connection.uri);
    assert.deepEqual(await query(reset, "SELECT to_regclass('only_on_f1') IS NULL AS gone"), [{ gone: true }]);
    assertError(await http(srv.url, 'POST', `/v1/databases/${db}/branches/nosuch/stop`), 404, 'not_found');
    assertError(await http(srv.url, 'POST', `/v1/databases/${db}/branches/nosuch/reset`), 404, 'not_found');
  });

  it('snapshots, branches from a snapshot and point-in-time recovery over HTTP', async () => {
    const main = await client.getBranch(db, 'main');
    await query(main, 'CREATE TABLE IF NOT EXISTS api_hist (id int)');
    await query(main, 'INSERT INTO api_hist VALUES (1)');
    const snap = await client.createSnapshot(db, 'main', { label: 'api' });
    assert.equal(snap.branch, `${db}/main`);
    assert.equal(snap.label, 'api');
    assert.ok((await client.listSnapshots()).some((x) => x.id === snap.id));
    assert.deepEqual(
      (await client.listSnapshots(db, 'main')).map((x) => x.id),
      [snap.id],
    );
    await query(main, 'INSERT INTO api_hist VALUES (2)');
    await new Promise((r) => setTimeout(r, 1100));
    const target = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 1100));
    await query(main, 'INSERT INTO api_hist VALUES (3)');
    const pitr = await client.putBranch(db, 'pitr1', { pitr: target });
    assert.equal(pitr.created, true);
    assert.deepEqual(await query(pitr.branch, 'SELECT id FROM api_hist ORDER BY id'), [{ id: 1 }, { id: 2 }]);
    const again = await client.putBranch(db, 'pitr1', { pitr: target });
    assert.equal(again.created, false);
    const fromSnap = await client.putBranch(db, 'snap1', { fromSnapshot: snap.id });
    assert.equal(fromSnap.branch.parent, `${db}/main`);
    assert.deepEqual(await query(fromSnap.branch, 'SELECT id FROM api_hist ORDER BY id'), [{ id: 1 }]);
    assertError(await http(srv.url, 'DELETE', `/v1/snapshots/${snap.id}`), 409, 'conflict', /in use/);
    assertError(
      await http(srv.url, 'PUT', `/v1/databases/${db}/branches/bad1`, { body: { pitr: 'yesterday' } }),
      400,
      'invalid',
      /invalid time/,
    );
    assertError(
      await http(srv.url, 'PUT', `/v1/databases/${db}/branches/bad1`, { body: { pitr: '2000-01-01T00:00:00Z' } }),
      400,
      'invalid',
      /before the oldest snapshot/,
    );
    assertError(
      await http(srv.url, 'PUT', `/v1/databases/${db}/branches/bad1`, { body: { fromSnapshot: 'snap-00000000' } }),
      404,
      'not_found',
    );
    assertError(await http(srv.url, 'DELETE', '/v1/snapshots/..%2Fx'), 400, 'invalid');
    const wal = await client.walInfo(db, 'main');
    assert.ok(wal.segments > 0);
    for (const b of ['pitr1', 'snap1']) await client.deleteBranch(db, b);
    assert.deepEqual(await client.deleteSnapshot(snap.id), { deleted: true });
    assert.deepEqual(await client.deleteSnapshot(snap.id), { deleted: false });
  });

  it('DELETE removes a branch; a second DELETE is a 404 with a clear body, which the client treats as done', async () => {
    assertError(await http(srv.url, 'DELETE', `/v1/databases/${db}/branches/b1`), 409, 'conflict', /child branches/);
    assertError(await http(srv.url, 'DELETE', `/v1/databases/${db}/branches/b1?force=yes`), 400, 'invalid');
    const r = await http(srv.url, 'DELETE', `/v1/databases/${db}/branches/b1?force=true`);
    assert.equal(r.status, 200);
    assert.deepEqual(S.DeleteBranchResponse.parse(r.body), { deleted: [`${db}/c1`, `${db}/b1`] });
    assertError(
      await http(srv.url, 'DELETE', `/v1/databases/${db}/branches/b1`),
      404,
      'not_found',
      new RegExp(`branch '${db}/b1' does not exist`),
    );
    assert.deepEqual(await client.deleteBranch(db, 'f1'), { deleted: true, branches: [`${db}/f1`] });
    assert.deepEqual(await client.deleteBranch(db, 'f1'), { deleted: false, branches: [] });
    assertError(await http(srv.url, 'DELETE', `/v1/databases/${db}/branches/main`), 409, 'conflict');
    assert.deepEqual(
      (await client.listBranches(db)).map((b) => b.branch),
      ['main'],
    );
  });

  // ---------------------------------------------------------------- concurrency

  it('20 PUTs for 10 names at once: 10 branches, each created once, distinct ports, valid state', async (t) => {
    const names = Array.from({ length: 10 }, (_, i) => `p${i}`);
    const t0 = performance.now();
    const results = await Promise.all(
      [...names, ...names].map(async (name) => {
        const s = performance.now();
        const r = await client.putBranch(db, name);
        return { name, r, ms: performance.now() - s };
      }),
    );
    const wall = performance.now() - t0;
    for (const name of names) {
      const mine = results.filter((x) => x.name === name);
      assert.deepEqual(mine.map((x) => x.r.created).sort(), [false, true], `${name} created exactly once`);
      assert.equal(mine[0]!.r.branch.port, mine[1]!.r.branch.port);
      assert.equal(mine[0]!.r.branch.createdAt, mine[1]!.r.branch.createdAt);
      seen(mine[0]!.r.branch);
    }
    const ports = new Set(results.map((x) => x.r.branch.port));
    assert.equal(ports.size, 10, 'distinct ports');
    const state = readState(cfg);
    const mineInState = Object.values(state.branches).filter((b) => b.database === db);
    assert.equal(mineInState.length, 11);
    assert.ok(mineInState.every((b) => b.status === 'running' && b.operation === null));
    for (const x of results.filter((x) => x.r.created))
      assert.deepEqual(await query(x.r.branch, 'SELECT 1 AS ok'), [{ ok: 1 }]);
    const createdMs = results
      .filter((x) => x.r.created)
      .map((x) => Math.round(x.ms))
      .sort((a, b) => a - b);
    const waitedMs = results
      .filter((x) => !x.r.created)
      .map((x) => Math.round(x.ms))
      .sort((a, b) => a - b);
    t.diagnostic(
      `20 PUTs wall ${Math.round(wall)} ms; created: ${createdMs.join(' ')} ms; waited then found: ${waitedMs.join(' ')} ms`,
    );

    // And 10 DELETEs at once, each for its own branch.
    const t1 = performance.now();
    const deleted = await Promise.all(names.map((n) => client.deleteBranch(db, n)));
    t.diagnostic(`10 parallel DELETEs: ${Math.round(performance.now() - t1)} ms`);
    assert.ok(deleted.every((d) => d.deleted));
    assert.deepEqual(
      (await client.listBranches(db)).map((b) => b.branch),
      ['main'],
    );
    readState(cfg);
  });

  // ---------------------------------------------------------------- bad input

  it('malformed JSON, bad fields, unknown fields and bad query parameters are 400s', async () => {
    const put = (o: { raw?: string; body?: unknown }) => http(srv.url, 'PUT', `/v1/databases/${db}/branches/x1`, o);
    assertError(await put({ raw: '{"from": ' }), 400, 'invalid', /not valid JSON/);
    assertError(await put({ raw: 'null' }), 400, 'invalid');
    assertError(await put({ raw: '"main"' }), 400, 'invalid');
    assertError(await put({ body: { ttl: '7 days' } }), 400, 'invalid', /ttl/);
    assertError(await put({ body: { ttl: '0d' } }), 400, 'invalid', /ttl/);
    assertError(await put({ body: { ttl: '400d' } }), 400, 'invalid', /365d/);
    assertError(await put({ body: { fast: 'yes' } }), 400, 'invalid', /fast/);
    assertError(await put({ body: { form: 'main' } }), 400, 'invalid', /form/);
    assertError(await http(srv.url, 'POST', '/v1/databases', { body: {} }), 400, 'invalid', /name/);
    assertError(
      await http(srv.url, 'POST', '/v1/databases', { body: { name: 'okname', image: 'x y' } }),
      400,
      'invalid',
      /image/,
    );
    assertError(await http(srv.url, 'DELETE', `/v1/databases/${db}?force=1`), 400, 'invalid');
    assertError(await http(srv.url, 'GET', '/v1/databases/%E0%A4%A'), 400, 'invalid');
    assert.equal((await client.listBranches(db)).length, 1, 'nothing was created');
  });

  it('bodies over the cap get 413', async () => {
    const big = JSON.stringify({ from: 'main', pad: 'x'.repeat(cfg.api.bodyLimit) });
    assertError(await http(srv.url, 'PUT', `/v1/databases/${db}/branches/x1`, { raw: big }), 413, 'too_large');
    assertError(await http(srv.url, 'POST', '/v1/databases', { raw: big }), 413, 'too_large');
  });

  it('names with shell or path characters are 400s, and nothing is made', async () => {
    const before = footprint(cfg);
    assert.ok(before.includes(db), "sees this file's database");
    for (const bad of BAD_NAMES) {
      const requests: Array<[string, string, unknown?]> = [
        ['POST', '/v1/databases', { name: bad }],
        ['PUT', `/v1/databases/${enc(bad)}/branches/x1`, {}],
        ['PUT', `/v1/databases/${db}/branches/${enc(bad)}`, {}],
        ['PUT', `/v1/databases/${db}/branches/x1`, { from: bad }],
        ['DELETE', `/v1/databases/${enc(bad)}`],
        ['DELETE', `/v1/databases/${db}/branches/${enc(bad)}`],
        ['POST', `/v1/databases/${db}/branches/${enc(bad)}/start`],
        ['GET', `/v1/databases/${enc(bad)}/branches`],
      ];
      for (const [method, path, body] of requests) {
        const r = await http(srv.url, method, path, body === undefined ? {} : { body });
        assertError(r, 400, 'invalid');
      }
    }
    assert.deepEqual(footprint(cfg), before);
  });

  // ---------------------------------------------------------------- the rest of the stack down

  it('503 when Docker or the ZFS pool is not there; bad names are 400 even then (checked before any driver)', async () => {
    const noDocker = new Engine(
      { ...cfg, stateDir: mkdtempSync(join(tmpdir(), 'bpgapi-nodocker-')) },
      { log, docker: new DockerDriver('/nonexistent/docker.sock') },
    );
    const noPoolCfg = {
      ...cfg,
      stateDir: mkdtempSync(join(tmpdir(), 'bpgapi-nopool-')),
      zfs: { ...cfg.zfs, pool: `nopool${randomBytes(3).toString('hex')}` },
    };
    const noPool = new Engine(noPoolCfg, { log });
    for (const engine of [noDocker, noPool]) {
      const down = await start(cfg, { engine });
      try {
        assert.equal((await http(down.url, 'GET', '/v1/health', { token: null })).status, 200);
        assertError(
          await http(down.url, 'POST', '/v1/databases', { body: { name: 'fine' } }),
          503,
          'unavailable',
          /Docker|pool/,
        );
        assertError(await http(down.url, 'PUT', '/v1/databases/fine/branches/x1', { body: {} }), 404, 'not_found');
        for (const bad of BAD_NAMES) {
          assertError(await http(down.url, 'POST', '/v1/databases', { body: { name: bad } }), 400, 'invalid');
          assertError(
            await http(down.url, 'PUT', `/v1/databases/${enc(bad)}/branches/x1`, { body: {} }),
            400,
            'invalid',
          );
        }
      } finally {
        await down.close();
      }
    }
  });

  // ---------------------------------------------------------------- client

  it('the client retries GET/PUT/DELETE on connection refused, never POST; it times out', async () => {
    const port = await freePort();
    let attempts = 0;
    const counting: typeof fetch = (input, init) => {
      attempts++;
      return fetch(input, init);
    };
    const c = new BpgClient({
      baseUrl: `http://127.0.0.1:${port}/`,
      token: TOKEN,
      retries: 8,
      retryDelayMs: 100,
      fetch: counting,
    });
    const pending = c.listDatabases();
    await sleep(500);
    const late = await start(cfg, { listen: `127.0.0.1:${port}` });
    try {
      const list = await pending;
      assert.ok(list.some((d) => d.name === db));
      assert.ok(attempts >= 2, `retried (${attempts} attempts)`);
    } finally {
      await late.close();
    }
    attempts = 0;
    await assert.rejects(
      c.createDatabase({ name: 'neverretried' }),
      (e: BpgApiError) => e.status === 0 && e.code === 'unreachable',
    );
    assert.equal(attempts, 1);
    const c0 = new BpgClient({
      baseUrl: `http://127.0.0.1:${port}`,
      token: TOKEN,
      retries: 1,
      retryDelayMs: 10,
      fetch: counting,
    });
    attempts = 0;
    await assert.rejects(
      c0.deleteBranch(db, 'x'),
      (e: BpgApiError) => e.code === 'unreachable' && /cannot reach the agent/.test(e.message),
    );
    assert.equal(attempts, 2);

    // A server that accepts and never answers.
    const silent: Server = createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const c1 = new BpgClient({
        baseUrl: `http://127.0.0.1:${(silent.address() as { port: number }).port}`,
        token: TOKEN,
        timeoutMs: 300,
      });
      await assert.rejects(c1.getDatabase(db), (e: BpgApiError) => e.code === 'timeout' && e.status === 0);
    } finally {
      silent.close();
    }
    const bad = new BpgClient({ baseUrl: srv.url, token: WRONG });
    await assert.rejects(bad.listDatabases(), (e: BpgApiError) => e.status === 401 && e.code === 'unauthorized');
  });

  // ---------------------------------------------------------------- openapi

  it('GET /v1/openapi.json describes every route the server has, and no other', async () => {
    const doc = await client.openapi();
    assert.equal(doc.openapi, '3.1.0');
    const paths = doc.paths as Record<string, Record<string, unknown>>;
    const documented = Object.entries(paths)
      .flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`))
      .sort();
    const served = srv.api.routes.map((r) => `${r.method} ${r.path}`);
    served.push('GET /v1/health');
    assert.deepEqual(documented, served.sort());
    const expected = [
      'GET /v1/databases',
      'POST /v1/databases',
      'GET /v1/databases/{db}',
      'DELETE /v1/databases/{db}',
      'GET /v1/databases/{db}/branches',
      'GET /v1/databases/{db}/branches/{branch}',
      'PUT /v1/databases/{db}/branches/{branch}',
      'DELETE /v1/databases/{db}/branches/{branch}',
      ...['reset', 'start', 'stop', 'restart'].map((v) => `POST /v1/databases/{db}/branches/{branch}/${v}`),
    ];
    for (const e of expected) assert.ok(documented.includes(e), `${e} documented`);
    const schemas = (doc.components as { schemas: Record<string, unknown> }).schemas;
    for (const name of ['Error', 'BranchView', 'DatabaseView', 'PutBranchBody', 'CreateDatabaseBody'])
      assert.ok(schemas[name], name);
  });

  // ---------------------------------------------------------------- shutdown

  it('shutdown lets a running PUT finish, then refuses connections; the branch keeps running', async () => {
    const s2 = await start(cfg);
    const c2 = new BpgClient({ baseUrl: s2.url, token: TOKEN, retries: 0 });
    const put = c2.putBranch(db, 'shut', { fast: true });
    // Wait until the operation is really running (its reservation is in the state), then stop.
    for (let i = 0; i < 200 && !readState(cfg).branches[`${db}/shut`]; i++) await sleep(20);
    assert.ok(readState(cfg).branches[`${db}/shut`], 'the PUT started');
    await s2.close();
    const atClose = readState(cfg).branches[`${db}/shut`];
    assert.equal(atClose?.status, 'running', 'close waited for the running operation');
    assert.equal(atClose?.operation, null);
    const r = await put;
    assert.equal(r.created, true);
    await assert.rejects(c2.listDatabases(), (e: BpgApiError) => e.code === 'unreachable');
    assert.deepEqual(await query(seen(r.branch), 'SELECT 1 AS ok'), [{ ok: 1 }]);
    assert.equal((await client.getBranch(db, 'shut')).status, 'running');
  });

  // ---------------------------------------------------------------- cleanup, and what was logged

  it('DELETE /v1/databases/{db}: 409 with branches, then force; a second time 404; nothing left', async () => {
    assertError(await http(srv.url, 'DELETE', `/v1/databases/${db}`), 409, 'conflict', /branch/);
    const r = await http(srv.url, 'DELETE', `/v1/databases/${db}?force=true`);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(S.DeleteDatabaseResponse.parse(r.body), { deleted: db });
    assertError(await http(srv.url, 'DELETE', `/v1/databases/${db}`), 404, 'not_found');
    assert.deepEqual(await client.deleteDatabase(db), { deleted: false });
    assert.deepEqual(await leftovers(db), { datasets: [], containers: [] });
  });

  it('logs each operation with the token name, and never a token or a password', () => {
    const text = JSON.stringify(log.lines);
    assert.ok(!text.includes(TOKEN) && !text.includes(WRONG), 'no token in the log');
    for (const p of passwords) assert.ok(!text.includes(p), 'no password in the log');
    const ops = log.lines.filter((l) =>
      ['branch created', 'branch deleted', 'database created', 'database deleted', 'branch stop'].includes(l.msg),
    );
    assert.ok(ops.length >= 10);
    assert.ok(ops.every((l) => l.token === 'tests'));
    const requests = log.lines.filter((l) => l.msg === 'request');
    assert.ok(requests.some((l) => l.status === 401 && l.token === null));
    assert.ok(requests.some((l) => l.method === 'PUT' && l.status === 201 && l.token === 'tests'));
  });
});

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, mkdtempSync } from 'node:fs';
import { createServer, request, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BpgApiError, BpgClient } from '../api/client.js';
import { serve, type RunningServer } from '../api/serve.js';
import { createApi } from '../api/server.js';
import { fetchTrusting } from '../api/trust.js';
import { loadConfig, type Config } from '../config.js';
import { Engine } from '../engine/engine.js';
import type { BranchView } from '../engine/view.js';
import { leftovers, ownStateConfig, query, recorder, uniqueDb } from './helpers.js';
import { issueCert, testCa } from './tls-helpers.js';

/**
 * What a remote CLI needs of the API (issue 14), over real HTTPS with a test CA, against the real
 * engine, ZFS, Docker and PostgreSQL, on a state of its own (slot 35): creating a branch that must
 * not exist, renames, branches and WAL across databases, WAL cleanup, reset --fast, status and
 * doctor; then token roles (read, write, admin) and tokens limited to some databases, on every route.
 */

const secret = (p: string) => `${p}-${randomBytes(16).toString('hex')}`;
const ADMIN = secret('adm');
const WRITE = secret('wr');
const READ = secret('rd');
const LIM = secret('lim');
const LIMREAD = secret('limrd');
const LIMADMIN = secret('limadm');
const log = recorder();
const ca = testCa();
const server = issueCert(ca, { name: 'agent', dns: ['localhost'], ips: ['127.0.0.1'] });

const dbA = uniqueDb('rma');
const dbB = uniqueDb('rmb');
const dbC = uniqueDb('rmc');

const cfgPath = ownStateConfig('api-remote', 35, (raw) => {
  raw.api = {
    ...raw.api,
    tls: { cert: server.cert, key: server.key },
    tokens: [
      { name: 'admin', token: ADMIN },
      { name: 'writer', token: WRITE, role: 'write' },
      { name: 'reader', token: READ, role: 'read' },
      { name: 'limited', token: LIM, role: 'write', databases: [dbA, dbC] },
      { name: 'limited-reader', token: LIMREAD, role: 'read', databases: [dbA] },
      { name: 'limited-admin', token: LIMADMIN, role: 'admin', databases: [dbA] },
    ],
  };
});

interface Reply {
  status: number;
  body: any;
}

describe('API for the remote CLI (HTTPS, test CA)', () => {
  let cfg: Config;
  let srv: RunningServer;
  let admin: BpgClient;
  const trusting = fetchTrusting(ca.pem);

  /** A raw request over HTTPS, trusting the test CA. */
  const http = async (method: string, path: string, token: string, body?: unknown): Promise<Reply> => {
    const res = await trusting(srv.url + path, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const isJson = res.headers.get('content-type')?.startsWith('application/json');
    return { status: res.status, body: text && isJson ? JSON.parse(text) : text };
  };

  before(async () => {
    cfg = await loadConfig(cfgPath);
    srv = await serve(cfg, { listen: '127.0.0.1:0', log, handleSignals: false, env: {} });
    assert.match(srv.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    admin = new BpgClient({ baseUrl: srv.url, token: ADMIN, ca: ca.pem });
    await admin.createDatabase({ name: dbA });
    await admin.createDatabase({ name: dbB });
  });

  after(async () => {
    for (const d of [dbA, dbB, dbC]) await admin?.deleteDatabase(d, { force: true }).catch(() => {});
    await srv?.close();
  });

  it('refuses a client that does not trust the CA (no retry), and works with it', async () => {
    const untrusting = new BpgClient({ baseUrl: srv.url, token: ADMIN, retries: 3, retryDelayMs: 5000 });
    const t0 = Date.now();
    await assert.rejects(
      untrusting.listDatabases(),
      (e: BpgApiError) =>
        e.status === 0 && e.code === 'unreachable' && /TLS certificate is not trusted/.test(e.message),
    );
    assert.ok(Date.now() - t0 < 5000, 'a refused certificate is not retried');
    assert.ok((await admin.health()).status === 'ok');
  });

  it('POST /v1/databases/{db}/branches creates a branch (201); the same name again is a 409 that changes nothing', async () => {
    const b = await admin.createBranch(dbA, 'feat', { fast: true, ttl: '2h' });
    assert.equal(b.name, `${dbA}/feat`);
    assert.equal(b.parent, `${dbA}/main`);
    assert.equal(b.status, 'running');
    assert.ok(b.expiresAt !== null);
    assert.deepEqual(await query(b, 'SELECT 1 AS ok'), [{ ok: 1 }]);
    const before = await admin.getBranch(dbA, 'feat');
    await assert.rejects(
      admin.createBranch(dbA, 'feat', { fast: true }),
      (e: BpgApiError) => e.status === 409 && e.code === 'conflict' && /already exists/.test(e.message),
    );
    // (sizes are live: a branch that just started still writes, and ZFS counts it a moment later)
    const recorded = ({ usedBytes: _u, walBytes: _w, ...v }: BranchView) => v;
    assert.deepEqual(recorded(await admin.getBranch(dbA, 'feat')), recorded(before), 'the 409 changed nothing');
    // A missing database is a 404; a bad name or an unknown field a 400, before anything is made.
    await assert.rejects(admin.createBranch(`${dbA}x`, 'feat'), (e: BpgApiError) => e.status === 404);
    assert.equal((await http('POST', `/v1/databases/${dbA}/branches`, ADMIN, { name: '../x' })).status, 400);
    assert.equal((await http('POST', `/v1/databases/${dbA}/branches`, ADMIN, { name: 'y', bogus: 1 })).status, 400);
    assert.equal((await http('POST', `/v1/databases/${dbA}/branches`, ADMIN, {})).status, 400);
    assert.deepEqual(
      (await admin.listBranches(dbA)).map((x) => x.branch).sort(),
      ['feat', 'main'],
      'no branch made by the refused requests',
    );
    // From another branch of the same database.
    const child = await admin.createBranch(dbA, 'child', { from: 'feat', fast: true });
    assert.equal(child.parent, `${dbA}/feat`);
  });

  it('GET /v1/branches lists the branches of every database', async () => {
    const all = await admin.listBranches();
    const names = all.map((b) => b.name);
    for (const n of [`${dbA}/main`, `${dbA}/feat`, `${dbA}/child`, `${dbB}/main`]) assert.ok(names.includes(n), n);
    // (sizes are live: ZFS counts a just-started branch's writes a moment later)
    const recorded = ({ usedBytes: _u, walBytes: _w, ...v }: BranchView) => v;
    assert.deepEqual(
      all.filter((b) => b.database === dbA).map(recorded),
      (await admin.listBranches(dbA)).map(recorded),
    );
  });

  it('POST …/branches/{branch}/rename: port, password and data stay; the old name is gone', async () => {
    const before = await admin.getBranch(dbA, 'child');
    await query(before, 'CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)');
    const after = await admin.renameBranch(dbA, 'child', 'kid');
    assert.equal(after.name, `${dbA}/kid`);
    assert.equal(after.port, before.port);
    assert.equal(after.connection.password, before.connection.password);
    assert.equal(after.parent, `${dbA}/feat`);
    assert.deepEqual(await query(after, 'SELECT v FROM kept'), [{ v: 42 }]);
    await assert.rejects(admin.getBranch(dbA, 'child'), (e: BpgApiError) => e.status === 404);
    // Into another database, onto an existing name, or main: 409s that change nothing.
    await assert.rejects(admin.renameBranch(dbA, 'kid', `${dbB}/kid`), (e: BpgApiError) => e.status === 409);
    await assert.rejects(admin.renameBranch(dbA, 'kid', 'feat'), (e: BpgApiError) => e.status === 409);
    await assert.rejects(admin.renameBranch(dbA, 'main', 'other'), (e: BpgApiError) => e.status === 409);
    assert.equal((await admin.getBranch(dbA, 'kid')).status, 'running');
    assert.equal((await http('POST', `/v1/databases/${dbA}/branches/kid/rename`, ADMIN, { name: 'a b' })).status, 400);
  });

  it('POST …/reset takes force and fast', async () => {
    const feat = await admin.getBranch(dbA, 'feat');
    await query(feat, 'CREATE TABLE scratch (v int)');
    // A child (kid) is in the way without force.
    await assert.rejects(admin.resetBranch(dbA, 'feat', { fast: true }), (e: BpgApiError) => e.status === 409);
    const reset = await admin.resetBranch(dbA, 'feat', { fast: true, force: true });
    assert.equal(reset.port, feat.port);
    assert.equal(reset.connection.password, feat.connection.password);
    assert.equal(reset.consistency, 'crash', 'fast: a crash-consistent snapshot of the parent');
    assert.deepEqual(await query(reset, "SELECT to_regclass('scratch') IS NULL AS gone"), [{ gone: true }]);
    await assert.rejects(admin.getBranch(dbA, 'kid'), (e: BpgApiError) => e.status === 404, 'force deleted the child');
    assert.equal((await http('POST', `/v1/databases/${dbA}/branches/feat/reset?fast=maybe`, ADMIN)).status, 400);
  });

  it('GET /v1/wal and POST …/wal/cleanup (dry run and real)', async () => {
    const all = await admin.listWal();
    const names = all.map((w) => w.branch);
    for (const n of [`${dbA}/main`, `${dbA}/feat`, `${dbB}/main`]) assert.ok(names.includes(n), n);
    assert.deepEqual(
      all.find((w) => w.branch === `${dbA}/feat`),
      await admin.walInfo(dbA, 'feat'),
    );
    const main = await admin.getBranch(dbA, 'main');
    // Make WAL to archive: a segment switch.
    await query(main, 'CREATE TABLE w AS SELECT g FROM generate_series(1, 1000) g; SELECT pg_switch_wal()');
    const dry = await admin.walCleanup(dbA, 'main', { days: 0, dryRun: true });
    assert.equal(dry.branch, `${dbA}/main`);
    assert.equal(dry.dryRun, true);
    const real = await admin.walCleanup(dbA, 'main', { days: 0 });
    assert.equal(real.dryRun, false);
    for (const seg of dry.removed) assert.ok(real.removed.includes(seg), `${seg}: what the dry run named was removed`);
    for (const bad of [{}, { days: -1 }, { days: 1, dryRun: 'yes' }])
      assert.equal((await http('POST', `/v1/databases/${dbA}/branches/main/wal/cleanup`, ADMIN, bad)).status, 400);
  });

  it('GET /v1/status is what `bpg status --json` prints', async () => {
    const st = await admin.status();
    assert.ok(st.pool && st.pool.pool === cfg.zfs.pool);
    assert.equal(st.docker.reachable, true);
    assert.equal(st.counts.databases, 2);
    assert.ok(st.branches.some((b) => b.name === `${dbA}/feat`));
    assert.deepEqual(st.limits, cfg.limits);
  });

  it('GET /v1/doctor reports and changes nothing; POST /v1/doctor/fix repairs', async () => {
    const report = await admin.doctor();
    assert.equal(report.fix, false);
    assert.equal(report.healthy, true, JSON.stringify(report.findings));
    assert.equal(report.checked.databases, 2);
    // Something to repair: a branch's container stopped behind the agent's back.
    const feat = await admin.getBranch(dbA, 'feat');
    execFileSync('docker', ['stop', '-t', '1', feat.container], { stdio: 'ignore' });
    const found = await admin.doctor();
    assert.equal(found.healthy, false);
    const f = found.findings.find((x) => x.subject === `${dbA}/feat`);
    assert.equal(f?.kind, 'not-running');
    assert.equal(f?.status, 'found');
    assert.equal((await admin.getBranch(dbA, 'feat')).status, 'down', 'the report changed nothing');
    const fixed = await admin.doctorFix();
    assert.equal(fixed.fix, true);
    assert.equal(fixed.healthy, true, JSON.stringify(fixed.findings));
    assert.equal(fixed.findings.find((x) => x.subject === `${dbA}/feat`)?.status, 'fixed');
    assert.deepEqual(await query(await admin.getBranch(dbA, 'feat'), 'SELECT 1 AS ok'), [{ ok: 1 }]);
  });

  // ---------------------------------------------------------------- roles and database-limited tokens

  /** What a refused request must not change: databases, branches (status, port, parent, expiry), snapshots. */
  const stateView = () => {
    const st = JSON.parse(readFileSync(join(cfg.stateDir, 'state.json'), 'utf8'));
    const branches = Object.fromEntries(
      Object.entries(st.branches as Record<string, any>).map(([k, b]) => [
        k,
        [b.status, b.port, b.parent, b.expiresAt, b.protected, b.operation, b.dataset],
      ]),
    );
    return { databases: Object.keys(st.databases).sort(), branches, snapshots: Object.keys(st.snapshots).sort() };
  };

  /** Every documented operation with the role it states. */
  const operations = async () => {
    const doc = (await admin.openapi()) as { paths: Record<string, Record<string, Record<string, unknown>>> };
    return Object.entries(doc.paths).flatMap(([path, ops]) =>
      Object.entries(ops).map(([m, op]) => ({
        method: m.toUpperCase(),
        path,
        role: op['x-betterpg-role'] as string,
      })),
    );
  };

  const fill = (path: string, db: string, snapshot: string) =>
    path
      .replace('{db}', db)
      .replace('{branch}', 'main')
      .replace('{id}', path.includes('watches') ? 'nope' : snapshot);

  it('every route refuses a role below its own with 403 forbidden, and the refusals change nothing', async () => {
    const snap = await admin.createSnapshot(dbA, 'main', { label: 'roles' });
    const ops = await operations();
    assert.ok(ops.length >= 30);
    assert.ok(
      ops.every((o) => ['none', 'read', 'write', 'admin'].includes(o.role)),
      'every operation states its role',
    );
    const before = stateView();
    let refused = 0;
    for (const o of ops) {
      const path = fill(o.path, dbA, snap.id);
      const body = o.method === 'GET' || o.method === 'DELETE' ? undefined : {};
      const asReader = await http(o.method, path, READ, body);
      if (o.role === 'write' || o.role === 'admin') {
        assert.equal(asReader.status, 403, `${o.method} ${o.path} as reader: ${JSON.stringify(asReader.body)}`);
        assert.equal(asReader.body.error.code, 'forbidden');
        assert.match(asReader.body.error.message, new RegExp(`role read: .* needs role ${o.role}`));
        refused++;
      } else {
        assert.ok(![401, 403].includes(asReader.status), `${o.method} ${o.path} as reader: ${asReader.status}`);
      }
      if (o.role === 'admin') {
        const asWriter = await http(o.method, path, WRITE, body);
        assert.equal(asWriter.status, 403, `${o.method} ${o.path} as writer`);
        assert.match(asWriter.body.error.message, /role write: .* needs role admin/);
        refused++;
      }
    }
    assert.ok(refused >= 20, `${refused} refusals`);
    assert.deepEqual(stateView(), before, 'the refusals changed nothing');
    // The doctor is admin's (GET and POST), status anyone's; /metrics keeps its rule: any token.
    assert.equal((await http('GET', '/v1/doctor', ADMIN)).status, 200);
    assert.equal((await http('GET', '/v1/status', READ)).status, 200);
    assert.equal((await http('GET', '/metrics', READ)).status, 200);
    assert.equal((await http('GET', '/metrics', LIMREAD)).status, 200);
    assert.deepEqual(await admin.deleteSnapshot(snap.id), { deleted: true });
  });

  it('a write token creates and deletes databases, branches and snapshots; the doctor is 403', async () => {
    const writer = new BpgClient({ baseUrl: srv.url, token: WRITE, ca: ca.pem });
    const b = await writer.createBranch(dbA, 'by-writer', { fast: true });
    assert.equal(b.status, 'running');
    const snap = await writer.createSnapshot(dbA, 'by-writer');
    assert.deepEqual(await writer.deleteSnapshot(snap.id), { deleted: true });
    assert.deepEqual(await writer.deleteBranch(dbA, 'by-writer'), { deleted: true, branches: [`${dbA}/by-writer`] });
    await assert.rejects(writer.doctor(), (e: BpgApiError) => e.status === 403 && e.code === 'forbidden');
    await assert.rejects(writer.doctorFix(), (e: BpgApiError) => e.status === 403 && e.code === 'forbidden');
    assert.ok(log.lines.some((l) => l.msg === 'branch created' && l.token === 'writer'));
    // An import makes the agent connect to a URL of the caller's choosing: admin only, and refused
    // before the source is looked at (the URL below answers nothing) and before anything is made.
    const imported = uniqueDb('wi');
    await assert.rejects(
      writer.startCreateDatabase({ name: imported, from: { url: 'postgres://app@192.0.2.1:5432/app' } }),
      (e: BpgApiError) => e.status === 403 && e.code === 'forbidden' && /needs role admin/.test(e.message),
    );
    assert.equal(
      (await admin.listDatabases()).some((d) => d.name === imported),
      false,
    );
  });

  it('a token limited to some databases: every route on another one is 403 and changes nothing', async () => {
    const snapB = await admin.createSnapshot(dbB, 'main', { label: 'not yours' });
    const ops = (await operations()).filter((o) => o.path.includes('{db}') && o.role !== 'none');
    assert.ok(ops.length >= 20);
    const before = stateView();
    for (const token of [LIM, LIMREAD, LIMADMIN]) {
      for (const o of ops) {
        const r = await http(o.method, fill(o.path, dbB, snapB.id), token, o.method === 'GET' ? undefined : {});
        assert.equal(r.status, 403, `${o.method} ${o.path} on ${dbB}: ${JSON.stringify(r.body)}`);
        assert.equal(r.body.error.code, 'forbidden');
      }
    }
    // Other databases named in a body, a query or a snapshot, by a token that may write to dbA.
    const named: Array<[string, string, unknown]> = [
      ['POST', '/v1/databases', { name: `${dbB}x` }],
      ['PUT', `/v1/databases/${dbA}/branches/x`, { from: `${dbB}/main`, fast: true }],
      ['POST', `/v1/databases/${dbA}/branches`, { name: 'x', fromSnapshot: snapB.id }],
      ['POST', `/v1/databases/${dbA}/branches/feat/rename`, { name: `${dbB}/x` }],
      ['POST', `/v1/databases/${dbA}/rename`, { name: dbB }],
      ['GET', `/v1/databases/${dbA}/branches/feat/schema-diff?against=${dbB}/main`, undefined],
      ['DELETE', `/v1/snapshots/${snapB.id}`, undefined],
    ];
    for (const [method, path, body] of named) {
      const r = await http(method, path, LIM, body);
      assert.equal(r.status, 403, `${method} ${path}: ${JSON.stringify(r.body)}`);
      assert.match(r.body.error.message, new RegExp(`may only use database\\(s\\) .*not '${dbB}x?'`));
    }
    // The doctor looks at the whole host: not for a limited token, even an admin one.
    for (const [method, path] of [
      ['GET', '/v1/doctor'],
      ['POST', '/v1/doctor/fix'],
    ] as const) {
      const r = await http(method, path, LIMADMIN);
      assert.equal(r.status, 403);
      assert.match(r.body.error.message, /whole host/);
    }
    // A limited reader may not write even its own database.
    assert.equal((await http('PUT', `/v1/databases/${dbA}/branches/x`, LIMREAD, {})).status, 403);
    assert.deepEqual(stateView(), before, 'the refusals changed nothing');
    assert.equal((await admin.listSnapshots()).filter((x) => x.id === snapB.id).length, 1);

    // Lists show only its databases.
    for (const token of [LIM, LIMREAD, LIMADMIN]) {
      const c = new BpgClient({ baseUrl: srv.url, token, ca: ca.pem });
      assert.deepEqual(
        (await c.listDatabases()).map((d) => d.name),
        [dbA],
      );
      const branches = await c.listBranches();
      assert.ok(branches.length >= 2 && branches.every((b) => b.database === dbA));
      assert.ok((await c.listSnapshots()).every((x) => x.branch.startsWith(`${dbA}/`)));
      const wal = await c.listWal();
      assert.ok(wal.length >= 2 && wal.every((w) => w.branch.startsWith(`${dbA}/`)));
      const st = await c.status();
      assert.ok(st.branches.every((b) => b.database === dbA));
      assert.deepEqual(st.counts.databases, 1);
      assert.equal(st.counts.branches, branches.length);
      assert.equal((await c.getDatabase(dbA)).name, dbA);
    }
    assert.ok(
      (await admin.listBranches()).some((b) => b.database === dbB),
      'admin sees every database',
    );
    assert.deepEqual(await admin.deleteSnapshot(snapB.id), { deleted: true });
  });

  it('a limited write token creates and deletes a database in its list, and branches in it', async () => {
    const lim = new BpgClient({ baseUrl: srv.url, token: LIM, ca: ca.pem });
    const d = await lim.createDatabase({ name: dbC });
    assert.equal(d.name, dbC);
    const b = await lim.createBranch(dbA, 'by-limited', { fast: true });
    assert.deepEqual(await query(b, 'SELECT 1 AS ok'), [{ ok: 1 }]);
    assert.deepEqual((await lim.deleteBranch(dbA, 'by-limited')).deleted, true);
    assert.deepEqual(await lim.deleteDatabase(dbC), { deleted: true });
    assert.deepEqual(await leftovers(dbC, cfgPath), { datasets: [], containers: [] });
  });

  it('a request the server marks as local (the unix socket) needs no token and is admin, named local', async () => {
    // What `bpg serve` does for its socket: requests that came through it, known by their socket.
    const fromSocket = new WeakSet<Socket>();
    const engine = new Engine(cfg, { log });
    const api = createApi({
      engine,
      tokens: [{ name: 'reader', token: READ, role: 'read' }],
      log,
      bodyLimit: 65536,
      isLocal: (req: IncomingMessage) => fromSocket.has(req.socket),
    });
    const sock = join(mkdtempSync(join(tmpdir(), 'bpg-sock-')), 'agent.sock');
    const local = createServer(api.app).on('connection', (s) => fromSocket.add(s));
    const tcp = createServer(api.app);
    await new Promise<void>((r) => local.listen(sock, r));
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    const viaSocket = (method: string, path: string) =>
      new Promise<{ status: number; body: any }>((resolve, reject) => {
        const req = request({ socketPath: sock, method, path }, (res) => {
          let text = '';
          res
            .on('data', (d) => (text += d))
            .on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
        });
        req.on('error', reject).end();
      });
    try {
      const r = await viaSocket('GET', '/v1/doctor');
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(typeof r.body.healthy, 'boolean');
      assert.equal((await viaSocket('GET', `/v1/databases/${dbB}`)).status, 200);
      // The request line is written when the response closes on the server's side: wait for it.
      const logged = () => log.lines.some((l) => l.msg === 'request' && l.path === '/v1/doctor' && l.token === 'local');
      for (let i = 0; i < 500 && !logged(); i++) await new Promise((r) => setTimeout(r, 20));
      assert.ok(logged(), 'logged as local');
      // The same app over TCP: a token as ever.
      const port = (tcp.address() as { port: number }).port;
      const anon = await fetch(`http://127.0.0.1:${port}/v1/doctor`);
      assert.equal(anon.status, 401);
      const reader = await fetch(`http://127.0.0.1:${port}/v1/doctor`, {
        headers: { authorization: `Bearer ${READ}` },
      });
      assert.equal(reader.status, 403);
    } finally {
      api.beginShutdown();
      local.closeAllConnections();
      tcp.closeAllConnections();
      await new Promise((r) => local.close(r));
      await new Promise((r) => tcp.close(r));
    }
  });

  it('POST /v1/databases/{db}/rename renames a database with its branches', async () => {
    const renamed = `${dbB}r`;
    const mainBefore = await admin.getBranch(dbB, 'main');
    const d = await admin.renameDatabase(dbB, renamed);
    assert.equal(d.name, renamed);
    assert.deepEqual(
      d.branches.map((b) => b.name),
      [`${renamed}/main`],
    );
    assert.equal(d.branches[0]!.port, mainBefore.port);
    await assert.rejects(admin.getDatabase(dbB), (e: BpgApiError) => e.status === 404);
    await assert.rejects(admin.renameDatabase(renamed, dbA), (e: BpgApiError) => e.status === 409);
    const back = await admin.renameDatabase(renamed, dbB);
    assert.equal(back.name, dbB);
    assert.deepEqual(await query(back.branches[0]!, 'SELECT 1 AS ok'), [{ ok: 1 }]);
  });

  it('openapi.json documents the new routes', async () => {
    const doc = (await admin.openapi()) as { paths: Record<string, Record<string, unknown>> };
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`),
    );
    for (const r of [
      'POST /v1/databases/{db}/branches',
      'POST /v1/databases/{db}/rename',
      'POST /v1/databases/{db}/branches/{branch}/rename',
      'GET /v1/branches',
      'GET /v1/wal',
      'POST /v1/databases/{db}/branches/{branch}/wal/cleanup',
      'GET /v1/status',
      'GET /v1/doctor',
      'POST /v1/doctor/fix',
    ])
      assert.ok(documented.includes(r), r);
  });

  it('nothing is left, and no token reached the log', async () => {
    for (const d of [dbA, dbB]) assert.deepEqual(await admin.deleteDatabase(d, { force: true }), { deleted: true });
    for (const d of [dbA, dbB]) assert.deepEqual(await leftovers(d, cfgPath), { datasets: [], containers: [] });
    const text = JSON.stringify(log.lines);
    for (const t of [ADMIN, WRITE, READ, LIM, LIMREAD, LIMADMIN]) assert.ok(!text.includes(t), 'no token in the log');
    assert.ok(log.lines.some((l) => l.msg === 'branch renamed' && l.token === 'admin'));
    assert.ok(log.lines.some((l) => l.msg === 'database renamed' && l.token === 'admin'));
    assert.ok(log.lines.some((l) => l.msg === 'doctor fix' && l.token === 'admin'));
  });
});

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { BpgApiError, BpgClient } from '../api/client.js';
import { serve, type RunningServer } from '../api/serve.js';
import { fetchTrusting } from '../api/trust.js';
import { loadConfig, type Config } from '../config.js';
import { leftovers, ownStateConfig, query, recorder, uniqueDb } from './helpers.js';
import { issueCert, testCa } from './tls-helpers.js';

/**
 * What a remote CLI needs of the API (issue 14), over real HTTPS with a test CA, against the real
 * engine, ZFS, Docker and PostgreSQL, on a state of its own (slot 35): creating a branch that must
 * not exist, renames, branches and WAL across databases, WAL cleanup, reset --fast, status and doctor.
 */

const ADMIN = `adm-${randomBytes(16).toString('hex')}`;
const log = recorder();
const ca = testCa();
const server = issueCert(ca, { name: 'agent', dns: ['localhost'], ips: ['127.0.0.1'] });

const cfgPath = ownStateConfig('api-remote', 35, (raw) => {
  raw.api = { ...raw.api, tls: { cert: server.cert, key: server.key }, tokens: [{ name: 'admin', token: ADMIN }] };
});

const dbA = uniqueDb('rma');
const dbB = uniqueDb('rmb');

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
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
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
    for (const d of [dbA, dbB]) await admin?.deleteDatabase(d, { force: true }).catch(() => {});
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
    assert.deepEqual(await admin.getBranch(dbA, 'feat'), before, 'the 409 changed nothing');
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
    assert.deepEqual(
      all.filter((b) => b.database === dbA),
      await admin.listBranches(dbA),
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
    assert.ok(!JSON.stringify(log.lines).includes(ADMIN));
    assert.ok(log.lines.some((l) => l.msg === 'branch renamed' && l.token === 'admin'));
    assert.ok(log.lines.some((l) => l.msg === 'database renamed' && l.token === 'admin'));
    assert.ok(log.lines.some((l) => l.msg === 'doctor fix' && l.token === 'admin'));
  });
});

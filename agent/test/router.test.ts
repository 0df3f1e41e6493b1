import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { copyFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { BpgClient } from '../api/client.js';
import { lockSet } from '../api/locks.js';
import { serve, type RunningServer } from '../api/serve.js';
import { startRouter } from '../proxy/router.js';
import { newOperation } from '../state/operation.js';
import { loadConfig, type Config } from '../config.js';
import { Engine } from '../engine/engine.js';
import type { HousekeepingReport } from '../engine/housekeeping.js';
import type { BranchView } from '../engine/view.js';
import { cli, ok, okJson, ownStateConfig, recorder, slotPort, uniqueDb, type CliResult } from './helpers.js';
import { cancelRequest, gssEncRequest, rawFrame, sslRequest, startupPacket, Wire } from './pg-wire.js';
import { issueCert, testCa } from './tls-helpers.js';

/**
 * Issue 12, point 11: the router on the real stack. `bpg serve` (the real serve()) runs on a state
 * of its own (slot 29 for branches, slot 30 for the router's port) with proxy.tls from a test CA;
 * clients are psql, pgbench, node-postgres and raw sockets that write the protocol bytes themselves.
 *
 * The certificate covers `*.<db>.<domain>` (a wildcard covers one label: `<branch>.<db>.<domain>`
 * for this test's database), `localhost` and 127.0.0.1, so psql's verify-full works both for SNI
 * routing (host=<branch>.<db>.<domain> hostaddr=127.0.0.1) and for routing by database name.
 */

const ROUTER_PORT = slotPort(30);
const DOMAIN = 'pg.bpg.test';
const TOKEN = `tok-${randomBytes(16).toString('hex')}`;
const HOUR = 3_600_000;
const PER_BRANCH = 12;
const db = uniqueDb('rt');

const ca = testCa();
const certA = issueCert(ca, {
  name: 'router-a',
  dns: [`*.${db}.${DOMAIN}`, 'localhost'],
  ips: ['127.0.0.1'],
  cn: 'router certificate A',
});
const certB = issueCert(ca, {
  name: 'router-b',
  dns: [`*.${db}.${DOMAIN}`, 'localhost'],
  ips: ['127.0.0.1'],
  cn: 'router certificate B',
});
// The files the config names; the reload test copies certificate B over them.
const live = { cert: join(ca.dir, 'live.pem'), key: join(ca.dir, 'live-key.pem') };
copyFileSync(certA.cert, live.cert);
copyFileSync(certA.key, live.key);

const path = ownStateConfig('rt', 29, (raw) => {
  raw.proxy = {
    enabled: true,
    listen: `127.0.0.1:${ROUTER_PORT}`,
    domain: DOMAIN,
    tls: live,
    requireTls: true,
    startupTimeout: '1s',
    maxConnectionsPerBranch: PER_BRANCH,
  };
  // Idle stop is on, but the daemon's own passes (one at start, then hourly) find nothing idle:
  // the tests run passes themselves with a `now` hours ahead.
  raw.expiry = { idleStopAfter: '1h' };
  raw.housekeeping = { interval: '1h' };
});
const env = { BPG_CONFIG: path };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** libpq keyword/value connection string (values quoted); never carries the password. */
function conninfo(o: Record<string, string>): string {
  return Object.entries(o)
    .map(([k, v]) => `${k}='${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`)
    .join(' ');
}

/** Runs a PostgreSQL client program; the password goes in PGPASSWORD, never in the arguments. */
function run(
  cmd: string,
  args: string[],
  password: string,
  o: { onSpawn?: (pid: number) => void; timeoutMs?: number } = {},
): Promise<CliResult & { ms: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(cmd, args, {
      env: { ...process.env, PGPASSWORD: password, PGCONNECT_TIMEOUT: '30', PGAPPNAME: 'router-test' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 120_000);
    if (child.pid) o.onSpawn?.(child.pid);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

const psql = (info: Record<string, string>, sql: string, password: string) =>
  run(
    'psql',
    ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=verbose', '-d', conninfo(info), '-c', sql],
    password,
  );

describe('the router on the real stack', { concurrency: 1 }, () => {
  let cfg: Config;
  let engine: Engine;
  let srv: RunningServer;
  let api: BpgClient;
  const log = recorder();
  const views: Record<string, BranchView> = {};
  const clients: pg.Client[] = [];
  let user = '';

  /** A node-postgres client through the router, verifying the certificate against the test CA. */
  function routed(
    database: string,
    o: { password?: string; servername?: string; applicationName?: string } = {},
  ): pg.Client {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: ROUTER_PORT,
      user,
      // each branch has a password of its own: by default the one of the branch asked for by name
      password: o.password ?? pw(database.includes('@') ? database.slice(database.indexOf('@') + 1) : 'main'),
      database,
      application_name: o.applicationName ?? 'router-test',
      ssl: { ca: ca.pem, servername: o.servername ?? 'localhost' },
      connectionTimeoutMillis: 60_000,
    });
    c.on('error', () => {}); // a connection ended under it is what some tests want; queries report it
    clients.push(c);
    return c;
  }

  async function routedQuery<T extends pg.QueryResultRow>(
    database: string,
    sql: string,
    o: Parameters<typeof routed>[1] = {},
  ): Promise<T[]> {
    const c = routed(database, o);
    await c.connect();
    try {
      return (await c.query<T>(sql)).rows;
    } finally {
      await c.end().catch(() => {});
    }
  }

  /** Through the branch's own port (connection.direct), around the router. */
  async function direct<T extends pg.QueryResultRow>(b: BranchView, sql: string): Promise<T[]> {
    const c = new pg.Client({ connectionString: b.connection.direct.uri, connectionTimeoutMillis: 30_000 });
    await c.connect();
    try {
      return (await c.query<T>(sql)).rows;
    } finally {
      await c.end();
    }
  }

  /** A branch's own password (an unknown branch: main's, which gets as far as the refusal). */
  const pw = (branch: string) => (views[branch] ?? views.main!).connection.password;
  const branchView = (branch: string) => okJson(['branch', 'get', `${db}/${branch}`], env);

  /** Which branch answered: each branch's `whoami` row names it. */
  const whoami = async (database: string, o: Parameters<typeof routed>[1] = {}) =>
    (await routedQuery<{ b: string }>(database, 'SELECT b FROM whoami', o))[0]!.b;

  /** The error a connection through the router ends with (it must end with one). */
  async function connectError(
    database: string,
    o: Parameters<typeof routed>[1] = {},
  ): Promise<Error & { code?: string }> {
    const c = routed(database, o);
    try {
      await c.connect();
    } catch (e) {
      return e as Error & { code?: string };
    }
    await c.end();
    throw new Error(`connecting to ${database} succeeded`);
  }

  /**
   * A housekeeping pass `aheadMs` in the future, with what the daemon's own passes get (serve.ts):
   * the router's connection counts and the per-branch locks its API requests and wakes take.
   */
  const housekeep = (aheadMs: number): Promise<HousekeepingReport> =>
    engine.housekeep({
      now: new Date(Date.now() + aheadMs),
      activity: (ref) => srv.router!.activity(ref),
      around: (t, fn) =>
        srv.api.locks.with(
          'snapshot' in t
            ? lockSet([`snapshot:${t.snapshot}`, 'exclusive'])
            : lockSet([t.database, 'shared'], [`${t.database}/${t.branch}`, 'exclusive']),
          fn,
        ),
    });

  /** The sum of a metric's series whose labels include `labels`. */
  async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const res = await fetch(`${srv.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(res.status, 200);
    const text = await res.text();
    let sum = 0;
    for (const line of text.split('\n')) {
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
      if (!m || m[1] !== name) continue;
      if (Object.entries(labels).every(([k, v]) => (m[2] ?? '').includes(`${k}="${v}"`))) sum += Number(m[3]);
    }
    return sum;
  }

  /** Waits until the router counts `n` open connections to a branch (in its count and in the metric). */
  async function waitOpen(branch: string, n: number): Promise<void> {
    const ref = { database: db, branch };
    let open = -1;
    let gauge = -1;
    for (const t0 = Date.now(); Date.now() - t0 < 30_000; await sleep(100)) {
      open = srv.router!.activity(ref).open;
      gauge = await metric('bpg_proxy_connections_open', { branch: `${db}/${branch}` });
      if (open === n && gauge === n) return;
    }
    assert.fail(`the router counts ${open} open connection(s) to ${db}/${branch} (metric: ${gauge}), expected ${n}`);
  }

  before(async () => {
    cfg = await loadConfig(path);
    engine = new Engine(cfg, { log });
    srv = await serve(
      { ...cfg, api: { ...cfg.api, listen: '127.0.0.1:0' } },
      { listen: '127.0.0.1:0', log, engine, handleSignals: false, env: { BPG_API_TOKEN: TOKEN } },
    );
    api = new BpgClient({ baseUrl: srv.url, token: TOKEN });
    await ok(['db', 'create', db], env);
    views.main = await branchView('main');
    user = views.main.connection.user;
    await direct(views.main, "CREATE TABLE whoami (b text); INSERT INTO whoami VALUES ('main')");
    // dev serves most tests and is protected, so the idle passes below never stop it.
    for (const [b, extra] of [
      ['dev', ['--protect']],
      ['sleepy', []],
      ['manual', ['--protect']],
      ['doomed', ['--protect']],
    ] as const) {
      views[b] = await okJson(['branch', 'create', `${db}/${b}`, '--fast', ...extra], env);
      await direct(views[b], `UPDATE whoami SET b = '${b}'`);
    }
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
    await srv?.close();
    await cli(['db', 'delete', db, '--force'], env);
    rmSync(ca.dir, { recursive: true, force: true });
  });

  // ----------------------------------------------------------------------------- routing, TLS

  it('the router is up on its port with TLS', () => {
    assert.ok(srv.router, 'serve() returns the router when proxy.enabled');
    assert.equal(srv.router.port, ROUTER_PORT);
    assert.equal(srv.router.address, '127.0.0.1');
  });

  it('psql with sslmode=require reaches <db>@<branch>, and plain <db> (no SNI) reaches main', async () => {
    const base = { host: '127.0.0.1', port: String(ROUTER_PORT), user, sslmode: 'require' };
    const dev = await psql({ ...base, dbname: `${db}@dev` }, 'SELECT b FROM whoami', pw('dev'));
    assert.equal(dev.code, 0, dev.stderr);
    assert.equal(dev.stdout.trim(), 'dev');
    const info = await psql({ ...base, dbname: `${db}@dev` }, '\\conninfo', pw('dev'));
    assert.match(info.stdout, /SSL connection \(protocol: TLSv1\.[23]/, 'psql says the connection is TLS');
    // An IP address as host: libpq sends no SNI, so the database name alone routes.
    const main = await psql({ ...base, dbname: db }, 'SELECT b FROM whoami', pw('main'));
    assert.equal(main.code, 0, main.stderr);
    assert.equal(main.stdout.trim(), 'main');
  });

  it('psql with sslmode=verify-full against the test CA: by database name, and by SNI <branch>.<db>.<domain>', async () => {
    const base = { port: String(ROUTER_PORT), user, sslmode: 'verify-full', sslrootcert: ca.cert };
    const byName = await psql(
      { ...base, host: 'localhost', hostaddr: '127.0.0.1', dbname: `${db}@dev` },
      'SELECT b FROM whoami',
      pw('dev'),
    );
    assert.equal(byName.code, 0, byName.stderr);
    assert.equal(byName.stdout.trim(), 'dev');
    const bySni = await psql(
      { ...base, host: `dev.${db}.${DOMAIN}`, hostaddr: '127.0.0.1', dbname: db },
      'SELECT b FROM whoami',
      pw('dev'),
    );
    assert.equal(bySni.code, 0, bySni.stderr);
    assert.equal(bySni.stdout.trim(), 'dev', 'the SNI name picked the branch');
    // An SNI name outside proxy.domain (here: localhost) routes nothing: plain <db> is main.
    const plain = await psql(
      { ...base, host: 'localhost', hostaddr: '127.0.0.1', dbname: db },
      'SELECT b FROM whoami',
      pw('main'),
    );
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout.trim(), 'main');
    // verify-full really verifies: a host name the certificate does not cover fails.
    const wrong = await psql({ ...base, host: '127.0.0.2', hostaddr: '127.0.0.1', dbname: db }, 'SELECT 1', pw('main'));
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /server certificate|does not match host name/);
  });

  it('node-postgres through the router: by database name, by SNI, and with the connection uri the CLI prints', async () => {
    assert.equal(await whoami(`${db}@dev`), 'dev');
    assert.equal(await whoami(db, { servername: `dev.${db}.${DOMAIN}`, password: pw('dev') }), 'dev');
    assert.equal(await whoami(db, { servername: `sleepy.${db}.${DOMAIN}`, password: pw('sleepy') }), 'sleepy');
    // An unknown branch by SNI is as unknown as by name.
    const e = await connectError(db, { servername: `nosuch.${db}.${DOMAIN}` });
    assert.equal(e.code, '3D000', e.message);
    // The uri as printed (sslmode=require, libpq's meaning: encrypted, not verified).
    const uri = views.dev!.connection.uri;
    const c = new pg.Client({ connectionString: `${uri}&uselibpqcompat=true`, connectionTimeoutMillis: 30_000 });
    c.on('error', () => {});
    await c.connect();
    try {
      assert.deepEqual((await c.query('SELECT b FROM whoami')).rows, [{ b: 'dev' }]);
    } finally {
      await c.end();
    }
  });

  it('pgbench select-only, several clients for a few seconds, through the router', async (t) => {
    const info = conninfo({
      host: '127.0.0.1',
      port: String(ROUTER_PORT),
      user,
      dbname: `${db}@dev`,
      sslmode: 'require',
    });
    const init = await run('pgbench', ['-i', '-s', '1', '-q', info], pw('dev'));
    assert.equal(init.code, 0, init.stderr);
    const r = await run('pgbench', ['-S', '-c', '4', '-j', '2', '-T', '3', '-n', info], pw('dev'));
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const tps = Number(/tps = ([\d.]+)/.exec(r.stdout)?.[1]);
    const failed = /number of failed transactions: (\d+)/.exec(r.stdout)?.[1];
    t.diagnostic(`pgbench -S -c 4 through the router with TLS: ${tps} tps`);
    assert.ok(tps > 0, r.stdout);
    assert.equal(failed ?? '0', '0', r.stdout);
    assert.match(r.stdout, /number of clients: 4/);
  });

  // ------------------------------------------------------------------------------------ errors

  it('a wrong password is the branch’s own SCRAM error (28P01)', async () => {
    const e = await connectError(`${db}@dev`, { password: 'not-the-password' });
    assert.equal(e.code, '28P01', e.message);
    assert.match(e.message, /password authentication failed/);
    // psql sees the same
    const r = await psql(
      { host: '127.0.0.1', port: String(ROUTER_PORT), user, dbname: `${db}@dev`, sslmode: 'require' },
      'SELECT 1',
      'not-the-password',
    );
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /password authentication failed/);
  });

  it('an unknown branch or database is 3D000, and the message lists nothing that exists', async () => {
    for (const name of [`${db}@nosuch`, `nodb${db}@main`, `nodb${db}`]) {
      const e = await connectError(name);
      assert.equal(e.code, '3D000', `${name}: ${e.message}`);
      for (const existing of ['dev', 'sleepy', 'manual', 'doomed'])
        assert.ok(!e.message.includes(existing), `${name}: the message names ${existing}: ${e.message}`);
    }
    const e = await connectError(`nodb${db}@main`);
    assert.ok(!e.message.includes(`${db}@`) && !e.message.includes(`'${db}'`), e.message);
  });

  it('plaintext is refused when TLS is required: 28000 saying sslmode=require, then the connection closes', async () => {
    const w = await Wire.connect(ROUTER_PORT);
    await w.write(startupPacket({ user, database: `${db}@dev` }));
    const err = await w.errorResponse();
    assert.equal(err.C, '28000');
    assert.equal(err.S, 'FATAL');
    assert.match(err.M!, /sslmode=require/);
    assert.ok(await w.closesWithin(20_000), 'closed after the error');
    const r = await psql(
      { host: '127.0.0.1', port: String(ROUTER_PORT), user, dbname: `${db}@dev`, sslmode: 'disable' },
      'SELECT 1',
      pw('dev'),
    );
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /sslmode=require/);
  });

  it('SSLRequest is answered S, GSSENCRequest N; after N the client can still ask for TLS and authenticate', async () => {
    const w = await Wire.connect(ROUTER_PORT);
    try {
      await w.write(gssEncRequest());
      assert.equal((await w.read(1)).toString(), 'N');
      await w.startTls({ ca: ca.pem, servername: 'localhost', rejectUnauthorized: true }); // asserts 'S'
      await w.write(startupPacket({ user, database: `${db}@dev` }));
      const m = await w.message();
      assert.equal(m.type, 'R', 'the branch asks the client to authenticate');
      assert.equal(m.body.readInt32BE(0), 10, 'with SASL (SCRAM), end to end');
    } finally {
      w.destroy();
    }
  });

  // ------------------------------------------------------------------------------------- cancel

  /** Waits until a branch runs `sql` for a client (seen on its own port, around the router). */
  async function waitActive(b: BranchView, sql: string): Promise<number> {
    for (const t0 = Date.now(); Date.now() - t0 < 60_000; await sleep(100)) {
      const rows = await direct<{ pid: number }>(
        b,
        `SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query = '${sql.replace(/'/g, "''")}'`,
      );
      if (rows[0]) return rows[0].pid;
    }
    throw new Error(`'${sql}' never ran on ${b.name}`);
  }

  it('psql interrupted by SIGINT cancels SELECT pg_sleep(60) through the router (57014); a wrong key cancels nothing', async () => {
    let pid = 0;
    const done = run(
      'psql',
      [
        '-X',
        '-v',
        'VERBOSITY=verbose',
        '-d',
        conninfo({ host: '127.0.0.1', port: String(ROUTER_PORT), user, dbname: `${db}@dev`, sslmode: 'require' }),
        '-c',
        'SELECT pg_sleep(60)',
      ],
      pw('dev'),
      { onSpawn: (p) => (pid = p) },
    );
    await waitActive(views.dev!, 'SELECT pg_sleep(60)');
    // A CancelRequest with keys nobody has: the router closes it and forwards it nowhere.
    const unknownBefore = await metric('bpg_proxy_cancel_requests_total', { result: 'unknown' });
    const forwardedBefore = await metric('bpg_proxy_cancel_requests_total', { result: 'forwarded' });
    const bogus = await Wire.connect(ROUTER_PORT);
    await bogus.write(cancelRequest(12345, 67890));
    assert.ok(await bogus.closesWithin(20_000), 'a cancel connection is closed');
    assert.equal(await metric('bpg_proxy_cancel_requests_total', { result: 'unknown' }), unknownBefore + 1);
    assert.equal(await metric('bpg_proxy_cancel_requests_total', { result: 'forwarded' }), forwardedBefore);
    await waitActive(views.dev!, 'SELECT pg_sleep(60)');

    const t0 = Date.now();
    process.kill(pid, 'SIGINT'); // psql sends a CancelRequest (libpq 15: plaintext, on a new connection)
    const r = await done;
    const ms = Date.now() - t0;
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /57014/);
    assert.match(r.stderr, /canceling statement due to user request/);
    // A loose bound: the statement would have run a minute.
    assert.ok(ms < 30_000, `cancelled after ${ms} ms`);
    assert.equal(await metric('bpg_proxy_cancel_requests_total', { result: 'forwarded' }), forwardedBefore + 1);
  });

  it('a CancelRequest sent over TLS with the key node-postgres got cancels its pg_sleep(60)', async () => {
    const c = routed(`${db}@dev`, { password: pw('dev') });
    await c.connect();
    const running = c.query('SELECT pg_sleep(60)').then(
      () => null,
      (e: Error & { code?: string }) => e,
    );
    await waitActive(views.dev!, 'SELECT pg_sleep(60)');
    const { processID, secretKey } = c as unknown as { processID: number; secretKey: number };
    const t0 = Date.now();
    const w = await Wire.connect(ROUTER_PORT);
    await w.startTls({ ca: ca.pem, servername: 'localhost', rejectUnauthorized: true });
    await w.write(cancelRequest(processID, secretKey));
    const e = await running;
    const ms = Date.now() - t0;
    assert.ok(e, 'the query was cancelled');
    assert.equal(e.code, '57014', e.message);
    assert.ok(ms < 30_000, `cancelled after ${ms} ms`);
    // The session itself goes on.
    assert.deepEqual((await c.query('SELECT b FROM whoami')).rows, [{ b: 'dev' }]);
    await c.end();
    w.destroy();
  });

  // --------------------------------------------------------------------------------------- wake

  it('a branch the idle stop stopped is started by 10 clients at once, once; all of them get answers', async (t) => {
    const r = await housekeep(2 * HOUR);
    assert.deepEqual(r.errors, []);
    assert.ok(
      r.stopped.some((s) => s.branch === `${db}/sleepy`),
      JSON.stringify(r),
    );
    const stopped = await branchView('sleepy');
    assert.equal(stopped.status, 'stopped');
    assert.equal(stopped.stoppedBy, 'idle');

    const wakesBefore = await metric('bpg_proxy_wakes_total', { result: 'ok' });
    const t0 = Date.now();
    const answers = await Promise.all(
      Array.from({ length: 10 }, async () => {
        const t1 = Date.now();
        const b = await whoami(`${db}@sleepy`, { password: pw('sleepy') });
        return { b, ms: Date.now() - t1 };
      }),
    );
    t.diagnostic(
      `10 clients on an idle-stopped branch: all answered in ${Date.now() - t0} ms (first ${Math.min(...answers.map((a) => a.ms))} ms)`,
    );
    assert.deepEqual(
      answers.map((a) => a.b),
      Array(10).fill('sleepy'),
    );
    assert.equal((await metric('bpg_proxy_wakes_total', { result: 'ok' })) - wakesBefore, 1, 'started once');
    const starts = log.lines.filter((l) => l.msg === 'router: branch started' && l.branch === `${db}/sleepy`);
    assert.equal(starts.length, 1, 'one start in the log');
    const woken = await branchView('sleepy');
    assert.equal(woken.status, 'running');
    assert.equal(woken.stoppedBy, null);
  });

  it('a branch stopped by a person (bpg stop) is not woken: 55000 saying how to start it', async () => {
    await ok(['stop', `${db}/manual`], env);
    const e = await connectError(`${db}@manual`, { password: pw('manual') });
    assert.equal(e.code, '55000', e.message);
    assert.match(e.message, /stopped by a person/);
    assert.match((e as { hint?: string }).hint ?? '', /bpg start/, 'the hint says how to start it');
    const v = await branchView('manual');
    assert.equal(v.status, 'stopped');
    assert.equal(v.stoppedBy, 'user');
  });

  it('the idle stop counts the router’s open connections; closed, and idleStopAfter later, the branch is stopped', async () => {
    // application_name 'betterpg' hides the session from the pass's own look at pg_stat_activity:
    // only the router's count keeps the branch running.
    const held = routed(`${db}@sleepy`, { password: pw('sleepy'), applicationName: 'betterpg' });
    await held.connect();
    assert.deepEqual((await held.query('SELECT b FROM whoami')).rows, [{ b: 'sleepy' }]);
    const r1 = await housekeep(2 * HOUR);
    assert.deepEqual(r1.errors, []);
    assert.ok(
      !r1.stopped.some((s) => s.branch === `${db}/sleepy`),
      `stopped with a client on it: ${JSON.stringify(r1)}`,
    );
    assert.equal((await branchView('sleepy')).status, 'running');
    assert.deepEqual((await held.query('SELECT 1 AS ok')).rows, [{ ok: 1 }], 'the client was not disturbed');
    await held.end();

    // The router sees the close at once, or soon: wait for the pass to agree rather than for a time.
    let r2: HousekeepingReport | null = null;
    for (const t0 = Date.now(); Date.now() - t0 < 30_000; await sleep(250)) {
      r2 = await housekeep(4 * HOUR);
      if (r2.stopped.some((s) => s.branch === `${db}/sleepy`)) break;
    }
    assert.ok(
      r2!.stopped.some((s) => s.branch === `${db}/sleepy`),
      JSON.stringify(r2),
    );
    const v = await branchView('sleepy');
    assert.equal(v.status, 'stopped');
    assert.equal(v.stoppedBy, 'idle');
  });

  // ------------------------------------------------------------------------------ delete, limits

  it('a branch deleted under a client: that client gets an error, the router goes on serving others', async () => {
    const victim = routed(`${db}@doomed`, { password: pw('doomed') });
    const bystander = routed(`${db}@dev`, { password: pw('dev') });
    await Promise.all([victim.connect(), bystander.connect()]);
    assert.deepEqual((await victim.query('SELECT b FROM whoami')).rows, [{ b: 'doomed' }]);
    const inFlight = victim.query('SELECT pg_sleep(60)').then(
      () => null,
      (e: Error) => e,
    );
    await waitActive(views.doomed!, 'SELECT pg_sleep(60)');
    const t0 = Date.now();
    await api.deleteBranch(db, 'doomed');
    const e = await inFlight;
    assert.ok(e, 'the client on the deleted branch got an error');
    assert.ok(Date.now() - t0 < 50_000, 'well before its statement would have ended');
    await assert.rejects(victim.query('SELECT 1'));

    assert.deepEqual((await bystander.query('SELECT b FROM whoami')).rows, [{ b: 'dev' }], 'an open session elsewhere');
    assert.equal(await whoami(`${db}@dev`), 'dev', 'a new session elsewhere');
    const gone = await connectError(`${db}@doomed`, { password: pw('doomed') });
    assert.equal(gone.code, '3D000', gone.message);
    await bystander.end();
  });

  it(`more than proxy.maxConnectionsPerBranch (${PER_BRANCH}) connections to one branch: 53300; a closed one frees its place`, async () => {
    await waitOpen('dev', 0); // the last test's sessions are closed on the router's side too
    const open = Array.from({ length: PER_BRANCH }, () => routed(`${db}@dev`));
    try {
      await Promise.all(open.map((c) => c.connect()));
      assert.equal(srv.router!.activity({ database: db, branch: 'dev' }).open, PER_BRANCH);
      const e = await connectError(`${db}@dev`);
      assert.equal(e.code, '53300', e.message);
      // Another branch is not limited by dev's connections.
      assert.equal(await whoami(db), 'main');
      await open.pop()!.end();
      let answer: string | null = null;
      for (const t0 = Date.now(); answer === null && Date.now() - t0 < 30_000; await sleep(200))
        answer = await whoami(`${db}@dev`).catch(() => null);
      assert.equal(answer, 'dev');
    } finally {
      await Promise.all(open.map((c) => c.end().catch(() => {})));
    }
    // Every place is given back once the clients are gone (the count never leaks).
    await waitOpen('dev', 0);
  });

  it('a branch being created, reset, renamed or deleted is 57P03 (retry), and answers again once that is over', async () => {
    await waitOpen('dev', 0);
    const key = `${db}/dev`;
    // The state exactly as it is while another bpg process runs those operations on dev: an
    // operation journalled by a live process (this one), or the status a create or delete keeps.
    const set = (change: (b: { status: string; operation: unknown }) => void) =>
      engine.store.update((st) => change(st.branches[key] as { status: string; operation: unknown }));
    for (const [kind, words] of [
      ['reset', /being reset/],
      ['rename', /being renamed/],
      ['delete', /being deleted/],
    ] as const) {
      await set((b) => (b.operation = newOperation(kind)));
      const e = await connectError(`${db}@dev`);
      assert.equal(e.code, '57P03', `${kind}: ${e.message}`);
      assert.match(e.message, words);
    }
    await set((b) => (b.operation = null));
    for (const [status, words] of [
      ['creating', /being created/],
      ['deleting', /being deleted/],
    ] as const) {
      await set((b) => (b.status = status));
      const e = await connectError(`${db}@dev`);
      assert.equal(e.code, '57P03', `${status}: ${e.message}`);
      assert.match(e.message, words);
    }
    await set((b) => (b.status = 'running'));
    assert.equal(await whoami(`${db}@dev`), 'dev');
    assert.ok((await metric('bpg_proxy_refused_total', { reason: 'busy' })) >= 5);
  });

  it('more than proxy.maxConnections in total: 53300 on any branch', async () => {
    // A second router on the same daemon state, with room for 3 clients (plaintext: loopback, no TLS).
    const small = await startRouter({
      cfg: {
        ...cfg,
        proxy: {
          ...cfg.proxy,
          listen: `127.0.0.1:${ROUTER_PORT + 1}`,
          tls: null,
          requireTls: false,
          maxConnections: 3,
        },
      },
      store: engine.store,
      log,
      start: (ref) => engine.start(ref),
      withBranchLock: (ref, fn) =>
        srv.api.locks.with(lockSet([ref.database, 'shared'], [`${ref.database}/${ref.branch}`, 'exclusive']), fn),
      containerAddress: (c) => engine.docker.address(c),
    });
    const through = (branch: string) =>
      new pg.Client({
        host: '127.0.0.1',
        port: ROUTER_PORT + 1,
        user,
        password: pw(branch),
        database: `${db}@${branch}`,
        connectionTimeoutMillis: 30_000,
      });
    const open = [through('dev'), through('main'), through('dev')];
    try {
      await Promise.all(open.map((c) => c.connect()));
      for (const branch of ['dev', 'main']) {
        const c = through(branch);
        const e = await c.connect().then(
          () => null,
          (err: Error & { code?: string }) => err,
        );
        await c.end().catch(() => {});
        assert.equal(e?.code, '53300', `${branch}: ${e?.message}`);
        assert.match(e!.message, /proxy\.maxConnections/);
      }
      await open.pop()!.end();
      let again: pg.Client | null = null;
      for (const t0 = Date.now(); again === null && Date.now() - t0 < 30_000; await sleep(200)) {
        const c = through('main');
        again = await c.connect().then(
          () => c,
          () => null,
        );
      }
      assert.ok(again, 'a closed connection frees its place');
      open.push(again);
    } finally {
      await Promise.all(open.map((c) => c.end().catch(() => {})));
      await small.close();
    }
  });

  // ---------------------------------------------------------------------------- startup packets

  /** Sends `bytes` (after a TLS handshake when `tls`) and expects an 08P01 ErrorResponse, then a close. */
  async function protocolViolation(bytes: Buffer, o: { tls?: boolean; codes?: string[] } = {}) {
    const w = await Wire.connect(ROUTER_PORT);
    try {
      if (o.tls) await w.startTls();
      await w.write(bytes).catch(() => {}); // the router may close before it has read everything
      const err = await w.errorResponse();
      assert.ok((o.codes ?? ['08P01']).includes(err.C!), `SQLSTATE ${err.C}: ${err.M}`);
      assert.equal(err.S, 'FATAL');
      assert.ok(await w.closesWithin(20_000), 'closed after the error');
      return err;
    } finally {
      w.destroy();
    }
  }

  it('malformed startup packets (bad lengths, wrong protocol version, broken parameters) get 08P01 and a close', async () => {
    await protocolViolation(rawFrame(3)); // shorter than its own length field
    await protocolViolation(rawFrame(7, Buffer.from([0, 3, 0])));
    await protocolViolation(rawFrame(-5));
    await protocolViolation(startupPacket({ user, database: `${db}@dev` }, 0x00020000), { tls: true }); // protocol 2.0
    await protocolViolation(startupPacket({ user, database: `${db}@dev` }, 0x00040000), { tls: true }); // 4.0
    // Parameters not terminated: a name without its value.
    const broken = Buffer.concat([Buffer.from([0, 0, 0, 0]), Buffer.from([0, 3, 0, 0]), Buffer.from('user\0')]);
    broken.writeInt32BE(broken.length);
    await protocolViolation(broken, { tls: true });
  });

  it('an oversized startup packet (> proxy.maxStartupPacket) gets 08P01 at once, without the router reading it all', async () => {
    // Only the length of a 20 kB (and of a 2 GB) packet is sent: the answer must not wait for the rest.
    await protocolViolation(rawFrame(20_000, Buffer.from([0, 3, 0, 0])));
    await protocolViolation(rawFrame(0x7fffffff));
    // A whole oversized packet inside TLS.
    const big = startupPacket({ user, database: `${db}@dev`, options: 'x'.repeat(12_000) });
    await protocolViolation(big, { tls: true });
    // The router still serves.
    assert.equal(await whoami(`${db}@dev`, { password: pw('dev') }), 'dev');
  });

  it('clients that stop half-way through their startup are dropped after proxy.startupTimeout', async () => {
    const half = await Wire.connect(ROUTER_PORT);
    await half.write(rawFrame(100, Buffer.from([0, 3, 0, 0, 0x75, 0x73])));
    const halfTls = await Wire.connect(ROUTER_PORT);
    await halfTls.startTls();
    await halfTls.write(startupPacket({ user, database: `${db}@dev` }).subarray(0, 12));
    const silent = await Wire.connect(ROUTER_PORT); // connects and sends nothing
    const noHandshake = await Wire.connect(ROUTER_PORT); // asks for TLS, then never says hello
    await noHandshake.write(sslRequest());
    assert.equal((await noHandshake.read(1)).toString(), 'S');
    // startupTimeout is 1 s; allow a loaded machine far more.
    const closed = await Promise.all([half, halfTls, silent, noHandshake].map((w) => w.closesWithin(30_000)));
    assert.deepEqual(closed, [true, true, true, true]);
  });

  // ----------------------------------------------------------------------------------- TLS reload

  /** The certificate the router presents to a new connection now. */
  async function presentedCert(): Promise<X509Certificate> {
    const w = await Wire.connect(ROUTER_PORT);
    try {
      const t = await w.startTls({ ca: ca.pem, servername: 'localhost', rejectUnauthorized: true });
      return new X509Certificate(t.getPeerX509Certificate()!.raw);
    } finally {
      w.destroy();
    }
  }

  it('a TLS reload makes new connections see the new certificate; open sessions go on; a broken pair keeps the old one', async () => {
    const a = new X509Certificate(certA.pem);
    const b = new X509Certificate(certB.pem);
    assert.equal((await presentedCert()).fingerprint256, a.fingerprint256);
    const open = routed(`${db}@dev`, { password: pw('dev') });
    await open.connect();

    copyFileSync(certB.cert, live.cert);
    copyFileSync(certB.key, live.key);
    await srv.router!.reloadTls();
    assert.equal((await presentedCert()).fingerprint256, b.fingerprint256);
    assert.equal(await whoami(`${db}@dev`, { password: pw('dev') }), 'dev', 'new sessions work with it');
    assert.deepEqual((await open.query('SELECT b FROM whoami')).rows, [{ b: 'dev' }], 'the open session goes on');
    await open.end();

    // A broken pair (a certificate half written, a key that does not match) is refused; the router keeps B.
    writeFileSync(live.cert, certA.pem.slice(0, 200));
    await assert.rejects(srv.router!.reloadTls());
    copyFileSync(certA.cert, live.cert); // B's key with A's certificate
    await assert.rejects(srv.router!.reloadTls(), /proxy\.tls/);
    assert.equal((await presentedCert()).fingerprint256, b.fingerprint256);
    assert.equal(await whoami(`${db}@dev`), 'dev');
  });

  // --------------------------------------------------------------------------- connection strings

  it('bpg branch get --json and the API give the router’s connection (db@branch, sslmode=require) and connection.direct', async () => {
    const fromCli = await branchView('dev');
    const fromApi = await api.getBranch(db, 'dev');
    for (const v of [fromCli, fromApi] as BranchView[]) {
      const c = v.connection;
      assert.equal(c.via, 'router');
      assert.equal(c.sslmode, 'require');
      assert.equal(c.host, cfg.postgres.publicHost);
      assert.equal(c.port, ROUTER_PORT);
      assert.equal(c.database, `${db}@dev`);
      assert.equal(c.user, user);
      const u = new URL(c.uri);
      assert.equal(u.port, String(ROUTER_PORT));
      assert.equal(decodeURIComponent(u.pathname.slice(1)), `${db}@dev`);
      assert.equal(u.searchParams.get('sslmode'), 'require');
      assert.equal(c.direct.port, v.port);
      assert.notEqual(c.direct.port, ROUTER_PORT);
      assert.equal(c.direct.database, db);
      assert.equal(c.direct.password, c.password);
      assert.ok(!c.direct.uri.includes('sslmode'), c.direct.uri.replace(c.password, '***'));
    }
    // The direct one works too (on the box).
    assert.deepEqual(await direct(fromCli, 'SELECT b FROM whoami'), [{ b: 'dev' }]);
  });

  it('once every client is gone, the router counts no open connection on any branch', async () => {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
    for (const b of ['main', 'dev', 'sleepy', 'manual', 'doomed']) await waitOpen(b, 0);
  });

  it('no password reaches the daemon’s log', () => {
    const text = JSON.stringify(log.lines);
    for (const v of Object.values(views))
      assert.ok(!text.includes(v.connection.password), `password of ${v.name} logged`);
    assert.ok(!text.includes(TOKEN));
  });
});

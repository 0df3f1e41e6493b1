import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { createServer as createHttpServer, request, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BpgClient } from '../api/client.js';
import * as S from '../api/schemas.js';
import { serve, type RunningServer } from '../api/serve.js';
import { createApi } from '../api/server.js';
import { loadConfig, type Config } from '../config.js';
import { DockerDriver } from '../drivers/docker.js';
import { Engine } from '../engine/engine.js';
import { canonicalImage } from '../engine/images.js';
import { Layout } from '../engine/layout.js';
import { StateStore } from '../state/store.js';
import {
  datasetsUnder,
  cli,
  isSpareSlot,
  ok,
  readStateFile,
  ownStateConfig,
  query,
  recorder,
  sh,
  uniqueDb,
  type CliResult,
} from './helpers.js';

/**
 * What the daemon admits: images limited to postgres.allowedImages (API and CLI, checked before
 * anything is reserved or pulled), creates taking turns (limits.concurrentCreates, a bounded line,
 * a bounded wait), and GET /metrics without a token sharing one collection. A state, dataset base
 * and port slice of its own (slot 21): "nothing was made" compares all of it exactly.
 *
 * Real things only. Where a test needs something to be slow or held, it holds a real resource: the
 * state file's lock (a create that has its turn waits there before it reserves anything, exactly as
 * it waits for a `bpg` command on the host), a registry that counts the connections Docker makes to
 * it (Docker pulls from it for real, and fails), a gate in front of the real Docker socket.
 */

const TOKEN = `tok-${randomBytes(16).toString('hex')}`;
const log = recorder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const DOCKER_SOCKET = process.env.DOCKER_SOCKET ?? '/var/run/docker.sock';

interface Reply {
  status: number;
  text: string;
  json: any;
  headers: Headers;
}

async function http(
  base: string,
  method: string,
  path: string,
  o: { token?: string | null; body?: unknown } = {},
): Promise<Reply> {
  const headers: Record<string, string> = {};
  const token = o.token === undefined ? TOKEN : o.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const res = await fetch(base + path, {
    method,
    headers,
    body: o.body === undefined ? undefined : JSON.stringify(o.body),
  });
  const text = await res.text();
  const json = res.headers.get('content-type')?.startsWith('application/json') ? JSON.parse(text) : undefined;
  return { status: res.status, text, json, headers: res.headers };
}

/** The API's error body, one line, with this status and code. */
function assertError(r: Reply, status: number, code: string, message?: RegExp): string {
  assert.equal(r.status, status, r.text.slice(0, 400));
  const body = S.ErrorBody.parse(r.json);
  assert.equal(body.error.code, code);
  assert.doesNotMatch(body.error.message, /[\n\r]|\bat .*\.js:\d+/, 'one line, no stack trace');
  if (message) assert.match(body.error.message, message);
  return body.error.message;
}

/** Exit `code` (2: invalid, 4: conflict), nothing on stdout, one `error:` line. */
function assertRefusedCli(r: CliResult, message: RegExp, code: number): void {
  assert.equal(r.code, code, r.stderr);
  assert.equal(r.stdout, '');
  const lines = r.stderr.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /^error: /);
  assert.match(lines[0]!, message);
}

/** Retry-After: whole seconds, at least 1. */
function retryAfter(r: Reply): number {
  const v = r.headers.get('retry-after');
  assert.match(v ?? '', /^[1-9]\d*$/, `Retry-After: ${v}`);
  return Number(v);
}

/** Prometheus text: the value of one sample, or undefined. */
function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have[l[1]!] = l[2]!;
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

/** Waits for a condition (never for a time): polls until `check` answers true. */
async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await sleep(50);
  }
}

interface StateFile {
  databases: Record<string, { image: string }>;
  snapshots: Record<string, unknown>;
  branches: Record<
    string,
    { status: string; createdAt: string; database: string; branch: string; id: string; container: string; port: number }
  >;
}
const readState = (cfg: Config): StateFile => JSON.parse(readFileSync(join(cfg.stateDir, 'state.json'), 'utf8'));

/**
 * Holds the state file's lock, as a `bpg` command on the host does while it updates the state: a
 * create that has its turn waits there, before it has reserved anything. Answers the release.
 */
async function holdStateLock(cfg: Config): Promise<() => Promise<void>> {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let held!: () => void;
  const isHeld = new Promise<void>((r) => (held = r));
  const done = new StateStore(cfg.stateDir).update(async () => {
    held();
    await gate;
  });
  await isHeld;
  return async () => {
    release();
    await done;
  };
}

/**
 * Everything this file's agent has: what the state records, datasets under its root, its
 * containers, WAL folders. (Records, not the file's bytes: housekeeping may touch a branch's
 * lastActiveAt meanwhile.)
 */
function footprint(cfg: Config): { records: string[]; datasets: string[]; containers: string[]; wal: string[] } {
  const root = `${cfg.zfs.pool}/${cfg.zfs.datasetBase}`;
  const datasets = datasetsUnder(root, 'all');
  const ports = Object.values(readStateFile(cfg).branches ?? {}).map((b) => b.port);
  const containers = sh('docker', ['ps', '-a', '--filter', `label=io.betterpg.root=${root}`, '--format', '{{.Names}}'])
    .split('\n')
    .filter((n) => n && !isSpareSlot(n, ports)) // spares come and go behind a daemon (port-slots.ts)
    .sort();
  const stateFile = join(cfg.stateDir, 'state.json');
  const walRoot = dirname(new Layout(cfg).walDir('x'));
  const st: StateFile | null = existsSync(stateFile) ? readState(cfg) : null;
  return {
    records: st
      ? [
          ...Object.keys(st.databases).map((k) => `db ${k}`),
          ...Object.keys(st.branches),
          ...Object.keys(st.snapshots).map((k) => `snap ${k}`),
        ]
      : [],
    datasets,
    containers,
    wal: existsSync(walRoot) ? readdirSync(walRoot).sort() : [],
  };
}

/** Images Docker has whose names this file made up (to see that none appeared). */
function ourImages(...prefixes: string[]): string[] {
  return sh('docker', ['images', '--format', '{{.Repository}}:{{.Tag}}'])
    .split('\n')
    .filter((n) => prefixes.some((p) => n.startsWith(p)))
    .sort();
}

/**
 * A registry that is never there: it counts the connections Docker opens to it (a pull, https or
 * http) and closes them. Zero connections: nothing was pulled, nor tried.
 */
async function countingRegistry(): Promise<{ host: string; connections: () => number; close: () => Promise<void> }> {
  let n = 0;
  const server: TcpServer = createTcpServer((socket) => {
    n++;
    socket.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return { host: `127.0.0.1:${port}`, connections: () => n, close: () => new Promise((r) => server.close(() => r())) };
}

/**
 * A gate in front of the real Docker socket: requests pass through while it is open and wait while
 * it is closed. Counts the requests, and the most that were in flight at once.
 */
async function dockerGate(dir: string) {
  const socketPath = join(dir, 'docker.sock');
  let open = true;
  let requests = 0;
  let active = 0;
  let maxActive = 0;
  const held: Array<() => void> = [];
  const server: HttpServer = createHttpServer((req, res) => {
    requests++;
    maxActive = Math.max(maxActive, ++active);
    res.on('close', () => active--);
    const forward = () => {
      const up = request(
        { socketPath: DOCKER_SOCKET, path: req.url, method: req.method, headers: req.headers },
        (r) => {
          res.writeHead(r.statusCode ?? 502, r.headers);
          r.pipe(res);
        },
      );
      up.on('error', () => res.destroy());
      req.pipe(up);
    };
    if (open) forward();
    else held.push(forward);
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  return {
    socketPath,
    get requests() {
      return requests;
    },
    get held() {
      return held.length;
    },
    resetMax() {
      maxActive = active;
    },
    get maxActive() {
      return maxActive;
    },
    close() {
      open = false;
    },
    open() {
      open = true;
      for (const f of held.splice(0)) f();
    },
    stop: () => new Promise<void>((r) => server.close(() => r())),
  };
}

describe('API admission: allowed images, create turns, metrics without a token', () => {
  const dbA = uniqueDb('ada');
  const dbB = uniqueDb('adb');
  const dbPull = uniqueDb('adp');
  const dbOther = uniqueDb('ado');
  const localTag = `bpgtest-other-${randomBytes(4).toString('hex')}:1`;
  let registry: Awaited<ReturnType<typeof countingRegistry>>;
  let REFUSED: string;
  let ALLOWED_ABSENT: string;
  let cfgPath: string;
  let env: Record<string, string>;
  let cfg: Config;
  const servers: RunningServer[] = [];

  /** The daemon on this file's state, with changes to its config. */
  async function daemon(change: (c: Config) => Config = (c) => c): Promise<RunningServer> {
    const s = await serve(change(cfg), {
      listen: '127.0.0.1:0',
      log,
      handleSignals: false,
      env: { BPG_API_TOKEN: TOKEN },
    });
    servers.push(s);
    return s;
  }
  const withLimits =
    (l: Partial<Config['limits']>) =>
    (c: Config): Config => ({ ...c, limits: { ...c.limits, ...l } });
  const scrape = async (url: string) => {
    const r = await http(url, 'GET', '/metrics');
    assert.equal(r.status, 200, r.text.slice(0, 300));
    return r.text;
  };

  before(async () => {
    registry = await countingRegistry();
    REFUSED = `${registry.host}/bpg/refused:1`;
    ALLOWED_ABSENT = `${registry.host}/bpg/allowed:1`;
    cfgPath = ownStateConfig('admission', 26, (raw) => {
      raw.postgres.allowedImages = [ALLOWED_ABSENT];
    });
    env = { BPG_CONFIG: cfgPath };
    cfg = await loadConfig(cfgPath);
    sh('docker', ['tag', cfg.postgres.image, localTag]);
    await ok(['-q', 'db', 'create', dbA], env);
  });

  after(async () => {
    for (const s of servers) await s.close().catch(() => {});
    for (const d of [dbA, dbB, dbPull, dbOther]) await cli(['-q', 'db', 'delete', d, '--force'], env);
    try {
      sh('docker', ['rmi', localTag]);
    } catch {
      // never made
    }
    await registry?.close();
    assert.ok(!log.lines.some((l) => JSON.stringify(l).includes(TOKEN)), 'no token in the log');
  });

  // ---------------------------------------------------------------- images

  it('image names compare as Docker means them, and only so', () => {
    const same = [
      ['postgres:17', 'docker.io/library/postgres:17', 'library/postgres:17', 'index.docker.io/library/postgres:17'],
      ['postgres', 'postgres:latest', 'docker.io/library/postgres:latest'],
      ['betterpg/postgres:15-local', 'docker.io/betterpg/postgres:15-local'],
      ['localhost:5000/pg', 'localhost:5000/pg:latest'],
      ['ghcr.io/x/pg:1', 'ghcr.io/x/pg:1'],
    ];
    for (const group of same)
      for (const x of group) assert.equal(canonicalImage(x), canonicalImage(group[0]!), `${x} = ${group[0]}`);
    const apart = [
      ['postgres:17', 'postgres:16'],
      ['postgres:17', 'evil.example/postgres:17'],
      ['postgres:17', 'evil/postgres:17'],
      ['postgres', `postgres@sha256:${'a'.repeat(64)}`],
      ['localhost:5000/pg', 'localhost:5001/pg'],
      ['betterpg/postgres:15-local', 'betterpg/postgres:15-local-x'],
    ];
    for (const [a, b] of apart) assert.notEqual(canonicalImage(a!), canonicalImage(b!), `${a} != ${b}`);
  });

  it('an image outside postgres.allowedImages is refused by the API and by the CLI on the host: nothing is made, pulled or tried', async () => {
    const srv = await daemon();
    const before = footprint(cfg);
    const imagesBefore = ourImages(registry.host, localTag.split(':')[0]!);
    assert.deepEqual(imagesBefore, [localTag]);
    for (const image of [localTag, REFUSED, 'postgres:9']) {
      const r = await http(srv.url, 'POST', '/v1/databases', { body: { name: dbOther, image } });
      const msg = assertError(r, 400, 'invalid', /is not allowed/);
      assert.ok(
        msg.includes(`'${image}'`) && msg.includes('postgres.allowedImages') && msg.includes(cfg.postgres.image),
        msg,
      );
      assertRefusedCli(
        await cli(['db', 'create', dbOther, '--image', image], env),
        /image '.*' is not allowed.*postgres\.allowedImages/,
        2,
      );
    }
    assert.deepEqual(footprint(cfg), before, 'state, datasets, containers, WAL folders unchanged');
    assert.deepEqual(ourImages(registry.host, localTag.split(':')[0]!), imagesBefore, 'no image appeared');
    assert.equal(registry.connections(), 0, 'Docker never contacted the registry');

    // The same present image, once the operator allows it, makes a database: the list was the only reason.
    const open = await daemon((c) => ({
      ...c,
      postgres: { ...c.postgres, allowedImages: [...c.postgres.allowedImages, localTag] },
    }));
    const r = await http(open.url, 'POST', '/v1/databases', { body: { name: dbOther, image: localTag } });
    assert.equal(r.status, 201, r.text);
    const view = S.DatabaseView.parse(r.json);
    assert.equal(view.image, localTag);
    assert.deepEqual(await query(view.branches[0]!, 'SELECT 1 AS ok'), [{ ok: 1 }]);
    await ok(['-q', 'db', 'delete', dbOther], env);
  });

  it('an allowed image is pulled only after the name, the limits and duplicates are checked; a failed pull leaves nothing', async () => {
    const srv = await daemon();
    const before = footprint(cfg);
    // Each of these would have pulled first before: now each is refused and Docker is never asked.
    assertError(
      await http(srv.url, 'POST', '/v1/databases', { body: { name: dbA, image: ALLOWED_ABSENT } }),
      409,
      'conflict',
      /already exists/,
    );
    assertError(
      await http(srv.url, 'POST', '/v1/databases', { body: { name: '../x', image: ALLOWED_ABSENT } }),
      400,
      'invalid',
    );
    assertError(
      await http(srv.url, 'POST', '/v1/databases', { body: { name: dbPull, image: ALLOWED_ABSENT, memory: '1k' } }),
      400,
      'invalid',
      /memory/,
    );
    assertError(
      await http(srv.url, 'POST', '/v1/databases', { body: { name: dbPull, image: ALLOWED_ABSENT, cpus: 256 } }),
      409,
      'conflict',
      /cpus/,
    );
    assertRefusedCli(await cli(['db', 'create', dbA, '--image', ALLOWED_ABSENT], env), /already exists/, 4);
    const branches = Object.keys(readState(cfg).branches).length;
    const full = await daemon(withLimits({ branchesTotal: branches }));
    assertError(
      await http(full.url, 'POST', '/v1/databases', { body: { name: dbPull, image: ALLOWED_ABSENT } }),
      409,
      'conflict',
      /limits\.branchesTotal/,
    );
    assert.equal(registry.connections(), 0, 'no pull for a refused create');
    assert.deepEqual(footprint(cfg), before);

    // All checks pass: now Docker pulls (from a registry that is not there), and the reservation is undone.
    const r = await http(srv.url, 'POST', '/v1/databases', { body: { name: dbPull, image: ALLOWED_ABSENT } });
    assertError(r, 503, 'unavailable', /could not be pulled/);
    assert.ok(registry.connections() > 0, 'the pull was tried, after the checks');
    assert.deepEqual(footprint(cfg), before, 'the reservation was undone: nothing left');
  });

  // ---------------------------------------------------------------- create turns

  it('limits.concurrentCreates 1: parallel creates through the API all succeed, one at a time, in arrival order', async () => {
    const srv = await daemon(withLimits({ concurrentCreates: 1, createQueueLength: 8, createQueueTimeout: 600_000 }));
    const names = ['t0', 't1', 't2'];
    const release = await holdStateLock(cfg);
    const pending: Array<Promise<Reply>> = [];
    try {
      // One after another, so the arrival order is known: each waits for the one before to be in.
      for (const [i, n] of names.entries()) {
        pending.push(http(srv.url, 'PUT', `/v1/databases/${dbA}/branches/${n}`, { body: { fast: true } }));
        await until(`${n} running or waiting`, async () => {
          const m = await scrape(srv.url);
          return metric(m, 'bpg_creates_running') === 1 && metric(m, 'bpg_creates_waiting') === i;
        });
      }
      pending.push(http(srv.url, 'POST', '/v1/databases', { body: { name: dbB } }));
      await until(
        'the database create waiting',
        async () => metric(await scrape(srv.url), 'bpg_creates_waiting') === 3,
      );
      // The one with the turn waits for the lock before it reserves; the others wait for their turn.
      const m = await scrape(srv.url);
      assert.equal(metric(m, 'bpg_creates_running'), 1, 'one create runs');
      assert.equal(metric(m, 'bpg_creates_waiting'), 3, 'three wait');
      assert.deepEqual(
        Object.values(readState(cfg).branches).filter((b) => b.status === 'creating'),
        [],
        'nothing reserved yet',
      );
    } finally {
      await release();
    }
    // From now on: sample the state; at no point may two creates have reserved at once.
    let most = 0;
    let samples = 0;
    let seen = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        try {
          const creating = Object.values(readState(cfg).branches).filter((b) => b.status === 'creating').length;
          most = Math.max(most, creating);
          if (creating > 0) seen++;
          samples++;
        } catch {
          // a read between two writes of another process: the next one counts
        }
        await sleep(10);
      }
    })();
    const replies = await Promise.all(pending);
    sampling = false;
    await sampler;
    for (const r of replies) assert.equal(r.status, 201, r.text);
    assert.ok(samples > 10 && seen > 0, `the sampler saw creates (${seen} of ${samples} samples)`);
    assert.equal(most, 1, 'never two creates at once');

    // Turns were given in arrival order: each reserved (createdAt) after the one before finished.
    const st = readState(cfg);
    const order = [...names.map((n) => `${dbA}/${n}`), `${dbB}/main`];
    const created = order.map((k) => Date.parse(st.branches[k]!.createdAt));
    assert.deepEqual(
      [...created].sort((a, b) => a - b),
      created,
      `reserved in arrival order: ${order.join(', ')}`,
    );
    for (const r of replies.slice(0, 3))
      assert.deepEqual(await query(S.PutBranchResponse.parse(r.json).branch, 'SELECT 1 AS ok'), [{ ok: 1 }]);

    const after = await scrape(srv.url);
    assert.equal(metric(after, 'bpg_creates_running'), 0);
    assert.equal(metric(after, 'bpg_creates_waiting'), 0);
    assert.equal(metric(after, 'bpg_create_wait_seconds_count'), 4);
    assert.equal(metric(after, 'bpg_creates_rejected_total', { reason: 'queue_full' }), 0);
    // A PUT of a branch that exists is no create: it does not wait for a turn.
    const again = await http(srv.url, 'PUT', `/v1/databases/${dbA}/branches/t0`, { body: {} });
    assert.equal(again.status, 200, again.text);
    assert.equal(metric(await scrape(srv.url), 'bpg_create_wait_seconds_count'), 4);
  });

  it('a full line answers 503 at once, a wait past limits.createQueueTimeout answers 503, shutdown refuses those in line: each with Retry-After, none makes anything', async () => {
    // The line holds one.
    const srv = await daemon(withLimits({ concurrentCreates: 1, createQueueLength: 1, createQueueTimeout: 600_000 }));
    const before = footprint(cfg);
    let release = await holdStateLock(cfg);
    try {
      const first = http(srv.url, 'PUT', `/v1/databases/${dbA}/branches/q0`, { body: { fast: true } });
      await until('q0 running', async () => metric(await scrape(srv.url), 'bpg_creates_running') === 1);
      const queued = http(srv.url, 'PUT', `/v1/databases/${dbA}/branches/q1`, { body: { fast: true } });
      await until('q1 waiting', async () => metric(await scrape(srv.url), 'bpg_creates_waiting') === 1);
      const full = await http(srv.url, 'PUT', `/v1/databases/${dbA}/branches/q2`, { body: { fast: true } });
      assertError(
        full,
        503,
        'unavailable',
        /too many creates: 1 running and 1 waiting \(limits\.concurrentCreates 1, limits\.createQueueLength 1\); nothing was made/,
      );
      retryAfter(full);
      const fullDb = await http(srv.url, 'POST', '/v1/databases', { body: { name: dbOther } });
      assertError(fullDb, 503, 'unavailable', /limits\.createQueueLength/);
      // Shutdown: the one in line is refused at once; the one running finishes.
      const closing = srv.close();
      const refused = await queued;
      assertError(refused, 503, 'unavailable', /shutting down/);
      retryAfter(refused);
      await release();
      const r0 = await first;
      assert.equal(r0.status, 201, r0.text);
      await closing;
    } finally {
      await release();
    }
    const st = readState(cfg);
    const q0 = st.branches[`${dbA}/q0`]!;
    assert.ok(q0, 'q0 made');
    for (const k of [`${dbA}/q1`, `${dbA}/q2`, `${dbOther}/main`])
      assert.equal(st.branches[k], undefined, `${k} not made`);
    const now = footprint(cfg);
    const added = (k: 'datasets' | 'containers' | 'wal') => now[k].filter((x) => !before[k].includes(x));
    assert.deepEqual(
      added('containers').sort(),
      [q0.container, `bpg-slot-${q0.port}.${q0.container.split('.').pop()}`].sort(),
      'only q0 has a container (and its port slot)',
    );
    assert.ok(
      added('datasets').length > 0 && added('datasets').every((d) => d.endsWith('/q0') || d.includes(q0.id)),
      `only q0's datasets: ${added('datasets').join(', ')}`,
    );
    assert.deepEqual(added('wal'), [q0.id], "only q0's WAL folder");

    // The wait is bounded in time.
    const slow = await daemon(withLimits({ concurrentCreates: 1, createQueueLength: 8, createQueueTimeout: 1000 }));
    release = await holdStateLock(cfg);
    let first: Promise<Reply>;
    let patient: Promise<S.PutBranchResponse> | undefined;
    try {
      first = http(slow.url, 'PUT', `/v1/databases/${dbA}/branches/w0`, { body: { fast: true } });
      await until('w0 running', async () => metric(await scrape(slow.url), 'bpg_creates_running') === 1);
      const t0 = performance.now();
      const late = await http(slow.url, 'PUT', `/v1/databases/${dbA}/branches/w1`, { body: { fast: true } });
      assert.ok(performance.now() - t0 >= 900, 'answered after its wait');
      assertError(
        late,
        503,
        'unavailable',
        /waited 1s for a turn to create \(limits\.createQueueTimeout; 1 running, limits\.concurrentCreates 1\); nothing was made/,
      );
      retryAfter(late);
      // The client the Action and the receiver use comes back when the agent says (Retry-After) and gets its branch.
      const client = new BpgClient({ baseUrl: slow.url, token: TOKEN });
      patient = client.putBranch(dbA, 'w2', { fast: true });
      await until(
        'w2 turned away once',
        async () => (metric(await scrape(slow.url), 'bpg_creates_rejected_total', { reason: 'timeout' }) ?? 0) >= 2,
      );
    } finally {
      await release();
    }
    assert.equal((await first).status, 201);
    assert.equal((await patient!).created, true, 'the patient client got its branch once the line moved');
    assert.equal(readState(cfg).branches[`${dbA}/w1`], undefined);
    const m = await scrape(slow.url);
    assert.ok((metric(m, 'bpg_creates_rejected_total', { reason: 'timeout' }) ?? 0) >= 2);
    assert.ok(
      (metric(m, 'bpg_operations_total', { operation: 'putBranch', result: 'unavailable' }) ?? 0) >= 1,
      'counted as an operation',
    );
    await slow.close();
  });

  // ---------------------------------------------------------------- metrics without a token

  it('50 scrapes without a token at once: one collection, all answered; past api.maxUnauthenticatedInFlight a 503 at once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bpg-admission-'));
    const gate = await dockerGate(dir);
    const started: HttpServer[] = [];
    /** The API alone (no housekeeping, no start-up reconcile): only scrapes talk to Docker. */
    const apiOn = async (api: Partial<Config['api']>) => {
      const c: Config = { ...cfg, api: { ...cfg.api, ...api, metricsWithoutToken: true } };
      const engine = new Engine(c, { log, docker: new DockerDriver(gate.socketPath) });
      const { app } = createApi({ engine, tokens: [{ name: 'tests', token: TOKEN }], log, bodyLimit: c.api.bodyLimit });
      const server = createHttpServer(app);
      started.push(server);
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    };
    try {
      // What one collection asks Docker.
      const probe = await apiOn({});
      let n0 = gate.requests;
      await scrape(probe);
      const perCollection = gate.requests - n0;
      assert.ok(perCollection >= 1, 'a collection asks Docker');

      // 50 at once, while the collection they wait for is held at Docker.
      const url = await apiOn({ metricsMaxAge: 600_000 });
      n0 = gate.requests;
      gate.close();
      gate.resetMax();
      const replies = Array.from({ length: 50 }, () => http(url, 'GET', '/metrics', { token: null }));
      await until('the collection reached Docker', () => gate.held > 0);
      gate.open();
      const done = await Promise.all(replies);
      for (const r of done) {
        assert.equal(r.status, 200, r.text.slice(0, 200));
        assert.equal(metric(r.text, 'bpg_docker_up'), 1);
        assert.equal(metric(r.text, 'bpg_databases'), metric(done[0]!.text, 'bpg_databases'));
      }
      assert.equal(gate.requests - n0, perCollection, 'Docker was asked for one collection, not fifty');
      assert.ok(gate.maxActive <= perCollection, 'never more than one collection at a time');
      const m = await scrape(url); // with the token: a fresh one of its own
      assert.equal(metric(m, 'bpg_metrics_scrapes_total', { served: 'collected' }), 1);
      assert.equal(
        (metric(m, 'bpg_metrics_scrapes_total', { served: 'shared' }) ?? 0) +
          (metric(m, 'bpg_metrics_scrapes_total', { served: 'cached' }) ?? 0),
        49,
      );
      assert.equal(metric(m, 'bpg_metrics_scrapes_total', { served: 'fresh' }), 1);
      assert.equal(metric(m, 'bpg_metrics_collections_total'), 2);
      assert.equal(metric(m, 'bpg_unauthenticated_requests_total', { outcome: 'metrics' }), 50);

      // Ten may wait at once: the other forty are answered 503 while the collection is still held.
      const small = await apiOn({ metricsMaxAge: 600_000, maxUnauthenticatedInFlight: 10 });
      n0 = gate.requests;
      gate.close();
      const all = Array.from({ length: 50 }, () => http(small, 'GET', '/metrics', { token: null }));
      let answered = 0;
      const refusedNow = all.map((p) => p.then((r) => (answered++, r)));
      await until('forty answered while the collection is held', () => answered === 40);
      assert.equal(gate.held > 0, true, 'the collection is still held');
      gate.open();
      const res = await Promise.all(refusedNow);
      const over = res.filter((r) => r.status === 503);
      assert.equal(res.filter((r) => r.status === 200).length, 10);
      assert.equal(over.length, 40);
      for (const r of over) {
        assertError(r, 503, 'unavailable', /api\.maxUnauthenticatedInFlight/);
        retryAfter(r);
      }
      assert.equal(gate.requests - n0, perCollection, 'still one collection');
      const m2 = await scrape(small);
      assert.equal(metric(m2, 'bpg_unauthenticated_requests_total', { outcome: 'overloaded' }), 40);
      assert.equal(metric(m2, 'bpg_unauthenticated_requests_total', { outcome: 'metrics' }), 10);
      assertError(await http(small, 'GET', '/v1/databases', { token: null }), 401, 'unauthorized');
      assert.equal(metric(await scrape(small), 'bpg_unauthenticated_requests_total', { outcome: 'refused' }), 1);
    } finally {
      gate.open();
      for (const s of started) {
        s.closeAllConnections();
        await new Promise<void>((r) => s.close(() => r()));
      }
      await gate.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

#!/usr/bin/env node
// bench-proxy.mjs — what the router (agent/proxy) costs against a branch's own port, in one run.
//
// On an existing pool (default tank; run scripts/setup-host.sh first) it makes everything of its
// own: the dataset base `bench-proxy`, a work folder under /var/tmp (config, state, a self-signed
// certificate made with openssl, the daemon's log), and a `bpg serve` with a random token, its API on
// 127.0.0.1:47432, the router on 127.0.0.1:46432 (proxy.tls set, proxy.requireTls false, so one
// router takes both TLS and plaintext clients), branch ports 48000-48999. Then, in one run:
//   1. pgbench select-only (`-S -n -c 8 -j 2`, --rounds x --seconds after a 5 s warm-up, the ways
//      alternating which goes first) on ONE branch (pgbench -i -s --scale, through its own port):
//      through the router with TLS (sslmode=require), through the router in plaintext
//      (sslmode=disable), on the branch's own port (which Docker's userland docker-proxy relays), and,
//      for reference, on the container's address on its Docker network (PostgreSQL with nothing in
//      between). TPS medians, router/direct ratios, and during each run the CPU per transaction of
//      the daemon (the router) and of that docker-proxy, and how busy the host was;
//   2. connection set-up: --connects sequential connect + `SELECT 1` + close with node-postgres, the
//      four ways interleaved: p50/p95;
//   3. wake on connect: --wakes times, the branch `wake` is stopped as the idle stop does it (the
//      engine's stop with by 'idle', called in this process on the daemon's config and state while
//      the daemon runs), then a client's connect + `SELECT 1` through the router with TLS is timed;
//      the daemon's own start time comes from its log ("router: branch started");
//   4. --branches N (default 200) branches of the same database, --running (20) of them running and
//      the rest idle-stopped as in 3 (each stopped right after its create, so no more than ~20 run at
//      once while they are made): host memory (MemTotal - MemAvailable, and where it went), the
//      running branches' own memory (container working set as `docker stats` shows it, plus the PSS
//      of the containerd-shim and docker-proxy Docker runs on the host for each), the
//      daemon's RSS, and the answer time through the router of --running running ones (warm) and
//      --cold idle-stopped ones (each woken by its connect).
// Everything it made is removed at the end, also after an error or Ctrl-C (a second Ctrl-C quits at
// once and says what to remove by hand). A markdown table and the targets go to stdout, progress to
// stderr, the whole result to .bench/proxy-<date>.json. Passwords reach pgbench and psql through
// PGPASSWORD in their environment, never an argument.
//
// Run as root from a built checkout (npm ci, or npm run build):
//   node scripts/bench-proxy.mjs [--branches 200] [--running 20] [--cold 7] [--rounds 3] [--seconds 15]
//                                [--scale 10] [--connects 200] [--wakes 7] [--concurrency 3]
//                                [--pool tank] [--image betterpg/postgres:15-local]
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import Docker from 'dockerode';
import pg from 'pg';
import YAML from 'yaml';
import { deltaOf, fmtBytes, mapLimit, must, run, signed, stats } from './lib/bench.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BPG_JS = join(ROOT, 'bin', 'bpg.js');
const BUILD = join(ROOT, 'build', 'agent');
const LABEL_ROOT = 'io.betterpg.root';
const BASE = 'bench-proxy';
const API_PORT = 47432;
const ROUTER_PORT = 46432;
const PORTS = [48000, 48999];
const DB = 'px';
const BENCH_BRANCH = 'bench';
const WAKE_BRANCH = 'wake';
const PGBENCH_CLIENTS = 8;
const PGBENCH_THREADS = 2;

// ------------------------------------------------------------------ arguments

const { values: opt } = parseArgs({
  options: {
    branches: { type: 'string', default: '200' },
    running: { type: 'string', default: '20' },
    cold: { type: 'string', default: '7' },
    rounds: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '15' },
    scale: { type: 'string', default: '10' },
    connects: { type: 'string', default: '200' },
    wakes: { type: 'string', default: '7' },
    concurrency: { type: 'string', default: '3' },
    pool: { type: 'string', default: process.env.BPG_BENCH_POOL || 'tank' },
    image: { type: 'string', default: process.env.BPG_IMAGE || 'betterpg/postgres:15-local' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});
if (opt.help) {
  process.stdout.write(
    'usage: node scripts/bench-proxy.mjs [--branches 200] [--running 20] [--cold 7] [--rounds 3] [--seconds 15]\n' +
      '                                    [--scale 10] [--connects 200] [--wakes 7] [--concurrency 3] [--pool tank] [--image I]\n',
  );
  process.exit(0);
}
function die(msg) {
  process.stderr.write(`bench-proxy: error: ${msg}\n`);
  process.exit(1);
}
const int = (name, min) => {
  const n = Number(opt[name]);
  if (!Number.isInteger(n) || n < min) die(`--${name} must be an integer >= ${min}`);
  return n;
};
const N = int('branches', 1);
const RUNNING = int('running', 0);
const COLD = int('cold', 0);
const ROUNDS = int('rounds', 1);
const SECONDS = int('seconds', 1);
const SCALE = int('scale', 1);
const CONNECTS = int('connects', 1);
const WAKES = int('wakes', 1);
const CONCURRENCY = int('concurrency', 1);
if (RUNNING > N) die('--running cannot be more than --branches');
if (COLD > N - RUNNING) die(`--cold cannot be more than the idle-stopped branches (${N - RUNNING})`);
if (N + 3 > PORTS[1] - PORTS[0] + 1)
  die(`--branches: at most ${PORTS[1] - PORTS[0] + 1 - 3} (ports ${PORTS.join('-')})`);
if (!/^[A-Za-z0-9][A-Za-z0-9_.:-]*$/.test(opt.pool)) die('--pool is not a pool name');
if (process.getuid?.() !== 0) die('run as root (ZFS, Docker)');
for (const f of ['api/client.js', 'engine/engine.js', 'config.js'])
  if (!existsSync(join(BUILD, f))) die("bpg is not built: run 'npm ci' (or 'npm run build') in the checkout");
const { BpgClient } = await import(join(BUILD, 'api', 'client.js'));
const { Engine } = await import(join(BUILD, 'engine', 'engine.js'));
const { loadConfig } = await import(join(BUILD, 'config.js'));

const POOL = opt.pool;
const ROOT_DS = `${POOL}/${BASE}`;
const TOKEN = randomBytes(24).toString('hex');
const branchName = (i) => `c-${String(i).padStart(3, '0')}`;

// ------------------------------------------------------------------ helpers

const t0Script = Date.now();
const clock = () => new Date().toISOString().slice(11, 19);
const log = (msg) => process.stderr.write(`[bench-proxy ${clock()}] ${msg}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sec = (ms) => (ms == null ? 'n/a' : (ms / 1000).toFixed(2));
const load1 = () => Number(loadavg()[0].toFixed(2));
const median = (xs) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const msLine = (st) => (st ? `p50 ${st.p50} ms, p95 ${st.p95} ms (min ${st.min}, max ${st.max}, n=${st.n})` : 'n/a');

/** /proc/meminfo in bytes. */
async function meminfo() {
  return Object.fromEntries(
    (await readFile('/proc/meminfo', 'utf8'))
      .split('\n')
      .map((l) => /^(\w+):\s+(\d+)/.exec(l))
      .filter(Boolean)
      .map((x) => [x[1], Number(x[2]) * 1024]),
  );
}
const rssOf = async (pid) =>
  Number(/^VmRSS:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''))?.[1] ?? 0) * 1024;
/** CPU seconds (user + system) a process has used. */
async function cpuSecondsOf(pid) {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null);
  if (!text) return null;
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (CLK_TCK 100 on Linux)
}
/** Busy and total jiffies of the whole host, from /proc/stat. */
async function hostCpu() {
  const f = (await readFile('/proc/stat', 'utf8')).split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + (f[4] ?? 0);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}
/** PSS of a process (its shared pages split among their users), from /proc/<pid>/smaps_rollup. */
const pssOf = async (pid) =>
  Number(/^Pss:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => ''))?.[1] ?? 0) * 1024;
/**
 * Memory of the host (MemTotal - MemAvailable and some of its parts) and the PSS of the daemons every
 * branch leans on. All of these are the whole machine's: on a shared host others' work moves them.
 */
async function hostMemory() {
  const m = await meminfo();
  const out = { usedBytes: m.MemTotal - m.MemAvailable };
  for (const k of ['AnonPages', 'Shmem', 'Cached', 'Slab', 'PageTables']) out[k] = m[k] ?? null;
  const daemons = { 'zfs-fuse': 0, dockerd: 0, containerd: 0 };
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const comm = (await readFile(`/proc/${d}/comm`, 'utf8').catch(() => '')).trim();
    if (comm in daemons) daemons[comm] += await pssOf(d);
  }
  for (const [k, v] of Object.entries(daemons)) out[`${k} PSS`] = v;
  return out;
}

/**
 * What the running branches hold, their own and nobody else's: each container's working set, and
 * the PSS of the containerd-shim (found by `-id <container id>`) and docker-proxy (by `-host-port`)
 * that Docker runs on the host for it.
 */
async function branchMemory(containers) {
  const shimById = new Map();
  const proxyByPort = new Map();
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const args = (await readFile(`/proc/${d}/cmdline`, 'utf8').catch(() => '')).split('\0');
    const bin = args[0] ?? '';
    const arg = (k) => args[args.indexOf(k) + 1];
    if (bin.endsWith('containerd-shim-runc-v2') && args.includes('-id')) shimById.set(arg('-id'), Number(d));
    if (bin.endsWith('docker-proxy') && args.includes('-host-port'))
      proxyByPort.set(Number(arg('-host-port')), [...(proxyByPort.get(Number(arg('-host-port'))) ?? []), Number(d)]);
  }
  const per = await mapLimit(containers, 4, async (c) => {
    const ws = await workingSet(c.Id);
    const shim = shimById.has(c.Id) ? await pssOf(shimById.get(c.Id)) : 0;
    let proxy = 0;
    for (const p of new Set((c.Ports ?? []).flatMap((x) => proxyByPort.get(x.PublicPort) ?? [])))
      proxy += await pssOf(p);
    return { ws, shim, proxy, total: ws + shim + proxy };
  });
  const sum = (k) => per.reduce((a, x) => a + x[k], 0);
  return {
    containers: per.length,
    workingSetBytes: sum('ws'),
    shimPssBytes: sum('shim'),
    dockerProxyPssBytes: sum('proxy'),
    totalBytes: sum('total'),
    perContainerWorkingSetBytes: stats(per.map((x) => x.ws)),
    perContainerTotalBytes: stats(per.map((x) => x.total)),
  };
}

const docker = new Docker();
const managedContainers = (all = true) =>
  docker.listContainers({ all, filters: { label: [`${LABEL_ROOT}=${ROOT_DS}`] } });
/** A container's working set as `docker stats` shows it: cgroup usage minus inactive file cache. */
async function workingSet(id) {
  const s = await docker.getContainer(id).stats({ stream: false, 'one-shot': true });
  const m = s.memory_stats ?? {};
  const st = m.stats ?? {};
  return (m.usage ?? 0) - (st.total_inactive_file ?? st.inactive_file ?? 0);
}

// ------------------------------------------------------------------ state of the run

const result = {
  startedAt: new Date().toISOString(),
  ok: false,
  host: { cpus: cpus().length, memoryBytes: totalmem(), kernel: release(), load: {} },
  config: {
    pool: POOL,
    datasetBase: BASE,
    database: DB,
    apiPort: API_PORT,
    routerPort: ROUTER_PORT,
    portRange: PORTS,
    image: opt.image,
    branches: N,
    running: RUNNING,
    cold: COLD,
    rounds: ROUNDS,
    seconds: SECONDS,
    scale: SCALE,
    connects: CONNECTS,
    wakes: WAKES,
    concurrency: CONCURRENCY,
    pgbench: `-S -n -c ${PGBENCH_CLIENTS} -j ${PGBENCH_THREADS} -T ${SECONDS}`,
  },
  errors: [],
};
const fail = (what) => {
  result.errors.push(what);
  log(`ERROR: ${what}`);
};
const loadSamples = [];
const sampler = setInterval(() => loadSamples.push(load1()), 5000);
sampler.unref();
const loadAt = (phase) => {
  result.host.load[phase] = loadavg().map((x) => Number(x.toFixed(2)));
};

let workDir = null;
let configPath = null;
let daemon = null; // { child, logFile, exited }
let client = null;
let engine = null; // this process's engine on the daemon's config: the idle stop's own call
let stopping = false;
const abort = new AbortController();
const call = { signal: abort.signal };

// ------------------------------------------------------------------ set-up

async function setup() {
  loadAt('start');
  log(`load average at start: ${result.host.load.start.join(' ')} (${cpus().length} cores)`);
  if ((await run('zpool', ['list', '-H', '-o', 'name', POOL])).code !== 0)
    throw new Error(`pool ${POOL} does not exist: run BPG_POOL=${POOL} scripts/setup-host.sh (or pass --pool)`);
  if ((await run('zfs', ['list', '-H', '-o', 'name', ROOT_DS])).code === 0)
    throw new Error(
      `${ROOT_DS} exists already (another run, or one that could not clean up: docker rm -f its containers, labelled ${LABEL_ROOT}=${ROOT_DS}, then zfs destroy -r ${ROOT_DS})`,
    );
  result.git = (await run('git', ['-C', ROOT, 'rev-parse', 'HEAD'])).stdout.trim();
  result.host.docker = (await docker.version()).Version;

  workDir = mkdtempSync('/var/tmp/bpg-bench-proxy-');
  // The router's certificate: self-signed for 127.0.0.1 (sslmode=require does not verify it).
  const cert = join(workDir, 'router-cert.pem');
  const key = join(workDir, 'router-key.pem');
  await must('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '2',
    '-subj',
    '/CN=localhost',
    '-addext',
    'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ]);
  chmodSync(key, 0o600);
  const cfg = {
    zfs: { pool: POOL, datasetBase: BASE },
    postgres: { image: opt.image, portRange: PORTS },
    stateDir: join(workDir, 'state'),
    api: { listen: `127.0.0.1:${API_PORT}` },
    proxy: {
      enabled: true,
      listen: `127.0.0.1:${ROUTER_PORT}`,
      tls: { cert, key },
      // One router for both: TLS clients (sslmode=require) and plaintext ones (sslmode=disable).
      requireTls: false,
    },
    // Nothing stops or deletes a branch behind the benchmark's back.
    expiry: { idleStopAfter: null, prBranchTtl: null },
    snapshots: null,
    limits: { branchesPerDatabase: N + 10, branchesTotal: Math.max(500, N + 10) },
  };
  configPath = join(workDir, 'config.yaml');
  await writeFile(configPath, YAML.stringify(cfg), { mode: 0o600 });
  log(
    `config ${configPath}: pool ${POOL}, dataset base ${BASE}, API 127.0.0.1:${API_PORT}, router 127.0.0.1:${ROUTER_PORT}, branch ports ${PORTS.join('-')}`,
  );

  // Its own process group: a Ctrl-C in the terminal reaches this script only, which stops the
  // daemon after the cleanup it still needs it for.
  const logFile = join(workDir, 'serve.log');
  const out = createWriteStream(logFile);
  const child = spawn(process.execPath, [BPG_JS, 'serve'], {
    env: { ...process.env, BPG_CONFIG: configPath, BPG_API_TOKEN: TOKEN },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  daemon = { child, logFile, exited: new Promise((r) => child.on('exit', (code, signal) => r({ code, signal }))) };
  client = new BpgClient({ baseUrl: `http://127.0.0.1:${API_PORT}`, token: TOKEN, timeoutMs: 300_000 });
  const until = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`bpg serve exited ${child.exitCode}: ${daemonLogTail()}`);
    try {
      await client.health({ timeoutMs: 2000 });
      break;
    } catch (e) {
      if (Date.now() > until) throw new Error(`bpg serve did not answer within 60 s: ${e.message}`, { cause: e });
      await sleep(250);
    }
  }
  await client.listDatabases(call); // an API on that port that is not ours would not know our token
  if (!daemonLog().includes('router listening')) throw new Error(`the router did not start: ${daemonLogTail()}`);
  engine = new Engine(await loadConfig(configPath), {
    log: { info() {}, warn: (m) => log(`engine: ${m}`), debug() {} },
  });
  result.daemonRssStartBytes = await rssOf(child.pid);
  log(`bpg serve (pid ${child.pid}) answers on 127.0.0.1:${API_PORT}, its router on 127.0.0.1:${ROUTER_PORT}`);
}

const daemonLog = () => {
  try {
    return readFileSync(daemon.logFile, 'utf8');
  } catch {
    return '';
  }
};
const daemonLogTail = (n = 5) => daemonLog().trim().split('\n').slice(-n).join(' / ') || '(no log)';

/**
 * The ways to one branch, from its view: router with TLS, router in plaintext, its own port (which
 * Docker's userland docker-proxy relays to the container), and, with `ip`, the container's address
 * on its Docker network (no docker-proxy: what PostgreSQL itself does, for reference).
 */
function targetsOf(view, ip = null) {
  const c = view.connection;
  if (c.via !== 'router') throw new Error(`${view.name}: the connection is not the router's (via ${c.via})`);
  const d = c.direct;
  const router = { host: c.host, port: c.port, user: c.user, password: c.password, database: c.database };
  return {
    tls: { ...router, sslmode: 'require' },
    plain: { ...router, sslmode: 'disable' },
    direct: {
      host: d.host,
      port: d.port,
      user: d.user,
      password: d.password,
      database: d.database,
      sslmode: 'disable',
    },
    ...(ip ? { container: { ...d, host: ip, port: 5432, sslmode: 'disable' } } : {}),
  };
}
const WAYS = ['tls', 'plain', 'direct', 'container'];
const WAY_LABEL = {
  tls: 'router, TLS',
  plain: 'router, plaintext',
  direct: 'branch port (direct)',
  container: 'container address',
};

/** The container's address on its Docker network, reachable from the host. */
async function containerIp(name) {
  const info = await docker.getContainer(name).inspect();
  const ip = Object.values(info.NetworkSettings?.Networks ?? {}).find((n) => n.IPAddress)?.IPAddress;
  if (!ip) throw new Error(`container ${name} has no address`);
  return ip;
}

/** The docker-proxy that relays a published host port (Docker's userland proxy), or null. */
async function dockerProxyPid(port) {
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const args = (await readFile(`/proc/${d}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if ((args[0] ?? '').endsWith('docker-proxy') && args[args.indexOf('-host-port') + 1] === String(port))
      return Number(d);
  }
  return null;
}

/** Env for libpq tools: the password never appears on a command line. */
const pgEnv = (t) => ({
  PGHOST: t.host,
  PGPORT: String(t.port),
  PGUSER: t.user,
  PGPASSWORD: t.password,
  PGDATABASE: t.database,
  PGSSLMODE: t.sslmode,
  PGCONNECT_TIMEOUT: '60',
});

/** connect + SELECT 1 + close with node-postgres; ms to the answer, and in all. */
async function connectOnce(t, timeoutMs = 60_000) {
  const t0 = performance.now();
  const c = new pg.Client({
    host: t.host,
    port: t.port,
    user: t.user,
    password: t.password,
    database: t.database,
    // sslmode=require: encrypted, the certificate not verified (as libpq does).
    ssl: t.sslmode === 'require' ? { rejectUnauthorized: false } : false,
    connectionTimeoutMillis: timeoutMs,
  });
  try {
    await c.connect();
    const tConnected = performance.now();
    const r = await c.query('SELECT 1 AS one');
    if (r.rows[0]?.one !== 1) throw new Error('SELECT 1 did not answer 1');
    const tAnswer = performance.now();
    return { connectMs: tConnected - t0, answerMs: tAnswer - t0 };
  } finally {
    await c.end().catch(() => {});
  }
}

// ------------------------------------------------------------------ 1. pgbench

async function pgbenchRun(t, seconds, proxyPid) {
  const pid = daemon.child.pid;
  const cpu0 = await cpuSecondsOf(pid);
  const p0 = proxyPid ? await cpuSecondsOf(proxyPid) : null;
  const h0 = await hostCpu();
  const l = load1();
  const r = await run(
    'pgbench',
    ['-S', '-n', '-c', String(PGBENCH_CLIENTS), '-j', String(PGBENCH_THREADS), '-T', String(seconds)],
    { env: pgEnv(t) },
  );
  const cpu1 = await cpuSecondsOf(pid);
  const p1 = proxyPid ? await cpuSecondsOf(proxyPid) : null;
  const h1 = await hostCpu();
  if (r.code !== 0) throw new Error(`pgbench exited ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' / ')}`);
  const num = (re) => {
    const m = re.exec(r.stdout);
    return m ? Number(m[1]) : null;
  };
  const tps = num(/^tps = ([\d.]+) \(without initial connection time\)/m);
  if (tps == null) throw new Error(`pgbench printed no tps: ${r.stdout.trim().split('\n').slice(-3).join(' / ')}`);
  const transactions = num(/^number of transactions actually processed: (\d+)/m);
  return {
    tps,
    transactions,
    latencyMs: num(/^latency average = ([\d.]+) ms/m),
    initialConnectMs: num(/^initial connection time = ([\d.]+) ms/m),
    daemonCpuSeconds: cpu1 - cpu0,
    /** The daemon's CPU per transaction: what the router adds to each round trip. */
    daemonCpuUsPerTx: transactions ? Math.round(((cpu1 - cpu0) / transactions) * 1e6) : null,
    /** The same for the branch port's docker-proxy (on the way of every way but `container`). */
    dockerProxyCpuSeconds: p0 == null || p1 == null ? null : p1 - p0,
    dockerProxyCpuUsPerTx:
      p0 == null || p1 == null || !transactions ? null : Math.round(((p1 - p0) / transactions) * 1e6),
    hostBusyPct: Math.round(((h1.busy - h0.busy) / (h1.total - h0.total)) * 100),
    load1: l,
  };
}

async function benchPgbench(ways) {
  log(`pgbench -i -s ${SCALE} on ${DB}/${BENCH_BRANCH} (its own port)`);
  let t = performance.now();
  await must('pgbench', ['-i', '-s', String(SCALE), '-I', 'dtGvp', '-q'], { env: pgEnv(ways.direct) });
  const cp = await run('psql', ['-X', '-q', '-c', 'CHECKPOINT'], { env: pgEnv(ways.direct) });
  if (cp.code !== 0) log(`  (no CHECKPOINT: ${cp.stderr.trim().split('\n').pop()})`);
  result.pgbenchInitMs = Math.round(performance.now() - t);
  log(`  loaded in ${sec(result.pgbenchInitMs)} s; warming up (5 s each way, not counted)`);
  const proxyPid = await dockerProxyPid(ways.direct.port);
  if (!proxyPid) log(`  (no docker-proxy found for port ${ways.direct.port}: its CPU is not measured)`);
  for (const w of WAYS) await pgbenchRun(ways[w], 5, proxyPid);
  loadAt('pgbench');
  const runs = Object.fromEntries(WAYS.map((w) => [w, []]));
  for (let r = 0; r < ROUNDS; r++) {
    const order = WAYS.map((_, i) => WAYS[(i + r) % WAYS.length]); // each way goes first in turn
    for (const w of order) {
      const x = await pgbenchRun(ways[w], SECONDS, proxyPid);
      runs[w].push(x);
      log(
        `  round ${r + 1}/${ROUNDS} ${WAY_LABEL[w].padEnd(21)} ${x.tps.toFixed(0).padStart(6)} tps, latency ${x.latencyMs} ms, daemon CPU ${((x.daemonCpuSeconds / SECONDS) * 100).toFixed(0)}% of a core (${x.daemonCpuUsPerTx} us/tx), docker-proxy ${x.dockerProxyCpuUsPerTx ?? '?'} us/tx, host busy ${x.hostBusyPct}%, load ${x.load1}`,
      );
    }
  }
  const med = (w, k) => median(runs[w].map((x) => x[k]).filter((v) => v != null));
  result.pgbench = {
    runs,
    tpsMedian: Object.fromEntries(WAYS.map((w) => [w, med(w, 'tps')])),
    latencyMedianMs: Object.fromEntries(WAYS.map((w) => [w, Number(med(w, 'latencyMs').toFixed(3))])),
    initialConnectMedianMs: Object.fromEntries(WAYS.map((w) => [w, med(w, 'initialConnectMs')])),
    daemonCpuPctMedian: Object.fromEntries(
      WAYS.map((w) => [w, Math.round((med(w, 'daemonCpuSeconds') / SECONDS) * 100)]),
    ),
    daemonCpuUsPerTxMedian: Object.fromEntries(WAYS.map((w) => [w, Math.round(med(w, 'daemonCpuUsPerTx'))])),
    dockerProxyCpuUsPerTxMedian: Object.fromEntries(
      WAYS.map((w) => [
        w,
        med(w, 'dockerProxyCpuUsPerTx') == null ? null : Math.round(med(w, 'dockerProxyCpuUsPerTx')),
      ]),
    ),
    hostBusyPctMedian: Object.fromEntries(WAYS.map((w) => [w, Math.round(med(w, 'hostBusyPct'))])),
  };
  const P = result.pgbench;
  // Per round, each way against direct in the same round: cancels slow drifts of others' load.
  const perRound = (w) => median(runs[w].map((x, i) => x.tps / runs.direct[i].tps));
  P.ratio = {
    tls: P.tpsMedian.tls / P.tpsMedian.direct,
    plain: P.tpsMedian.plain / P.tpsMedian.direct,
    container: P.tpsMedian.container / P.tpsMedian.direct,
  };
  P.ratioPerRoundMedian = { tls: perRound('tls'), plain: perRound('plain'), container: perRound('container') };
  log(
    `pgbench medians: TLS ${P.tpsMedian.tls.toFixed(0)}, plaintext ${P.tpsMedian.plain.toFixed(0)}, direct ${P.tpsMedian.direct.toFixed(0)}, container address ${P.tpsMedian.container.toFixed(0)} tps; router/direct ${(P.ratio.tls * 100).toFixed(1)}% (TLS), ${(P.ratio.plain * 100).toFixed(1)}% (plaintext)`,
  );
}

// ------------------------------------------------------------------ 2. connection set-up

async function benchConnect(ways) {
  log(`connection set-up: ${CONNECTS} x (connect + SELECT 1 + close) each way, interleaved`);
  loadAt('connect');
  const ms = Object.fromEntries(WAYS.map((w) => [w, []]));
  for (const w of WAYS) await connectOnce(ways[w]); // warm-up
  for (let i = 0; i < CONNECTS; i++) {
    const order = WAYS.map((_, k) => WAYS[(k + i) % WAYS.length]);
    for (const w of order) ms[w].push((await connectOnce(ways[w])).answerMs);
    if ((i + 1) % 50 === 0) log(`  ${i + 1}/${CONNECTS}`);
  }
  result.connect = Object.fromEntries(WAYS.map((w) => [w, stats(ms[w])]));
  for (const w of WAYS) log(`  ${WAY_LABEL[w].padEnd(21)} ${msLine(result.connect[w])}`);
}

// ------------------------------------------------------------------ 3. wake on connect

/** Stops a branch as the idle stop does: the engine's stop with by 'idle', while the daemon runs. */
async function idleStop(branch) {
  const v = await engine.stop({ database: DB, branch }, 'idle');
  if (v.status !== 'stopped' || v.stoppedBy !== 'idle')
    throw new Error(`${DB}/${branch}: not idle-stopped after the stop`);
}

/** The daemon's own wake times since `from` (its JSON log line "router: branch started", ms). */
function wakeLogMs(fromLine) {
  return daemonLog()
    .split('\n')
    .slice(fromLine)
    .filter((l) => l.includes('router: branch started'))
    .map((l) => {
      try {
        return JSON.parse(l).ms;
      } catch {
        return null;
      }
    })
    .filter((x) => typeof x === 'number');
}

async function benchWake() {
  const v = (await client.putBranch(DB, WAKE_BRANCH, { fast: true }, call)).branch;
  const t = targetsOf(v).tls;
  await connectOnce(t);
  log(
    `wake on connect: ${WAKES} x (idle stop of ${DB}/${WAKE_BRANCH}, then connect + SELECT 1 through the router with TLS)`,
  );
  loadAt('wake');
  const samples = [];
  for (let i = 0; i < WAKES; i++) {
    await idleStop(WAKE_BRANCH);
    const view = await client.getBranch(DB, WAKE_BRANCH, call);
    if (view.status !== 'stopped' || view.stoppedBy !== 'idle')
      throw new Error(`the daemon sees ${view.name} ${view.status}`);
    await sleep(1000); // a branch found idle-stopped, not one stopped a moment ago
    const from = daemonLog().split('\n').length - 1;
    const l = load1();
    const r = await connectOnce(t, 120_000);
    const agentMs = wakeLogMs(from);
    if (agentMs.length !== 1) fail(`wake ${i + 1}: the daemon logged ${agentMs.length} starts, expected 1`);
    samples.push({
      answerMs: Math.round(r.answerMs),
      connectMs: Math.round(r.connectMs),
      agentStartMs: agentMs[0] ?? null,
      load1: l,
    });
    log(
      `  wake ${i + 1}/${WAKES}: first answer after ${Math.round(r.answerMs)} ms (the daemon's start: ${agentMs[0] ?? '?'} ms; load ${l})`,
    );
  }
  result.wake = {
    samples,
    answerMs: stats(samples.map((s) => s.answerMs)),
    agentStartMs: stats(samples.map((s) => s.agentStartMs).filter((x) => x != null)),
  };
  log(`  wake: ${msLine(result.wake.answerMs)}; the daemon's start ${msLine(result.wake.agentStartMs)}`);
}

// ------------------------------------------------------------------ 4. many branches

async function runningOfOurs() {
  return (await managedContainers(false)).filter((c) => c.State === 'running');
}

async function benchMany() {
  // Only main runs before: the pgbench and wake branches are idle-stopped too.
  for (const b of [BENCH_BRANCH, WAKE_BRANCH]) {
    const v = await client.getBranch(DB, b, call);
    if (v.status === 'running') await idleStop(b);
  }
  await sleep(5000);
  const before = {
    host: await hostMemory(),
    daemonRssBytes: await rssOf(daemon.child.pid),
    running: (await runningOfOurs()).length,
  };
  loadAt('beforeBranches');
  log(
    `${N} branches of ${DB}/main through the API (--fast, ${CONCURRENCY} at a time); the first ${RUNNING} stay running, every other one is idle-stopped right after its create; load ${result.host.load.beforeBranches.join(' ')}`,
  );
  const tAll = performance.now();
  let done = 0;
  let failures = 0;
  const made = await mapLimit(
    Array.from({ length: N }, (_, i) => i + 1),
    CONCURRENCY,
    async (i) => {
      const name = branchName(i);
      const rec = { name, i };
      try {
        const t = performance.now();
        const r = await client.putBranch(DB, name, { fast: true }, call);
        rec.putMs = Math.round(performance.now() - t);
        rec.view = r.branch;
        if (i > RUNNING) {
          const t2 = performance.now();
          await idleStop(name);
          rec.stopMs = Math.round(performance.now() - t2);
        }
      } catch (e) {
        rec.error = e.message;
        failures++;
        if (!stopping) fail(`create ${DB}/${name}: ${e.message}`);
      }
      done++;
      if (done % 10 === 0 || done === N) log(`  ${done}/${N} (load ${load1()})`);
      return rec;
    },
    () => stopping || failures >= 3,
  );
  const ok = made.filter((r) => r && !r.error);
  if (ok.length !== N) throw new Error(`${N - ok.length} of ${N} creates failed or were not started`);
  const wallMs = Math.round(performance.now() - tAll);
  log(`  ${N} made in ${sec(wallMs)} s; waiting 20 s (idle) before measuring`);
  await sleep(20_000);

  loadAt('branches');
  const views = await client.listBranches(DB, call);
  const mine = views.filter((v) => /^c-\d+$/.test(v.branch));
  const runningViews = mine.filter((v) => v.status === 'running');
  const idleViews = mine.filter((v) => v.status === 'stopped' && v.stoppedBy === 'idle');
  const containers = await runningOfOurs();
  const own = await branchMemory(containers);
  const after = {
    host: await hostMemory(),
    daemonRssBytes: await rssOf(daemon.child.pid),
    running: containers.length,
  };
  result.many = {
    branches: N,
    createWallMs: wallMs,
    putMs: stats(ok.map((r) => r.putMs)),
    idleStopMs: stats(ok.filter((r) => r.stopMs != null).map((r) => r.stopMs)),
    runningBranches: runningViews.length,
    idleStoppedBranches: idleViews.length,
    containersRunning: containers.length,
    own,
    before,
    after,
    hostDelta: deltaOf(before.host, after.host),
  };
  if (runningViews.length !== RUNNING) fail(`${runningViews.length} of the ${N} run, expected ${RUNNING}`);
  if (idleViews.length !== N - RUNNING) fail(`${idleViews.length} are idle-stopped, expected ${N - RUNNING}`);
  const M = result.many;
  log(
    `  ${M.runningBranches} running, ${M.idleStoppedBranches} idle-stopped; ${M.own.containers} containers of ours run (main too): working set ${fmtBytes(M.own.workingSetBytes)}, with their shims and docker-proxies ${fmtBytes(M.own.totalBytes)} (per container ${fmtBytes(M.own.perContainerTotalBytes?.p50)} p50)`,
  );
  log(
    `  host used ${fmtBytes(after.host.usedBytes)} (${signed(M.hostDelta.usedBytes)} for the ${N} branches); daemon RSS ${fmtBytes(after.daemonRssBytes)} (${signed(after.daemonRssBytes - before.daemonRssBytes)})`,
  );

  // Answer times through the router with TLS: the running ones (warm), then idle-stopped ones (cold,
  // each woken by its connect), spread over the list.
  const warm = [];
  for (const v of runningViews) warm.push(Math.round((await connectOnce(targetsOf(v).tls)).answerMs));
  const pick = idleViews
    .filter((_, k) => k % Math.max(1, Math.floor(idleViews.length / Math.max(1, COLD))) === 0)
    .slice(0, COLD);
  const cold = [];
  for (const v of pick) {
    await sleep(1000);
    const from = daemonLog().split('\n').length - 1;
    const l = load1();
    const r = await connectOnce(targetsOf(v).tls, 120_000);
    const agentMs = wakeLogMs(from)[0] ?? null;
    cold.push({ branch: v.name, answerMs: Math.round(r.answerMs), agentStartMs: agentMs, load1: l });
    log(
      `  cold ${v.name}: first answer after ${Math.round(r.answerMs)} ms (the daemon's start: ${agentMs ?? '?'} ms; load ${l})`,
    );
  }
  M.warmAnswerMs = stats(warm);
  M.cold = cold;
  M.coldAnswerMs = stats(cold.map((c) => c.answerMs));
  M.daemonRssEndBytes = await rssOf(daemon.child.pid);
  log(`  answer through the router: running ${msLine(M.warmAnswerMs)}; idle-stopped ${msLine(M.coldAnswerMs)}`);
}

// ------------------------------------------------------------------ teardown

async function deleteEverything() {
  const views = await client.listBranches(DB, call).catch(() => []);
  const others = views.filter((v) => v.branch !== 'main');
  log(`deleting ${others.length} branches through the API, ${CONCURRENCY} at a time, then ${DB}`);
  const t = performance.now();
  await mapLimit(others, CONCURRENCY, async (v) => {
    try {
      await client.deleteBranch(DB, v.branch, {}, call);
    } catch (e) {
      fail(`delete ${v.name}: ${e.message}`);
    }
  });
  await client.deleteDatabase(DB, { force: true }, call);
  result.deleteAllMs = Math.round(performance.now() - t);
  log(`  deleted in ${sec(result.deleteAllMs)} s`);
}

async function stopDaemon() {
  if (!daemon || daemon.child.exitCode !== null || daemon.child.signalCode !== null) return;
  daemon.child.kill('SIGTERM');
  const r = await Promise.race([daemon.exited, sleep(120_000).then(() => null)]);
  if (r === null) {
    fail('bpg serve did not stop within 120 s of SIGTERM; killed');
    daemon.child.kill('SIGKILL');
    await daemon.exited;
  } else if (r.code !== 0) {
    fail(`bpg serve exited ${r.code ?? r.signal} on SIGTERM: ${daemonLogTail()}`);
  }
}

/** zfs destroy -r with zfs-fuse's busy retries; every filesystem under ds is unmounted first, deepest first. */
async function zfsDestroy(ds) {
  for (let i = 0; i < 6; i++) {
    const l = await run('zfs', ['list', '-H', '-r', '-t', 'filesystem', '-o', 'name', ds]);
    if (l.code !== 0) return true;
    for (const fs of l.stdout.trim().split('\n').filter(Boolean).reverse()) await run('zfs', ['umount', fs]);
    const r = await run('zfs', ['destroy', '-r', ds]);
    if (r.code === 0) return true;
    await sleep(500 * 2 ** i);
  }
  return false;
}

/** The base dataset and the work folder; after a failure also whatever the agent left. */
async function removeOwn(failed) {
  if (failed && configPath && existsSync(configPath)) {
    const st = join(workDir, 'state', 'state.json');
    if (existsSync(st) && Object.keys(JSON.parse(readFileSync(st, 'utf8')).databases ?? {}).length) {
      log(`cleanup: bpg db delete ${DB} --force`);
      const r = await run(process.execPath, [BPG_JS, '-q', 'db', 'delete', DB, '--force'], {
        env: { BPG_CONFIG: configPath },
      });
      if (r.code !== 0) log(`cleanup: bpg db delete failed: ${r.stderr.trim().split('\n').pop()}`);
    }
    const ids = (await managedContainers(true).catch(() => [])).map((c) => c.Id);
    if (ids.length) {
      log(`cleanup: removing ${ids.length} containers labelled ${LABEL_ROOT}=${ROOT_DS}`);
      await run('docker', ['rm', '-f', ...ids]);
    }
  }
  // The spare port slots bpg serve kept: they belong to no database, so no delete removed them.
  const spares = (await managedContainers(true).catch(() => []))
    .filter((c) => c.Labels?.['io.betterpg.slot'] !== undefined)
    .map((c) => c.Id);
  if (spares.length) await run('docker', ['rm', '-f', ...spares]);
  if (workDir) {
    // The base and its WAL archives' dataset (mounted in the work folder); after a failure, whatever else is under it.
    if (!(await zfsDestroy(ROOT_DS)))
      fail(`could not destroy ${ROOT_DS}: remove it by hand (zfs destroy -r ${ROOT_DS})`);
    try {
      rmSync(workDir, { recursive: true, force: true });
    } catch (e) {
      fail(`could not remove ${workDir}: ${e.message}`);
    }
  }
  const containers = await managedContainers(true).catch((e) => [{ Names: [`(cannot list: ${e.message})`] }]);
  if (containers.length) fail(`containers of ${ROOT_DS} still exist: ${containers.map((c) => c.Names[0]).join(', ')}`);
  if ((await run('zfs', ['list', '-H', '-o', 'name', ROOT_DS])).code === 0) fail(`${ROOT_DS} still exists`);
}

let cleaning = null;
function cleanup(failed) {
  cleaning ??= (async () => {
    stopping = true;
    if (!failed) {
      try {
        await deleteEverything();
      } catch (e) {
        fail(`cleanup through the API: ${e.message}`);
        failed = true;
      }
    } else {
      abort.abort();
      if (daemon && daemon.child.exitCode === null) {
        // The daemon waits for running operations before it deletes the database (force: every branch).
        const c = new BpgClient({
          baseUrl: `http://127.0.0.1:${API_PORT}`,
          token: TOKEN,
          timeoutMs: 900_000,
          retries: 1,
        });
        log(`cleanup: DELETE /v1/databases/${DB}?force=true`);
        await c.deleteDatabase(DB, { force: true }).catch((e) => log(`cleanup: ${e.message}`));
      }
    }
    if (failed && daemon) {
      mkdirSync(join(ROOT, '.bench'), { recursive: true });
      const keep = join(ROOT, '.bench', `proxy-${stamp}-serve.log`);
      await writeFile(keep, daemonLog()).catch(() => {});
      log(`daemon log kept: ${keep}`);
    }
    await stopDaemon();
    await removeOwn(failed);
  })();
  return cleaning;
}

// ------------------------------------------------------------------ report

function report() {
  const P = result.pgbench;
  const C = result.connect;
  const W = result.wake;
  const M = result.many;
  const L = (k) => (result.host.load[k] ? result.host.load[k][0] : 'n/a');
  const pct = (x) => (x == null ? 'n/a' : `${(x * 100).toFixed(1)}%`);
  const lines = [
    `Router benchmark (scripts/bench-proxy.mjs), ${result.startedAt.slice(0, 10)}: ${result.host.cpus} cores, ${fmtBytes(result.host.memoryBytes)} RAM, zfs-fuse, Docker ${result.host.docker}; 1-min load: start ${L('start')}, pgbench ${L('pgbench')}, connect ${L('connect')}, wake ${L('wake')}, branches ${L('branches')}, max ${result.host.loadMax1}`,
    '',
    `| measurement | router, TLS | router, plaintext | branch port (direct) | container address (reference) | router / direct |`,
    '| --- | --- | --- | --- | --- | --- |',
  ];
  if (P) {
    const cell = (w) => `${P.tpsMedian[w].toFixed(0)} (${P.runs[w].map((x) => x.tps.toFixed(0)).join(', ')})`;
    const row = (label, f, last = '') => `| ${label} | ${WAYS.map(f).join(' | ')} | ${last} |`;
    lines.push(
      row(
        `pgbench -S -c ${PGBENCH_CLIENTS} -j ${PGBENCH_THREADS}, scale ${SCALE}: TPS median (each of ${ROUNDS} x ${SECONDS} s)`,
        cell,
        `TLS ${pct(P.ratio.tls)}, plaintext ${pct(P.ratio.plain)} (median of per-round ratios ${pct(P.ratioPerRoundMedian.tls)}, ${pct(P.ratioPerRoundMedian.plain)}); container address ${pct(P.ratio.container)}`,
      ),
      row('pgbench latency average, median', (w) => `${P.latencyMedianMs[w]} ms`),
      row('daemon (router) CPU during pgbench: % of one core, per transaction', (w) =>
        w === 'tls' || w === 'plain'
          ? `${P.daemonCpuPctMedian[w]}%, ${P.daemonCpuUsPerTxMedian[w]} us`
          : `${P.daemonCpuPctMedian[w]}%`,
      ),
      row('docker-proxy of the branch port: CPU per transaction', (w) =>
        P.dockerProxyCpuUsPerTxMedian[w] == null ? 'n/a' : `${P.dockerProxyCpuUsPerTxMedian[w]} us`,
      ),
      row('host CPU busy during pgbench', (w) => `${P.hostBusyPctMedian[w]}%`),
    );
  }
  if (C)
    lines.push(
      `| connect + SELECT 1 + close (node-postgres, ${CONNECTS} each, interleaved): p50 / p95 | ${WAYS.map((w) => `${C[w].p50} / ${C[w].p95} ms`).join(' | ')} | TLS ${C.tls.p50 - C.direct.p50 >= 0 ? '+' : ''}${C.tls.p50 - C.direct.p50} ms, plaintext ${C.plain.p50 - C.direct.p50 >= 0 ? '+' : ''}${C.plain.p50 - C.direct.p50} ms at p50 |`,
    );
  lines.push('');
  if (W)
    lines.push(
      `Wake on connect (idle-stopped branch, connect + SELECT 1 through the router with TLS, n=${W.answerMs.n}): p50 ${W.answerMs.p50} ms, p95 ${W.answerMs.p95} ms (min ${W.answerMs.min}, max ${W.answerMs.max}); of which the daemon's start of the branch p50 ${W.agentStartMs?.p50 ?? 'n/a'} ms.`,
    );
  if (M) {
    lines.push(
      '',
      `${N} branches of one database, ${M.runningBranches} running and ${M.idleStoppedBranches} idle-stopped (plus main running; made in ${sec(M.createWallMs)} s, PUT p50 ${M.putMs.p50} ms, idle stop p50 ${M.idleStopMs?.p50 ?? 'n/a'} ms):`,
      '',
      '| | value |',
      '| --- | --- |',
      `| host memory used (MemTotal - MemAvailable) | ${fmtBytes(M.after.host.usedBytes)}, ${signed(M.hostDelta.usedBytes)} against main alone (the whole machine's: others' work on a shared host moves it) |`,
      `| host memory used, change by kind | anon ${signed(M.hostDelta.AnonPages)}, shmem ${signed(M.hostDelta.Shmem)}, page cache ${signed(M.hostDelta.Cached)}, slab ${signed(M.hostDelta.Slab)}, page tables ${signed(M.hostDelta.PageTables)}; PSS of zfs-fuse ${signed(M.hostDelta['zfs-fuse PSS'])}, dockerd ${signed(M.hostDelta['dockerd PSS'])}, containerd ${signed(M.hostDelta['containerd PSS'])} |`,
      `| the running branches' own memory: container working set (docker stats) + containerd-shim and docker-proxy PSS | ${fmtBytes(M.own.totalBytes)} for ${M.own.containers} containers (${fmtBytes(M.own.workingSetBytes)} + ${fmtBytes(M.own.shimPssBytes)} + ${fmtBytes(M.own.dockerProxyPssBytes)}); per container p50 ${fmtBytes(M.own.perContainerTotalBytes?.p50)}, max ${fmtBytes(M.own.perContainerTotalBytes?.max)} |`,
      `| daemon (bpg serve, router included) RSS | ${fmtBytes(M.after.daemonRssBytes)} (${fmtBytes(result.daemonRssStartBytes)} at start, ${fmtBytes(M.before.daemonRssBytes)} before the branches, ${fmtBytes(M.daemonRssEndBytes)} at the end) |`,
      `| connect + SELECT 1 through the router (TLS), running branch | ${msLine(M.warmAnswerMs)} |`,
      `| the same, idle-stopped branch (woken by the connect) | ${msLine(M.coldAnswerMs)} |`,
    );
  }
  const T = [];
  if (P) {
    T.push({
      target: 'pgbench select-only through the router with TLS >= 90% of direct TPS',
      met: P.ratio.tls >= 0.9,
      detail: pct(P.ratio.tls),
    });
    T.push({ target: 'the same in plaintext >= 90%', met: P.ratio.plain >= 0.9, detail: pct(P.ratio.plain) });
  }
  if (W)
    T.push({
      target: 'connect to first answer on an idle-stopped branch: p50 <= 1.0 s',
      met: W.answerMs.p50 <= 1000,
      detail: `${W.answerMs.p50} ms`,
    });
  if (M && M.coldAnswerMs)
    T.push({
      target: `a cold branch among ${N}: p50 <= 1.0 s`,
      met: M.coldAnswerMs.p50 <= 1000,
      detail: `${M.coldAnswerMs.p50} ms`,
    });
  result.targets = T;
  lines.push('', 'Targets:', '');
  for (const t of T) lines.push(`- [${t.met ? 'x' : ' '}] ${t.met ? 'MET' : 'NOT MET'}: ${t.target} — ${t.detail}`);
  if (result.errors.length) {
    lines.push('', 'Errors:', '');
    for (const e of result.errors) lines.push(`- ${e}`);
  }
  return lines.join('\n') + '\n';
}

// ------------------------------------------------------------------ main

const stamp = result.startedAt.replace(/:/g, '-').replace(/\..*$/, '');

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (interrupted) {
      process.stderr.write(
        `bench-proxy: quitting without cleanup: stop pid ${daemon?.child.pid ?? '?'} (bpg serve), docker rm -f the containers labelled ${LABEL_ROOT}=${ROOT_DS}, zfs destroy -r ${ROOT_DS}, rm -r ${workDir ?? '/var/tmp/bpg-bench-proxy-*'}\n`,
      );
      process.exit(130);
    }
    interrupted = true;
    log(`${sig}: cleaning up (again to quit at once)`);
    cleanup(true).finally(() => process.exit(130));
  });
}

let failed = false;
try {
  await setup();
  await client.createDatabase({ name: DB }, call);
  const bench = (await client.putBranch(DB, BENCH_BRANCH, { fast: true }, call)).branch;
  const ways = targetsOf(bench, await containerIp(bench.container));
  await benchPgbench(ways);
  await benchConnect(ways);
  await benchWake();
  await benchMany();
} catch (e) {
  failed = true;
  if (!interrupted) fail(`FAILED: ${e.stack ?? e}`);
}
if (interrupted) await new Promise(() => {}); // the signal handler cleans up and exits
loadAt('end');
result.host.loadMax1 = loadSamples.length ? Math.max(...loadSamples) : load1();
await cleanup(failed);
result.ok = !failed && result.errors.length === 0;
result.elapsedSeconds = Math.round((Date.now() - t0Script) / 1000);
const md = report();
result.markdown = md;
process.stdout.write(md);
mkdirSync(join(ROOT, '.bench'), { recursive: true });
const file = join(ROOT, '.bench', `proxy-${stamp}.json`);
await writeFile(file, JSON.stringify(result, null, 2) + '\n');
log(`results: ${file}; ${result.ok ? 'OK' : `FAILED (${result.errors.length} errors)`} in ${result.elapsedSeconds} s`);
process.exit(result.ok ? 0 : 1);

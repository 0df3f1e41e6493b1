#!/usr/bin/env node
// bench-load.mjs — 50 branches of one database at once, through the HTTP API: what do they cost?
//
// On an existing pool (default bpgtest; run scripts/setup-host.sh first) it makes everything of its
// own: a dataset base `bench-load-<pid>`, a state folder and config under /var/tmp, a `bpg serve`
// daemon with a random token on 127.0.0.1:47690, branch ports 47500-47599. Then:
//   1. creates one database through the API and loads a table of a few MB (`--rows`) into it;
//   2. creates N branches of its main (`--branches`, default 50) through `PUT .../branches/<b>`, at
//      most `--concurrency` at a time, timing each PUT client-side and the new branch's first answer;
//   3. checks that all N run at once (API status and Docker) and that each answers on its own port
//      with its own password: counts the table's rows, writes one row, counts again; main unchanged;
//   4. after `--settle` seconds (idle, and ZFS has synced its accounting): memory per idle branch
//      (cgroup working set as `docker stats` shows it, RSS, PSS of its processes, and PSS of the
//      containerd-shim and docker-proxy Docker runs on the host for it), the `used` bytes of the base
//      and of each branch, the pool's used/allocated delta, the host's memory delta (with where it
//      went: anon, shmem, page cache, slab, zfs-fuse/dockerd/containerd RSS), the WAL archives' bytes;
//   5. deletes every branch through the API (timed), then, unless `--skip-alt`, makes the same N
//      copies the usual way inside main's one server, `CREATE DATABASE ... TEMPLATE` (createdb -T),
//      with the same concurrency, the same queries and the same measurements, and drops them;
//   6. deletes the database through the API and proves nothing is left: no dataset under the base,
//      no container with the base's label, no WAL folder, an empty state, no password in the daemon's
//      log; stops the daemon and removes the base, state and config.
// A human summary goes to stderr, the JSON result to stdout (and .bench/load-<date>.json). It exits 1
// if any create fails, any branch does not answer, or anything is left behind; on an error or Ctrl-C
// it cleans up first (a second Ctrl-C quits at once and says what to remove by hand).
//
// Run as root from a built checkout (npm ci):
//   node scripts/bench-load.mjs [--branches 50] [--concurrency 4] [--rows 60000] [--fast]
//                               [--settle 40] [--skip-alt] [--pool P] [--port-range 47500-47599]
//                               [--api-port 47690] [--image I]
//   --pool        default $BPG_LOAD_POOL or bpgtest; the image: $BPG_IMAGE or betterpg/postgres:15-local
//   --fast        crash-consistent branches (CHECKPOINT, no backup mode); default application-consistent
//   --settle      seconds to wait, all branches idle, before measuring memory and `used` (zfs-fuse
//                 accounting lags ~28 s)
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import Docker from 'dockerode';
import { deltaOf, fmtBytes, mapLimit, must, qi, run, signed, stats, target, withPg } from './lib/bench.mjs';
import YAML from 'yaml';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BPG_JS = join(ROOT, 'bin', 'bpg.js');
const CLIENT_JS = join(ROOT, 'build', 'agent', 'api', 'client.js');
const LABEL_ROOT = 'io.betterpg.root';

// ------------------------------------------------------------------ arguments

const { values: opt } = parseArgs({
  options: {
    branches: { type: 'string', default: '50' },
    concurrency: { type: 'string', default: '4' },
    rows: { type: 'string', default: '60000' },
    fast: { type: 'boolean', default: false },
    settle: { type: 'string', default: '40' },
    'skip-alt': { type: 'boolean', default: false },
    pool: { type: 'string', default: process.env.BPG_LOAD_POOL || 'bpgtest' },
    'port-range': { type: 'string', default: '47500-47599' },
    'api-port': { type: 'string', default: '47690' },
    image: { type: 'string', default: process.env.BPG_IMAGE || 'betterpg/postgres:15-local' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});
if (opt.help) {
  process.stdout.write(
    'usage: node scripts/bench-load.mjs [--branches 50] [--concurrency 4] [--rows 60000] [--fast] [--settle 40] [--skip-alt]\n' +
      '                                   [--pool bpgtest] [--port-range 47500-47599] [--api-port 47690] [--image I]\n',
  );
  process.exit(0);
}
function die(msg) {
  process.stderr.write(`bench-load: error: ${msg}\n`);
  process.exit(1);
}
const int = (name, min) => {
  const n = Number(opt[name]);
  if (!Number.isInteger(n) || n < min) die(`--${name} must be an integer >= ${min}`);
  return n;
};
const N = int('branches', 1);
const CONCURRENCY = int('concurrency', 1);
const ROWS = int('rows', 1);
const SETTLE_S = int('settle', 0);
const API_PORT = int('api-port', 1);
const pr = /^(\d+)-(\d+)$/.exec(opt['port-range']);
if (!pr || Number(pr[1]) > Number(pr[2])) die('--port-range must look like 47500-47599');
const PORTS = [Number(pr[1]), Number(pr[2])];
if (PORTS[1] - PORTS[0] + 1 < N + 1)
  die(`--port-range has ${PORTS[1] - PORTS[0] + 1} ports; ${N} branches and main need ${N + 1}`);
if (!/^[A-Za-z0-9][A-Za-z0-9_.:-]*$/.test(opt.pool)) die('--pool is not a pool name');
if (process.getuid?.() !== 0) die('run as root (ZFS, Docker)');
if (!existsSync(CLIENT_JS)) die("bpg is not built: run 'npm ci' (or 'npm run build') in the checkout");
const { BpgClient } = await import(CLIENT_JS);

const POOL = opt.pool;
const BASE = `bench-load-${process.pid}`;
const ROOT_DS = `${POOL}/${BASE}`;
const DB = `load${process.pid}`;
const TOKEN = randomBytes(24).toString('hex');
const TABLE = 'items';
const branchName = (i) => `load-${String(i).padStart(3, '0')}`;
const copyName = (i) => `copy_${String(i).padStart(3, '0')}`;

// ------------------------------------------------------------------ helpers

const t0Script = Date.now();
const clock = () => new Date().toISOString().slice(11, 19);
const log = (msg) => process.stderr.write(`[load ${clock()}] ${msg}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sec = (ms) => (ms / 1000).toFixed(2);
const load1 = () => Number(loadavg()[0].toFixed(2));

const msLine = (st) =>
  st ? `p50 ${sec(st.p50)} s, p95 ${sec(st.p95)} s (min ${sec(st.min)}, max ${sec(st.max)}, n=${st.n})` : 'n/a';
const bytesLine = (st) =>
  st ? `mean ${fmtBytes(st.mean)}, p50 ${fmtBytes(st.p50)}, max ${fmtBytes(st.max)} (n=${st.n})` : 'n/a';

const countRows = async (c) => (await c.query(`SELECT count(*)::int AS n FROM ${TABLE}`)).rows[0].n;
/** What "answers" means, for a branch and for a copy alike: count, write one row, count again. */
async function answer(t, tag) {
  return withPg(t, async (c) => {
    const before = await countRows(c);
    await c.query(`INSERT INTO ${TABLE} (id, note) VALUES ($1, $2)`, [-1, `written by bench-load in ${tag}`]);
    const after = await countRows(c);
    return { before, after };
  });
}

async function zfsUsed(ds) {
  const r = await must('zfs', ['get', '-Hp', '-o', 'value', 'used', ds]);
  return Number(r.stdout.trim());
}
/** `used` of every filesystem under ds: name -> bytes (zfs-fuse's `zfs get` has no -t: snapshots are dropped here). */
async function zfsUsedTree(ds) {
  const r = await must('zfs', ['get', '-Hp', '-r', '-o', 'name,value', 'used', ds]);
  return new Map(
    r.stdout
      .trim()
      .split('\n')
      .filter((l) => l && !l.split('\t')[0].includes('@'))
      .map((l) => l.split('\t'))
      .map(([n, v]) => [n, Number(v)]),
  );
}
/** zfs-fuse's `zpool get` knows neither -H nor -p: `zpool list -H -o allocated` in its units. */
async function poolAllocated() {
  const r = await run('zpool', ['list', '-H', '-o', 'allocated', POOL]);
  const m = /^(\d+(?:\.\d+)?)([KMGTP]?)/.exec(r.stdout.trim());
  return m ? Math.round(Number(m[1]) * 1024 ** ' KMGTP'.indexOf(m[2] || ' ')) : null;
}
async function poolNumbers() {
  return { rootUsedBytes: await zfsUsed(POOL), allocatedBytes: await poolAllocated() };
}
/** /proc/meminfo in bytes. */
function meminfo() {
  return Object.fromEntries(
    readFileSync('/proc/meminfo', 'utf8')
      .split('\n')
      .map((l) => /^(\w+):\s+(\d+)/.exec(l))
      .filter(Boolean)
      .map((x) => [x[1], Number(x[2]) * 1024]),
  );
}
/** MemTotal - MemAvailable: what the host's processes and kernel hold. */
function hostUsedBytes() {
  const m = meminfo();
  return m.MemTotal - m.MemAvailable;
}
/**
 * Where host memory sits, to explain the host's delta beyond the containers: the kernel's parts and
 * the daemons every branch leans on (zfs-fuse serves every file read, dockerd, containerd).
 */
async function hostBreakdown() {
  const m = meminfo();
  const out = {};
  for (const k of ['AnonPages', 'Shmem', 'Cached', 'Slab', 'SUnreclaim', 'PageTables', 'KernelStack'])
    out[k] = m[k] ?? null;
  const daemons = { 'zfs-fuse': [], dockerd: [], containerd: [] };
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const comm = (await readFile(`/proc/${d}/comm`, 'utf8').catch(() => '')).trim();
    if (comm in daemons) daemons[comm].push(Number(d));
  }
  for (const [name, pids] of Object.entries(daemons)) out[`${name}Rss`] = (await pssOf(pids)).rss;
  return out;
}
async function dirBytes(dir) {
  let total = 0;
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += await dirBytes(p);
    else if (e.isFile()) total += statSync(p).size;
  }
  return total;
}

const docker = new Docker();
const managedContainers = async (all = true) =>
  docker.listContainers({ all, filters: { label: [`${LABEL_ROOT}=${ROOT_DS}`] } });

/** The pid and every descendant of it (PostgreSQL's postmaster and its children). */
async function processTree(pid) {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    let tasks;
    try {
      tasks = await readdir(`/proc/${out[i]}/task`);
    } catch {
      continue;
    }
    for (const t of tasks) {
      const kids = await readFile(`/proc/${out[i]}/task/${t}/children`, 'utf8').catch(() => '');
      out.push(...kids.trim().split(/\s+/).filter(Boolean).map(Number));
    }
  }
  return out;
}

/** PSS and RSS of some processes, from /proc/<pid>/smaps_rollup. */
async function pssOf(pids) {
  let pss = 0;
  let rss = 0;
  for (const p of pids) {
    const text = await readFile(`/proc/${p}/smaps_rollup`, 'utf8').catch(() => '');
    pss += Number(/^Pss:\s+(\d+)/m.exec(text)?.[1] ?? 0) * 1024;
    rss += Number(/^Rss:\s+(\d+)/m.exec(text)?.[1] ?? 0) * 1024;
  }
  return { pss, rss };
}

/**
 * What Docker runs on the host for each container, outside its cgroup: a containerd-shim (found by
 * `-id <container id>`) and a docker-proxy per published port (found by `-host-port <port>`).
 */
async function dockerHelpers() {
  const shimById = new Map();
  const proxyByPort = new Map();
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const args = (await readFile(`/proc/${d}/cmdline`, 'utf8').catch(() => '')).split('\0');
    const bin = args[0] ?? '';
    const arg = (k) => args[args.indexOf(k) + 1];
    if (bin.endsWith('containerd-shim-runc-v2') && args.includes('-id')) shimById.set(arg('-id'), Number(d));
    if (bin.endsWith('docker-proxy') && args.includes('-host-port')) {
      const port = Number(arg('-host-port'));
      proxyByPort.set(port, [...(proxyByPort.get(port) ?? []), Number(d)]);
    }
  }
  return { shimById, proxyByPort };
}

/**
 * One container's memory: the cgroup's working set as `docker stats` shows it (usage minus inactive
 * file cache), its RSS, the PSS of its processes (shared pages split among their users: the postgres
 * binary is shared by every branch, shared_buffers by one branch's processes), and the PSS of the
 * containerd-shim and docker-proxy that Docker keeps on the host for it.
 */
async function containerMemory(c, helpers) {
  const ct = docker.getContainer(c.Id);
  const s = await ct.stats({ stream: false, 'one-shot': true });
  const m = s.memory_stats ?? {};
  const st = m.stats ?? {};
  const inactiveFile = st.total_inactive_file ?? st.inactive_file ?? 0;
  const info = await ct.inspect();
  const pids = info.State.Pid ? await processTree(info.State.Pid) : [];
  const own = await pssOf(pids);
  const shimPid = helpers.shimById.get(c.Id);
  const proxyPids = (c.Ports ?? []).flatMap((p) => helpers.proxyByPort.get(p.PublicPort) ?? []);
  const shim = await pssOf(shimPid ? [shimPid] : []);
  const proxy = await pssOf([...new Set(proxyPids)]);
  return {
    name: info.Name.replace(/^\//, ''),
    workingSetBytes: m.usage - inactiveFile,
    usageBytes: m.usage,
    cgroupRssBytes: st.total_rss ?? st.anon ?? null,
    limitBytes: m.limit,
    processes: pids.length,
    pssBytes: own.pss,
    procRssBytes: own.rss,
    shimFound: shimPid !== undefined,
    shimPssBytes: shim.pss,
    proxies: new Set(proxyPids).size,
    proxyPssBytes: proxy.pss,
    /** The container's processes plus Docker's helpers for it. */
    totalPssBytes: own.pss + shim.pss + proxy.pss,
  };
}

// ------------------------------------------------------------------ state of the run

const result = {
  startedAt: new Date().toISOString(),
  ok: false,
  host: { cpus: cpus().length, memoryBytes: totalmem(), kernel: release(), load: {} },
  config: {
    branches: N,
    concurrency: CONCURRENCY,
    rows: ROWS,
    fast: opt.fast,
    consistency: opt.fast ? 'crash' : 'application',
    settleSeconds: SETTLE_S,
    pool: POOL,
    datasetBase: BASE,
    database: DB,
    portRange: PORTS,
    apiPort: API_PORT,
    image: opt.image,
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

let workDir = null; // config, state, daemon log
let daemon = null; // { child, exited }
let client = null;
let stopping = false; // Ctrl-C or a fatal error: start nothing new
const abort = new AbortController();
const call = { signal: abort.signal };

// ------------------------------------------------------------------ set-up

async function setup() {
  loadAt('start');
  log(`load average at start: ${result.host.load.start.join(' ')} (${cpus().length} cores)`);
  if ((await run('zpool', ['list', '-H', '-o', 'name', POOL])).code !== 0) {
    throw new Error(`pool ${POOL} does not exist: run BPG_POOL=${POOL} scripts/setup-host.sh (or pass --pool)`);
  }
  if ((await run('zfs', ['list', '-H', '-o', 'name', ROOT_DS])).code === 0)
    throw new Error(`${ROOT_DS} exists already`);
  const head = await run('git', ['-C', ROOT, 'rev-parse', 'HEAD']);
  result.git = head.stdout.trim();
  result.host.docker = (await docker.version()).Version;

  workDir = mkdtempSync('/var/tmp/bpg-load-');
  const cfg = {
    zfs: { pool: POOL, datasetBase: BASE },
    postgres: { image: opt.image, portRange: PORTS },
    stateDir: join(workDir, 'state'),
    api: { listen: `127.0.0.1:${API_PORT}` },
  };
  // The defaults allow 100 branches per database; more only when asked for more.
  if (N + 1 > 100) cfg.limits = { branchesPerDatabase: N + 1, branchesTotal: Math.max(500, N + 1) };
  const configPath = join(workDir, 'config.yaml');
  writeFileSync(configPath, YAML.stringify(cfg), { mode: 0o600 });
  result.config.configFile = configPath;
  log(`config ${configPath}: pool ${POOL}, dataset base ${BASE}, ports ${PORTS.join('-')}, state ${cfg.stateDir}`);

  // Its own process group: a Ctrl-C in the terminal reaches this script only, which stops the
  // daemon after the cleanup it still needs it for.
  const logFile = join(workDir, 'serve.log');
  const out = createWriteStream(logFile);
  const child = spawn(process.execPath, [BPG_JS, 'serve', '--listen', `127.0.0.1:${API_PORT}`], {
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
  // An API on that port that is not ours would not know our token.
  await client.listDatabases(call);
  log(`bpg serve (pid ${child.pid}) answers on 127.0.0.1:${API_PORT}`);
}

function daemonLogTail(n = 5) {
  try {
    return readFileSync(daemon.logFile, 'utf8').trim().split('\n').slice(-n).join(' / ');
  } catch {
    return '(no log)';
  }
}

async function createDatabase() {
  result.before = { pool: await poolNumbers(), hostUsedBytes: hostUsedBytes() };
  let t = performance.now();
  const dbView = await client.createDatabase({ name: DB }, call);
  const createMs = Math.round(performance.now() - t);
  const main = dbView.branches.find((b) => b.branch === 'main');
  t = performance.now();
  await withPg(target(main.connection), async (c) => {
    await c.query(`CREATE TABLE ${TABLE} (id int PRIMARY KEY, note text NOT NULL)`);
    await c.query(`INSERT INTO ${TABLE} SELECT i, repeat(md5(i::text), 2) FROM generate_series(1, $1::int) AS i`, [
      ROWS,
    ]);
    await c.query(`VACUUM ANALYZE ${TABLE}`);
    await c.query('CHECKPOINT');
  });
  const loadMs = Math.round(performance.now() - t);
  const sizes = await withPg(target(main.connection), async (c) => {
    const r = await c.query(`SELECT pg_total_relation_size($1) AS t, pg_database_size(current_database()) AS d`, [
      TABLE,
    ]);
    return { tableBytes: Number(r.rows[0].t), databaseBytes: Number(r.rows[0].d) };
  });
  result.database = { name: DB, createMs, loadMs, rows: ROWS, ...sizes, mainDataset: main.dataset };
  log(
    `database ${DB} created in ${sec(createMs)} s; ${ROWS} rows loaded in ${sec(loadMs)} s: table ${fmtBytes(sizes.tableBytes)}, database ${fmtBytes(sizes.databaseBytes)}`,
  );
  return main;
}

/** Waits so that branches are idle and ZFS has synced its space accounting. */
async function settle(why) {
  if (SETTLE_S === 0) return;
  log(`waiting ${SETTLE_S} s (${why})`);
  await sleep(SETTLE_S * 1000);
}

// ------------------------------------------------------------------ branches

async function createBranches(main) {
  await settle('ZFS accounting of the loaded data');
  result.before.baseUsedBytes = await zfsUsed(ROOT_DS);
  result.before.mainUsedBytes = await zfsUsed(main.dataset);
  result.before.pool = await poolNumbers();
  result.before.hostUsedBytes = hostUsedBytes();
  result.before.host = await hostBreakdown();
  result.before.walBytes = await dirBytes(join(workDir, 'state', 'wal'));
  result.before.walFolders = readdirSync(join(workDir, 'state', 'wal')); // main's only
  loadAt('beforeCreates');
  log(
    `creating ${N} branches of ${DB}/main through the API, ${CONCURRENCY} at a time (${result.config.consistency}-consistent); load ${result.host.load.beforeCreates.join(' ')}`,
  );

  let failures = 0;
  let done = 0;
  const body = opt.fast ? { fast: true } : {};
  const tAll = performance.now();
  const creates = await mapLimit(
    Array.from({ length: N }, (_, i) => branchName(i + 1)),
    CONCURRENCY,
    async (name) => {
      const rec = { name, load1: load1() };
      const t = performance.now();
      try {
        const r = await client.putBranch(DB, name, body, call);
        rec.putMs = Math.round(performance.now() - t);
        if (!r.created) throw new Error('the API answered created: false for a new branch');
        rec.branch = r.branch;
        const t2 = performance.now();
        const a = await withPg(target(r.branch.connection), countRows);
        rec.firstAnswerMs = Math.round(performance.now() - t2);
        if (a !== ROWS) throw new Error(`answered ${a} rows, expected ${ROWS}`);
        rec.toAnswerMs = Math.round(performance.now() - t);
      } catch (e) {
        rec.error = e.message;
        failures++;
        if (!stopping) fail(`create ${DB}/${name}: ${e.message}`);
      }
      done++;
      if (!rec.error && (done % 10 === 0 || done === N))
        log(`  ${done}/${N} created (last: ${name} PUT ${sec(rec.putMs)} s; load ${load1()})`);
      return rec;
    },
    () => stopping || failures >= 3,
  );
  const wallMs = Math.round(performance.now() - tAll);
  loadAt('afterCreates');
  const ok = creates.filter((r) => r && !r.error);
  result.create = {
    wallMs,
    perMinute: Number(((ok.length / wallMs) * 60_000).toFixed(1)),
    putMs: stats(ok.map((r) => r.putMs)),
    toAnswerMs: stats(ok.map((r) => r.toAnswerMs)),
    firstAnswerMs: stats(ok.map((r) => r.firstAnswerMs)),
    failed: creates.filter((r) => r?.error).map((r) => ({ name: r.name, error: r.error })),
    perBranch: creates.filter(Boolean).map(({ branch, ...r }) => ({ ...r, port: branch?.port })),
  };
  if (ok.length !== N) throw new Error(`${N - ok.length} of ${N} creates failed or were not started`);
  log(
    `${N} branches in ${sec(wallMs)} s (${result.create.perMinute}/min); PUT ${msLine(result.create.putMs)}; PUT to first answer ${msLine(result.create.toAnswerMs)}`,
  );
  return ok.map((r) => r.branch);
}

/** All N at once: running in the API and in Docker, each answering with its own credentials. */
async function checkAllAnswer(main, branches) {
  const views = await client.listBranches(DB, call);
  const notRunning = views.filter((b) => b.status !== 'running').map((b) => `${b.name}=${b.status}`);
  const running = (await managedContainers(false)).filter((c) => c.State === 'running').length;
  const ports = new Set(views.map((b) => b.port));
  const passwords = new Set(views.map((b) => b.connection.password));
  result.allAtOnce = {
    apiBranches: views.length,
    apiNotRunning: notRunning,
    dockerRunning: running,
    distinctPorts: ports.size,
    distinctPasswords: passwords.size,
  };
  if (views.length !== N + 1) fail(`the API lists ${views.length} branches, expected ${N + 1}`);
  if (notRunning.length) fail(`not running: ${notRunning.join(', ')}`);
  if (running !== N + 1) fail(`Docker runs ${running} containers of ${ROOT_DS}, expected ${N + 1}`);
  if (ports.size !== N + 1 || passwords.size !== N + 1)
    fail(`ports or passwords shared: ${ports.size} ports, ${passwords.size} passwords for ${N + 1} branches`);

  const t = performance.now();
  const answers = await mapLimit(branches, Math.max(CONCURRENCY, 8), async (b) => {
    try {
      const a = await answer(target(b.connection), b.name);
      if (a.before !== ROWS || a.after !== ROWS + 1)
        throw new Error(`counted ${a.before} then ${a.after}, expected ${ROWS} then ${ROWS + 1}`);
      return null;
    } catch (e) {
      return `${b.name}: ${e.message}`;
    }
  });
  const bad = answers.filter(Boolean);
  const mainRows = await withPg(target(main.connection), countRows);
  result.allAtOnce.answered = N - bad.length;
  result.allAtOnce.answerAllMs = Math.round(performance.now() - t);
  result.allAtOnce.mainRowsAfter = mainRows;
  for (const b of bad) fail(`branch did not answer: ${b}`);
  if (mainRows !== ROWS) fail(`main counts ${mainRows} rows after every branch wrote one, expected ${ROWS}`);
  log(
    `all at once: ${views.length} branches in the API (${notRunning.length} not running), ${running} containers running; ${N - bad.length}/${N} answered (count, insert, count) in ${sec(result.allAtOnce.answerAllMs)} s; main still ${mainRows} rows`,
  );
  if (bad.length || notRunning.length) throw new Error('not every branch ran and answered');
}

async function measureIdle(main, branches) {
  await settle('idle branches, ZFS accounting');
  loadAt('measure');
  const containers = await managedContainers(false);
  const helpers = await dockerHelpers();
  const mem = await mapLimit(containers, 8, (c) => containerMemory(c, helpers));
  const mainName = main.container;
  const br = mem.filter((m) => m.name !== mainName);
  const mainMem = mem.find((m) => m.name === mainName) ?? null;
  const tree = await zfsUsedTree(ROOT_DS);
  const branchUsed = branches.map((b) => tree.get(b.dataset)).filter((x) => x != null);
  const baseUsed = tree.get(ROOT_DS);
  const poolAfter = await poolNumbers();
  const hostAfter = hostUsedBytes();
  const hostDelta = deltaOf(result.before.host, await hostBreakdown());
  const walRoot = join(workDir, 'state', 'wal');
  const walBytes = await dirBytes(walRoot);
  let mainWalBytes = 0;
  for (const f of result.before.walFolders) mainWalBytes += await dirBytes(join(walRoot, f));
  const branchWal = [];
  for (const f of readdirSync(walRoot).filter((f) => !result.before.walFolders.includes(f)))
    branchWal.push(await dirBytes(join(walRoot, f)));
  const per = (x) => (x == null ? null : Math.round(x / N));
  result.idle = {
    memory: {
      workingSetBytes: stats(br.map((m) => m.workingSetBytes)),
      cgroupRssBytes: stats(br.map((m) => m.cgroupRssBytes).filter((x) => x != null)),
      pssBytes: stats(br.map((m) => m.pssBytes)),
      shimPssBytes: stats(br.map((m) => m.shimPssBytes)),
      proxyPssBytes: stats(br.map((m) => m.proxyPssBytes)),
      totalPssBytes: stats(br.map((m) => m.totalPssBytes)),
      shimsFound: br.filter((m) => m.shimFound).length,
      proxiesFound: br.reduce((a, m) => a + m.proxies, 0),
      processesPerBranch: stats(br.map((m) => m.processes)),
      limitBytes: br[0]?.limitBytes ?? null,
      main: mainMem,
      hostUsedDeltaBytes: hostAfter - result.before.hostUsedBytes,
      hostUsedDeltaPerBranchBytes: per(hostAfter - result.before.hostUsedBytes),
      /** meminfo fields and daemon RSS, after minus before. */
      hostDeltaBytes: hostDelta,
      perContainer: mem,
    },
    disk: {
      baseUsedBytes: baseUsed,
      baseUsedDeltaBytes: baseUsed - result.before.baseUsedBytes,
      baseUsedDeltaPerBranchBytes: per(baseUsed - result.before.baseUsedBytes),
      mainUsedBytes: tree.get(main.dataset),
      branchUsedBytes: stats(branchUsed),
      poolRootUsedDeltaBytes: poolAfter.rootUsedBytes - result.before.pool.rootUsedBytes,
      poolAllocatedDeltaBytes:
        poolAfter.allocatedBytes == null || result.before.pool.allocatedBytes == null
          ? null
          : poolAfter.allocatedBytes - result.before.pool.allocatedBytes,
      walArchiveBytes: walBytes,
      walArchiveDeltaBytes: walBytes - result.before.walBytes,
      /** main's archive grows by the segments each backup (pg_backup_start/stop) switches to. */
      mainWalArchiveDeltaBytes: mainWalBytes - result.before.walBytes,
      branchWalArchiveBytes: stats(branchWal),
    },
  };
  const M = result.idle.memory;
  const D = result.idle.disk;
  log(
    `memory per idle branch (${br.length}): working set ${bytesLine(M.workingSetBytes)}; PSS ${bytesLine(M.pssBytes)}, with Docker's shim and proxy ${bytesLine(M.totalPssBytes)}; host used ${signed(M.hostUsedDeltaBytes)} (${fmtBytes(M.hostUsedDeltaPerBranchBytes)} per branch)`,
  );
  log(
    `disk: base ${ROOT_DS} used ${fmtBytes(baseUsed)} (${signed(D.baseUsedDeltaBytes)} for ${N} branches, ${fmtBytes(D.baseUsedDeltaPerBranchBytes)} each); branch used ${bytesLine(D.branchUsedBytes)}; pool used ${signed(D.poolRootUsedDeltaBytes)}, allocated ${signed(D.poolAllocatedDeltaBytes)}; WAL archives ${signed(D.walArchiveDeltaBytes)} (main's ${signed(D.mainWalArchiveDeltaBytes)}, a branch's ${bytesLine(D.branchWalArchiveBytes)})`,
  );
}

async function deleteBranches(branches) {
  log(`deleting ${N} branches through the API, ${CONCURRENCY} at a time`);
  const t = performance.now();
  const res = await mapLimit(branches, CONCURRENCY, async (b) => {
    const t1 = performance.now();
    try {
      const r = await client.deleteBranch(DB, b.branch, {}, call);
      if (!r.deleted) throw new Error('already gone');
      return { ms: Math.round(performance.now() - t1) };
    } catch (e) {
      fail(`delete ${b.name}: ${e.message}`);
      return { error: e.message };
    }
  });
  const ok = res.filter((r) => r && !r.error);
  result.delete = { wallMs: Math.round(performance.now() - t), ms: stats(ok.map((r) => r.ms)) };
  const left = (await client.listBranches(DB, call)).map((b) => b.name);
  if (left.length !== 1) fail(`after deleting every branch the API still lists: ${left.join(', ')}`);
  log(`deleted ${ok.length} in ${sec(result.delete.wallMs)} s; DELETE ${msLine(result.delete.ms)}`);
}

// ------------------------------------------------------------------ the alternative: createdb -T in main's server

async function alternative(main) {
  const admin = target(main.connection, 'postgres');
  // Sizes before, once ZFS has synced the branch deletes.
  await withPg(target(main.connection), (c) => c.query('CHECKPOINT'));
  await settle('ZFS accounting before the copies');
  const mainBefore = await zfsUsed(main.dataset);
  const mainMemory = async () => {
    const [c] = await docker.listContainers({ filters: { name: [`^/${main.container}$`] } });
    if (!c) throw new Error(`container ${main.container} is not running`);
    return containerMemory(c, await dockerHelpers());
  };
  const memBefore = await mainMemory();
  const hostBefore = hostUsedBytes();
  const walBefore = await dirBytes(join(workDir, 'state', 'wal'));
  const poolBefore = await poolNumbers();
  log(
    `alternative: ${N} copies with CREATE DATABASE ... TEMPLATE ${DB} (createdb -T) inside main's server, ${CONCURRENCY} at a time`,
  );
  // The template must have no other session.
  await withPg(admin, (c) =>
    c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [
      main.connection.database,
    ]),
  );
  const tAll = performance.now();
  const made = [];
  let failures = 0;
  const recs = await mapLimit(
    Array.from({ length: N }, (_, i) => copyName(i + 1)),
    CONCURRENCY,
    async (name) => {
      const t = performance.now();
      try {
        await withPg(admin, (c) => c.query(`CREATE DATABASE ${qi(name)} TEMPLATE ${qi(main.connection.database)}`));
        made.push(name);
        const createMs = Math.round(performance.now() - t);
        const a = await withPg(target(main.connection, name), countRows);
        if (a !== ROWS) throw new Error(`answered ${a} rows, expected ${ROWS}`);
        return { name, createMs, toAnswerMs: Math.round(performance.now() - t) };
      } catch (e) {
        failures++;
        fail(`createdb -T ${name}: ${e.message}`);
        return { name, error: e.message };
      }
    },
    () => stopping || failures >= 3,
  );
  const wallMs = Math.round(performance.now() - tAll);
  const ok = recs.filter((r) => r && !r.error);
  // The same work as on the branches: count, write one row, count, on every copy.
  const answered = (
    await mapLimit(ok, Math.max(CONCURRENCY, 8), async (r) => {
      const a = await answer(target(main.connection, r.name), r.name).catch((e) => ({ error: e.message }));
      return a.before === ROWS && a.after === ROWS + 1;
    })
  ).filter(Boolean).length;
  await withPg(target(main.connection), (c) => c.query('CHECKPOINT'));
  await settle('idle copies, ZFS accounting');
  const mainAfter = await zfsUsed(main.dataset);
  const memAfter = await mainMemory();
  const poolAfter = await poolNumbers();
  const copyBytes = await withPg(admin, async (c) =>
    Number(
      (
        await c.query(
          `SELECT coalesce(sum(pg_database_size(datname)), 0) AS b FROM pg_database WHERE datname LIKE 'copy\\_%'`,
        )
      ).rows[0].b,
    ),
  );
  result.alternative = {
    method:
      "CREATE DATABASE <copy> TEMPLATE <db> (createdb -T, PostgreSQL 15 default strategy WAL_LOG), inside the main branch's server",
    wallMs,
    perMinute: Number(((ok.length / wallMs) * 60_000).toFixed(1)),
    createMs: stats(ok.map((r) => r.createMs)),
    toAnswerMs: stats(ok.map((r) => r.toAnswerMs)),
    answered,
    copiesLogicalBytes: copyBytes,
    mainUsedDeltaBytes: mainAfter - mainBefore,
    mainUsedDeltaPerCopyBytes: Math.round((mainAfter - mainBefore) / Math.max(1, ok.length)),
    poolRootUsedDeltaBytes: poolAfter.rootUsedBytes - poolBefore.rootUsedBytes,
    walArchiveDeltaBytes: (await dirBytes(join(workDir, 'state', 'wal'))) - walBefore,
    serverWorkingSetDeltaBytes: memAfter.workingSetBytes - memBefore.workingSetBytes,
    serverPssDeltaBytes: memAfter.pssBytes - memBefore.pssBytes,
    hostUsedDeltaBytes: hostUsedBytes() - hostBefore,
    failed: recs.filter((r) => r?.error),
  };
  if (answered !== N) fail(`${N - answered} of ${N} copies did not answer`);
  const A = result.alternative;
  log(
    `  ${ok.length} copies in ${sec(wallMs)} s; CREATE DATABASE ${msLine(A.createMs)}; main's dataset ${signed(A.mainUsedDeltaBytes)} (${fmtBytes(A.mainUsedDeltaPerCopyBytes)} per copy), WAL archive ${signed(A.walArchiveDeltaBytes)}; server working set ${signed(A.serverWorkingSetDeltaBytes)}`,
  );
  await withPg(admin, async (c) => {
    for (const name of made) await c.query(`DROP DATABASE IF EXISTS ${qi(name)} WITH (FORCE)`);
  });
}

// ------------------------------------------------------------------ teardown and proof

async function deleteDatabase() {
  const t = performance.now();
  const r = await client.deleteDatabase(DB, {}, call);
  if (!r.deleted) fail(`DELETE /v1/databases/${DB}: already gone`);
  result.deleteDatabaseMs = Math.round(performance.now() - t);
  log(`database ${DB} deleted through the API in ${sec(result.deleteDatabaseMs)} s`);
}

/** Nothing of this run may remain: datasets, containers, WAL folders, state, passwords in logs. */
async function proveNothingLeft(passwords) {
  const left = {};
  left.apiDatabases = (await client.listDatabases(call)).map((d) => d.name);
  const ds = await run('zfs', ['list', '-H', '-o', 'name', '-r', '-t', 'filesystem,snapshot', ROOT_DS]);
  left.datasets =
    ds.code === 0
      ? ds.stdout
          .trim()
          .split('\n')
          .filter((n) => n && n !== ROOT_DS)
      : [];
  left.containers = (await managedContainers(true)).map((c) => c.Names[0]);
  const walDir = join(workDir, 'state', 'wal');
  left.walFolders = existsSync(walDir) ? readdirSync(walDir) : [];
  const statePath = join(workDir, 'state', 'state.json');
  const state = existsSync(statePath)
    ? JSON.parse(readFileSync(statePath, 'utf8'))
    : { databases: {}, branches: {}, snapshots: {} };
  left.state = [
    ...Object.keys(state.databases ?? {}),
    ...Object.keys(state.branches ?? {}),
    ...Object.keys(state.snapshots ?? {}),
  ];
  const daemonLog = readFileSync(daemon.logFile, 'utf8');
  left.passwordsInDaemonLog = [...passwords].filter((p) => daemonLog.includes(p)).length;
  left.tokenInDaemonLog = daemonLog.includes(TOKEN);
  result.leftovers = left;
  const problems = Object.entries(left).filter(([, v]) => (Array.isArray(v) ? v.length : v));
  for (const [k, v] of problems) fail(`left behind: ${k}: ${Array.isArray(v) ? v.join(', ') : v}`);
  if (!problems.length)
    log(
      'nothing left: no database in the API or state, no dataset under the base, no container, no WAL folder, no password in the daemon log',
    );
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

async function zfsDestroy(ds, recursive) {
  for (let i = 0; i < 6; i++) {
    if ((await run('zfs', ['list', '-H', '-o', 'name', ds])).code !== 0) return true;
    await run('zfs', ['umount', ds]);
    const r = await run('zfs', ['destroy', ...(recursive ? ['-r'] : []), ds]);
    if (r.code === 0) return true;
    await sleep(500 * 2 ** i);
  }
  return false;
}

/** The base dataset, the state and config folder; after a failure also whatever the agent left. */
async function removeOwn(failed) {
  if (failed && workDir && existsSync(join(workDir, 'config.yaml'))) {
    // The CLI finishes interrupted work first, then deletes the database with every branch.
    const st = join(workDir, 'state', 'state.json');
    if (existsSync(st) && Object.keys(JSON.parse(readFileSync(st, 'utf8')).databases ?? {}).length) {
      log(`cleanup: bpg db delete ${DB} --force`);
      const r = await run(process.execPath, [BPG_JS, '-q', 'db', 'delete', DB, '--force'], {
        env: { BPG_CONFIG: join(workDir, 'config.yaml') },
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
  // Only the base itself should be left; after a failure, -r takes whatever is under it.
  if (!(await zfsDestroy(ROOT_DS, failed)))
    fail(`could not destroy ${ROOT_DS}: remove it by hand (zfs destroy -r ${ROOT_DS})`);
  if (workDir) rmSync(workDir, { recursive: true, force: true });
  if ((await run('zfs', ['list', '-H', '-o', 'name', ROOT_DS])).code === 0) fail(`${ROOT_DS} still exists`);
  if (workDir && existsSync(workDir)) fail(`${workDir} still exists`);
  const containers = await managedContainers(true).catch((e) => [{ Names: [`(cannot list: ${e.message})`] }]);
  if (containers.length) fail(`containers of ${ROOT_DS} still exist: ${containers.map((c) => c.Names[0]).join(', ')}`);
}

let cleaning = null;
async function cleanup(failed) {
  cleaning ??= (async () => {
    stopping = true;
    if (failed) {
      abort.abort();
      if (daemon && daemon.child.exitCode === null) {
        // The daemon waits for running operations before it deletes the database (force: all branches).
        const c = new BpgClient({
          baseUrl: `http://127.0.0.1:${API_PORT}`,
          token: TOKEN,
          timeoutMs: 600_000,
          retries: 1,
        });
        log(`cleanup: DELETE /v1/databases/${DB}?force=true`);
        await c.deleteDatabase(DB, { force: true }).catch((e) => log(`cleanup: ${e.message}`));
      }
    }
    if (failed && daemon) {
      mkdirSync(join(ROOT, '.bench'), { recursive: true });
      const keep = join(ROOT, '.bench', `load-${stamp}-serve.log`);
      try {
        writeFileSync(keep, readFileSync(daemon.logFile));
        log(`daemon log kept: ${keep}`);
      } catch {
        // the log is gone with the state folder: nothing to keep
      }
    }
    await stopDaemon();
    await removeOwn(failed);
  })();
  return cleaning;
}

// ------------------------------------------------------------------ report

function summary() {
  const c = result.create;
  const m = result.idle?.memory;
  const d = result.idle?.disk;
  const a = result.alternative;
  const L = (k) => (result.host.load[k] ? result.host.load[k].join(' ') : 'n/a');
  const lines = [
    '',
    `== bench-load: ${N} branches of one database through the HTTP API (${result.config.consistency}-consistent, concurrency ${CONCURRENCY})`,
    `host: ${result.host.cpus} cores, ${fmtBytes(result.host.memoryBytes)} RAM, kernel ${result.host.kernel}, Docker ${result.host.docker ?? '?'}, pool ${POOL} (zfs-fuse)`,
    `load average (1/5/15 min): start ${L('start')}, before creates ${L('beforeCreates')}, after creates ${L('afterCreates')}, at measurement ${L('measure')}, end ${L('end')}; 1-min max during run ${result.host.loadMax1 ?? 'n/a'}`,
    `database: ${ROWS} rows, table ${fmtBytes(result.database?.tableBytes)}, database ${fmtBytes(result.database?.databaseBytes)}`,
  ];
  if (c) {
    lines.push(`create (PUT, client-side): ${msLine(c.putMs)}`);
    lines.push(`create to first answer:   ${msLine(c.toAnswerMs)}`);
    if (c.agentMs) lines.push(`agent's own time (log):   ${msLine(c.agentMs)}`);
    lines.push(`${c.putMs?.n ?? 0} of ${N} created in ${sec(c.wallMs)} s (${c.perMinute} branches/min)`);
  }
  if (result.allAtOnce)
    lines.push(
      `all at once: ${result.allAtOnce.dockerRunning} containers running, ${result.allAtOnce.answered}/${N} branches answered (count, insert, count)`,
    );
  if (m) {
    lines.push(
      `memory per idle branch: working set (docker stats) ${bytesLine(m.workingSetBytes)}; PSS ${bytesLine(m.pssBytes)}; ${m.processesPerBranch?.p50} processes each`,
    );
    lines.push(
      `  plus on the host, per branch: containerd-shim PSS ${bytesLine(m.shimPssBytes)}, docker-proxy PSS ${bytesLine(m.proxyPssBytes)} (${m.shimsFound} shims, ${m.proxiesFound} proxies found); total PSS ${bytesLine(m.totalPssBytes)}`,
    );
    if (m.main)
      lines.push(
        `main (for scale, idle): working set ${fmtBytes(m.main.workingSetBytes)}, PSS ${fmtBytes(m.main.pssBytes)}; container limit ${fmtBytes(m.limitBytes)}`,
      );
    lines.push(
      `host memory used: ${signed(m.hostUsedDeltaBytes)} for ${N} branches (${fmtBytes(m.hostUsedDeltaPerBranchBytes)} each; the machine is shared, others' work moves this)`,
    );
    if (m.hostDeltaBytes)
      lines.push(
        `  host delta by kind: ${Object.entries(m.hostDeltaBytes)
          .map(([k, v]) => `${k} ${v == null ? 'n/a' : signed(v)}`)
          .join(', ')}`,
      );
  }
  if (d) {
    lines.push(
      `disk: base used ${fmtBytes(d.baseUsedBytes)}, ${signed(d.baseUsedDeltaBytes)} for ${N} branches (${fmtBytes(d.baseUsedDeltaPerBranchBytes)} each); a branch's used ${bytesLine(d.branchUsedBytes)}`,
    );
    lines.push(
      `pool: used ${signed(d.poolRootUsedDeltaBytes)}, allocated ${signed(d.poolAllocatedDeltaBytes)} (whole pool, shared with others' tests); WAL archives ${signed(d.walArchiveDeltaBytes)} (outside the pool; main's ${signed(d.mainWalArchiveDeltaBytes)}, a branch's own ${bytesLine(d.branchWalArchiveBytes)})`,
    );
  }
  if (result.delete)
    lines.push(`delete (DELETE, client-side): ${msLine(result.delete.ms)}; all in ${sec(result.delete.wallMs)} s`);
  if (a) {
    lines.push(
      `alternative, createdb -T inside one server, same concurrency: ${msLine(a.createMs)}; all ${N} in ${sec(a.wallMs)} s; ${a.answered}/${N} answered`,
    );
    lines.push(
      `  disk: main's dataset ${signed(a.mainUsedDeltaBytes)} (${fmtBytes(a.mainUsedDeltaPerCopyBytes)} per copy; copies' pg_database_size ${fmtBytes(a.copiesLogicalBytes)}), WAL archive ${signed(a.walArchiveDeltaBytes)}; server working set ${signed(a.serverWorkingSetDeltaBytes)} (page cache of the copies' files), PSS ${signed(a.serverPssDeltaBytes)} (an idle copy has no process)`,
    );
  }
  if (result.leftovers)
    lines.push(
      `left behind: ${result.errors.some((e) => e.startsWith('left behind')) ? 'SOMETHING (see errors)' : 'nothing'}`,
    );
  lines.push(`result: ${result.ok ? 'OK' : `FAILED (${result.errors.length} errors)`} in ${result.elapsedSeconds} s`);
  for (const e of result.errors) lines.push(`  error: ${e}`);
  return lines.join('\n') + '\n';
}

/** The agent's own time per create, from its JSON log lines ("branch created", ms). */
function agentTimes() {
  try {
    const ms = readFileSync(daemon.logFile, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"branch created"'))
      .map((l) => JSON.parse(l).ms)
      .filter((x) => typeof x === 'number');
    if (result.create && ms.length) result.create.agentMs = stats(ms);
  } catch {
    // no daemon log: the agent's own timings are left out
  }
}

// ------------------------------------------------------------------ main

const stamp = result.startedAt.replace(/:/g, '-').replace(/\..*$/, '');

/** Summary on stderr, JSON on stdout and in .bench/; exits 0 only when nothing went wrong. */
function finish(code) {
  loadAt('end');
  result.host.loadMax1 = loadSamples.length ? Math.max(...loadSamples) : load1();
  result.ok = result.errors.length === 0 && code === 0;
  result.finishedAt = new Date().toISOString();
  result.elapsedSeconds = Math.round((Date.now() - t0Script) / 1000);
  process.stderr.write(summary());
  mkdirSync(join(ROOT, '.bench'), { recursive: true });
  const file = join(ROOT, '.bench', `load-${stamp}.json`);
  writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
  log(`results: ${file}`);
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  process.exit(result.ok ? 0 : code || 1);
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (interrupted) {
      log(
        `${sig} again: quitting now; left for you: containers labelled ${LABEL_ROOT}=${ROOT_DS}, zfs destroy -r ${ROOT_DS}, rm -rf ${workDir ?? '(no work dir yet)'}`,
      );
      if (daemon?.child.exitCode === null) daemon.child.kill('SIGKILL');
      process.exit(130);
    }
    interrupted = true;
    fail(`interrupted by ${sig}`);
    log(`${sig}: cleaning up (again to quit at once)`);
    cleanup(true).finally(() => finish(130));
  });
}

const passwords = new Set();
/** Between steps: after a signal, go no further (the handler is cleaning up). */
const halt = () => {
  if (stopping) throw new Error('stopped');
};
try {
  await setup();
  halt();
  const main = await createDatabase();
  halt();
  passwords.add(main.connection.password);
  const branches = await createBranches(main);
  halt();
  for (const b of branches) passwords.add(b.connection.password);
  await checkAllAnswer(main, branches);
  halt();
  await measureIdle(main, branches);
  halt();
  await deleteBranches(branches);
  halt();
  if (!opt['skip-alt']) await alternative(main);
  halt();
  await deleteDatabase();
  halt();
  agentTimes();
  halt();
  await proveNothingLeft(passwords);
} catch (e) {
  if (!stopping) {
    fail(e.message ?? String(e));
    result.errorStack = e.stack;
  }
}
// After a signal, its handler cleans up and finishes (the pending cleanup keeps the process alive).
if (!interrupted) {
  await cleanup(result.errors.length > 0);
  finish(0);
}

#!/usr/bin/env node
// bench-branch.mjs — how fast is a BetterPG branch, and what does it cost, at several database sizes?
//
// For each size (default 100M,1G,4G) it loads a pgbench database into a BetterPG database (its own
// pool `bpgbench`, its own config and state, ports 37432-37531, so it disturbs no one), then times:
//   - `bpg branch create <db>/<b> --json` (application-consistent) and with `--fast`: from spawning the
//     CLI to the new branch answering `SELECT count(*) FROM pgbench_branches` (pg client), N runs each,
//     interleaved; each branch is deleted after it was measured;
//   - the alternatives on the same data, inside main's cluster: `CREATE DATABASE x TEMPLATE <db>`
//     (createdb -T) and `pg_dump -Fc | pg_restore` into a new database, each timed to the copy answering
//     the same query, then dropped;
//   - the fresh branch's `used` bytes (once per size and mode, after waiting for the ZFS txg to sync).
// Prints a markdown table and the targets on stdout, progress on stderr, and writes
// .bench/branch-<date>.json (and .md) in the checkout.
//
// Run as root on a host prepared by scripts/setup-host.sh (this script calls it for its own pool):
//   node scripts/bench-branch.mjs [--sizes 100M,1G,4G] [--runs 5] [--alt-runs N] [--sync-wait 35]
//                                 [--keep] [--destroy-pool] [--no-snapshot-build]
//   --sizes        database sizes (binary units: 100M = 100 MiB); pgbench scale = size / 15 MiB
//   --runs         branch creates per size and mode (default 5)
//   --alt-runs     runs of createdb -T and dump/restore per size (default: 3 below 1 GiB, 1 at 1 GiB
//                  and above; 0 skips the alternatives)
//   --sync-wait    seconds to wait before reading a fresh branch's `used` (default 35; zfs-fuse
//                  accounting lags ~28 s); 0 skips the measurement
//   --keep         keep the bench databases (and pool) for the next run; a re-run reuses a database
//                  whose pgbench scale matches instead of loading it again
//   --destroy-pool at the end also `zpool destroy bpgbench` and remove its file and state folder
//   --no-snapshot-build  run the shared build/ directly (default: a private copy of build/ and
//                  node_modules taken at start, in .bench/bpg-snapshot, so a concurrent `tsc` or
//                  `npm ci` by someone else cannot break a 30-minute run)
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { GiB, MiB, fmtBytes, must, qi, run, stats, target, withPg } from './lib/bench.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const POOL = 'bpgbench';
const BENCH_DIR = '/var/lib/betterpg-bench';
const POOL_FILE = `${BENCH_DIR}/bpgbench.img`;
const POOL_SIZE = '60G';
const STATE_DIR = `${BENCH_DIR}/state`;
const CONFIG = `${BENCH_DIR}/config.yaml`;
const DATASET_BASE = 'bench';
const IMAGE = 'betterpg/postgres:15-local';
const PORT_RANGE = '37432-37531';
const PG_BIN = '/usr/lib/postgresql/15/bin';
const BYTES_PER_SCALE = 15 * MiB;
const QUERY = 'SELECT count(*)::int AS n FROM pgbench_branches';
const COPY_DB = 'bench_copy';
const RESTORE_DB = 'bench_restore';

// ------------------------------------------------------------------ arguments

const { values: opt } = parseArgs({
  options: {
    sizes: { type: 'string', default: '100M,1G,4G' },
    runs: { type: 'string', default: '5' },
    'alt-runs': { type: 'string' },
    'sync-wait': { type: 'string', default: '35' },
    keep: { type: 'boolean', default: false },
    'destroy-pool': { type: 'boolean', default: false },
    'no-snapshot-build': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});
if (opt.help) {
  process.stdout.write(
    'usage: node scripts/bench-branch.mjs [--sizes 100M,1G,4G] [--runs 5] [--alt-runs N] [--sync-wait 35] [--keep] [--destroy-pool] [--no-snapshot-build]\n',
  );
  process.exit(0);
}
function die(msg) {
  process.stderr.write(`bench-branch: error: ${msg}\n`);
  process.exit(1);
}
function parseSize(s) {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?$/i.exec(s.trim());
  if (!m) die(`'${s}' is not a size (e.g. 100M, 1G)`);
  return Math.round(Number(m[1]) * 1024 ** { '': 0, k: 1, m: 2, g: 3, t: 4 }[m[2].toLowerCase()]);
}
const sizes = opt.sizes
  .split(',')
  .filter(Boolean)
  .map((label) => {
    const bytes = parseSize(label);
    return { label: label.trim().toUpperCase(), bytes, scale: Math.max(1, Math.round(bytes / BYTES_PER_SCALE)) };
  });
if (!sizes.length) die('--sizes is empty');
const runs = Number(opt.runs);
if (!Number.isInteger(runs) || runs < 1) die('--runs must be a positive integer');
const altRunsFixed = opt['alt-runs'] === undefined ? null : Number(opt['alt-runs']);
if (altRunsFixed !== null && (!Number.isInteger(altRunsFixed) || altRunsFixed < 0))
  die('--alt-runs must be an integer >= 0');
const altRunsFor = (bytes) => altRunsFixed ?? (bytes < GiB ? 3 : 1);
const syncWait = Number(opt['sync-wait']);
if (!(syncWait >= 0)) die('--sync-wait must be a number of seconds');
if (opt.keep && opt['destroy-pool']) die('--keep and --destroy-pool exclude each other');
if (process.getuid?.() !== 0) die('run as root (ZFS, Docker)');

// ------------------------------------------------------------------ helpers

const t0Script = Date.now();
const clock = () => new Date().toISOString().slice(11, 19);
const log = (msg) => process.stderr.write(`[bench ${clock()}] ${msg}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sec = (ms) => (ms / 1000).toFixed(ms < 10_000 ? 2 : 1);
const dbName = (s) => `bench_${s.label.toLowerCase().replace(/[^a-z0-9]/g, '_')}`;

let BPG_JS = join(ROOT, 'bin', 'bpg.js');
const bpgEnv = { BPG_CONFIG: CONFIG };
const bpg = (args, o = {}) => run(process.execPath, [BPG_JS, ...args], { ...o, env: { ...bpgEnv, ...o.env } });
async function bpgJson(args) {
  const r = await bpg([...args, '--json']);
  if (r.code !== 0) throw new Error(`bpg ${args.join(' ')} exited ${r.code}: ${r.stderr.trim().split('\n').pop()}`);
  return JSON.parse(r.stdout);
}

/** Env for libpq tools: the password never appears on a command line. */
const pgEnv = (t) => ({
  PGHOST: t.host,
  PGPORT: String(t.port),
  PGUSER: t.user,
  PGPASSWORD: t.password,
  PGDATABASE: t.database,
});
/** One query on a fresh connection: what "answering a query" means for every method. */
const answer = (t) => withPg(t, async (c) => (await c.query(QUERY)).rows[0].n);

const uptime = async () => (await run('uptime', [])).stdout.trim();
const zfsGet = async (ds, props) => {
  const r = await must('zfs', ['get', '-Hp', '-o', 'property,value', props.join(','), ds]);
  return Object.fromEntries(
    r.stdout
      .trim()
      .split('\n')
      .map((l) => l.split('\t'))
      .map(([k, v]) => [k, Number(v)]),
  );
};
async function dfVarLib() {
  const r = await must('df', ['-Pk', '/var/lib']);
  const f = r.stdout.trim().split('\n').pop().split(/\s+/);
  return {
    availBytes: Number(f[3]) * 1024,
    line: (await run('df', ['-h', '/var/lib'])).stdout.trim().split('\n').pop(),
  };
}

// ------------------------------------------------------------------ set-up

const result = {
  startedAt: new Date().toISOString(),
  host: { cpus: cpus().length, uptimeStart: null, uptimeEnd: null, dfStart: null, dfEnd: null },
  git: {},
  config: {
    pool: POOL,
    poolFile: POOL_FILE,
    config: CONFIG,
    image: IMAGE,
    portRange: PORT_RANGE,
    runs,
    syncWaitSeconds: syncWait,
    query: QUERY,
  },
  sizes: [],
  targets: [],
  events: [], // disturbances: a ZFS daemon restarted by someone else, failed runs, failed deletes
};
const created = new Set(); // branches of this run still alive (for cleanup on failure)
const loaded = []; // bench databases in use by this run
const event = (what, detail) => {
  result.events.push({ at: new Date().toISOString(), what, detail });
  log(`EVENT: ${what}${detail ? `: ${detail}` : ''}`);
};

// This host is shared: another engineer's test run may stop or kill zfs-fuse (and restart it). The
// restarted daemon mounts nothing, and running containers keep a dead FUSE mount. Detect it by the
// daemon's pid, then remount (setup-host.sh) and restart the bench databases' main branches.
const zfsDaemonPid = async () => (await run('pgrep', ['-x', 'zfs-fuse'])).stdout.trim().split('\n')[0] || 'none';
let stackPid = null;
async function setupHost() {
  await must('bash', [join(ROOT, 'scripts', 'setup-host.sh')], {
    env: { BPG_POOL: POOL, BPG_POOL_FILE: POOL_FILE, BPG_POOL_SIZE: POOL_SIZE, BPG_IMAGE: IMAGE },
  });
}
async function checkStack() {
  const pid = await zfsDaemonPid();
  if (pid === stackPid) return false;
  event(
    'zfs-fuse restarted by someone else',
    `pid ${stackPid} -> ${pid}; remounting and restarting ${loaded.join(', ') || 'nothing'}`,
  );
  await setupHost();
  for (const db of loaded) {
    const r = await bpg(['restart', `${db}/main`]);
    if (r.code !== 0) throw new Error(`bpg restart ${db}/main failed: ${r.stderr.trim().split('\n').pop()}`);
  }
  stackPid = await zfsDaemonPid();
  return true;
}
const copies = new Map(); // db -> main target, for leftover copy databases

async function setup() {
  result.host.uptimeStart = await uptime();
  log(`load at start: ${result.host.uptimeStart}`);
  const df = await dfVarLib();
  result.host.dfStart = df.line;
  log(`disk: ${df.line}`);
  // Pool data, one copy at a time, and WAL archives (load + createdb -T + restore) all land on /var/lib.
  const need = sizes.reduce((a, s) => a + s.bytes, 0) * 5 + 2 * GiB;
  if (df.availBytes < need) die(`/var/lib has ${fmtBytes(df.availBytes)} free; this run may need ~${fmtBytes(need)}`);

  const head = await run('git', ['-C', ROOT, 'rev-parse', 'HEAD']);
  const dirty = await run('git', ['-C', ROOT, 'status', '--porcelain', '--', 'agent']);
  result.git = { head: head.stdout.trim(), agentDirty: dirty.stdout.trim().split('\n').filter(Boolean) };

  if (!existsSync(join(ROOT, 'build', 'agent', 'cli', 'main.js'))) die("bpg is not built: run 'npx tsc -p .'");
  if (!opt['no-snapshot-build']) {
    // Others rebuild build/ while this runs; a private copy keeps every run on one agent build.
    // It sits under the checkout, so its imports still resolve to ROOT/node_modules.
    const snap = join(ROOT, '.bench', 'bpg-snapshot');
    rmSync(snap, { recursive: true, force: true });
    cpSync(join(ROOT, 'build'), join(snap, 'build'), { recursive: true });
    cpSync(join(ROOT, 'bin'), join(snap, 'bin'), { recursive: true });
    cpSync(join(ROOT, 'package.json'), join(snap, 'package.json'));
    // node_modules too: an `npm ci` elsewhere in the checkout empties the shared one for a while.
    const skip = new Set(['typescript', '@types', '.bin']);
    cpSync(join(ROOT, 'node_modules'), join(snap, 'node_modules'), {
      recursive: true,
      filter: (src) => !skip.has(src.slice(join(ROOT, 'node_modules').length + 1).split('/')[0]),
    });
    BPG_JS = join(snap, 'bin', 'bpg.js');
    log(`using a private copy of build/ and node_modules (${snap})`);
  }
  result.config.bpg = BPG_JS;

  log(`setting up pool ${POOL} (scripts/setup-host.sh)`);
  await setupHost();
  stackPid = await zfsDaemonPid();
  result.host.zfsFusePidStart = stackPid;
  mkdirSync(BENCH_DIR, { recursive: true });
  const init = await bpg([
    'init',
    '--force',
    '--pool',
    POOL,
    '--dataset-base',
    DATASET_BASE,
    '--image',
    IMAGE,
    '--state-dir',
    STATE_DIR,
    '--port-range',
    PORT_RANGE,
  ]);
  if (init.code !== 0) throw new Error(`bpg init failed: ${init.stderr.trim()}`);
  log(`config ${CONFIG} written`);
}

// ------------------------------------------------------------------ data

async function mainOf(db) {
  const d = await bpgJson(['db', 'get', db]);
  const main = d.branches.find((b) => b.branch === 'main');
  return { db: d, main };
}

/** A bench database of the right pgbench scale: reused when present, loaded otherwise. */
async function ensureDatabase(s) {
  const db = dbName(s);
  const info = { name: db, scale: s.scale, reused: false, loadMs: null };
  const exists = (await bpg(['db', 'get', db, '--json'])).code === 0;
  if (exists) {
    const { db: d, main } = await mainOf(db);
    // Leftovers of an interrupted run: branches, copy databases.
    for (const b of d.branches.filter((x) => x.branch !== 'main')) {
      log(`deleting leftover branch ${b.name}`);
      await bpg(['branch', 'delete', b.name, '--force']);
    }
    const t = target(main.connection);
    await dropCopies(t);
    let n = null;
    try {
      n = await answer(t);
    } catch {
      // not loaded yet: loaded below
    }
    if (n === s.scale) {
      info.reused = true;
      log(`${db}: reusing (pgbench scale ${n}); restarting its main branch`);
      const rr = await bpg(['restart', `${db}/main`]);
      if (rr.code !== 0) throw new Error(`bpg restart ${db}/main failed: ${rr.stderr.trim().split('\n').pop()}`);
    } else {
      log(`${db}: exists with scale ${n ?? 'unknown'}, wanted ${s.scale}: recreating`);
      await must(process.execPath, [BPG_JS, 'db', 'delete', db, '--force'], { env: bpgEnv });
    }
  }
  if (!info.reused) {
    log(`${db}: creating database`);
    await bpgJson(['db', 'create', db]);
    const { main } = await mainOf(db);
    const t = target(main.connection);
    log(`${db}: loading pgbench scale ${s.scale} (~${fmtBytes(s.scale * BYTES_PER_SCALE)})`);
    const t0 = performance.now();
    // Server-side generation (G), then VACUUM (v: hint bits and visibility map, so later reads do not
    // dirty every page) and primary keys (p).
    await must(join(PG_BIN, 'pgbench'), ['-i', '-s', String(s.scale), '-I', 'dtGvp'], { env: pgEnv(t), quiet: true });
    info.loadMs = Math.round(performance.now() - t0);
    log(`${db}: loaded in ${sec(info.loadMs)} s`);
  }
  const { main } = await mainOf(db);
  const t = target(main.connection);
  await withPg(t, (c) => c.query('CHECKPOINT'));
  info.dbSizeBytes = await withPg(t, async (c) =>
    Number((await c.query('SELECT pg_database_size(current_database()) AS b')).rows[0].b),
  );
  info.mainDataset = main.dataset;
  info.mainUsedBytes = (await zfsGet(main.dataset, ['used'])).used;
  log(`${db}: pg_database_size ${fmtBytes(info.dbSizeBytes)}, main dataset used ${fmtBytes(info.mainUsedBytes)}`);
  return { db, main, t, info };
}

async function dropCopies(t) {
  await withPg(target(t, 'postgres'), async (c) => {
    for (const x of [COPY_DB, RESTORE_DB]) await c.query(`DROP DATABASE IF EXISTS ${qi(x)} WITH (FORCE)`);
  });
}

// ------------------------------------------------------------------ measurements

const STEP_RE = /^branch create: (.+?) ms=(\d+)$/;
const TOTAL_RE = /^created \S+ from \S+ in (\d+) ms$/;

/** One branch create, timed from spawning the CLI to the branch answering the query. */
async function timeBranch(db, name, fast, expect) {
  const args = ['--debug', 'branch', 'create', `${db}/${name}`, ...(fast ? ['--fast'] : []), '--json'];
  const load1 = loadavg()[0];
  const t0 = performance.now();
  const r = await run(process.execPath, [BPG_JS, ...args], { env: bpgEnv });
  const tCli = performance.now();
  if (r.code !== 0)
    throw new Error(
      `bpg branch create ${db}/${name}${fast ? ' --fast' : ''} exited ${r.code}: ${r.stderr.trim().split('\n').slice(-2).join(' / ')}`,
    );
  const b = JSON.parse(r.stdout);
  created.add(b.name);
  const n = await answer(target(b.connection));
  const tEnd = performance.now();
  if (n !== expect) throw new Error(`branch ${b.name} answered ${n} rows, expected ${expect}`);
  const steps = {};
  let agentTotalMs = null;
  for (const line of r.stderr.split('\n')) {
    const m = STEP_RE.exec(line.trim());
    if (m) steps[m[1]] = Number(m[2]);
    const t = TOTAL_RE.exec(line.trim());
    if (t) agentTotalMs = Number(t[1]);
  }
  return {
    branch: b.name,
    dataset: b.dataset,
    totalMs: Math.round(tEnd - t0),
    cliMs: Math.round(tCli - t0),
    queryMs: Math.round(tEnd - tCli),
    agentTotalMs,
    steps,
    load1: Number(load1.toFixed(2)),
  };
}

/** A failed delete does not stop the benchmark: it is recorded and retried at the end. */
async function deleteBranch(name) {
  const t0 = performance.now();
  const r = await bpg(['branch', 'delete', name, '--force']);
  const ms = Math.round(performance.now() - t0);
  if (r.code !== 0) {
    event(
      'delete failed',
      `bpg branch delete ${name} after ${ms} ms: ${r.stderr.trim().split('\n').pop()} (retried at the end)`,
    );
    return;
  }
  if (ms > 30_000) event('slow delete', `bpg branch delete ${name} took ${ms} ms`);
  created.delete(name);
}

async function freshUsed(run) {
  log(`  waiting ${syncWait} s for ZFS to sync before reading ${run.branch}'s used bytes`);
  await sleep(syncWait * 1000);
  const z = await zfsGet(run.dataset, ['used', 'referenced']);
  const view = await bpgJson(['branch', 'get', run.branch]);
  return { zfsUsedBytes: z.used, referencedBytes: z.referenced, bpgUsedBytes: view.usedBytes, afterSeconds: syncWait };
}

/** CREATE DATABASE copy TEMPLATE db (createdb -T), to the copy answering the query. */
async function timeCreatedbT(ctx, expect) {
  const admin = target(ctx.t, 'postgres');
  const load1 = loadavg()[0];
  const t0 = performance.now();
  await withPg(admin, async (c) => {
    // The template must have no other sessions (autovacuum, a stray client).
    await c.query(
      'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
      [ctx.db],
    );
    await c.query(`CREATE DATABASE ${qi(COPY_DB)} TEMPLATE ${qi(ctx.db)}`);
  });
  const tCreated = performance.now();
  const n = await answer(target(ctx.t, COPY_DB));
  const tEnd = performance.now();
  if (n !== expect) throw new Error(`${COPY_DB} answered ${n}, expected ${expect}`);
  await withPg(admin, (c) => c.query(`DROP DATABASE ${qi(COPY_DB)}`));
  return { totalMs: Math.round(tEnd - t0), createMs: Math.round(tCreated - t0), load1: Number(load1.toFixed(2)) };
}

/** pg_dump -Fc | pg_restore into a new database of the same cluster, to the copy answering the query. */
async function timeDumpRestore(ctx, expect) {
  const admin = target(ctx.t, 'postgres');
  const load1 = loadavg()[0];
  const t0 = performance.now();
  await withPg(admin, (c) => c.query(`CREATE DATABASE ${qi(RESTORE_DB)} TEMPLATE template0`));
  await new Promise((resolveP, reject) => {
    const dump = spawn(join(PG_BIN, 'pg_dump'), ['-Fc'], {
      env: { ...process.env, ...pgEnv(ctx.t) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const restore = spawn(join(PG_BIN, 'pg_restore'), ['--no-owner', '--exit-on-error', '-d', RESTORE_DB], {
      env: { ...process.env, ...pgEnv(ctx.t) },
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    dump.stdout.pipe(restore.stdin);
    let err = '';
    dump.stderr.on('data', (d) => (err += `pg_dump: ${d}`));
    restore.stderr.on('data', (d) => (err += `pg_restore: ${d}`));
    const codes = {};
    const done = (who) => (code) => {
      codes[who] = code;
      if ('dump' in codes && 'restore' in codes) {
        if (codes.dump === 0 && codes.restore === 0) resolveP();
        else
          reject(
            new Error(
              `pg_dump|pg_restore exited ${codes.dump}/${codes.restore}: ${err.trim().split('\n').slice(-3).join(' / ')}`,
            ),
          );
      }
    };
    dump.on('close', done('dump'));
    restore.on('close', done('restore'));
    dump.on('error', reject);
    restore.on('error', reject);
  });
  const tRestored = performance.now();
  const n = await answer(target(ctx.t, RESTORE_DB));
  const tEnd = performance.now();
  if (n !== expect) throw new Error(`${RESTORE_DB} answered ${n}, expected ${expect}`);
  await withPg(admin, (c) => c.query(`DROP DATABASE ${qi(RESTORE_DB)}`));
  return { totalMs: Math.round(tEnd - t0), restoreMs: Math.round(tRestored - t0), load1: Number(load1.toFixed(2)) };
}

async function benchSize(s) {
  log(`=== size ${s.label} (pgbench scale ${s.scale})`);
  await checkStack();
  const ctx = await ensureDatabase(s);
  copies.set(ctx.db, ctx.t);
  loaded.push(ctx.db);
  const out = {
    label: s.label,
    targetBytes: s.bytes,
    database: ctx.info,
    branch: { default: [], fast: [] },
    fresh: {},
    createdbT: [],
    dumpRestore: [],
  };
  result.sizes.push(out);

  // The floor under any `bpg` command on this host right now: a process that only loads the CLI
  // (`--help`), and one that also reads state, Docker and ZFS (`branch list`).
  out.cliFloor = { helpMs: [], listMs: [] };
  for (let i = 0; i < 3; i++) {
    let t = performance.now();
    await bpg(['--help']);
    out.cliFloor.helpMs.push(Math.round(performance.now() - t));
    t = performance.now();
    await bpg(['branch', 'list', ctx.db, '--json']);
    out.cliFloor.listMs.push(Math.round(performance.now() - t));
  }
  out.cliFloor.helpP50 = stats(out.cliFloor.helpMs).p50;
  out.cliFloor.listP50 = stats(out.cliFloor.listMs).p50;
  log(`  bpg process floor: --help ${out.cliFloor.helpP50} ms, branch list ${out.cliFloor.listP50} ms (p50 of 3)`);

  // Interleaved so that load from others' work on the host hits both modes alike.
  for (let i = 1; i <= runs; i++) {
    for (const mode of ['default', 'fast']) {
      let r;
      for (let attempt = 1; !r; attempt++) {
        const name = `bench-${mode}-${i}${attempt > 1 ? `-retry${attempt}` : ''}`;
        try {
          await checkStack();
          r = await timeBranch(ctx.db, name, mode === 'fast', s.scale);
          if (await checkStack()) {
            event('run discarded', `${ctx.db}/${name}: the ZFS daemon restarted during it`);
            await deleteBranch(r.branch);
            r = undefined;
          }
        } catch (e) {
          event('run failed', `${ctx.db}/${name}: ${e.message}`);
          if (attempt >= 3) throw e;
          await sleep(5000);
        }
      }
      out.branch[mode].push(r);
      log(
        `  ${mode.padEnd(7)} run ${i}/${runs}: ${sec(r.totalMs)} s to answer (cli ${r.cliMs} ms, agent ${r.agentTotalMs} ms, query ${r.queryMs} ms; load ${r.load1})`,
      );
      if (i === 1 && syncWait > 0) {
        out.fresh[mode] = await freshUsed(r);
        log(`  ${mode} fresh branch used ${out.fresh[mode].zfsUsedBytes} B after ${syncWait} s`);
      }
      await deleteBranch(r.branch);
    }
  }
  for (const mode of ['default', 'fast']) {
    out.branch[`${mode}Stats`] = stats(out.branch[mode].map((r) => r.totalMs));
    // Per-step p50, to see what dominates.
    const names = [...new Set(out.branch[mode].flatMap((r) => Object.keys(r.steps)))];
    out.branch[`${mode}StepP50`] = Object.fromEntries(
      names.map((n) => [n, stats(out.branch[mode].map((r) => r.steps[n]).filter((x) => x != null)).p50]),
    );
    out.branch[`${mode}StepP50`]['(cli process, outside the engine)'] = stats(
      out.branch[mode].map((r) => r.cliMs - (r.agentTotalMs ?? r.cliMs)),
    ).p50;
    out.branch[`${mode}StepP50`]['(query after the cli returned)'] = stats(out.branch[mode].map((r) => r.queryMs)).p50;
  }

  const alt = altRunsFor(s.bytes);
  for (let i = 1; i <= alt; i++) {
    await checkStack();
    log(`  createdb -T run ${i}/${alt} ...`);
    const r = await timeCreatedbT(ctx, s.scale);
    out.createdbT.push(r);
    log(`  createdb -T run ${i}/${alt}: ${sec(r.totalMs)} s`);
  }
  for (let i = 1; i <= alt; i++) {
    await checkStack();
    log(`  pg_dump | pg_restore run ${i}/${alt} ...`);
    const r = await timeDumpRestore(ctx, s.scale);
    out.dumpRestore.push(r);
    log(`  pg_dump | pg_restore run ${i}/${alt}: ${sec(r.totalMs)} s`);
  }
  out.createdbTStats = stats(out.createdbT.map((r) => r.totalMs));
  out.dumpRestoreStats = stats(out.dumpRestore.map((r) => r.totalMs));
}

// ------------------------------------------------------------------ report

function cell(st) {
  if (!st) return 'n/a';
  if (st.n === 1) return `${sec(st.p50)} s (n=1)`;
  return `${sec(st.p50)} s (${sec(st.min)}-${sec(st.max)}, n=${st.n})`;
}

function report() {
  const lines = [];
  lines.push(
    '| size | real db size | branch default p50 (min-max) | branch --fast p50 (min-max) | createdb -T | dump/restore | ratio createdb-T / fast | fresh branch used (default / fast) |',
  );
  lines.push('| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const s of result.sizes) {
    const d = s.branch.defaultStats;
    const f = s.branch.fastStats;
    const ratio = s.createdbTStats && f ? `${(s.createdbTStats.p50 / f.p50).toFixed(0)}x` : 'n/a';
    const used = (m) => (s.fresh[m] ? fmtBytes(s.fresh[m].zfsUsedBytes) : 'n/a');
    lines.push(
      `| ${s.label} | ${fmtBytes(s.database.dbSizeBytes)} | ${cell(d)} | ${cell(f)} | ${cell(s.createdbTStats)} | ${cell(s.dumpRestoreStats)} | ${ratio} | ${used('default')} / ${used('fast')} |`,
    );
  }
  lines.push('');
  lines.push(
    `Times are from spawning \`bpg branch create\` (or starting the copy) to the new database answering \`${QUERY}\`; ` +
      `${runs} run${runs === 1 ? '' : 's'} per branch mode, interleaved; "used" is \`zfs get used\` ${syncWait} s after the create. ` +
      `Host: ${result.host.cpus} cores, zfs-fuse; load at start: ${result.host.uptimeStart.replace(/^.*load average: /, '')}, at end: ${(result.host.uptimeEnd ?? '').replace(/^.*load average: /, '')}.`,
  );

  // Per-step p50s, largest size (what limits).
  lines.push('');
  lines.push('Per-step p50 (ms) from `bpg --debug branch create`:');
  lines.push('');
  // Steps in the order they run: each mode's order, merged (a step new to the list goes after its predecessor).
  const steps = [];
  for (const s of result.sizes) {
    for (const mode of ['fast', 'default']) {
      let prev = -1;
      for (const n of Object.keys(s.branch[`${mode}StepP50`])) {
        const at = steps.indexOf(n);
        if (at === -1) steps.splice(++prev, 0, n);
        else prev = at;
      }
    }
  }
  lines.push(`| step | ${result.sizes.map((s) => `${s.label} default | ${s.label} fast`).join(' | ')} |`);
  lines.push(`| --- | ${result.sizes.map(() => '--- | ---').join(' | ')} |`);
  for (const n of steps) {
    const label = n === 'backup mode' ? 'backup mode (pg_backup_start, zfs snapshot, pg_backup_stop)' : n;
    lines.push(
      `| ${label} | ${result.sizes.map((s) => `${s.branch.defaultStepP50[n] ?? ''} | ${s.branch.fastStepP50[n] ?? ''}`).join(' | ')} |`,
    );
  }

  // Targets.
  const T = [];
  const every = (mode, limitMs) => {
    const bad = result.sizes.filter((s) => !(s.branch[`${mode}Stats`].p50 <= limitMs));
    return {
      met: bad.length === 0,
      detail: result.sizes.map((s) => `${s.label} ${sec(s.branch[`${mode}Stats`].p50)} s`).join(', '),
    };
  };
  T.push({ target: '--fast p50 <= 1.0 s at every size', ...every('fast', 1000) });
  T.push({ target: 'default p50 <= 2.0 s at every size', ...every('default', 2000) });
  const big = result.sizes.reduce((a, s) => (s.targetBytes > a.targetBytes ? s : a));
  const small = result.sizes.reduce((a, s) => (s.targetBytes < a.targetBytes ? s : a));
  if (big !== small) {
    const r = (m) => big.branch[`${m}Stats`].p50 / small.branch[`${m}Stats`].p50;
    T.push({
      target: `${big.label} within 1.25x of ${small.label} (p50, both modes)`,
      met: r('default') <= 1.25 && r('fast') <= 1.25,
      detail: `default ${r('default').toFixed(2)}x, --fast ${r('fast').toFixed(2)}x`,
    });
  } else {
    T.push({ target: 'largest size within 1.25x of smallest', met: null, detail: 'only one size measured' });
  }
  if (big.createdbTStats) {
    const rf = big.createdbTStats.p50 / big.branch.fastStats.p50;
    const rd = big.createdbTStats.p50 / big.branch.defaultStats.p50;
    T.push({
      target: `at ${big.label} at least 50x faster than createdb -T (--fast)`,
      met: rf >= 50,
      detail: `--fast ${rf.toFixed(1)}x, default ${rd.toFixed(1)}x`,
    });
  } else {
    T.push({
      target: `at ${big.label} at least 50x faster than createdb -T`,
      met: null,
      detail: 'alternatives not measured (--alt-runs 0)',
    });
  }
  const freshAll = result.sizes.flatMap((s) =>
    Object.entries(s.fresh).map(([m, f]) => ({ s: s.label, m, b: f.zfsUsedBytes })),
  );
  if (freshAll.length) {
    T.push({
      target: 'fresh branch under 1 MB used (1 MiB = 1048576 B, every size and mode)',
      met: freshAll.every((x) => x.b < MiB),
      detail: freshAll.map((x) => `${x.s} ${x.m} ${x.b} B`).join(', '),
    });
  } else {
    T.push({ target: 'fresh branch under 1 MB used', met: null, detail: 'not measured (--sync-wait 0)' });
  }
  result.targets = T;
  if (result.events.length) {
    lines.push('');
    lines.push('Disturbances during the run:');
    lines.push('');
    for (const e of result.events) lines.push(`- ${e.at.slice(11, 19)} ${e.what}: ${e.detail}`);
  }
  lines.push(
    `| (for scale: \`bpg --help\`, process start + module load) | ${result.sizes.map((s) => `${s.cliFloor.helpP50} | `).join(' | ')} |`,
  );
  lines.push(
    `| (for scale: \`bpg branch list --json\`) | ${result.sizes.map((s) => `${s.cliFloor.listP50} | `).join(' | ')} |`,
  );
  lines.push('');
  lines.push('Targets:');
  lines.push('');
  for (const t of T)
    lines.push(
      `- [${t.met === true ? 'x' : ' '}] ${t.met === true ? 'MET' : t.met === false ? 'NOT MET' : 'not measured'}: ${t.target} — ${t.detail}`,
    );
  return lines.join('\n') + '\n';
}

// ------------------------------------------------------------------ cleanup

async function cleanup(failed) {
  for (const name of [...created]) {
    log(`cleanup: deleting branch ${name}`);
    await bpg(['branch', 'delete', name, '--force']).catch(() => {});
  }
  for (const t of copies.values()) await dropCopies(t).catch(() => {});
  if (opt.keep) {
    log(`--keep: databases ${sizes.map(dbName).join(', ')} and pool ${POOL} stay (re-run reuses them)`);
    return;
  }
  for (const s of sizes) {
    const db = dbName(s);
    if ((await bpg(['db', 'get', db, '--json'])).code !== 0) continue;
    log(`cleanup: bpg db delete ${db} --force`);
    const r = await bpg(['db', 'delete', db, '--force']);
    if (r.code !== 0) log(`cleanup: could not delete ${db}: ${r.stderr.trim().split('\n').pop()}`);
  }
  if (opt['destroy-pool']) {
    // Containers of the bench root, should any be left, would keep the datasets busy.
    const ps = await run('docker', ['ps', '-aq', '--filter', `label=io.betterpg.root=${POOL}/${DATASET_BASE}`]);
    const ids = ps.stdout.trim().split('\n').filter(Boolean);
    if (ids.length) await run('docker', ['rm', '-f', ...ids]);
    let ok = false;
    for (let i = 0; i < 5 && !ok; i++) {
      const r = await run('zpool', ['destroy', POOL]);
      ok = r.code === 0 || (await run('zpool', ['list', POOL])).code !== 0;
      if (!ok) await sleep(1000);
    }
    if (ok) {
      rmSync(POOL_FILE, { force: true });
      rmSync(STATE_DIR, { recursive: true, force: true });
      rmSync(CONFIG, { force: true });
      await run('find', [`/${POOL}`, '-depth', '-type', 'd', '-empty', '-delete']);
      await run('rmdir', [BENCH_DIR]); // only when empty
      log(`cleanup: pool ${POOL} destroyed, ${POOL_FILE} and ${STATE_DIR} removed`);
    } else {
      log(`cleanup: zpool destroy ${POOL} failed; remove it by hand (zpool destroy ${POOL}; rm ${POOL_FILE})`);
    }
  } else if (!failed) {
    log(`pool ${POOL} stays (${POOL_FILE}); --destroy-pool removes it`);
  }
}

// ------------------------------------------------------------------ main

let failed = false;
let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    log(`${sig}: cleaning up (again to quit at once)`);
    cleanup(true).finally(() => process.exit(130));
  });
}
try {
  await setup();
  for (const s of sizes) await benchSize(s);
} catch (e) {
  failed = true;
  log(`FAILED: ${e.stack ?? e}`);
}
result.host.uptimeEnd = await uptime();
result.host.zfsFusePidEnd = await zfsDaemonPid();
result.host.dfEnd = (await dfVarLib()).line;
log(`load at end: ${result.host.uptimeEnd}`);
if (!failed) {
  const md = report();
  process.stdout.write(md);
  result.markdown = md;
}
result.failed = failed;
result.finishedAt = new Date().toISOString();
result.elapsedSeconds = Math.round((Date.now() - t0Script) / 1000);
const dir = join(ROOT, '.bench');
mkdirSync(dir, { recursive: true });
const stamp = result.startedAt.replace(/:/g, '-').replace(/\..*$/, '');
const file = join(dir, `branch-${stamp}.json`);
writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
if (result.markdown) writeFileSync(join(dir, `branch-${stamp}.md`), result.markdown);
log(`results: ${file}`);
await cleanup(failed);
log(`done in ${result.elapsedSeconds} s`);
process.exit(failed ? 1 : 0);

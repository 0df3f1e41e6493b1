#!/usr/bin/env node
// bench-cli.mjs — how long does a `bpg` command take on the agent's host: through `bpg serve`'s
// local socket (the default when the daemon runs) against the engine in process (`--local`)?
//
// It writes its own config and state (a temporary folder, dataset base `bench-cli-<pid>` on the
// pool given, its own port range), makes one small database, starts `bpg serve` on it, and times,
// interleaving the two paths run by run, from spawning the CLI to:
//   - create: `bpg branch create <db>/<b> --fast --json` exited AND the new branch answered `SELECT 1`
//     (a pg client on the port the JSON names);
//   - list:   `bpg branch list <db>` exited;
//   - get:    `bpg branch get <db>/<b>` exited;
//   - version: `bpg --version` exited (Node start-up and the CLI's own modules: the floor).
// Each branch is deleted after it was measured (not timed). Prints a markdown table with p50/p95
// per path, the ratios, and the goals of issue 14 (create p50 <= 600 ms, list/get p50 <= 250 ms
// through the socket) on stdout; progress on stderr. Cleans up everything it made.
//
// Run as root on a host prepared by scripts/setup-host.sh, after `npm run build`:
//   node scripts/bench-cli.mjs [--runs 10] [--pool bpgtest] [--ports 37700-37799]
//                              [--image betterpg/postgres:15-local] [--json <file>]
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { must, run, stats, withPg } from './lib/bench.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BPG = join(ROOT, 'bin', 'bpg.js');

const { values: opt } = parseArgs({
  options: {
    runs: { type: 'string', default: '10' },
    pool: { type: 'string', default: 'bpgtest' },
    ports: { type: 'string', default: '37700-37799' },
    image: { type: 'string', default: 'betterpg/postgres:15-local' },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});
if (opt.help) {
  process.stdout.write(
    'usage: node scripts/bench-cli.mjs [--runs 10] [--pool bpgtest] [--ports 37700-37799] [--image IMAGE] [--json FILE]\n',
  );
  process.exit(0);
}
const die = (msg) => {
  process.stderr.write(`bench-cli: error: ${msg}\n`);
  process.exit(1);
};
const RUNS = Number(opt.runs);
if (!Number.isInteger(RUNS) || RUNS < 1) die('--runs must be a whole number, 1 or more');
if (!/^\d+-\d+$/.test(opt.ports)) die('--ports must look like 37700-37799');
if (!/^[A-Za-z0-9_.-]+$/.test(opt.pool)) die('--pool must be a pool name');

const log = (msg) => process.stderr.write(`[bench-cli] ${msg}\n`);
const work = mkdtempSync(join(tmpdir(), 'bpg-bench-cli-'));
const CONFIG = join(work, 'config.yaml');
const BASE = `bench-cli-${process.pid}`;
const DB = 'benchcli';
const env = { BPG_CONFIG: CONFIG, XDG_CONFIG_HOME: join(work, 'xdg'), BPG_AGENT_URL: '', BPG_CONTEXT: '' };
const bpg = (args, o = {}) => must(process.execPath, [BPG, ...args], { env, ...o });

/** Milliseconds from spawning `bpg args` to its exit (0 required); the result too. */
async function timed(args) {
  const t0 = performance.now();
  const r = await run(process.execPath, [BPG, ...args], { env });
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`bpg ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return { ms, r, t0 };
}

/** `zfs destroy -r`, retrying zfs-fuse's passing "dataset is busy". */
async function destroyDataset(name) {
  for (let i = 0; ; i++) {
    const r = await run('zfs', ['destroy', '-r', name]);
    if (r.code === 0 || /does not exist/.test(r.stderr)) return;
    if (i >= 40 || !/busy/i.test(r.stderr)) throw new Error(`zfs destroy -r ${name}: ${r.stderr.trim()}`);
    await new Promise((res) => setTimeout(res, 250));
  }
}

let daemon = null;
async function startDaemon() {
  const child = spawn(process.execPath, [BPG, 'serve', '--listen', '127.0.0.1:0'], {
    env: { ...process.env, ...env, BPG_API_TOKEN: `bench-${randomBytes(16).toString('hex')}` },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  daemon = child;
  let text = '';
  await new Promise((resolveP, reject) => {
    const timer = setTimeout(() => reject(new Error(`bpg serve did not listen within 120 s:\n${text}`)), 120_000);
    child.stderr.on('data', (d) => {
      text += d;
      if (/"msg":"listening"/.test(text)) {
        clearTimeout(timer);
        resolveP();
      }
    });
    child.once('exit', (code) => reject(new Error(`bpg serve exited ${code}:\n${text}`)));
  });
  if (!/"socket":"[^"]+agent\.sock"/.test(text)) throw new Error(`bpg serve opened no local socket:\n${text}`);
}

async function stopDaemon() {
  if (!daemon || daemon.exitCode !== null) return;
  const exited = new Promise((r) => daemon.once('exit', r));
  daemon.kill('SIGTERM');
  await exited;
}

const PATHS = { socket: [], local: ['--local'] };
const OPS = ['create', 'list', 'get', 'version'];
const samples = Object.fromEntries(Object.keys(PATHS).map((p) => [p, Object.fromEntries(OPS.map((o) => [o, []]))]));

async function oneRun(i, path) {
  const flags = PATHS[path];
  const name = `${DB}/b${i}${path === 'local' ? 'l' : 's'}`;
  // create: the CLI exits with the branch's JSON; the clock stops when the branch answers a query.
  const { r, t0 } = await timed([...flags, '-q', 'branch', 'create', name, '--fast', '--json']);
  const b = JSON.parse(r.stdout);
  const c = b.connection;
  await withPg({ host: c.host, port: b.port, user: c.user, password: c.password, database: c.database }, (pg) =>
    pg.query('SELECT 1'),
  );
  samples[path].create.push(performance.now() - t0);
  samples[path].list.push((await timed([...flags, 'branch', 'list', DB])).ms);
  samples[path].get.push((await timed([...flags, 'branch', 'get', name])).ms);
  samples[path].version.push((await timed([...flags, '--version'])).ms);
  await bpg(['-q', 'branch', 'delete', name]);
}

const GOALS = { create: 600, list: 250, get: 250 };

function report() {
  const rows = [];
  const out = { runs: RUNS, cpus: cpus().length, loadavg: loadavg().map((x) => Math.round(x * 100) / 100), ops: {} };
  for (const op of OPS) {
    const s = stats(samples.socket[op]);
    const l = stats(samples.local[op]);
    out.ops[op] = { socket: s, local: l, ratio: s && l ? Math.round((l.p50 / s.p50) * 100) / 100 : null };
    const goal = GOALS[op];
    const verdict = goal === undefined ? '-' : s.p50 <= goal ? `<= ${goal} ms: met` : `<= ${goal} ms: NOT met`;
    rows.push(`| ${op} | ${s.p50} | ${s.p95} | ${l.p50} | ${l.p95} | ${out.ops[op].ratio}x | ${verdict} |`);
  }
  const md = [
    `bpg on the agent's host: through bpg serve's socket vs --local (${RUNS} runs each, interleaved; ${out.cpus} CPUs, load ${out.loadavg.join(' ')})`,
    '',
    '| command | socket p50 ms | socket p95 ms | --local p50 ms | --local p95 ms | --local / socket (p50) | goal (socket p50) |',
    '|---|---|---|---|---|---|---|',
    ...rows,
    '',
    'create: `branch create --fast --json` spawned until the new branch answered SELECT 1; list, get, version: spawned until exit.',
    '',
  ].join('\n');
  process.stdout.write(md);
  if (opt.json) writeFileSync(opt.json, JSON.stringify({ ...out, samples }, null, 2) + '\n');
}

async function main() {
  log(`config ${CONFIG}, dataset base ${opt.pool}/${BASE}, ports ${opt.ports}`);
  await bpg([
    'init',
    '--pool',
    opt.pool,
    '--dataset-base',
    BASE,
    '--image',
    opt.image,
    '--state-dir',
    join(work, 'state'),
    '--port-range',
    opt.ports,
  ]);
  await bpg(['-q', 'db', 'create', DB]);
  await startDaemon();
  log(`bpg serve is up; ${RUNS} runs of each path`);
  for (let i = 0; i < RUNS; i++) {
    // Interleaved, and the order alternates: neither path always runs on a warmer cache.
    for (const path of i % 2 ? ['local', 'socket'] : ['socket', 'local']) await oneRun(i, path);
    log(`run ${i + 1}/${RUNS} done`);
  }
  report();
}

try {
  await main();
} catch (e) {
  process.exitCode = 1;
  process.stderr.write(`bench-cli: error: ${e.message}\n`);
} finally {
  await stopDaemon().catch(() => {});
  await run(process.execPath, [BPG, '--local', '-q', 'db', 'delete', DB, '--force'], { env });
  // and the spare port slots bpg serve kept (they belong to no database)
  const spares = await run('docker', ['ps', '-aq', '--filter', `label=io.betterpg.root=${opt.pool}/${BASE}`]);
  const ids = spares.stdout.split('\n').filter(Boolean);
  if (ids.length) await run('docker', ['rm', '-f', ...ids]);
  await destroyDataset(`${opt.pool}/${BASE}`).catch((e) => log(`cleanup: ${e.message}`));
  rmSync(work, { recursive: true, force: true });
}

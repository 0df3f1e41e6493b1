#!/usr/bin/env node
// bench-hardening.mjs — what container hardening costs a branch create.
//
// Two agents side by side on one pool, each with its own dataset base, state folder and ports:
// "hardened" (the defaults: pids limit, no capabilities, no-new-privileges, read-only root with
// tmpfs, bounded log, the no-egress network with its firewall checks) and "plain" (every hardening
// key off: Docker's default bridge, no limits). Each gets the same small database. Then, in rounds,
// it times `bpg branch create` (default and --fast) on both, from spawning the CLI to the new branch
// answering a query, alternating which agent goes first; each branch is deleted after it was timed
// (not counted). Prints a table (p50, mean, min-max per agent and mode, hardened/plain ratio) on
// stdout, progress on stderr, and writes .bench/hardening-<date>.json in the checkout.
//
// With --before <checkout> a third agent runs the `bpg` of another checkout (built: npm ci there),
// e.g. the version before the untrusted-SQL work (git worktree add --detach ../base 208affb), so
// the whole cost of that work shows in the same run: hardened / before.
//
// Run as root on a host prepared by scripts/setup-host.sh:
//   node scripts/bench-hardening.mjs [--pool bpgtest] [--rounds 15] [--rows 100000] [--before DIR]
// Ports 47700-47759. Everything it makes is removed at the end (also after an error or Ctrl-C).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { BPG_JS, bpgInit, cleanupOnInterrupt, destroyBase, writeBenchJson } from './lib/agent.mjs';
import { must, run, stats, target, withPg } from './lib/bench.mjs';

const DB = 'hb';
const QUERY = 'SELECT count(*)::int AS n FROM t';

const { values: opt } = parseArgs({
  options: {
    pool: { type: 'string', default: process.env.BPG_BENCH_POOL ?? 'bpgtest' },
    rounds: { type: 'string', default: '15' },
    rows: { type: 'string', default: '100000' },
    before: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});
if (opt.help) {
  process.stdout.write(
    'usage: node scripts/bench-hardening.mjs [--pool bpgtest] [--rounds 15] [--rows 100000] [--before <checkout>]\n',
  );
  process.exit(0);
}
const die = (msg) => {
  process.stderr.write(`bench-hardening: error: ${msg}\n`);
  process.exit(1);
};
const rounds = Number(opt.rounds);
const rows = Number(opt.rows);
if (!Number.isInteger(rounds) || rounds < 1) die('--rounds must be a positive integer');
if (!Number.isInteger(rows) || rows < 1) die('--rows must be a positive integer');
if (!/^[A-Za-z][A-Za-z0-9_.-]*$/.test(opt.pool)) die('--pool is not a pool name');
if (process.getuid?.() !== 0) die('run as root (ZFS, Docker)');

const log = (msg) => process.stderr.write(`[bench-hardening ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const work = mkdtempSync('/var/tmp/bpg-bench-hardening-');
const OFF = {
  pidsLimit: null,
  dropCapabilities: false,
  noNewPrivileges: false,
  readOnlyRootfs: false,
  logMaxSize: null,
  network: null,
  egress: true,
};

/** One agent: its config (postgres.* overrides), CLI and dataset base. */
function agent(name, ports, postgres, bpgJs = BPG_JS) {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  const config = join(dir, 'config.yaml');
  const base = `bench-hardening-${process.pid}-${name}`;
  const env = { BPG_CONFIG: config };
  return {
    name,
    base,
    config,
    postgres,
    bpg: (args) => run(process.execPath, [bpgJs, ...args], { env }),
    must: (args) => must(process.execPath, [bpgJs, ...args], { env }),
    async init() {
      await bpgInit({ pool: opt.pool, base, stateDir: join(dir, 'state'), ports, env, bpgJs });
      // `bpg init` writes the defaults; the plain agent turns every hardening key off.
      const raw = YAML.parse(readFileSync(config, 'utf8'));
      raw.postgres = { ...raw.postgres, ...postgres };
      writeFileSync(config, YAML.stringify(raw), { mode: 0o600 });
    },
  };
}

const agents = [agent('hardened', '47700-47719', {}), agent('plain', '47720-47739', OFF)];
if (opt.before) {
  const old = resolve(opt.before, 'bin', 'bpg.js');
  if (!existsSync(old) || !existsSync(resolve(opt.before, 'build')))
    die(`--before: ${opt.before} is not a built checkout (run npm ci there)`);
  agents.push(agent('before', '47740-47759', {}, old)); // its own defaults: keys it does not know would be refused
}
const STEP_RE = /^branch create: (.+?) ms=(\d+)$/;

async function timeCreate(a, branch, fast) {
  const load1 = loadavg()[0];
  const t0 = performance.now();
  const r = await a.bpg(['--debug', 'branch', 'create', `${DB}/${branch}`, ...(fast ? ['--fast'] : []), '--json']);
  if (r.code !== 0)
    throw new Error(
      `${a.name}: bpg branch create ${DB}/${branch} exited ${r.code}: ${r.stderr.trim().split('\n').pop()}`,
    );
  const b = JSON.parse(r.stdout);
  const n = await withPg(target(b.connection), async (c) => (await c.query(QUERY)).rows[0].n);
  const ms = Math.round(performance.now() - t0);
  if (n !== rows) throw new Error(`${a.name}: ${b.name} answered ${n} rows, expected ${rows}`);
  const steps = {};
  for (const line of r.stderr.split('\n')) {
    const m = STEP_RE.exec(line.trim());
    if (m) steps[m[1]] = Number(m[2]);
  }
  await a.must(['branch', 'delete', `${DB}/${branch}`]);
  return { ms, steps, load1: Number(load1.toFixed(2)) };
}

async function cleanup() {
  for (const a of agents) {
    await a.bpg(['db', 'delete', DB, '--force']);
    await destroyBase(`${opt.pool}/${a.base}`);
  }
  rmSync(work, { recursive: true, force: true });
}

cleanupOnInterrupt(log, cleanup);

async function main() {
  const uptimeStart = (await run('uptime', [])).stdout.trim();
  log(`load at start: ${uptimeStart}`);
  for (const a of agents) {
    await a.init();
    log(`${a.name}: creating database ${DB} with ${rows} rows`);
    const r = await a.must(['db', 'create', DB, '--json']);
    const main = JSON.parse(r.stdout); // main's branch view
    await withPg(target(main.connection), async (c) => {
      await c.query(`CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, ${rows}) g`);
      await c.query('CHECKPOINT');
    });
  }
  const samples = Object.fromEntries(agents.map((a) => [a.name, { default: [], fast: [] }]));
  for (let i = 0; i < rounds; i++) {
    const order = i % 2 ? [...agents].reverse() : agents;
    for (const mode of ['default', 'fast']) {
      for (const a of order) {
        const s = await timeCreate(a, `r${i}${mode === 'fast' ? 'f' : 'd'}`, mode === 'fast');
        samples[a.name][mode].push(s);
        log(
          `round ${i + 1}/${rounds} ${mode.padEnd(7)} ${a.name.padEnd(8)} ${s.ms} ms (load ${s.load1}; start container ${s.steps['start container'] ?? '?'} ms)`,
        );
      }
    }
  }
  const uptimeEnd = (await run('uptime', [])).stdout.trim();
  const table = [];
  for (const mode of ['default', 'fast']) {
    const h = stats(samples.hardened[mode].map((s) => s.ms));
    const p = stats(samples.plain[mode].map((s) => s.ms));
    const hs = stats(samples.hardened[mode].map((s) => s.steps['start container'] ?? 0));
    const ps = stats(samples.plain[mode].map((s) => s.steps['start container'] ?? 0));
    // Each round times both agents back to back: the median of the per-round ratios cancels the
    // load that others put on a shared machine better than a ratio of medians.
    const paired = samples.hardened[mode].map((s, i) => s.ms / samples.plain[mode][i].ms).sort((a, b) => a - b);
    const ratioPaired =
      paired.length % 2 ? paired[paired.length >> 1] : (paired[paired.length / 2 - 1] + paired[paired.length / 2]) / 2;
    let before = null;
    if (samples.before) {
      const b = stats(samples.before[mode].map((s) => s.ms));
      const pr = samples.hardened[mode].map((s, i) => s.ms / samples.before[mode][i].ms).sort((x, y) => x - y);
      const med = pr.length % 2 ? pr[pr.length >> 1] : (pr[pr.length / 2 - 1] + pr[pr.length / 2]) / 2;
      before = { stats: b, ratioP50: h.p50 / b.p50, ratioPaired: med };
    }
    table.push({
      mode,
      hardened: h,
      plain: p,
      ratioP50: h.p50 / p.p50,
      ratioMean: h.mean / p.mean,
      ratioPaired,
      startContainer: { hardened: hs, plain: ps },
      before,
    });
  }
  const fmt = (s) =>
    `${(s.p50 / 1000).toFixed(2)} s / ${(s.mean / 1000).toFixed(2)} s (${(s.min / 1000).toFixed(2)}-${(s.max / 1000).toFixed(2)})`;
  const lines = [
    `Branch create to first answer, ${rounds} interleaved runs per cell, ${rows} rows; load ${uptimeStart.split('load average: ')[1]} -> ${uptimeEnd.split('load average: ')[1]}`,
    '',
    '| mode | hardened p50 / mean (min-max) | plain p50 / mean (min-max) | hardened / plain: p50, mean, per-round median | step "start container" p50, hardened / plain |',
    '| --- | --- | --- | --- | --- |',
    ...table.map(
      (r) =>
        `| ${r.mode === 'fast' ? '--fast' : 'default'} | ${fmt(r.hardened)} | ${fmt(r.plain)} | ${r.ratioP50.toFixed(3)}, ${r.ratioMean.toFixed(3)}, ${r.ratioPaired.toFixed(3)} | ${r.startContainer.hardened.p50} ms / ${r.startContainer.plain.p50} ms |`,
    ),
    '',
    ...table.map(
      (r) =>
        `${r.mode}: creation time moved by ${((r.ratioP50 - 1) * 100).toFixed(1)}% (p50), ${((r.ratioMean - 1) * 100).toFixed(1)}% (mean), ` +
        `${((r.ratioPaired - 1) * 100).toFixed(1)}% (per-round median): ${Math.abs(r.ratioPaired - 1) < 0.1 ? 'within' : 'NOT within'} 10%`,
    ),
    ...table
      .filter((r) => r.before)
      .map(
        (r) =>
          `${r.mode}: against the version before (--before): ${fmt(r.before.stats)}; hardened / before ${r.before.ratioP50.toFixed(3)} (p50), ` +
          `${r.before.ratioPaired.toFixed(3)} (per-round median)`,
      ),
  ];
  process.stdout.write(lines.join('\n') + '\n');
  const file = writeBenchJson('hardening', {
    startedAt: new Date().toISOString(),
    uptimeStart,
    uptimeEnd,
    rounds,
    rows,
    table,
    samples,
  });
  log(`wrote ${file}`);
}

main()
  .then(() => cleanup())
  .catch(async (e) => {
    log(`error: ${e.message}`);
    await cleanup().catch(() => {});
    process.exit(1);
  });

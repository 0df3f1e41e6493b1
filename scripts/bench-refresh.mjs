#!/usr/bin/env node
// bench-refresh.mjs — how long `bpg db refresh` takes, and how long main's clients are cut off.
//
// Starts a source PostgreSQL (a container of the image that no agent manages, on Docker's default
// bridge), fills it with `pgbench -i` at the scale that gives about --size-mb of data, imports it
// into a database with an agent of its own (dataset base, state folder, ports 47820-47839), then
// refreshes main --refreshes times while a client queries main every 10 ms (reconnecting when cut
// off). For each refresh: its total time, the agent's measure of main's interruption (stop to the
// new server answering) and the longest gap the polling client saw between two answers. Prints a
// table on stdout, progress on stderr, and writes .bench/refresh-<date>.json in the checkout.
//
// Run as root on a host prepared by scripts/setup-host.sh:
//   node scripts/bench-refresh.mjs [--pool bpgtest] [--size-mb 1024] [--refreshes 3] [--method dump|basebackup]
// Everything it makes is removed at the end (also after an error or Ctrl-C).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { BPG_JS, bpgInit, cleanupOnInterrupt, destroyBase, writeBenchJson } from './lib/agent.mjs';
import { fmtBytes, run, stats, target, withPg } from './lib/bench.mjs';
import { startSource, stopSource } from './lib/source.mjs';

const { values: opt } = parseArgs({
  options: {
    pool: { type: 'string', default: process.env.BPG_BENCH_POOL ?? 'bpgtest' },
    'size-mb': { type: 'string', default: '1024' },
    refreshes: { type: 'string', default: '3' },
    method: { type: 'string', default: 'dump' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});
if (opt.help) {
  process.stdout.write(
    'usage: node scripts/bench-refresh.mjs [--pool bpgtest] [--size-mb 1024] [--refreshes 3] [--method dump|basebackup]\n',
  );
  process.exit(0);
}
const die = (msg) => {
  process.stderr.write(`bench-refresh: error: ${msg}\n`);
  process.exit(1);
};
const sizeMb = Number(opt['size-mb']);
if (!Number.isInteger(sizeMb) || sizeMb < 16) die('--size-mb must be a whole number of at least 16');
const refreshes = Number(opt.refreshes);
if (!Number.isInteger(refreshes) || refreshes < 1 || refreshes > 100)
  die('--refreshes must be a whole number from 1 to 100');
if (!['dump', 'basebackup'].includes(opt.method)) die('--method must be dump or basebackup');
if (!/^[A-Za-z][A-Za-z0-9_.-]*$/.test(opt.pool)) die('--pool is not a pool name');
if (process.getuid?.() !== 0) die('run as root (ZFS, Docker)');

const log = (msg) => process.stderr.write(`[bench-refresh ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const work = mkdtempSync('/var/tmp/bpg-bench-refresh-');
const config = join(work, 'config.yaml');
const base = `bench-refresh-${process.pid}`;
const env = { BPG_CONFIG: config };
const source = `bpg-bench-refresh-source-${process.pid}`;
const password = randomBytes(12).toString('hex');
const bpg = (args, extra = {}) => run(process.execPath, [BPG_JS, ...args], { env: { ...env, ...extra } });
const made = [];

async function cleanup() {
  for (const db of made) await bpg(['db', 'delete', db, '--force']);
  await stopSource(source);
  await destroyBase(`${opt.pool}/${base}`);
  rmSync(work, { recursive: true, force: true });
}

cleanupOnInterrupt(log, cleanup);

async function main() {
  await bpgInit({ pool: opt.pool, base, stateDir: join(work, 'state'), ports: '47820-47839', env });
  const src = await startSource({ dir: join(work, 'source'), name: source, password, sizeMb, log });
  log(`source: ${fmtBytes(src.bytes)} (pgbench scale ${src.scale}, ${src.rows} accounts)`);
  const db = 'rf';
  made.push(db);
  log(`importing by ${opt.method}`);
  const pw = { SRC_PW: password };
  const c = await bpg(
    ['db', 'create', db, '--from-url', src.url, '--method', opt.method, '--password-env', 'SRC_PW', '--json'],
    pw,
  );
  if (c.code !== 0) throw new Error(`import failed: ${c.stderr.trim().split('\n').pop()}`);
  const main = JSON.parse(c.stdout);
  const results = [];
  for (let i = 1; i <= refreshes; i++) {
    // A client of main that asks all the time; its longest gap between two answers is what an application sees.
    let stop = false;
    let longest = 0;
    let failures = 0;
    const client = (async () => {
      let conn = null;
      let last = performance.now();
      while (!stop) {
        try {
          if (!conn) {
            conn = new pg.Client({ ...target(main.connection), connectionTimeoutMillis: 2000 });
            conn.on('error', () => {});
            await conn.connect();
          }
          await conn.query('SELECT 1');
          const t = performance.now();
          longest = Math.max(longest, t - last);
          last = t;
        } catch {
          failures++;
          await conn?.end().catch(() => {});
          conn = null;
        }
        await new Promise((res) => setTimeout(res, 10));
      }
      await conn?.end().catch(() => {});
    })();
    const load1 = loadavg()[0];
    log(`refresh ${i} of ${refreshes}`);
    const t0 = performance.now();
    const r = await bpg(['db', 'refresh', db, '--json'], pw);
    const ms = Math.round(performance.now() - t0);
    stop = true;
    await client;
    if (r.code !== 0) throw new Error(`refresh ${i} failed: ${r.stderr.trim().split('\n').pop()}`);
    const res = JSON.parse(r.stdout);
    const n = await withPg(
      target(res.branch.connection),
      async (q) => (await q.query('SELECT count(*)::int AS n FROM pgbench_accounts')).rows[0].n,
    );
    if (n !== src.rows) throw new Error(`refresh ${i}: main has ${n} accounts, expected ${src.rows}`);
    if (res.branch.port !== main.port) throw new Error(`refresh ${i}: main's port changed`);
    results.push({
      refresh: i,
      ms,
      interruptionMs: res.interruptionMs,
      clientGapMs: Math.round(longest),
      failedAttempts: failures,
      generation: res.generation,
      load1: Number(load1.toFixed(2)),
    });
    log(
      `refresh ${i}: ${(ms / 1000).toFixed(1)} s; main cut off ${res.interruptionMs} ms (client's longest gap ${Math.round(longest)} ms)`,
    );
  }
  const s = stats(results.map((x) => x.clientGapMs));
  const lines = [
    `refresh by ${opt.method} of a pgbench database of ${fmtBytes(src.bytes)} (scale ${src.scale}), ${cpus().length} CPUs`,
    'refresh   seconds   interruption ms   client gap ms',
    ...results.map(
      (x) =>
        `${String(x.refresh).padEnd(9)} ${(x.ms / 1000).toFixed(1).padStart(7)} ${String(x.interruptionMs).padStart(17)} ${String(x.clientGapMs).padStart(15)}`,
    ),
    `client gap: p50 ${s.p50} ms, max ${s.max} ms`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  const out = writeBenchJson('refresh', { sizeMb, method: opt.method, source: src, results });
  log(`wrote ${out}`);
}

main()
  .then(() => cleanup())
  .catch(async (e) => {
    process.stderr.write(`bench-refresh: error: ${e.message}\n`);
    await cleanup().catch(() => {});
    process.exit(1);
  });

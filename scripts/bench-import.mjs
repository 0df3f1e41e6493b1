#!/usr/bin/env node
// bench-import.mjs — how long `bpg db create --from-url` takes for a pgbench database of a given size.
//
// Starts a source PostgreSQL (a container of the image that no agent manages, on Docker's default
// bridge, password logins and replication allowed), fills it with `pgbench -i` at the scale that
// gives about --size-mb of data, then, with an agent of its own (dataset base, state folder, ports
// 47800-47819), imports it once per method: dump with 1 job, dump with 2 jobs, base backup. Each
// import is timed from spawning the CLI to main answering a query (its row count is checked), and
// the database is deleted after it (not counted). Prints a table on stdout, progress on stderr, and
// writes .bench/import-<date>.json in the checkout.
//
// Run as root on a host prepared by scripts/setup-host.sh:
//   node scripts/bench-import.mjs [--pool bpgtest] [--size-mb 1024] [--methods dump1,dump2,basebackup]
// Everything it makes is removed at the end (also after an error or Ctrl-C).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BPG_JS, bpgInit, cleanupOnInterrupt, destroyBase, writeBenchJson } from './lib/agent.mjs';
import { fmtBytes, must, run, target, withPg } from './lib/bench.mjs';
import { startSource, stopSource } from './lib/source.mjs';

const METHODS = {
  dump1: ['--method', 'dump', '--jobs', '1'],
  dump2: ['--method', 'dump', '--jobs', '2'],
  basebackup: ['--method', 'basebackup'],
};

const { values: opt } = parseArgs({
  options: {
    pool: { type: 'string', default: process.env.BPG_BENCH_POOL ?? 'bpgtest' },
    'size-mb': { type: 'string', default: '1024' },
    methods: { type: 'string', default: 'dump1,dump2,basebackup' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});
if (opt.help) {
  process.stdout.write(
    'usage: node scripts/bench-import.mjs [--pool bpgtest] [--size-mb 1024] [--methods dump1,dump2,basebackup]\n',
  );
  process.exit(0);
}
const die = (msg) => {
  process.stderr.write(`bench-import: error: ${msg}\n`);
  process.exit(1);
};
const sizeMb = Number(opt['size-mb']);
if (!Number.isInteger(sizeMb) || sizeMb < 16) die('--size-mb must be a whole number of at least 16');
const methods = opt.methods.split(',').filter(Boolean);
for (const m of methods) if (!METHODS[m]) die(`--methods: unknown method ${m} (dump1, dump2, basebackup)`);
if (!/^[A-Za-z][A-Za-z0-9_.-]*$/.test(opt.pool)) die('--pool is not a pool name');
if (process.getuid?.() !== 0) die('run as root (ZFS, Docker)');

const log = (msg) => process.stderr.write(`[bench-import ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const work = mkdtempSync('/var/tmp/bpg-bench-import-');
const config = join(work, 'config.yaml');
const base = `bench-import-${process.pid}`;
const env = { BPG_CONFIG: config };
const source = `bpg-bench-import-source-${process.pid}`;
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
  await bpgInit({ pool: opt.pool, base, stateDir: join(work, 'state'), ports: '47800-47819', env });
  const src = await startSource({ dir: join(work, 'source'), name: source, password, sizeMb, log });
  log(`source: ${fmtBytes(src.bytes)} (pgbench scale ${src.scale}, ${src.rows} accounts)`);
  const results = [];
  for (const m of methods) {
    const db = `im${m}`;
    made.push(db);
    const load1 = loadavg()[0];
    log(`importing by ${m}`);
    const t0 = performance.now();
    const r = await bpg(
      ['db', 'create', db, '--from-url', src.url, ...METHODS[m], '--password-env', 'SRC_PW', '--json'],
      {
        SRC_PW: password,
      },
    );
    if (r.code !== 0) throw new Error(`import by ${m} failed: ${r.stderr.trim().split('\n').pop()}`);
    const b = JSON.parse(r.stdout);
    const n = await withPg(
      target(b.connection),
      async (c) => (await c.query('SELECT count(*)::int AS n FROM pgbench_accounts')).rows[0].n,
    );
    const ms = Math.round(performance.now() - t0);
    if (n !== src.rows) throw new Error(`${m}: main has ${n} accounts, expected ${src.rows}`);
    const used = Number((await must('zfs', ['get', '-Hp', '-o', 'value', 'used', b.dataset])).stdout.trim());
    results.push({
      method: m,
      ms,
      mbPerSecond: Number((src.bytes / 1024 ** 2 / (ms / 1000)).toFixed(1)),
      mainBytes: used,
      load1: Number(load1.toFixed(2)),
    });
    log(`${m}: ${(ms / 1000).toFixed(1)} s`);
    await must(process.execPath, [BPG_JS, 'db', 'delete', db, '--force'], { env });
    made.pop();
  }
  const lines = [
    `import of a pgbench database of ${fmtBytes(src.bytes)} (scale ${src.scale}), ${cpus().length} CPUs`,
    'method       seconds   MB/s   main dataset',
    ...results.map(
      (x) =>
        `${x.method.padEnd(12)} ${(x.ms / 1000).toFixed(1).padStart(7)} ${String(x.mbPerSecond).padStart(6)}   ${fmtBytes(x.mainBytes)}`,
    ),
  ];
  process.stdout.write(lines.join('\n') + '\n');
  const out = writeBenchJson('import', { sizeMb, source: src, results });
  log(`wrote ${out}`);
}

main()
  .then(() => cleanup())
  .catch(async (e) => {
    process.stderr.write(`bench-import: error: ${e.message}\n`);
    await cleanup().catch(() => {});
    process.exit(1);
  });

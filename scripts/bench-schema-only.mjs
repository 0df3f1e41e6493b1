#!/usr/bin/env node
// bench-schema-only.mjs — a schema-only branch made two ways, against a full branch, on one database.
//
// Loads a pgbench database (scale --scale, default 20: ~300 MiB) plus a table of marked values into
// main (its own config, state and dataset base on an existing pool, ports --ports), then times, N runs
// each, interleaved, every branch deleted after it was measured:
//   - full:      `bpg branch create <db>/<b>` (application-consistent clone of main)
//   - fast:      the same with --fast (crash-consistent)
//   - schema:    `bpg branch create <db>/<b> --schema-only` (what BetterPG does: a clone of an empty
//                template cluster + pg_dumpall --schema-only of main restored into it)
//   - truncate:  the other way, done here by hand: a --fast clone of main, then TRUNCATE of every
//                table, large objects unlinked, pg_statistic emptied, VACUUM FULL, sequences
//                restarted, CHECKPOINT, stop, pg_resetwal (drops the old WAL), start
// and, for the two schema-only ways, searches the raw bytes of every file of the branch's dataset
// for the marked values of main's rows: a way that leaves one loses, whatever its time.
// Also reports the first schema-only branch's time (it makes the template: one initdb).
// Prints a markdown table on stdout, progress on stderr.
//
// Run as root where scripts/setup-host.sh has run (zfs-fuse or ZFS, dockerd, the local image):
//   node scripts/bench-schema-only.mjs [--pool bpgtest] [--scale 20] [--runs 3] [--ports 55500-55599] [--keep]
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BPG_JS as BPG, IMAGE, bpgInit } from './lib/agent.mjs';
import { must, run, stats, zfsDestroy } from './lib/bench.mjs';

const PG_BIN = '/usr/lib/postgresql/15/bin';

const { values: opt } = parseArgs({
  options: {
    pool: { type: 'string', default: 'bpgtest' },
    scale: { type: 'string', default: '20' },
    runs: { type: 'string', default: '3' },
    ports: { type: 'string', default: '55500-55599' },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});
if (opt.help) {
  process.stdout.write(
    'usage: node scripts/bench-schema-only.mjs [--pool bpgtest] [--scale 20] [--runs 3] [--ports 55500-55599] [--keep]\n',
  );
  process.exit(0);
}
const say = (m) => process.stderr.write(`[bench-schema-only] ${m}\n`);
const runs = Number(opt.runs);
const work = mkdtempSync('/var/tmp/bpg-bench-schema-');
const CONFIG = join(work, 'config.yaml');
const env = { BPG_CONFIG: CONFIG };
const base = `bench-schema-${process.pid}`;
const db = 'bench';
const MARK = `bpgrow${randomBytes(6).toString('hex')}`;

const bpg = (args) => must(process.execPath, [BPG, '-q', ...args], { env });
const bpgJson = async (args) => JSON.parse((await bpg([...args, '--json'])).stdout);
const psql = (uri, sql) => must(join(PG_BIN, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', uri, '-c', sql]);
const ms = (t0) => Math.round(performance.now() - t0);

/** Files under `dir` whose bytes hold `needle` (not following links). */
function filesContaining(dir, needle) {
  const n = Buffer.from(needle);
  const hits = [];
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        const size = statSync(p).size;
        const fd = openSync(p, 'r');
        try {
          const buf = Buffer.alloc(Math.min(size, 8 * 1024 * 1024) + n.length);
          let pos = 0;
          let carry = 0;
          for (;;) {
            const read = readSync(fd, buf, carry, buf.length - carry, pos);
            if (read === 0) break;
            const len = carry + read;
            if (buf.subarray(0, len).includes(n)) {
              hits.push(p);
              break;
            }
            pos += read;
            carry = Math.min(n.length - 1, len);
            buf.copy(buf, 0, len - carry, len);
          }
        } finally {
          closeSync(fd);
        }
      }
    }
  };
  walk(dir);
  return hits;
}

async function mountpoint(dataset) {
  return (await must('zfs', ['get', '-H', '-o', 'value', 'mountpoint', dataset])).stdout.trim();
}

/** The clone-then-truncate way, step by step on a --fast branch. */
async function truncateWay(name) {
  const b = await bpgJson(['branch', 'create', `${db}/${name}`, '--fast']);
  const uri = b.connection.uri;
  await psql(
    uri,
    `DO $$DECLARE r record; BEGIN
       FOR r IN SELECT format('%I.%I', n.nspname, c.relname) AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%'
       LOOP EXECUTE 'TRUNCATE ' || r.t || ' CASCADE'; END LOOP;
       FOR r IN SELECT format('%I.%I', n.nspname, c.relname) AS s FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind = 'S' LOOP EXECUTE 'ALTER SEQUENCE ' || r.s || ' RESTART'; END LOOP;
       PERFORM lo_unlink(oid) FROM pg_largeobject_metadata;
       DELETE FROM pg_statistic; DELETE FROM pg_statistic_ext_data;
     END$$`,
  );
  await psql(uri, 'VACUUM FULL');
  await psql(uri, 'CHECKPOINT');
  await bpg(['stop', `${db}/${name}`]);
  const data = join(await mountpoint(b.dataset), 'data');
  await must('docker', [
    'run',
    '--rm',
    '--network',
    'none',
    '--user',
    '999:999',
    '-v',
    `${data}:/var/lib/postgresql/data`,
    '--entrypoint',
    'pg_resetwal',
    IMAGE,
    '-f',
    '/var/lib/postgresql/data',
  ]);
  await bpg(['start', `${db}/${name}`]);
  return b;
}

async function main() {
  const [lo, hi] = opt.ports.split('-');
  const init = { pool: opt.pool, base, stateDir: join(work, 'state'), ports: `${lo}-${hi}` };
  await bpgInit({ ...init, args: ['--config', CONFIG] }).catch(async () =>
    // older `init` without --config: BPG_CONFIG names the file
    bpgInit({ ...init, env }),
  );
  try {
    say(`loading pgbench scale ${opt.scale} into ${db}/main`);
    const mainB = await bpgJson(['db', 'create', db]);
    const uri = mainB.connection.uri;
    await must(join(PG_BIN, 'pgbench'), ['-i', '-q', '-s', opt.scale, '--foreign-keys', uri]);
    await psql(
      uri,
      `CREATE TABLE people (id serial PRIMARY KEY, email text, note text);
       INSERT INTO people (email, note) SELECT '${MARK}-' || (g % 10) || '@example.com', repeat('${MARK} ', 50) FROM generate_series(1, 10000) g;
       SELECT lo_from_bytea(0, convert_to('${MARK}-lo', 'UTF8'));
       ANALYZE; CHECKPOINT;`,
    );
    const size = (
      await must(join(PG_BIN, 'psql'), ['-X', '-At', '-d', uri, '-c', 'SELECT pg_database_size(current_database())'])
    ).stdout.trim();
    say(`main holds ${(Number(size) / 1024 ** 2).toFixed(0)} MiB`);

    let t0 = performance.now();
    await bpg(['branch', 'create', `${db}/first`, '--schema-only']);
    const firstMs = ms(t0);
    await bpg(['branch', 'delete', `${db}/first`]);
    say(`first schema-only branch (makes the template): ${firstMs} ms`);

    const times = { full: [], fast: [], schema: [], truncate: [] };
    const leaks = { schema: 0, truncate: 0 };
    const leakFiles = { schema: new Set(), truncate: new Set() };
    for (let i = 0; i < runs; i++) {
      for (const way of ['full', 'fast', 'schema', 'truncate']) {
        const name = `${way}${i}`;
        t0 = performance.now();
        let b;
        if (way === 'full') b = await bpgJson(['branch', 'create', `${db}/${name}`]);
        else if (way === 'fast') b = await bpgJson(['branch', 'create', `${db}/${name}`, '--fast']);
        else if (way === 'schema') b = await bpgJson(['branch', 'create', `${db}/${name}`, '--schema-only']);
        else b = await truncateWay(name);
        await psql(b.connection.uri, 'SELECT count(*) FROM pgbench_branches');
        times[way].push(ms(t0));
        if (way === 'schema' || way === 'truncate') {
          await psql(b.connection.uri, 'CHECKPOINT');
          const mp = await mountpoint(b.dataset);
          const hits = filesContaining(mp, MARK);
          if (hits.length) leaks[way]++;
          for (const h of hits) leakFiles[way].add(h.slice(mp.length + 1).replace(/\d{4,}/g, 'N'));
        }
        say(`${way} #${i + 1}: ${times[way].at(-1)} ms`);
        await bpg(['branch', 'delete', `${db}/${name}`]);
      }
    }
    const row = (label, xs, leak) => {
      const s = stats(xs);
      return `| ${label} | ${s.p50} | ${s.mean} | ${s.min}–${s.max} | ${leak} |`;
    };
    const out = [
      `pgbench scale ${opt.scale} (${(Number(size) / 1024 ** 2).toFixed(0)} MiB), ${runs} runs each, 2 cores (shared), zfs-fuse`,
      '',
      '| way | p50 ms | mean ms | range ms | runs leaving a marked row value in a file |',
      '| --- | --- | --- | --- | --- |',
      row('full branch (application-consistent)', times.full, 'n/a (all rows)'),
      row('full branch --fast', times.fast, 'n/a (all rows)'),
      row('schema-only: template clone + pg_dumpall --schema-only (BetterPG)', times.schema, `${leaks.schema}/${runs}`),
      row('schema-only: clone + TRUNCATE + VACUUM FULL + pg_resetwal', times.truncate, `${leaks.truncate}/${runs}`),
      '',
      `first schema-only branch (initdb of the template): ${firstMs} ms`,
      leakFiles.truncate.size ? `truncate way, files with row values: ${[...leakFiles.truncate].join(', ')}` : '',
      leakFiles.schema.size ? `schema way, files with row values: ${[...leakFiles.schema].join(', ')}` : '',
    ];
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    if (!opt.keep) {
      say('cleaning up');
      const del = await run(process.execPath, [BPG, '-q', 'db', 'delete', db, '--force'], { env });
      if (del.code !== 0) say(`bpg db delete ${db} failed: ${del.stderr.trim().split('\n').pop()}`);
      // the dataset base holds the template cluster too (bpg db delete leaves it for other databases)
      if (!(await zfsDestroy(`${opt.pool}/${base}`))) say(`could not destroy ${opt.pool}/${base}: remove it by hand`);
      rmSync(work, { recursive: true, force: true });
    }
  }
}

main().catch((e) => {
  process.stderr.write(`bench-schema-only: error: ${e.message}\n`);
  process.exit(1);
});

import assert from 'node:assert/strict';
import { totalmem } from 'node:os';
import { checkResources } from '../engine/limits.js';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import { serve, type RunningServer } from '../api/serve.js';
import { loadConfig, type Config } from '../config.js';
import type { SystemStatus } from '../engine/status.js';
import type { BranchView } from '../engine/view.js';
import type { Logger } from '../log.js';
import { cli, containerName, leftovers, ok, okJson, ownStateConfig, query, sh, uniqueDb } from './helpers.js';

/**
 * Limits (branch counts, memory/CPUs, free space), a pool or quota running full mid-way, GET /metrics
 * and `bpg status`, on states of their own (slots 10 and 11): the counts and the status cover the
 * whole state, which other test files must not change under them.
 */

const TOKEN = `tok-${randomBytes(16).toString('hex')}`;
const quiet: Logger = { info() {}, warn() {}, debug() {} };
const MiB = 1024 ** 2;

function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${stderr}`);
  assert.match(lines[0]!, /^error: /);
  return lines[0]!;
}

function stateOf(cfg: Config): { databases: Record<string, unknown>; branches: Record<string, unknown> } {
  return JSON.parse(readFileSync(join(cfg.stateDir, 'state.json'), 'utf8'));
}

const walFolders = (cfg: Config) => {
  try {
    return readdirSync(join(cfg.stateDir, 'wal')).sort();
  } catch {
    return [];
  }
};

/** Nothing of `db/branch` anywhere: state, dataset, container. */
async function assertNoBranch(cfg: Config, cfgPath: string, db: string, branch: string): Promise<void> {
  assert.equal(stateOf(cfg).branches[`${db}/${branch}`], undefined, 'no state entry');
  const left = await leftovers(db, cfgPath);
  assert.ok(!left.datasets.some((d) => d.endsWith(`/${db}/${branch}`)), `no dataset: ${left.datasets.join(', ')}`);
  assert.ok(!left.containers.includes(await containerName(db, branch, cfgPath)), 'no container');
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text format, samples only (comments checked separately). */
function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

async function http(base: string, method: string, path: string, o: { token?: string | null; body?: unknown } = {}) {
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
  return { status: res.status, text, json, contentType: res.headers.get('content-type') ?? '' };
}

function inspect(container: string): { Memory: number; NanoCpus: number } {
  return JSON.parse(sh('docker', ['inspect', container]))[0].HostConfig;
}

describe('limits, /metrics and status', () => {
  const cfgPath = ownStateConfig('limits', 10, (raw) => {
    raw.limits = { branchesPerDatabase: 3, branchesTotal: 4, maxMemory: '1g', maxCpus: 1.5, minFreeBytes: '1k' };
  });
  const env = { BPG_CONFIG: cfgPath };
  const a = uniqueDb('lma');
  const b = uniqueDb('lmb');
  let cfg: Config;
  let srv: RunningServer;

  before(async () => {
    cfg = await loadConfig(cfgPath);
    srv = await serve(cfg, { listen: '127.0.0.1:0', log: quiet, handleSignals: false, env: { BPG_API_TOKEN: TOKEN } });
  });
  after(async () => {
    await srv?.close();
    for (const d of [a, b]) await cli(['db', 'delete', d, '--force'], env);
  });

  it('--memory and --cpus reach the container (CLI and API), and show in the branch', async () => {
    const main = await okJson(['db', 'create', a, '--memory', '320m', '--cpus', '0.5'], env);
    assert.equal(main.memoryBytes, 320 * MiB);
    assert.equal(main.cpus, 0.5);
    assert.deepEqual([inspect(main.container).Memory, inspect(main.container).NanoCpus], [320 * MiB, 5e8]);

    const b1 = await okJson(['branch', 'create', `${a}/b1`, '--fast', '--memory', '1g', '--cpus', '1.5'], env);
    assert.deepEqual([inspect(b1.container).Memory, inspect(b1.container).NanoCpus], [1024 * MiB, 1.5e9]);

    const r = await http(srv.url, 'PUT', `/v1/databases/${a}/branches/b2`, {
      body: { fast: true, memory: '256m', cpus: 0.25 },
    });
    assert.equal(r.status, 201, r.text);
    const b2 = r.json.branch as BranchView;
    assert.deepEqual([b2.memoryBytes, b2.cpus], [256 * MiB, 0.25]);
    assert.deepEqual([inspect(b2.container).Memory, inspect(b2.container).NanoCpus], [256 * MiB, 2.5e8]);

    // Without them: the config's defaults.
    const db = await http(srv.url, 'POST', '/v1/databases', { body: { name: b } });
    assert.equal(db.status, 201, db.text);
    const bMain = (db.json.branches as BranchView[])[0]!;
    assert.deepEqual(
      [inspect(bMain.container).Memory, inspect(bMain.container).NanoCpus],
      [cfg.postgres.memory, cfg.postgres.cpus * 1e9],
    );
  });

  it("without limits.maxMemory, memory above the host's is still refused (a typo, not a limit)", async () => {
    const open = { ...cfg, limits: { ...cfg.limits, maxMemory: null } };
    assert.throws(() => checkResources(open, { memory: totalmem() + 1024 ** 3 }), /memory .* is more than this host's/);
    checkResources(open, { memory: 256 * 1024 ** 2 });
  });

  it('memory and CPUs above limits.maxMemory / limits.maxCpus are refused, naming the limit, and make nothing', async () => {
    for (const [flags, key] of [
      [['--memory', '2g'], 'limits.maxMemory'],
      [['--cpus', '1.6'], 'limits.maxCpus'],
    ] as const) {
      const r = await cli(['branch', 'create', `${a}/big`, ...flags], env);
      assert.equal(r.code, 4);
      assert.match(oneLine(r.stderr), new RegExp(`above the limit ${key.replace('.', '\\.')}`));
      const d = await cli(['db', 'create', uniqueDb('lmx'), ...flags], env);
      assert.match(oneLine(d.stderr), new RegExp(key.replace('.', '\\.')));
    }
    const api = await http(srv.url, 'PUT', `/v1/databases/${a}/branches/big`, { body: { memory: 3 * 1024 ** 3 } });
    assert.equal(api.status, 409, api.text);
    assert.equal(api.json.error.code, 'conflict');
    assert.match(api.json.error.message, /memory 3 GiB is above the limit limits\.maxMemory \(1 GiB\)/);
    const cpus = await http(srv.url, 'POST', '/v1/databases', { body: { name: uniqueDb('lmx'), cpus: 2 } });
    assert.equal(cpus.status, 409, cpus.text);
    assert.match(cpus.json.error.message, /limits\.maxCpus \(1\.5\)/);
    // Nonsense is a 400 / invalid, not a limit.
    for (const body of [{ memory: '10m' }, { memory: 'lots' }, { cpus: 0 }]) {
      const bad = await http(srv.url, 'PUT', `/v1/databases/${a}/branches/big`, { body });
      assert.equal(bad.status, 400, `${JSON.stringify(body)}: ${bad.text}`);
    }
    assert.match(
      oneLine((await cli(['branch', 'create', `${a}/big`, '--cpus', 'two'], env)).stderr),
      /--cpus must be a number/,
    );
    await assertNoBranch(cfg, cfgPath, a, 'big');
  });

  it('limits.branchesPerDatabase and limits.branchesTotal (main counted) refuse with 409 / one line, and make nothing', async () => {
    // a: main, b1, b2 = 3 = branchesPerDatabase; b: main; 4 in all = branchesTotal.
    const walBefore = walFolders(cfg);
    const r = await cli(['branch', 'create', `${a}/b3`], env);
    assert.equal(r.code, 4);
    assert.equal(
      oneLine(r.stderr),
      `error: limit limits.branchesPerDatabase (3) reached for database '${a}': it has 3 branches (main included)`,
    );
    const put = await http(srv.url, 'PUT', `/v1/databases/${a}/branches/b3`, {});
    assert.equal(put.status, 409);
    assert.match(put.json.error.message, /^limit limits\.branchesPerDatabase \(3\) reached for database/);
    await assertNoBranch(cfg, cfgPath, a, 'b3');

    const t = await cli(['branch', 'create', `${b}/x`], env);
    assert.match(oneLine(t.stderr), /limit limits\.branchesTotal \(4\) reached: 4 branches exist/);
    const other = uniqueDb('lmc');
    const dbr = await http(srv.url, 'POST', '/v1/databases', { body: { name: other } });
    assert.equal(dbr.status, 409);
    assert.match(dbr.json.error.message, /limits\.branchesTotal \(4\)/);
    assert.equal(stateOf(cfg).databases[other], undefined);
    assert.deepEqual(await leftovers(other, cfgPath), { datasets: [], containers: [] });
    await assertNoBranch(cfg, cfgPath, b, 'x');
    assert.deepEqual(walFolders(cfg), walBefore, 'no WAL folder made');

    // An existing branch is still answered by PUT (it is not a new one).
    const again = await http(srv.url, 'PUT', `/v1/databases/${a}/branches/b1`, {});
    assert.equal(again.status, 200, again.text);
  });

  it('creates are refused while the pool has less free than limits.minFreeBytes', async () => {
    const raw = YAML.parse(readFileSync(cfgPath, 'utf8'));
    raw.limits = { ...raw.limits, branchesTotal: null, branchesPerDatabase: null, minFreeBytes: '100t' };
    const strict = join(cfg.stateDir, 'strict.yaml');
    writeFileSync(strict, YAML.stringify(raw), { mode: 0o600 });
    const before = JSON.stringify(stateOf(cfg));
    for (const args of [
      ['db', 'create', uniqueDb('lmd')],
      ['branch', 'create', `${b}/y`],
    ]) {
      const r = await cli(args, { BPG_CONFIG: strict });
      assert.equal(r.code, 4);
      assert.match(
        oneLine(r.stderr),
        new RegExp(
          `pool ${cfg.zfs.pool} has [0-9.]+ GiB free for ${cfg.zfs.pool}/${cfg.zfs.datasetBase}, below limits\\.minFreeBytes \\(100 TiB\\)`,
        ),
      );
    }
    assert.equal(JSON.stringify(stateOf(cfg)), before);
    await assertNoBranch(cfg, cfgPath, b, 'y');
  });

  it('GET /metrics: Prometheus text with real values, counts going up, 401 without a token', async () => {
    // Some archived WAL on a's main, to see its bytes.
    const main = await okJson(['branch', 'get', `${a}/main`], env);
    await query(main, 'CREATE TABLE w AS SELECT g FROM generate_series(1, 1000) g');
    await query(main, 'SELECT pg_switch_wal()');
    const walDir = join(cfg.stateDir, 'wal', (stateOf(cfg).branches[`${a}/main`] as { id: string }).id);
    const deadline = Date.now() + 30_000;
    // Archived means copied in full (a folder listing could catch a copy half-way).
    while (
      !(await query(main, 'SELECT last_archived_wal FROM pg_stat_archiver'))[0]!.last_archived_wal &&
      Date.now() < deadline
    ) {
      await new Promise((r) => setTimeout(r, 200));
    }
    const walBytes = readdirSync(walDir).reduce((n, f) => n + statSync(join(walDir, f)).size, 0);
    assert.ok(walBytes > 0, 'a segment was archived');

    const denied = await http(srv.url, 'GET', '/metrics', { token: null });
    assert.equal(denied.status, 401);
    assert.equal(denied.json.error.code, 'unauthorized');

    const first = await http(srv.url, 'GET', '/metrics');
    assert.equal(first.status, 200);
    assert.match(first.contentType, /^text\/plain; version=0\.0\.4/);
    assert.match(first.text, /^# HELP bpg_branches /m);
    assert.match(first.text, /^# TYPE bpg_operation_duration_seconds histogram$/m);
    const m = parseMetrics(first.text);
    // The archive is a dataset of its own: its bytes are what ZFS counts for it.
    const walDataset = `${cfg.zfs.pool}/${cfg.zfs.datasetBase}/_wal/${(stateOf(cfg).branches[`${a}/main`] as { id: string }).id}`;
    const walUsed = Number(sh('zfs', ['get', '-Hp', '-o', 'value', 'used', walDataset]).trim());
    const reported = value(m, 'bpg_branch_wal_bytes', { database: a, branch: 'main' })!;
    // Compressed, and accounted by ZFS a few seconds late: the dataset read just after the scrape, within a segment.
    assert.ok(
      reported > 0 && Math.abs(reported - walUsed) <= 16 * 1024 * 1024,
      `${reported} bytes: files ${walBytes}, dataset ${walUsed}`,
    );
    assert.equal(value(m, 'bpg_databases'), 2);
    assert.equal(value(m, 'bpg_branches', { database: a, status: 'running' }), 3);
    assert.equal(value(m, 'bpg_branches', { database: b, status: 'running' }), 1);
    assert.equal(value(m, 'bpg_docker_up'), 1);
    for (const br of ['main', 'b1', 'b2']) {
      assert.ok(value(m, 'bpg_branch_used_bytes', { database: a, branch: br })! > 0, `${br} used`);
      assert.ok(value(m, 'bpg_branch_wal_bytes', { database: a, branch: br })! >= 0, `${br} wal`);
    }
    const pool = { pool: cfg.zfs.pool };
    const [size, free, alloc] = ['size', 'free', 'allocated'].map((k) => value(m, `bpg_pool_${k}_bytes`, pool)!);
    assert.ok(free! > 0 && alloc! > 0 && size === free! + alloc!, `${size} = ${free} + ${alloc}`);
    assert.ok(value(m, 'bpg_dataset_base_used_bytes', { dataset: `${cfg.zfs.pool}/${cfg.zfs.datasetBase}` })! > 0);
    assert.equal(value(m, 'bpg_limit', { limit: 'branchesTotal' }), 4);
    assert.equal(value(m, 'bpg_limit', { limit: 'maxMemory' }), 1024 ** 3);
    assert.ok(value(m, 'process_cpu_seconds_total')! > 0, 'process default metrics');
    // The limit refusals above went through the route runner.
    assert.ok(value(m, 'bpg_operations_total', { operation: 'putBranch', result: 'conflict' })! >= 2);
    assert.ok(value(m, 'bpg_operations_total', { operation: 'putBranch', result: 'ok' })! >= 1);
    assert.ok(value(m, 'bpg_operations_total', { operation: 'createDatabase', result: 'ok' })! >= 1);

    const stopsBefore = value(m, 'bpg_operations_total', { operation: 'stopBranch', result: 'ok' }) ?? 0;
    const conflictsBefore = value(m, 'bpg_operation_duration_seconds_count', {
      operation: 'putBranch',
      result: 'conflict',
    })!;
    assert.equal((await http(srv.url, 'POST', `/v1/databases/${a}/branches/b2/stop`)).status, 200);
    assert.equal((await http(srv.url, 'PUT', `/v1/databases/${a}/branches/b9`)).status, 409);
    const m2 = parseMetrics((await http(srv.url, 'GET', '/metrics')).text);
    assert.equal(value(m2, 'bpg_operations_total', { operation: 'stopBranch', result: 'ok' }), stopsBefore + 1);
    assert.equal(
      value(m2, 'bpg_operation_duration_seconds_count', { operation: 'putBranch', result: 'conflict' }),
      conflictsBefore + 1,
    );
    assert.ok(value(m2, 'bpg_operation_duration_seconds_sum', { operation: 'stopBranch', result: 'ok' })! > 0);
    assert.equal(value(m2, 'bpg_branches', { database: a, status: 'running' }), 2);
    assert.equal(value(m2, 'bpg_branches', { database: a, status: 'stopped' }), 1);
    await ok(['start', `${a}/b2`], env);
  });

  it('GET /metrics without a token when api.metricsWithoutToken is set; the rest still needs one', async () => {
    const open = await serve(
      { ...cfg, api: { ...cfg.api, metricsWithoutToken: true } },
      { listen: '127.0.0.1:0', log: quiet, handleSignals: false, env: { BPG_API_TOKEN: TOKEN } },
    );
    try {
      const r = await http(open.url, 'GET', '/metrics', { token: null });
      assert.equal(r.status, 200);
      assert.equal(value(parseMetrics(r.text), 'bpg_databases'), 2);
      assert.equal((await http(open.url, 'GET', '/v1/databases', { token: null })).status, 401);
    } finally {
      await open.close();
    }
  });

  it('bpg status --json: pool, counts, limits, each branch with size, WAL and expiry; and for people', async () => {
    const s = await okJson<SystemStatus>(['status'], env);
    assert.equal(s.pool!.pool, cfg.zfs.pool);
    assert.equal(s.pool!.sizeBytes, s.pool!.freeBytes + s.pool!.allocatedBytes);
    assert.ok(s.pool!.usedPercent >= 0 && s.pool!.usedPercent <= 100);
    assert.equal(s.datasetBase!.dataset, `${cfg.zfs.pool}/${cfg.zfs.datasetBase}`);
    assert.ok(s.datasetBase!.usedBytes > 0);
    assert.equal(s.datasetBase!.quotaBytes, null);
    assert.deepEqual(s.docker, { reachable: true });
    assert.deepEqual(s.counts, { databases: 2, branches: 4, byStatus: { running: 4 } });
    assert.deepEqual(s.limits, {
      branchesPerDatabase: 3,
      branchesTotal: 4,
      maxMemory: 1024 ** 3,
      maxCpus: 1.5,
      maxDisk: null,
      minFreeBytes: 1024,
      concurrentCreates: 4,
      createQueueLength: 64,
      createQueueTimeout: 60_000,
    });
    assert.deepEqual(
      s.branches.map((x) => x.name),
      [`${a}/b1`, `${a}/b2`, `${a}/main`, `${b}/main`].sort(),
    );
    for (const x of s.branches) {
      assert.ok(x.usedBytes! > 0, `${x.name} usedBytes`);
      assert.ok(x.walBytes >= 0);
      assert.equal(x.status, 'running');
      assert.equal(x.expiresAt, null);
      assert.equal(x.protected, x.branch === 'main');
      assert.ok(!('password' in x) && !('connection' in x), 'no secrets in status');
    }
    assert.equal(s.branches.find((x) => x.name === `${a}/b2`)!.memoryBytes, 256 * MiB);

    const human = (await ok(['status'], env)).stdout;
    assert.match(human, new RegExp(`^pool ${cfg.zfs.pool}: .+ used \\([0-9.]+%\\), .+ free$`, 'm'));
    assert.match(human, /^databases: 2, branches: 4 \(4 running\)$/m);
    assert.match(
      human,
      /^limits: branches 4\/4 in total, 3 per database; memory up to 1\.0 GiB, cpus up to 1\.5; creates need 1\.0 KiB free$/m,
    );
    assert.match(human, /^NAME\s+STATUS\s+USED\s+WAL\s+EXPIRES\s+PORT$/m);
    // USED (main has no quota by default), WAL (its archive's quota after 'of')
    assert.match(
      human,
      new RegExp(
        `^${a}/main\\s+running\\s+[0-9.]+ [KMG]iB\\s+[0-9.]+ [KMG]?i?B of [0-9.]+ GiB\\s+never \\(protected\\)\\s+\\d+$`,
        'm',
      ),
    );
    assert.match(human, new RegExp(`^${a}/b1\\s+running\\s+[0-9.]+ [KMG]iB of 20 GiB\\s+`, 'm'));
  });
});

/** Waits until ZFS's numbers for `ds` stop moving (zfs-fuse commits every few seconds). */
async function settledUsed(ds: string): Promise<number> {
  let last = -1;
  for (let i = 0; i < 20; i++) {
    const now = Number(sh('zfs', ['get', '-Hp', '-o', 'value', 'used', ds]).trim());
    if (now === last) return now;
    last = now;
    await new Promise((r) => setTimeout(r, 3000));
  }
  return last;
}

describe('a full pool or quota mid-way: a clear error, nothing half-made', () => {
  const cfgPath = ownStateConfig('quota', 11, (raw) => {
    raw.limits = { minFreeBytes: '1k' };
  });
  const env = { BPG_CONFIG: cfgPath };
  const db = uniqueDb('lmq');
  let cfg: Config;
  let root: string;

  before(async () => {
    cfg = await loadConfig(cfgPath);
    root = `${cfg.zfs.pool}/${cfg.zfs.datasetBase}`;
    // The dataset base with a quota too small for a database (initdb alone writes more).
    sh('zfs', ['create', '-o', 'quota=6M', root]);
  });
  after(async () => {
    sh('zfs', ['set', 'quota=none', root]);
    await cli(['db', 'delete', db, '--force'], env);
    await cli(['db', 'delete', `${db}x`, '--force'], env);
  });

  it('a database that cannot fit: "out of space", and no dataset, container, state entry or WAL folder left', async () => {
    const r = await cli(['-q', 'db', 'create', `${db}x`], env);
    assert.equal(r.code, 4);
    const line = oneLine(r.stderr);
    assert.match(
      line,
      new RegExp(
        `^error: out of space: pool ${cfg.zfs.pool} or a quota on ${root} is full \\(db create failed at step '[a-z ]+': .*(quota exceeded|No space left).*\\); every finished step was undone$`,
      ),
    );
    assert.deepEqual(await leftovers(`${db}x`, cfgPath), { datasets: [], containers: [] });
    assert.deepEqual(stateOf(cfg).databases, {});
    assert.deepEqual(walFolders(cfg), []);
  });

  it('a branch of a database that filled its quota: "out of space", nothing left, the parent data intact', async () => {
    sh('zfs', ['set', 'quota=none', root]);
    const main = await okJson(['db', 'create', db], env);
    await query(main, 'CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g');
    await query(main, 'CHECKPOINT');
    // Full but for a sliver: enough for the pre-check (limits.minFreeBytes 1k), not for a branch.
    await settledUsed(root);
    for (let i = 0; ; i++) {
      // ZFS refuses a quota below what is used; `used` may still grow a little while it commits.
      const used = Number(sh('zfs', ['get', '-Hp', '-o', 'value', 'used', root]).trim());
      try {
        sh('zfs', ['set', `quota=${used + 256 * 1024}`, root]);
        break;
      } catch (e) {
        if (i >= 10) throw e;
        await new Promise((res) => setTimeout(res, 2000));
      }
    }
    const walBefore = walFolders(cfg);
    const snapsBefore = sh('zfs', ['list', '-H', '-o', 'name', '-t', 'snapshot', '-r', root]);

    const r = await cli(['-q', 'branch', 'create', `${db}/b`], env);
    assert.equal(r.code, 4, r.stderr);
    assert.match(
      oneLine(r.stderr),
      new RegExp(
        `^error: out of space: pool ${cfg.zfs.pool} or a quota on ${root} is full \\(branch create failed at step '[a-z ]+': .*\\); every finished step was undone$`,
      ),
    );
    await assertNoBranch(cfg, cfgPath, db, 'b');
    assert.equal(
      sh('zfs', ['list', '-H', '-o', 'name', '-t', 'snapshot', '-r', root]),
      snapsBefore,
      'no origin snapshot left',
    );
    assert.deepEqual(walFolders(cfg), walBefore, 'no WAL folder left');

    // The parent may have crashed on its own full disk meanwhile; with room again it has every row.
    sh('zfs', ['set', 'quota=none', root]);
    const deadline = Date.now() + 120_000;
    for (;;) {
      try {
        assert.deepEqual(await query(main, 'SELECT count(*)::int AS n, sum(id)::bigint AS s FROM t'), [
          { n: 5000, s: '12502500' },
        ]);
        break;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((res) => setTimeout(res, 2000));
      }
    }
    // And branching works again.
    await ok(['branch', 'create', `${db}/b`, '--fast'], env);
  });
});

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import type { WalInfo } from '../engine/wal.js';
import type { BranchView } from '../engine/view.js';
import { cli, okJson, ownStateConfig, query, queryOne, sh, uniqueDb } from './helpers.js';

/**
 * Issue 11, point 4: a branch cannot fill the pool nor the host's disk. Every branch dataset has a
 * ZFS quota (postgres.diskQuota, or --disk), every WAL archive is a dataset with a quota of its own
 * (postgres.walQuota). A branch that fills either gets PostgreSQL's own error and the agent's
 * status says so, while main and every other branch keep working. Small quotas here, real writes.
 */

const MiB = 1024 * 1024;
/** ~20 MiB of random (incompressible: the datasets are compressed) bytes per call. */
const FILL = `INSERT INTO fill SELECT (SELECT decode(string_agg(md5(random()::text), ''), 'hex') FROM generate_series(1, 16) WHERE g > 0) FROM generate_series(1, 80000) g`;

describe('disk and WAL quotas', () => {
  const path = ownStateConfig('quota2', 18, (raw) => {
    raw.postgres.diskQuota = '100m';
    raw.postgres.walQuota = '96m';
    raw.limits = { ...(raw.limits ?? {}), maxDisk: '1g' };
  });
  const env = { BPG_CONFIG: path };
  const db = uniqueDb('qu');
  const run = (args: string[]) => cli(args, env);
  const get = (name: string) => okJson(['branch', 'get', `${db}/${name}`], env);
  const statePath = () => `${YAML.parse(readFileSync(path, 'utf8')).stateDir}/state.json`;
  const quotaOf = (ds: string) => Number(sh('zfs', ['get', '-Hp', '-o', 'value', 'quota', ds]).trim());

  before(async () => {
    assert.equal((await run(['db', 'create', db])).code, 0);
    await query(await get('main'), 'CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g');
    assert.equal((await run(['branch', 'create', `${db}/small`, '--fast'])).code, 0);
    assert.equal((await run(['branch', 'create', `${db}/big`, '--fast', '--disk', '400m'])).code, 0);
  });
  after(() => run(['db', 'delete', db, '--force']));

  it('every branch dataset gets its quota (postgres.diskQuota or --disk), main none; --disk is checked', async () => {
    const [main, small, big] = await Promise.all([get('main'), get('small'), get('big')]);
    assert.equal(quotaOf(main.dataset), 0, 'main has no quota by default');
    assert.equal(quotaOf(small.dataset), 100 * MiB);
    assert.equal(quotaOf(big.dataset), 400 * MiB);
    assert.equal(small.diskQuotaBytes, 100 * MiB);
    assert.equal(big.diskQuotaBytes, 400 * MiB);
    assert.equal(small.walQuotaBytes, 96 * MiB);
    const above = await run(['branch', 'create', `${db}/huge`, '--disk', '2g']);
    assert.equal(above.code, 4);
    assert.match(above.stderr, /^error: disk 2 GiB is above the limit limits\.maxDisk \(1 GiB\)\n$/);
    const below = await run(['branch', 'create', `${db}/tiny`, '--disk', '1m']);
    assert.match(below.stderr, /^error: disk must be at least 64 MiB/);
    const bad = await run(['branch', 'create', `${db}/odd`, '--disk', 'lots']);
    assert.match(bad.stderr, /^error: --disk: 'lots' is not a size/);
    const list = await okJson<BranchView[]>(['branch', 'list', db], env);
    assert.deepEqual(list.map((b) => b.branch).sort(), ['big', 'main', 'small'], 'refused creates made nothing');
  });

  it("a branch that fills its quota gets PostgreSQL's out-of-space error; main and the others keep working; status says so", async () => {
    const small = await get('small');
    // Unlogged: the table's own pages hit the quota (PostgreSQL's "could not extend file ... Disk
    // quota exceeded", and the branch goes on), not its WAL writer (a PANIC, and a branch that cannot
    // start again until space is freed: documented, and not what this checks).
    await query(small, 'CREATE UNLOGGED TABLE fill (b bytea)');
    let err: Error | null = null;
    for (let i = 0; i < 20 && !err; i++) {
      try {
        await query(small, FILL);
      } catch (e) {
        err = e as Error;
      }
    }
    assert.ok(err, 'the writes stopped at the quota');
    assert.match(err!.message, /Disk quota exceeded|No space left on device/, err!.message);
    // The others write as before.
    const main = await get('main');
    await query(main, 'INSERT INTO t SELECT g FROM generate_series(1001, 2000) g');
    assert.equal((await queryOne<{ n: number }>(main, 'SELECT count(*)::int AS n FROM t')).n, 2000);
    const big = await get('big');
    await query(big, 'CREATE TABLE fill (b bytea)');
    await query(big, FILL);
    // The agent says which branch is full (ZFS accounts the last writes within a few seconds).
    let view = await get('small');
    for (let i = 0; i < 60 && !view.diskFull; i++) {
      await new Promise((r) => setTimeout(r, 500));
      view = await get('small');
    }
    assert.equal(view.diskFull, true, `used ${view.usedBytes} of ${view.diskQuotaBytes}`);
    assert.equal((await get('big')).diskFull, false);
    const status = await run(['status']);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, new RegExp(`${db}/small: its disk quota is used up`));
    assert.match(status.stdout, /\(FULL\)/);
    const detail = await run(['branch', 'get', `${db}/small`]);
    assert.match(detail.stdout, /used\s+\d[\d.]* MiB of 100 MiB \(FULL\)/);
  });

  it('a branch whose archived WAL fills its WAL quota: archiving fails for it alone, wal info says why', async () => {
    const big = await get('big');
    // ~20 MiB of WAL per fill, archived into a 96 MiB archive: full after a handful.
    let info: WalInfo | undefined;
    for (let i = 0; i < 12; i++) {
      await query(big, 'TRUNCATE fill');
      await query(big, FILL);
      await query(big, 'SELECT pg_switch_wal()');
      [info] = await okJson<WalInfo[]>(['wal', 'info', `${db}/big`], env);
      if (info?.full || info?.lastFailure) break;
    }
    const deadline = Date.now() + 60_000;
    while (!(info?.full && info.lastFailure) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 1000));
      [info] = await okJson<WalInfo[]>(['wal', 'info', `${db}/big`], env);
    }
    assert.equal(info?.full, true, JSON.stringify(info));
    assert.ok(info?.lastFailure, 'the archiver reports a failure');
    assert.equal(info!.quotaBytes, 96 * MiB);
    assert.match(info!.lastFailure!.reason ?? '', /the WAL archive is full/);
    const walUsed = Number(
      sh('zfs', [
        'get',
        '-Hp',
        '-o',
        'value',
        'used',
        `${big.dataset.split('/').slice(0, -2).join('/')}/_wal/${JSON.parse(sh('cat', [statePath()])).branches[`${db}/big`].id}`,
      ]).trim(),
    );
    // ZFS enforces a quota per transaction group: it may overshoot by the writes in flight (KiBs).
    assert.ok(walUsed <= 97 * MiB, `the archive holds ${walUsed} bytes, at its quota`);
    const human = await run(['wal', 'info', `${db}/big`]);
    assert.match(human.stderr, new RegExp(`warning: ${db}/big: archiving \\S+ failed: the WAL archive is full`));
    assert.equal((await get('big')).walFull, true);
    // main archives as before, into its own archive.
    const main = await get('main');
    const before = (await queryOne<{ a: string | null }>(main, 'SELECT last_archived_wal AS a FROM pg_stat_archiver'))
      .a;
    await query(main, 'SELECT txid_current()');
    await query(main, 'SELECT pg_switch_wal()');
    const until = Date.now() + 60_000;
    let now = before;
    while (now === before && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 300));
      now = (await queryOne<{ a: string | null }>(main, 'SELECT last_archived_wal AS a FROM pg_stat_archiver')).a;
    }
    assert.notEqual(now, before, "main's archiving goes on");
    assert.equal((await get('main')).walFull, false);
  });
});

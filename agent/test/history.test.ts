import assert from 'node:assert/strict';
import { readdirSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SnapshotView } from '../engine/snapshots.js';
import type { WalCleanup, WalInfo } from '../engine/wal.js';
import type { BranchView, DatabaseView } from '../engine/view.js';
import { cli, config, leftovers, ok, okJson, query, queryOne, uniqueDb } from './helpers.js';

const db = uniqueDb('hi');
let main: BranchView;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const walDirOf = async (b: BranchView) => {
  const { sh } = await import('./helpers.js');
  const inspect = JSON.parse(sh('docker', ['inspect', b.container]))[0];
  return inspect.Mounts.find((m: { Destination: string }) => m.Destination.endsWith('wal-archive')).Source as string;
};

function oneLine(stderr: string) {
  assert.equal(stderr.trim().split('\n').length, 1, stderr);
  assert.match(stderr, /^error: /);
}

describe('history: snapshots, WAL, point-in-time recovery, reset, rename', () => {
  let snap: SnapshotView;
  let t1 = '';

  before(async () => {
    main = await okJson(['db', 'create', db]);
    await query(main, 'CREATE TABLE events (id int PRIMARY KEY, phase text)');
    await query(main, "INSERT INTO events VALUES (1, 'before snapshot')");
  });
  after(async () => {
    await cli(['db', 'delete', db, '--force']);
    await cli(['db', 'delete', `${db}r`, '--force']);
  });

  it('takes an application-consistent snapshot and lists it', async () => {
    snap = await okJson<SnapshotView>(['snapshot', 'create', `${db}/main`, '--label', 'nightly']);
    assert.match(snap.id, /^snap-[0-9a-f]{8}$/);
    assert.equal(snap.branch, `${db}/main`);
    assert.equal(snap.label, 'nightly');
    assert.equal(snap.consistency, 'application');
    const list = await okJson<SnapshotView[]>(['snapshot', 'list', `${db}/main`]);
    assert.deepEqual(
      list.map((s) => s.id),
      [snap.id],
    );
    assert.ok(typeof list[0]!.usedBytes === 'number');
  });

  it('recovers to a point in time: rows committed before the target are there, rows after are not', async () => {
    await query(main, "INSERT INTO events VALUES (2, 'before target')");
    await sleep(1100);
    t1 = new Date().toISOString();
    await sleep(1100);
    await query(main, "INSERT INTO events VALUES (3, 'after target')");
    const past = await okJson(['branch', 'create', `${db}/past`, '--pitr', t1]);
    assert.equal(past.parent, `${db}/main`);
    assert.deepEqual(await query(past, 'SELECT id FROM events ORDER BY id'), [{ id: 1 }, { id: 2 }]);
    assert.notEqual(past.connection.password, main.connection.password);
    // it writes, on a timeline of its own, and archives into its own folder
    await query(past, "INSERT INTO events VALUES (100, 'on past')");
    assert.notEqual(await walDirOf(past), await walDirOf(main));
  });

  it('a second PITR branch from the same source disturbs neither the first nor the source archive', async () => {
    const mainArchive = await walDirOf(main);
    const mainFilesBefore = readdirSync(mainArchive);
    const past2 = await okJson(['branch', 'create', `${db}/past2`, '--pitr', t1, '--from', `${db}/main`]);
    assert.deepEqual(await query(past2, 'SELECT id FROM events ORDER BY id'), [{ id: 1 }, { id: 2 }]);
    const past = await okJson(['branch', 'get', `${db}/past`]);
    assert.deepEqual(await query(past, 'SELECT id FROM events ORDER BY id'), [{ id: 1 }, { id: 2 }, { id: 100 }]);
    for (const b of [past, past2]) await query(b, 'SELECT pg_switch_wal()');
    await sleep(1500);
    const mainFilesAfter = readdirSync(mainArchive);
    // the source's archive only grew with its own segments: no timeline-2 history or segments from the branches
    for (const f of mainFilesBefore) assert.ok(mainFilesAfter.includes(f), `${f} vanished from the source archive`);
    assert.ok(!mainFilesAfter.some((f) => /^00000002/.test(f)), `branch WAL in the source archive: ${mainFilesAfter}`);
    assert.ok(
      readdirSync(await walDirOf(past2)).some((f) => f.endsWith('.history')),
      'the PITR branch archives its own timeline',
    );
    assert.deepEqual(await query(main, 'SELECT id FROM events ORDER BY id'), [{ id: 1 }, { id: 2 }, { id: 3 }]);
  });

  it('branches from a kept snapshot', async () => {
    const b = await okJson(['branch', 'create', `${db}/fromsnap`, '--from-snapshot', snap.id]);
    assert.deepEqual(await query(b, 'SELECT id FROM events ORDER BY id'), [{ id: 1 }]);
    const list = await okJson<SnapshotView[]>(['snapshot', 'list']);
    assert.deepEqual(list.find((s) => s.id === snap.id)?.usedBy.sort(), [
      `${db}/fromsnap`,
      `${db}/past`,
      `${db}/past2`,
    ]);
  });

  it('refuses to delete a snapshot a branch was cloned from, naming the branches', async () => {
    const r = await cli(['snapshot', 'delete', snap.id]);
    assert.equal(r.code, 4);
    oneLine(r.stderr);
    assert.match(r.stderr, new RegExp(`in use: branch\\(es\\) .*${db}/fromsnap`));
  });

  it('refuses bad times with the recoverable range, and leaves nothing behind', async () => {
    const before = await leftovers(db);
    const cases: Array<[string, RegExp]> = [
      ['yesterday-ish', /invalid time/],
      ['2026-13-45T99:00:00Z', /invalid time/],
      ['2026-10-07T14:30:00', /invalid time.*time zone/],
      [new Date(Date.now() + 3600_000).toISOString(), /in the future; recoverable range for .*main: .* \.\. now/],
      ['2000-01-01T00:00:00Z', /before the oldest snapshot; recoverable range/],
    ];
    for (const [t, re] of cases) {
      const r = await cli(['branch', 'create', `${db}/bad`, '--pitr', t]);
      assert.equal(r.code, 2, t);
      oneLine(r.stderr);
      assert.match(r.stderr, re);
    }
    const noSnap = await cli(['branch', 'create', `${db}/bad`, '--pitr', '1 minute ago', '--from', `${db}/fromsnap`]);
    assert.match(noSnap.stderr, /has no snapshot to recover from/);
    const both = await cli(['branch', 'create', `${db}/bad`, '--pitr', '1 minute ago', '--from-snapshot', snap.id]);
    assert.match(both.stderr, /either --from-snapshot or --pitr/);
    const badId = await cli(['snapshot', 'delete', '../../etc']);
    assert.match(badId.stderr, /invalid snapshot id/);
    assert.deepEqual(await leftovers(db), before);
    const names = (await okJson<BranchView[]>(['branch', 'list', db])).map((b) => b.name);
    assert.ok(!names.includes(`${db}/bad`));
  });

  it('reports WAL per branch and cleans up only what no kept snapshot needs', async () => {
    // more WAL after the snapshot, then a second snapshot, then age everything by ten days
    for (let i = 0; i < 3; i++) {
      await query(main, `INSERT INTO events VALUES (${10 + i}, 'wal ${i}')`);
      await query(main, 'SELECT pg_switch_wal()');
    }
    await sleep(1500);
    const info = (await okJson<WalInfo[]>(['wal', 'info', `${db}/main`]))[0]!;
    assert.ok(info.segments >= 4, `segments ${info.segments}`);
    assert.deepEqual(info.gaps, []);
    assert.equal(info.lastFailure, null);
    assert.ok(info.oldest && info.newest && info.oldest.segment < info.newest.segment);
    const dir = await walDirOf(main);
    const old = new Date(Date.now() - 10 * 864e5);
    for (const f of readdirSync(dir)) utimesSync(join(dir, f), old, old);
    const all = readdirSync(dir)
      .filter((f) => /^[0-9A-F]{24}$/.test(f))
      .sort();

    const dry = await okJson<WalCleanup>(['wal', 'cleanup', `${db}/main`, '--days', '5', '--dry-run']);
    assert.equal(dry.dryRun, true);
    assert.deepEqual(
      readdirSync(dir)
        .filter((f) => /^[0-9A-F]{24}$/.test(f))
        .sort(),
      all,
      'dry run removes nothing',
    );
    assert.ok(
      dry.kept.some((k) => k.reason.includes(snap.id)),
      JSON.stringify(dry.kept),
    );
    const real = await okJson<WalCleanup>(['wal', 'cleanup', `${db}/main`, '--days', '5']);
    assert.deepEqual(real.removed, dry.removed);
    const left = readdirSync(dir)
      .filter((f) => /^[0-9A-F]{24}$/.test(f))
      .sort();
    // everything from the snapshot's first segment on is still there
    const needed = all.filter((f) => !dry.removed.includes(f));
    assert.deepEqual(left, needed);
    assert.ok(needed.length > 0);
    for (const f of dry.removed) assert.ok(f < needed[0]!, `${f} removed although at or after ${needed[0]}`);
    // and recovery from that snapshot still works after the cleanup
    const again = await okJson(['branch', 'create', `${db}/aftercleanup`, '--pitr', t1]);
    assert.deepEqual(await query(again, 'SELECT id FROM events ORDER BY id'), [{ id: 1 }, { id: 2 }]);
    const human = await ok(['wal', 'cleanup', `${db}/main`, '--days', '5', '--dry-run']);
    assert.match(human.stdout, /would remove \d+ segment\(s\)/);
  });

  it("reset brings a branch to its parent's newest rows and keeps port and password", async () => {
    const before = await okJson(['branch', 'get', `${db}/past`]);
    const oldWal = await walDirOf(before);
    await query(main, "INSERT INTO events VALUES (50, 'newest on main')");
    const refused = await cli(['branch', 'reset', `${db}/main`]);
    assert.equal(refused.code, 4);
    const reset = await okJson(['branch', 'reset', `${db}/past`]);
    assert.equal(reset.port, before.port);
    assert.equal(reset.connection.uri, before.connection.uri);
    const ids = (await query<{ id: number }>(before, 'SELECT id FROM events ORDER BY id')).map((r) => r.id);
    assert.ok(ids.includes(50) && ids.includes(3) && !ids.includes(100), `ids ${ids}`);
    assert.deepEqual(
      readdirSync(oldWal).filter((f) => /^[0-9A-F]{24}$/.test(f) && f.startsWith('00000002')),
      [],
      'old WAL cleared',
    );
  });

  it('reset of a branch with children is refused unless --force', async () => {
    await ok(['branch', 'create', `${db}/kid`, '--from', `${db}/past`, '--fast']);
    const r = await cli(['branch', 'reset', `${db}/past`]);
    assert.equal(r.code, 4);
    oneLine(r.stderr);
    assert.match(r.stderr, /has child branches .*kid.*--force/);
    await ok(['branch', 'reset', `${db}/past`, '--force']);
    const names = (await okJson<BranchView[]>(['branch', 'list', db])).map((b) => b.name);
    assert.ok(!names.includes(`${db}/kid`));
  });

  it('rename keeps data, port and password; main cannot be renamed', async () => {
    const before = await okJson(['branch', 'get', `${db}/past2`]);
    const r = await okJson(['branch', 'rename', `${db}/past2`, `${db}/renamed`]);
    assert.equal(r.name, `${db}/renamed`);
    assert.equal(r.port, before.port);
    assert.equal(r.connection.uri, before.connection.uri);
    assert.deepEqual(await query(before, 'SELECT count(*)::int AS n FROM events'), [{ n: 2 }]);
    const m = await cli(['branch', 'rename', `${db}/main`, `${db}/x`]);
    assert.equal(m.code, 4);
    assert.match(m.stderr, /'main' cannot be renamed/);
    const dup = await cli(['branch', 'rename', `${db}/renamed`, `${db}/past`]);
    assert.match(dup.stderr, /already exists/);
    const bad = await cli(['branch', 'rename', `${db}/renamed`, `${db}/a;b`]);
    assert.match(bad.stderr, /invalid name/);
  });

  it('db rename moves every branch and keeps connection strings working', async () => {
    const branches = await okJson<BranchView[]>(['branch', 'list', db]);
    const d = await okJson<DatabaseView>(['db', 'rename', db, `${db}r`]);
    assert.equal(d.name, `${db}r`);
    assert.deepEqual(d.branches.map((b) => b.branch).sort(), branches.map((b) => b.branch).sort());
    for (const b of branches) {
      const now = d.branches.find((x) => x.branch === b.branch)!;
      assert.equal(now.port, b.port);
      assert.equal(now.connection.uri, b.connection.uri, 'same connection string');
      assert.equal(now.status, 'running');
      assert.ok(now.dataset.endsWith(`/${db}r/${b.branch}`));
      await queryOne(b, 'SELECT 1 AS one');
    }
    assert.deepEqual((await leftovers(db)).containers, []);
    const snaps = await okJson<SnapshotView[]>(['snapshot', 'list', `${db}r/main`]);
    assert.equal(snaps[0]?.branch, `${db}r/main`);
    const cfg = await config();
    assert.ok(snaps[0]!.zfsSnapshot.startsWith(`${cfg.zfs.pool}/${cfg.zfs.datasetBase}/${db}r/main@`));
  });
});

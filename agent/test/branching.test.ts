import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BranchView, DatabaseView } from '../engine/view.js';
import { cli, config, leftovers, ok, okJson, query, queryOne, sh, uniqueDb } from './helpers.js';

const db = uniqueDb('br');
let main: BranchView;

describe('branching on the real stack', () => {
  before(async () => {
    main = await okJson(['db', 'create', db]);
    await query(main, 'CREATE TABLE items (id int PRIMARY KEY, note text)');
    await query(main, "INSERT INTO items SELECT g, 'from main' FROM generate_series(1, 1000) g");
  });

  after(async () => {
    await cli(['db', 'delete', db, '--force']);
  });

  it('creates main with a database of the same name, running, with a JSON shape for machines', async () => {
    assert.equal(main.name, `${db}/main`);
    assert.equal(main.parent, null);
    assert.equal(main.status, 'running');
    assert.equal(main.connection.database, db);
    assert.match(main.connection.uri, /^postgresql:\/\/postgres:[A-Za-z0-9_-]{32}@/);
    assert.match(main.createdAt, /^\d{4}-\d\d-\d\dT/);
    const got = await okJson<DatabaseView>(['db', 'get', db]);
    assert.equal(got.branches[0]!.name, `${db}/main`);
    const list = await okJson<DatabaseView[]>(['db', 'list']);
    assert.ok(list.some((d) => d.name === db));
  });

  it("an application-consistent branch sees main's data, and changes stay on their side", async () => {
    const dev = await okJson(['branch', 'create', `${db}/dev`]);
    assert.equal(dev.parent, `${db}/main`);
    assert.equal(dev.consistency, 'application');
    assert.notEqual(dev.port, main.port);
    assert.notEqual(dev.connection.password, main.connection.password, 'a branch gets its own password');
    assert.deepEqual(await query(dev, 'SELECT count(*)::int AS n FROM items'), [{ n: 1000 }]);

    await query(dev, "INSERT INTO items VALUES (5000, 'only on dev')");
    await query(dev, 'CREATE TABLE dev_only (x int)');
    await query(main, "INSERT INTO items VALUES (6000, 'only on main')");

    assert.deepEqual(await query(main, 'SELECT id FROM items WHERE id >= 5000'), [{ id: 6000 }]);
    assert.deepEqual(await query(dev, 'SELECT id FROM items WHERE id >= 5000'), [{ id: 5000 }]);
    assert.deepEqual(await query(main, "SELECT to_regclass('dev_only') IS NULL AS gone"), [{ gone: true }]);
    // the parent's password does not open the branch
    const stolen = {
      ...dev,
      connection: {
        ...dev.connection,
        uri: dev.connection.uri.replace(dev.connection.password, main.connection.password),
      },
    };
    await assert.rejects(query(stolen, 'SELECT 1'), /password authentication failed/);
    // the clone promoted onto a timeline of its own
    const { tli } = await queryOne<{ tli: number }>(dev, 'SELECT timeline_id AS tli FROM pg_control_checkpoint()');
    assert.ok(tli >= 2, `timeline ${tli}`);
  });

  it("a branch of a branch carries the branch's changes", async () => {
    const child = await okJson(['branch', 'create', `${db}/dev-child`, '--from', `${db}/dev`, '--fast']);
    assert.equal(child.parent, `${db}/dev`);
    assert.equal(child.consistency, 'crash');
    assert.deepEqual(await query(child, 'SELECT note FROM items WHERE id = 5000'), [{ note: 'only on dev' }]);
    assert.deepEqual(await query(child, 'SELECT count(*)::int AS n FROM items WHERE id = 6000'), [{ n: 0 }]);
  });

  it('--fast checkpoints the parent only when 1 MB of WAL or more was written since its last checkpoint; the clone has every committed row either way', async () => {
    const requested = async () =>
      (await queryOne<{ n: number }>(main, 'SELECT checkpoints_req::int AS n FROM pg_stat_bgwriter')).n;
    await query(main, 'CREATE TABLE fast_rows (note text)');
    await query(main, 'CHECKPOINT');
    const before = await requested();
    await query(main, "INSERT INTO fast_rows VALUES ('a few bytes of WAL')");
    const small = await okJson<BranchView>(['branch', 'create', `${db}/fast-small`, '--fast']);
    assert.equal(await requested(), before, 'no CHECKPOINT for a few bytes of WAL');
    assert.deepEqual(await query(small, 'SELECT note FROM fast_rows'), [{ note: 'a few bytes of WAL' }]);
    // about 5 MB of WAL: the parent is checkpointed first, so the clone need not replay it
    await query(main, "CREATE TABLE bulk AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g");
    const big = await okJson<BranchView>(['branch', 'create', `${db}/fast-big`, '--fast']);
    assert.equal(await requested(), before + 1, 'one CHECKPOINT');
    assert.deepEqual(await query(big, 'SELECT count(*)::int AS n FROM bulk'), [{ n: 20000 }]);
    await ok(['branch', 'delete', `${db}/fast-small`]);
    await ok(['branch', 'delete', `${db}/fast-big`]);
  });

  it('refuses to delete a branch with children unless --force, and main only goes with its database', async () => {
    const r = await cli(['branch', 'delete', `${db}/dev`]);
    assert.equal(r.code, 4);
    assert.match(r.stderr, /has child branches \(.*dev-child\); use --force/);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one clear line');
    const m = await cli(['branch', 'delete', `${db}/main`]);
    assert.equal(m.code, 4);
    assert.match(m.stderr, /only be deleted with its database/);
    const stillThere = await okJson<BranchView[]>(['branch', 'list', db]);
    assert.equal(stillThere.length, 3);
  });

  it('stop and start keep data, password and port; restart too', async () => {
    const before = await okJson(['branch', 'get', `${db}/dev`]);
    const stopped = await okJson(['stop', `${db}/dev`]);
    assert.equal(stopped.status, 'stopped');
    await assert.rejects(query(before, 'SELECT 1'));
    const started = await okJson(['start', `${db}/dev`]);
    assert.equal(started.status, 'running');
    assert.equal(started.port, before.port);
    assert.equal(started.connection.uri, before.connection.uri);
    assert.deepEqual(await query(before, 'SELECT note FROM items WHERE id = 5000'), [{ note: 'only on dev' }]);
    const restarted = await okJson(['restart', `${db}/dev`]);
    assert.equal(restarted.port, before.port);
    assert.deepEqual(await query(before, 'SELECT count(*)::int AS n FROM items'), [{ n: 1001 }]);
  });

  it('keeps passwords out of container env and arguments, and the state file is 0600', async () => {
    const cfg = await config();
    const dev = await okJson(['branch', 'get', `${db}/dev`]);
    const inspect = sh('docker', ['inspect', dev.container]);
    assert.ok(!inspect.includes(dev.connection.password), 'password in docker inspect');
    assert.ok(!inspect.includes(main.connection.password), 'parent password in docker inspect');
    const ps = sh('ps', ['-eo', 'args']);
    assert.ok(!ps.includes(dev.connection.password), 'password in a process list');
    const mode = sh('stat', ['-c', '%a', join(cfg.stateDir, 'state.json')]).trim();
    assert.equal(mode, '600');
  });

  it('archives WAL for every branch into a folder of its own outside the dataset', async () => {
    const cfg = await config();
    const dev = await okJson(['branch', 'get', `${db}/dev`]);
    await query(dev, 'SELECT pg_switch_wal()');
    const { archived } = await queryOne<{ archived: number }>(
      dev,
      'SELECT archived_count::int AS archived FROM pg_stat_archiver',
    );
    const deadline = Date.now() + 15_000;
    let count = archived;
    while (count === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      count = (await query<{ n: number }>(dev, 'SELECT archived_count::int AS n FROM pg_stat_archiver'))[0]!.n;
    }
    assert.ok(count > 0, 'nothing archived');
    const inspect = JSON.parse(sh('docker', ['inspect', dev.container]))[0];
    const archiveMount = inspect.Mounts.find(
      (m: { Destination: string }) => m.Destination === '/var/lib/postgresql/wal-archive',
    );
    assert.ok(archiveMount.Source.startsWith(join(cfg.stateDir, 'wal')), archiveMount.Source);
    assert.ok(sh('ls', [archiveMount.Source]).trim().length > 0);
  });

  it('lists branches with sizes and a status for people and machines', async () => {
    const list = await okJson<BranchView[]>(['branch', 'list', db]);
    assert.deepEqual(list.map((b) => b.name).sort(), [`${db}/dev`, `${db}/dev-child`, `${db}/main`]);
    for (const b of list) assert.ok(typeof b.usedBytes === 'number' && b.usedBytes > 0, `${b.name} usedBytes`);
    const human = await ok(['branch', 'list', db]);
    assert.match(human.stdout, /NAME\s+STATUS\s+PORT/);
    const status = await okJson<{ pool: { freeBytes: number }; branches: BranchView[] }>(['status']);
    assert.ok(status.pool.freeBytes > 0);
    assert.ok(status.branches.some((b) => b.name === `${db}/dev`));
  });

  it('delete --force removes the branch, its children, datasets, snapshots, containers, WAL and state', async () => {
    const cfg = await config();
    const dev = await okJson(['branch', 'get', `${db}/dev`]);
    const child = await okJson(['branch', 'get', `${db}/dev-child`]);
    const walDirs = [dev, child].map(
      (b) =>
        JSON.parse(sh('docker', ['inspect', b.container]))[0].Mounts.find((m: { Destination: string }) =>
          m.Destination.endsWith('wal-archive'),
        ).Source as string,
    );
    const out = await okJson<{ deleted: string[] }>(['branch', 'delete', `${db}/dev`, '--force']);
    assert.deepEqual(out.deleted, [`${db}/dev-child`, `${db}/dev`]);
    const left = await leftovers(db);
    assert.deepEqual(left.containers, [main.container]);
    assert.deepEqual(
      left.datasets,
      [`${cfg.zfs.pool}/${cfg.zfs.datasetBase}/${db}`, main.dataset],
      'no clone or origin snapshot left',
    );
    for (const w of walDirs) assert.equal(existsSync(w), false, `${w} still there`);
    const gone = await cli(['branch', 'get', `${db}/dev`]);
    assert.equal(gone.code, 3);
    assert.match(gone.stderr, /does not exist/);
    // main is untouched
    assert.deepEqual(await query(main, 'SELECT count(*)::int AS n FROM items'), [{ n: 1001 }]);
  });

  it('db delete removes everything the database had', async () => {
    const other = uniqueDb('brd');
    await ok(['db', 'create', other]);
    await ok(['branch', 'create', `${other}/x`, '--fast']);
    const refused = await cli(['db', 'delete', other]);
    assert.equal(refused.code, 4);
    assert.match(refused.stderr, /besides main.*--force/);
    await ok(['db', 'delete', other, '--force']);
    assert.deepEqual(await leftovers(other), { datasets: [], containers: [] });
    const list = await okJson<DatabaseView[]>(['db', 'list']);
    assert.ok(!list.some((d) => d.name === other));
  });
});

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import { ZfsDriver } from '../drivers/zfs.js';
import { CrashLab } from './crash-lab.js';
import { queryOne, sh } from './helpers.js';

/**
 * Issue 14, the daemon's share of `branch create --fast`: what its steps do beside each other. The
 * WAL archive's dataset is made while the parent is checkpointed, snapshotted and cloned: a create
 * failing after any step leaves no archive behind (nor anything else: the crash lab's checks), and
 * one whose archive cannot be made fails cleanly. The free-space check runs beside the preflight,
 * whose errors win. A fresh clone's folder is read from the mount table, not asked of ZFS, and its
 * container is made (not started) before the clone is there.
 * A state of its own (slot 44): failed creates here must not race other files' reconciles.
 */
const FAST = [
  'check image',
  'port slot',
  'wal archive',
  'checkpoint',
  'zfs snapshot',
  'zfs clone',
  'prepare data',
  'start container',
  'wait ready',
  'set password',
];

describe('branch create --fast: steps beside each other, undone exactly', () => {
  const lab = new CrashLab('create-steps', 44);
  const cfgPath = lab.env.BPG_CONFIG;
  /** A copy of this lab's config (same state) with some keys changed. */
  const variant = (name: string, change: (raw: Record<string, any>) => void): string => {
    const raw = YAML.parse(readFileSync(cfgPath, 'utf8'));
    change(raw);
    const path = join(dirname(cfgPath), `${name}.yaml`);
    writeFileSync(path, YAML.stringify(raw), { mode: 0o600 });
    return path;
  };
  const stateText = () => JSON.stringify(lab.state());
  before(() => lab.setup());
  after(() => lab.teardown());

  it('runs the steps in this order, and the branch has its own password and the data', async () => {
    assert.deepEqual(await lab.stepsOf(['branch', 'create', `${lab.db}/probe`, '--fast'], 'branch create'), FAST);
    const probe = await lab.branch('probe');
    const main = await lab.branch('main');
    assert.notEqual(probe.connection.password, main.connection.password);
    assert.equal((await queryOne<{ n: number }>(probe, 'SELECT count(*)::int AS n FROM t')).n, 2000);
    // the set-password session was the readiness session, and it is gone
    const { n } = await queryOne<{ n: number }>(
      probe,
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'betterpg'",
    );
    assert.equal(n, 0);
    await lab.ok(['branch', 'delete', `${lab.db}/probe`]);
  });

  it('makes the container ahead of the clone, and that container is the one that runs', async () => {
    const r = await lab.run(['--debug', 'branch', 'create', `${lab.db}/ahead`, '--fast']);
    assert.equal(r.code, 0, r.stderr);
    const made = /container made ahead of its clone container=(\S+) id=([0-9a-f]{64})/.exec(r.stderr);
    assert.ok(made, r.stderr);
    assert.equal(sh('docker', ['inspect', '-f', '{{.Id}} {{.State.Running}}', made[1]!]).trim(), `${made[2]} true`);
    await lab.ok(['branch', 'delete', `${lab.db}/ahead`]);
  });

  for (const step of FAST) {
    it(`a create that fails after '${step}' leaves nothing behind, its WAL archive included`, async () => {
      const before = stateText();
      const r = await lab.run(['branch', 'create', `${lab.db}/doomed`, '--fast'], {
        BPG_FAULT_FAIL_AFTER: `branch create:${step}`,
      });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`failed at step '${step}'.*every finished step was undone`));
      assert.equal(stateText(), before, 'the state is as it was');
      // ZFS (the WAL archives under <root>/_wal too), Docker and the WAL folders hold exactly the state's branches
      await lab.assertConsistent();
    });
  }

  it('a create whose WAL archive cannot be made fails at prepare data and undoes the rest', async () => {
    // The archives' parent read-only: ZFS makes the new archive but cannot mount it (zfs-fuse says
    // so), while the branch's clone beside it succeeds; the archive made is destroyed with the rest.
    const zfs = new ZfsDriver();
    const walRoot = `${lab.root}/_wal`;
    await zfs.set(walRoot, { readonly: 'on' });
    const before = stateText();
    try {
      const r = await lab.run(['branch', 'create', `${lab.db}/nowal`, '--fast']);
      assert.equal(r.code, 1, r.stderr);
      assert.match(
        r.stderr,
        /failed at step 'prepare data': zfs create: filesystem successfully created, but not mounted/,
      );
      assert.match(r.stderr, /every finished step was undone/);
    } finally {
      await zfs.set(walRoot, { readonly: 'off' });
    }
    assert.equal(stateText(), before);
    await lab.assertConsistent();
  });

  it("a dataset already at the branch's path is refused and left as it was, its files too", async () => {
    const zfs = new ZfsDriver();
    const stray = `${lab.root}/${lab.db}/stray`;
    await zfs.create(stray);
    const file = join(await zfs.mountpoint(stray), 'keep.txt');
    writeFileSync(file, 'mine');
    try {
      for (const flags of [['--fast'], ['--schema-only']]) {
        const before = stateText();
        const r = await lab.run(['branch', 'create', `${lab.db}/stray`, ...flags]);
        assert.equal(r.code, 4, r.stderr);
        assert.match(r.stderr, new RegExp(`dataset ${stray} already exists`));
        assert.equal(readFileSync(file, 'utf8'), 'mine', `${flags[0]}: the dataset is still there, with its file`);
        assert.equal(stateText(), before);
      }
    } finally {
      await zfs.destroy(stray);
    }
    await lab.assertConsistent({ templates: true }); // the schema-only attempt made the empty template
  });

  it("the free-space check runs beside the preflight: the preflight's errors win", async () => {
    const before = stateText();
    const create = (env: Record<string, string>) => lab.run(['branch', 'create', `${lab.db}/nospace`, '--fast'], env);
    const full = (raw: Record<string, any>) => (raw.limits = { ...raw.limits, minFreeBytes: '100t' });
    const noPool = await create({
      BPG_CONFIG: variant('no-pool', (raw) => {
        full(raw);
        raw.zfs.pool = 'nosuchpool';
      }),
    });
    assert.equal(noPool.code, 1, noPool.stderr);
    assert.match(noPool.stderr, /ZFS pool 'nosuchpool' does not exist/);
    const strict = variant('full', full);
    const noDocker = await create({ BPG_CONFIG: strict, DOCKER_SOCKET: '/nonexistent/docker.sock' });
    assert.equal(noDocker.code, 1, noDocker.stderr);
    assert.match(noDocker.stderr, /Docker engine is not reachable/);
    const noSpace = await create({ BPG_CONFIG: strict });
    assert.equal(noSpace.code, 4, noSpace.stderr);
    assert.match(noSpace.stderr, /below limits\.minFreeBytes \(100 TiB\)/);
    for (const x of [noPool, noDocker, noSpace]) assert.equal(x.stderr.trim().split('\n').length, 1, x.stderr);
    assert.equal(stateText(), before, 'nothing reserved');
  });

  it("reads a dataset's folder from the mount table: spaces unescaped, a bind of it or in it not taken", async () => {
    const zfs = new ZfsDriver();
    const ds = `${lab.root}/mounts`;
    const where = join(dirname(cfgPath), 'mount point with space');
    const bindOfFolder = join(dirname(cfgPath), 'bind-of-folder');
    const bindOfWhole = join(dirname(cfgPath), 'bind-of-whole');
    await zfs.create(ds, { mountpoint: where });
    try {
      assert.equal((await zfs.mountsNow()).get(ds), where);
      assert.equal(await zfs.mountpoint(ds), where, 'what ZFS says');
      // a bind of a folder inside it is not where it is mounted
      mkdirSync(join(where, 'data'));
      mkdirSync(bindOfFolder);
      sh('mount', ['--bind', join(where, 'data'), bindOfFolder]);
      try {
        assert.equal((await zfs.mountsNow()).get(ds), where);
      } finally {
        sh('umount', [bindOfFolder]);
      }
      // mounted whole at two places: the table does not say which one is ZFS's, so it is left out
      mkdirSync(bindOfWhole);
      sh('mount', ['--bind', where, bindOfWhole]);
      try {
        assert.equal((await zfs.mountsNow()).has(ds), false);
        assert.equal((await zfs.mountedNow()).has(ds), true);
      } finally {
        sh('umount', [bindOfWhole]);
      }
      assert.equal((await zfs.mountsNow()).get(ds), where);
      await zfs.umount(ds);
      assert.equal((await zfs.mountsNow()).has(ds), false, 'unmounted: not in the table');
    } finally {
      await zfs.destroy(ds);
      rmSync(bindOfFolder, { recursive: true, force: true });
      rmSync(bindOfWhole, { recursive: true, force: true });
      rmSync(where, { recursive: true, force: true });
    }
    assert.deepEqual(
      execFileSync('zfs', ['list', '-H', '-o', 'name', '-r', lab.root], { encoding: 'utf8' })
        .split('\n')
        .filter((n) => n.endsWith('/mounts')),
      [],
    );
  });

  it('after all of it: nothing left over, every branch intact', () => lab.assertConsistent({ templates: true }));
});

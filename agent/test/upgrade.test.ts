import assert from 'node:assert/strict';
import {
  chownSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import { serve } from '../api/serve.js';
import { loadConfig, type Config } from '../config.js';
import { cli, okJson, ownStateConfig, query, queryOne, recorder, sh, uniqueDb, zfsChange } from './helpers.js';

/**
 * Issue 11, point 4: installs from before WAL datasets are migrated when `bpg serve` starts. The
 * install is laid out here exactly as the version before wrote it (agent/engine/datadir.ts and
 * engine.ts at 208affb): each branch's WAL archive a plain folder `<stateDir>/wal/<id>` on the host's
 * disk, containers made with `postgres -D <pgdata>` and those folders bound in, the archive settings
 * in the data directory's betterpg.conf, pg_hba.conf in the data directory, no quotas, and a
 * state.json without `walOnZfs`. Then the daemon starts.
 */

const PGDATA = '/var/lib/postgresql/data';
const ARCHIVE = '/var/lib/postgresql/wal-archive';

/** The version before's betterpg.conf and pg_hba.conf (its agentConf and PG_HBA), as it wrote them. */
const OLD_CONF = `# Written by the BetterPG agent before each start; edits are overwritten.
shared_buffers = '32MB'
max_connections = 50
work_mem = '4MB'
jit = 'off'
listen_addresses = '*'
port = 5432
wal_level = 'replica'
archive_mode = 'on'
archive_command = 'test ! -f ${ARCHIVE}/%f && cp %p ${ARCHIVE}/%f'
restore_command = 'cp ${ARCHIVE}/%f %p'
password_encryption = 'scram-sha-256'
wal_init_zero = 'off'
wal_recycle = 'off'
recovery_init_sync_method = 'syncfs'
`;
const OLD_HBA = `# Written by the BetterPG agent.
local   all   all                 trust
host    all   all   0.0.0.0/0     scram-sha-256
host    all   all   ::/0          scram-sha-256
`;

describe('upgrade: WAL folders on the host move onto ZFS datasets when bpg serve starts', () => {
  const path = ownStateConfig('upgrade', 25);
  const env = { BPG_CONFIG: path };
  const db = uniqueDb('ug');
  const run = (args: string[]) => cli(args, env);
  const get = (name: string) => okJson(['branch', 'get', `${db}/${name}`], env);
  let cfg: Config;
  let stateFile: string;
  let root: string;
  const state = () => JSON.parse(readFileSync(stateFile, 'utf8'));
  const ids: Record<string, string> = {};
  const rowsAt: { time: string; rows: number } = { time: '', rows: 0 };

  before(async () => {
    cfg = await loadConfig(path);
    stateFile = join(cfg.stateDir, 'state.json');
    root = `${cfg.zfs.pool}/${cfg.zfs.datasetBase}`;
    // Branches with history, made by today's agent...
    assert.equal((await run(['db', 'create', db])).code, 0);
    const main = await get('main');
    await query(main, 'CREATE TABLE t (id int)');
    await query(main, 'INSERT INTO t SELECT g FROM generate_series(1, 1000) g');
    assert.equal((await run(['snapshot', 'create', `${db}/main`, '--label', 'before-upgrade'])).code, 0);
    await query(main, 'INSERT INTO t SELECT g FROM generate_series(1001, 1500) g');
    rowsAt.time = (
      await queryOne<{ t: string }>(
        main,
        'SELECT to_char(now() AT TIME ZONE \'UTC\', \'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\') AS t',
      )
    ).t;
    rowsAt.rows = 1500;
    await new Promise((r) => setTimeout(r, 1100));
    await query(main, 'INSERT INTO t SELECT g FROM generate_series(1501, 2000) g');
    await query(main, 'SELECT pg_switch_wal()');
    for (const b of ['run', 'off']) assert.equal((await run(['branch', 'create', `${db}/${b}`])).code, 0);
    assert.equal((await run(['stop', `${db}/off`])).code, 0);
    await new Promise((r) => setTimeout(r, 2000)); // the switched segment reaches the archive

    // ...then laid out as the version before had them.
    const s = state();
    for (const b of Object.values(s.branches) as Array<Record<string, any>>) ids[b.branch] = b.id;
    // (that version had no port slots: each container published its own port)
    for (const b of Object.values(s.branches) as Array<Record<string, any>>)
      sh('docker', ['rm', '-f', b.container, `bpg-slot-${b.port}.${b.container.split('.').pop()}`]);
    const keep = mkdtempSync(join(tmpdir(), 'bpg-upgrade-'));
    for (const id of Object.values(ids)) cpSync(join(cfg.stateDir, 'wal', id), join(keep, id), { recursive: true });
    zfsChange(['destroy', '-r', `${root}/_wal`]);
    rmSync(join(cfg.stateDir, 'wal'), { recursive: true, force: true });
    mkdirSync(join(cfg.stateDir, 'wal'), { mode: 0o700 });
    for (const id of Object.values(ids)) {
      cpSync(join(keep, id), join(cfg.stateDir, 'wal', id), { recursive: true });
      chownSync(join(cfg.stateDir, 'wal', id), 999, 999);
      for (const f of readdirSync(join(cfg.stateDir, 'wal', id))) chownSync(join(cfg.stateDir, 'wal', id, f), 999, 999);
    }
    rmSync(keep, { recursive: true, force: true });
    delete s.walOnZfs;
    for (const b of Object.values(s.branches) as Array<Record<string, any>>) {
      b.disk = null;
      zfsChange(['set', 'quota=none', b.dataset]);
      const data = join(sh('zfs', ['get', '-H', '-o', 'value', 'mountpoint', b.dataset]).trim(), 'data');
      writeFileSync(join(data, 'betterpg.conf'), OLD_CONF, { mode: 0o600 });
      writeFileSync(join(data, 'pg_hba.conf'), OLD_HBA, { mode: 0o600 });
      chownSync(join(data, 'betterpg.conf'), 999, 999);
      chownSync(join(data, 'pg_hba.conf'), 999, 999);
      sh('docker', [
        'create',
        '--name',
        b.container,
        '--user',
        '999:999',
        '--entrypoint',
        'postgres',
        '--stop-signal',
        'SIGINT',
        '--restart',
        'unless-stopped',
        '--label',
        'io.betterpg.managed=true',
        '--label',
        `io.betterpg.root=${root}`,
        '--label',
        `io.betterpg.database=${b.database}`,
        '--label',
        `io.betterpg.branch=${b.branch}`,
        '--label',
        `io.betterpg.id=${b.id}`,
        '-v',
        `${data}:${PGDATA}`,
        '-v',
        `${join(cfg.stateDir, 'wal', b.id)}:${ARCHIVE}`,
        '-p',
        `${cfg.postgres.bindAddress}:${b.port}:5432`,
        '--memory',
        '512m',
        '--shm-size',
        '128m',
        cfg.postgres.image,
        '-D',
        PGDATA,
      ]);
      if (b.status === 'running') sh('docker', ['start', b.container]);
    }
    writeFileSync(stateFile, JSON.stringify(s, null, 2), { mode: 0o600 });
    // The old layout works as it did: the running branch archives into its host folder.
    const old = await get('run');
    assert.equal((await queryOne<{ n: number }>(old, 'SELECT count(*)::int AS n FROM t')).n, 2000);
    await query(old, 'SELECT txid_current()');
    const seg = (await queryOne<{ f: string }>(old, 'SELECT pg_walfile_name(pg_current_wal_insert_lsn()) AS f')).f;
    await query(old, 'SELECT pg_switch_wal()');
    const deadline = Date.now() + 60_000;
    while (!existsSync(join(cfg.stateDir, 'wal', ids.run!, seg)) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 200));
    assert.ok(existsSync(join(cfg.stateDir, 'wal', ids.run!, seg)), 'the old layout archives into its host folder');
  });
  after(() => run(['db', 'delete', db, '--force']));

  it('bpg serve migrates on start: WAL on datasets, running branches running again on them, quotas set, history intact', async () => {
    const before = Object.fromEntries(
      Object.entries(ids).map(([b, id]) => [
        b,
        readdirSync(join(cfg.stateDir, 'wal', id))
          .filter((f) => /^[0-9A-F]{24}/.test(f))
          .sort(),
      ]),
    );
    const log = recorder();
    const srv = await serve(
      {
        ...cfg,
        api: { ...cfg.api, listen: '127.0.0.1:0', tokens: [{ name: 't', token: 'upgrade-test-token-0123456789' }] },
      },
      { listen: '127.0.0.1:0', log, handleSignals: false, env: {} },
    );
    try {
      assert.ok(
        log.lines.some((l) => /moving the WAL archives of 3 branch\(es\) onto ZFS datasets/.test(l.msg)),
        JSON.stringify(log.lines),
      );
      assert.equal(state().walOnZfs, true);
      assert.ok(!existsSync(join(cfg.stateDir, 'wal-legacy')), 'the old folders are gone');
      for (const [b, id] of Object.entries(ids)) {
        const ds = `${root}/_wal/${id}`;
        assert.equal(sh('zfs', ['get', '-H', '-o', 'value', 'mounted', ds]).trim(), 'yes', ds);
        assert.equal(sh('zfs', ['get', '-H', '-o', 'value', 'mountpoint', ds]).trim(), join(cfg.stateDir, 'wal', id));
        assert.equal(Number(sh('zfs', ['get', '-Hp', '-o', 'value', 'quota', ds]).trim()), cfg.postgres.walQuota);
        const now = readdirSync(join(cfg.stateDir, 'wal', id))
          .filter((f) => /^[0-9A-F]{24}/.test(f))
          .sort();
        for (const f of before[b]!) assert.ok(now.includes(f), `${b}: ${f} moved`);
        assert.ok(lstatSync(join(cfg.stateDir, 'wal', id)).isDirectory());
      }
      // Branches (not main) got postgres.diskQuota.
      const s = state();
      for (const name of ['run', 'off']) {
        assert.equal(s.branches[`${db}/${name}`].disk, cfg.postgres.diskQuota);
        assert.equal(
          Number(sh('zfs', ['get', '-Hp', '-o', 'value', 'quota', s.branches[`${db}/${name}`].dataset]).trim()),
          cfg.postgres.diskQuota,
        );
      }
      assert.equal(s.branches[`${db}/main`].disk, null);
      // What ran runs again, from the new spec (settings on the command line, the archive a dataset); what was stopped stays stopped.
      for (const name of ['main', 'run']) {
        const v = await get(name);
        assert.equal(v.status, 'running', name);
        const inspect = JSON.parse(sh('docker', ['inspect', v.container]))[0];
        assert.ok(inspect.Args.includes('archive_library=basic_archive'), `${name}: ${inspect.Args.join(' ')}`);
        assert.equal((await queryOne<{ n: number }>(v, 'SELECT count(*)::int AS n FROM t')).n, 2000);
      }
      assert.equal((await get('off')).status, 'stopped');
      // Archiving goes into the dataset now.
      const main = await get('main');
      await query(main, 'SELECT txid_current()');
      const seg = (await queryOne<{ f: string }>(main, 'SELECT pg_walfile_name(pg_current_wal_insert_lsn()) AS f')).f;
      await query(main, 'SELECT pg_switch_wal()');
      const deadline = Date.now() + 60_000;
      const mainWal = join(cfg.stateDir, 'wal', ids.main!);
      while (!existsSync(join(mainWal, seg)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      assert.ok(existsSync(join(mainWal, seg)), `${seg} archived onto the dataset`);
    } finally {
      await srv.close();
    }
    // The history from before the upgrade still works: point-in-time recovery from the kept snapshot
    // replays WAL that was archived in a host folder and moved.
    const pitr = await run(['branch', 'create', `${db}/back`, '--pitr', rowsAt.time]);
    assert.equal(pitr.code, 0, pitr.stderr);
    assert.equal((await queryOne<{ n: number }>(await get('back'), 'SELECT count(*)::int AS n FROM t')).n, rowsAt.rows);
    const doc = await run(['doctor']);
    assert.equal(doc.code, 0, doc.stdout + doc.stderr);
    assert.equal(YAML.parse(readFileSync(path, 'utf8')).stateDir, cfg.stateDir);
  });
});

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chownSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { serve, type RunningServer } from '../api/serve.js';
import { loadConfig, type Config } from '../config.js';
import { shellArchiveCommand } from '../engine/datadir.js';
import type { WalInfo } from '../engine/wal.js';
import type { BranchView } from '../engine/view.js';
import { cli, okJson, ownStateConfig, query, queryOne, recorder, sh, uniqueDb } from './helpers.js';

/**
 * Issue 11, points 1, 2 and 5: a branch's superuser owns its data directory and WAL archive (it runs
 * shell commands in its container with COPY ... TO PROGRAM; the local image has coreutils, as the
 * official images do). Whatever it plants there must never redirect or stall the agent, which runs
 * as root on the host; the settings the agent depends on must survive ALTER SYSTEM and edited config
 * files; archiving must be crash-safe. Everything here runs on the real stack.
 */

const TOKEN = `tok-${randomBytes(16).toString('hex')}`;
const PGDATA = '/var/lib/postgresql/data';
const ARCHIVE = '/var/lib/postgresql/wal-archive';

/**
 * The segment WAL is written into now. A commit first: right after a segment switch the insert
 * position sits on the boundary, which pg_walfile_name names as the previous segment.
 */
async function segmentNow(b: BranchView): Promise<string> {
  await query(b, 'SELECT txid_current()');
  return (await queryOne<{ f: string }>(b, 'SELECT pg_walfile_name(pg_current_wal_insert_lsn()) AS f')).f;
}

/** The segment after `seg` (16 MiB segments: 256 per log file). */
function nextSegment(seg: string): string {
  const tli = seg.slice(0, 8);
  let log = parseInt(seg.slice(8, 16), 16);
  let n = parseInt(seg.slice(16, 24), 16) + 1;
  if (n > 0xff) {
    n = 0;
    log++;
  }
  const hex = (x: number) => x.toString(16).toUpperCase().padStart(8, '0');
  return tli + hex(log) + hex(n);
}

/** Runs a shell command inside the branch's container as its PostgreSQL user, as a PR's SQL can. */
async function attack(b: BranchView, command: string): Promise<void> {
  // The program reads what COPY writes first: one that exits before PostgreSQL has written its row
  // makes COPY fail with "Broken pipe", depending on which process the machine ran first.
  const program = `cat >/dev/null; ${command}`;
  await query(b, `COPY (SELECT 1) TO PROGRAM '${program.replace(/'/g, "''")}'`);
}

describe('a branch superuser cannot reach the host through the files the agent touches', () => {
  const path = ownStateConfig('untrusted', 17, (raw) => {
    raw.api = { tokens: [{ name: 'tests', token: TOKEN }] };
  });
  const env = { BPG_CONFIG: path };
  const db = uniqueDb('un');
  let cfg: Config;
  let srv: RunningServer;
  // A root-owned host file every planted link points at: it must never change.
  const canaryDir = mkdtempSync(join(tmpdir(), 'bpg-canary-'));
  const canary = join(canaryDir, 'host-secret');
  const canaryText = `root-only ${randomBytes(8).toString('hex')}\n`;
  const run = (args: string[]) => cli(args, env);
  const get = (name: string) => okJson(['branch', 'get', `${db}/${name}`], env);
  const mountOf = (ds: string) => sh('zfs', ['get', '-H', '-o', 'value', 'mountpoint', ds]).trim();

  const assertCanary = () => {
    assert.equal(readFileSync(canary, 'utf8'), canaryText, 'the host file was not written');
    const st = statSync(canary);
    assert.equal(st.uid, 0, 'the host file still belongs to root');
    assert.equal(st.mode & 0o777, 0o600);
  };

  /** One clear line on stderr, naming the file; exit 1. */
  const assertRefused = (r: { code: number; stderr: string }, file: RegExp) => {
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^error: /);
    assert.match(lines[0]!, file);
    assert.match(lines[0]!, /refusing to use it/);
  };

  /** main, the other branch and the daemon's API still answer. */
  const assertOthersAnswer = async () => {
    const main = await get('main');
    assert.equal((await queryOne<{ n: number }>(main, 'SELECT count(*)::int AS n FROM t')).n, 1000);
    const other = await get('other');
    assert.equal((await queryOne<{ n: number }>(other, 'SELECT count(*)::int AS n FROM t')).n, 1000);
    const res = await fetch(`${srv.url}/v1/databases/${db}/branches`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(res.status, 200);
  };

  before(async () => {
    writeFileSync(canary, canaryText, { mode: 0o600 });
    cfg = await loadConfig(path);
    srv = await serve(
      { ...cfg, api: { ...cfg.api, listen: '127.0.0.1:0' } },
      { listen: '127.0.0.1:0', log: recorder(), handleSignals: false, env: {} },
    );
    assert.equal((await run(['db', 'create', db])).code, 0);
    const main = await get('main');
    await query(main, 'CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g');
    for (const b of ['victim', 'other'])
      assert.equal((await run(['branch', 'create', `${db}/${b}`, '--fast'])).code, 0);
  });

  after(async () => {
    await srv?.close();
    await run(['db', 'delete', db, '--force']);
    rmSync(canaryDir, { recursive: true, force: true });
  });

  it('a link at betterpg.conf: the restart fails naming the file, the host file is untouched, the rest answers', async () => {
    const victim = await get('victim');
    await attack(victim, `ln -sfn ${canary} ${PGDATA}/betterpg.conf`);
    const r = await run(['restart', `${db}/victim`]);
    assertRefused(r, /data\/betterpg\.conf is a symbolic link/);
    assertCanary();
    await assertOthersAnswer();
    // Once the link is gone (here: by root on the host), the branch starts again.
    const data = join(mountOf(victim.dataset), 'data');
    assert.ok(lstatSync(join(data, 'betterpg.conf')).isSymbolicLink());
    rmSync(join(data, 'betterpg.conf'));
    assert.equal((await run(['start', `${db}/victim`])).code, 0);
    assert.equal((await queryOne<{ n: number }>(await get('victim'), 'SELECT count(*)::int AS n FROM t')).n, 1000);
  });

  it('a FIFO at PG_VERSION: the start fails at once naming the file (no stalled I/O)', async () => {
    const victim = await get('victim');
    await attack(victim, `mv ${PGDATA}/PG_VERSION ${PGDATA}/PG_VERSION.real && mkfifo ${PGDATA}/PG_VERSION`);
    const r = await run(['restart', `${db}/victim`]);
    assertRefused(r, /data\/PG_VERSION is a FIFO, not a regular file/);
    await assertOthersAnswer();
    const data = join(mountOf(victim.dataset), 'data');
    rmSync(join(data, 'PG_VERSION'));
    renameSync(join(data, 'PG_VERSION.real'), join(data, 'PG_VERSION'));
    assert.equal((await run(['start', `${db}/victim`])).code, 0);
  });

  it('links and FIFOs planted in a parent are refused when it is branched, and nothing is left of the try', async () => {
    const plants: Array<{ plant: string; undo: string; file: RegExp | null }> = [
      {
        plant: `ln -sfn ${canary} ${PGDATA}/backup_label`,
        undo: `rm -f ${PGDATA}/backup_label`,
        file: /data\/backup_label is a symbolic link/,
      },
      {
        plant: `mkfifo ${PGDATA}/backup_label`,
        undo: `rm -f ${PGDATA}/backup_label`,
        file: /data\/backup_label is a FIFO/,
      },
      {
        plant: `mkfifo ${PGDATA}/recovery.signal`,
        undo: `rm -f ${PGDATA}/recovery.signal`,
        file: /data\/recovery\.signal is a FIFO/,
      },
      // a name the agent only removes: the link itself goes, what it points at is never touched
      { plant: `ln -sfn ${canary} ${PGDATA}/backup_label.old`, undo: `rm -f ${PGDATA}/backup_label.old`, file: null },
      { plant: `ln -sfn ${canary} ${PGDATA}/tablespace_map`, undo: `rm -f ${PGDATA}/tablespace_map`, file: null },
      // pg_wal moved and replaced by an absolute link: it resolves inside the container, and on the host to wherever it says
      {
        plant: `mv ${PGDATA}/pg_wal ${PGDATA}/pg_wal.real && ln -s ${PGDATA}/pg_wal.real ${PGDATA}/pg_wal`,
        undo: `rm ${PGDATA}/pg_wal && mv ${PGDATA}/pg_wal.real ${PGDATA}/pg_wal`,
        file: /data\/pg_wal is a symbolic link, not a directory/,
      },
    ];
    const victim = await get('victim');
    for (const [i, p] of plants.entries()) {
      await attack(victim, p.plant);
      const r = await run(['branch', 'create', `${db}/child${i}`, '--from', `${db}/victim`]);
      if (p.file === null) {
        assert.equal(r.code, 0, `a link at backup_label.old is removed, never followed: ${r.stderr}`);
        assert.equal((await run(['branch', 'delete', `${db}/child${i}`])).code, 0);
      } else {
        assertRefused(r, p.file);
        const list = await okJson<BranchView[]>(['branch', 'list', db], env);
        assert.deepEqual(
          list.map((b) => b.branch).sort(),
          ['main', 'other', 'victim'],
          'the failed create left no branch',
        );
      }
      await attack(victim, p.undo);
      assertCanary();
    }
    await assertOthersAnswer();
    // With the plants gone, branching works again.
    assert.equal((await run(['branch', 'create', `${db}/child`, '--from', `${db}/victim`])).code, 0);
    assert.equal((await queryOne<{ n: number }>(await get('child'), 'SELECT count(*)::int AS n FROM t')).n, 1000);
    assert.equal((await run(['branch', 'delete', `${db}/child`])).code, 0);
  });

  it("a link or FIFO in a parent's WAL archive is never followed when it is branched", async () => {
    const victim = await get('victim');
    // pg_backup_start switches to a new segment first: the one after the current is the first a
    // backup of the victim needs from its archive. The link targets /etc/passwd: it exists in the
    // container too, so the branch's own archiver sees a different file already there and leaves it.
    const current = async () => nextSegment(await segmentNow(victim));
    const seg1 = await current();
    await attack(victim, `ln -sfn /etc/passwd ${ARCHIVE}/${seg1}`);
    const r1 = await run(['branch', 'create', `${db}/fromwal`, '--from', `${db}/victim`]);
    assertRefused(r1, new RegExp(`${seg1} is a symbolic link`));
    const seg2 = await current();
    await attack(victim, `mkfifo ${ARCHIVE}/${seg2}`);
    const r2 = await run(['branch', 'create', `${db}/fromwal`, '--from', `${db}/victim`]);
    assertRefused(r2, new RegExp(`${seg2} is a FIFO`));
    assertCanary();
    await attack(victim, `rm -f ${ARCHIVE}/${seg1} ${ARCHIVE}/${seg2}`);
    assert.equal((await run(['branch', 'create', `${db}/fromwal`, '--from', `${db}/victim`])).code, 0);
    assert.equal((await run(['branch', 'delete', `${db}/fromwal`])).code, 0);
    await assertOthersAnswer();
  });

  it('ALTER SYSTEM and edited config files cannot move archiving, the port or client authentication', async () => {
    const victim = await get('victim');
    const data = join(mountOf(victim.dataset), 'data');
    await query(victim, "ALTER SYSTEM SET archive_command = 'cp %p /tmp/%f'");
    await query(victim, "ALTER SYSTEM SET archive_library = ''");
    await query(victim, "ALTER SYSTEM SET basic_archive.archive_directory = '/tmp'");
    await query(victim, 'ALTER SYSTEM SET port = 5433');
    await query(victim, "ALTER SYSTEM SET listen_addresses = 'localhost'");
    await query(victim, "ALTER SYSTEM SET recovery_target_time = '2000-01-01 00:00:00+00'");
    // hba_file cannot be set by ALTER SYSTEM, but a file can be written: a trust-everyone rule,
    // named by postgresql.conf, would open the branch to anyone who reaches its port.
    await attack(
      victim,
      `printf 'host all all 0.0.0.0/0 trust\\n' > ${PGDATA}/evil_hba.conf && printf "hba_file = '${PGDATA}/evil_hba.conf'\\n" >> ${PGDATA}/postgresql.conf`,
    );
    assert.equal((await run(['restart', `${db}/victim`])).code, 0);
    const after = await get('victim');
    const settings = await query<{ name: string; setting: string; source: string }>(
      after,
      "SELECT name, setting, source FROM pg_settings WHERE name IN ('archive_command', 'archive_library', 'basic_archive.archive_directory', 'port', 'listen_addresses', 'hba_file', 'recovery_target_time') ORDER BY name",
    );
    const by = Object.fromEntries(settings.map((s) => [s.name, s]));
    assert.equal(by.archive_library?.setting, 'basic_archive');
    assert.equal(by.archive_command?.setting, '');
    assert.equal(by.port?.setting, '5432');
    assert.equal(by.listen_addresses?.setting, '*');
    assert.equal(by.hba_file?.setting, '/etc/betterpg/pg_hba.conf');
    assert.equal(by.recovery_target_time?.setting, '');
    // 'override' is how PostgreSQL records some command-line file locations: above every file too.
    for (const s of settings)
      assert.ok(['command line', 'override'].includes(s.source), `${s.name} comes from ${s.source}`);
    // basic_archive's directory is a custom setting, shown once the archiver loaded the module.
    const dir = await queryOne<{ d: string }>(
      after,
      "SELECT current_setting('basic_archive.archive_directory', true) AS d",
    );
    assert.equal(dir.d, ARCHIVE);
    // Archiving still lands in the branch's own folder: a fresh segment shows up there.
    const walDir = join(
      cfg.stateDir,
      'wal',
      JSON.parse(readFileSync(join(cfg.stateDir, 'state.json'), 'utf8')).branches[`${db}/victim`].id,
    );
    await query(after, 'CREATE TABLE w AS SELECT g FROM generate_series(1, 1000) g');
    const seg = await segmentNow(after);
    await query(after, 'SELECT pg_switch_wal()');
    const deadline = Date.now() + 60_000;
    while (!existsSync(join(walDir, seg)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    assert.ok(existsSync(join(walDir, seg)), `${seg} archived into the branch's own folder`);
    // The trust rule did not take: a wrong password is refused.
    const wrong = after.connection.uri.replace(encodeURIComponent(after.connection.password), 'wrong-password');
    await assert.rejects(
      query({ ...after, connection: { ...after.connection, uri: wrong } }, 'SELECT 1'),
      /password authentication failed/,
    );
    assert.ok(existsSync(join(data, 'postgresql.auto.conf')));
  });

  it("role and database settings a branch plants do not reach the agent's own sessions", async () => {
    const v = await get('victim');
    // A function that shadows the one the agent waits on, put first on the search path; every
    // statement timed out after 1 ms; every transaction read-only: for every new session.
    await query(
      v,
      "CREATE SCHEMA evil; CREATE FUNCTION evil.pg_is_in_recovery() RETURNS boolean LANGUAGE sql AS 'SELECT true'",
    );
    // All three from one session: role and database settings reach new sessions only, so this one
    // is not cut short by its own 1 ms timeout (on a loaded machine a second session would be).
    await query(
      v,
      `ALTER DATABASE ${v.connection.database} SET search_path = evil, pg_catalog; ` +
        'ALTER ROLE postgres SET default_transaction_read_only = on; ' +
        "ALTER ROLE postgres SET statement_timeout = '1ms'",
    );
    try {
      // The agent waits for pg_is_in_recovery() after a start, and sets a clone's password with ALTER ROLE.
      const restart = await run(['restart', `${db}/victim`]);
      assert.equal(restart.code, 0, restart.stderr);
      const kid = await run(['branch', 'create', `${db}/kid`, '--from', `${db}/victim`]);
      assert.equal(kid.code, 0, kid.stderr);
    } finally {
      // Undone for the tests that follow (whatever happened above), from a session that sets its own
      // options as the agent's do.
      const opts = encodeURIComponent(
        '-c default_transaction_read_only=off -c statement_timeout=0 -c search_path=pg_catalog',
      );
      for (const name of ['victim', 'kid']) {
        const b = await get(name).catch(() => null);
        if (!b) continue;
        const own = { ...b, connection: { ...b.connection, uri: `${b.connection.uri}?options=${opts}` } };
        await query(own, `ALTER ROLE postgres RESET ALL; ALTER DATABASE ${b.connection.database} RESET ALL`);
      }
    }
    await query(await get('victim'), 'DROP SCHEMA evil CASCADE');
    assert.equal((await run(['branch', 'delete', `${db}/kid`])).code, 0);
  });

  it('archiving: an identical segment counts as archived, a different one is reported, a killed copy does not stop it', async () => {
    const v = await get('victim');
    const id = JSON.parse(readFileSync(join(cfg.stateDir, 'state.json'), 'utf8')).branches[`${db}/victim`].id as string;
    const walDir = join(cfg.stateDir, 'wal', id);
    const archived = async (seg: string) => {
      const deadline = Date.now() + 60_000;
      for (;;) {
        const r = await queryOne<{ a: string | null; f: string | null }>(
          v,
          'SELECT last_archived_wal AS a, last_failed_wal AS f FROM pg_stat_archiver',
        );
        if (r.a !== null && r.a >= seg) return;
        if (Date.now() > deadline) {
          const logs =
            sh('docker', ['logs', '--tail', '30', v.container]) + (await run(['wal', 'info', `${db}/victim`])).stdout;
          throw new Error(`${seg} not archived: ${JSON.stringify(r)}\n${logs}`);
        }
        await new Promise((res) => setTimeout(res, 200));
      }
    };
    const segNow = () => segmentNow(v);
    const markReady = (seg: string) =>
      attack(v, `mv ${PGDATA}/pg_wal/archive_status/${seg}.done ${PGDATA}/pg_wal/archive_status/${seg}.ready`);

    // A copy killed half-way leaves only a temporary file: the next segment is archived whole.
    const s1 = await segNow();
    writeFileSync(join(walDir, `archtemp.${s1}.4242.1700000000000`), Buffer.alloc(4096, 7));
    chownSync(join(walDir, `archtemp.${s1}.4242.1700000000000`), 999, 999);
    await query(v, 'SELECT pg_switch_wal()');
    await archived(s1);
    assert.equal(statSync(join(walDir, s1)).size, 16 * 1024 * 1024, 'the archived segment is whole');

    // The same segment archived again (a crash between the copy and PostgreSQL noting it): success.
    await markReady(s1);
    await query(v, 'SELECT pg_switch_wal()'); // wakes the archiver
    const s2 = await segNow();
    await query(v, 'CREATE TABLE IF NOT EXISTS w2 AS SELECT 1 AS x');
    await query(v, 'SELECT pg_switch_wal()');
    await archived(s2);
    const stat1 = await queryOne<{ f: string | null }>(v, 'SELECT last_failed_wal AS f FROM pg_stat_archiver');
    assert.notEqual(stat1.f, s1, 're-archiving an identical segment is not a failure');

    // A different file under the name of a segment: a failure that `bpg wal info` explains.
    const s3 = await segNow();
    await query(v, 'CREATE TABLE w3 AS SELECT g FROM generate_series(1, 100) g');
    writeFileSync(join(walDir, s3), Buffer.alloc(1000, 1));
    chownSync(join(walDir, s3), 999, 999);
    await query(v, 'SELECT pg_switch_wal()');
    const deadline = Date.now() + 60_000;
    let info: WalInfo | undefined;
    for (;;) {
      [info] = await okJson<WalInfo[]>(['wal', 'info', `${db}/victim`], env);
      if (info?.lastFailure?.segment === s3) break;
      if (Date.now() > deadline) throw new Error(`no failure reported: ${JSON.stringify(info)}`);
      await new Promise((res) => setTimeout(res, 500));
    }
    assert.match(info!.lastFailure!.reason ?? '', /a different .* is already in the archive/);
    const human = await run(['wal', 'info', `${db}/victim`]);
    assert.match(human.stderr, new RegExp(`warning: ${db}/victim: archiving ${s3} failed: a different`));
    // Moved away, archiving goes on (a new segment wakes the archiver, which otherwise waits a minute after failures).
    rmSync(join(walDir, s3));
    await query(v, 'SELECT txid_current()');
    await query(v, 'SELECT pg_switch_wal()');
    await archived(s3);
    assert.equal(statSync(join(walDir, s3)).size, 16 * 1024 * 1024);

    // The killed copy's leftover goes once it is an hour old (wal cleanup, which housekeeping runs).
    const temp = join(walDir, `archtemp.${s1}.4242.1700000000000`);
    utimesSync(temp, new Date(Date.now() - 2 * 3600_000), new Date(Date.now() - 2 * 3600_000));
    const clean = await okJson<{ removedTemp: string[] }>(['wal', 'cleanup', `${db}/victim`, '--days', '365'], env);
    assert.deepEqual(clean.removedTemp, [`archtemp.${s1}.4242.1700000000000`]);
    assert.ok(!existsSync(temp));
  });
});

describe('the archive command for servers before PostgreSQL 15', () => {
  // Run by /bin/sh with real cp, cmp, sync and mv, on real files, as PostgreSQL's archiver would.
  const dir = mkdtempSync(join(tmpdir(), 'bpg-archive-'));
  const archive = join(dir, 'archive');
  const seg = '000000010000000000000007';
  const run = (cwd: string) => {
    const cmd = shellArchiveCommand(archive).replaceAll('%p', `pg_wal/${seg}`).replaceAll('%f', seg);
    try {
      execFileSync('/bin/sh', ['-c', cmd], { cwd, stdio: 'pipe' });
      return 0;
    } catch (e) {
      return (e as { status: number }).status;
    }
  };
  before(() => {
    execFileSync('mkdir', ['-p', archive, join(dir, 'data', 'pg_wal')]);
    writeFileSync(join(dir, 'data', 'pg_wal', seg), randomBytes(64 * 1024));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('copies under a temporary name and renames; identical again is success; different is failure; a leftover temp does not matter', () => {
    const data = join(dir, 'data');
    // a truncated leftover of a killed copy
    writeFileSync(join(archive, `.${seg}.tmp`), Buffer.alloc(100));
    assert.equal(run(data), 0);
    assert.deepEqual(readFileSync(join(archive, seg)), readFileSync(join(data, 'pg_wal', seg)));
    assert.ok(!existsSync(join(archive, `.${seg}.tmp`)), 'the temporary name was renamed');
    assert.equal(run(data), 0, 'the same content again counts as archived');
    writeFileSync(join(archive, seg), Buffer.alloc(10));
    assert.notEqual(run(data), 0, 'a different file under the name is a failure');
    assert.equal(readFileSync(join(archive, seg)).length, 10, 'and is left as it was');
  });
});

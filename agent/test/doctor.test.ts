import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { DoctorReport, FindingKind } from '../engine/doctor.js';
import { CrashLab } from './crash-lab.js';
import { BPG, queryOne, sh, zfsChange } from './helpers.js';

/** zfs-fuse may call a just-unmounted dataset busy for a moment: unmount and destroy through the busy retry. */
function zfsDestroy(name: string): void {
  try {
    zfsChange(['umount', name]);
  } catch (e) {
    if (!/not currently mounted|not mounted/.test(String((e as { stderr?: unknown }).stderr ?? e))) throw e;
  }
  zfsChange(['destroy', name]);
}

/** Issue 7, reconcile: every kind of drift made by hand, reported without --fix, repaired with it. */
describe('bpg doctor', () => {
  const lab = new CrashLab('doctor', 4);
  const stateDir = () => join(lab.env.BPG_CONFIG, '..');
  before(async () => {
    await lab.setup();
    await lab.ok(['branch', 'create', `${lab.db}/a`, '--fast']);
    await lab.ok(['branch', 'create', `${lab.db}/b`, '--fast']);
    await lab.ok(['branch', 'create', `${lab.db}/c`, '--fast']);
    await lab.ok(['branch', 'create', `${lab.db}/gone`, '--fast']);
    await lab.ok(['stop', `${lab.db}/b`]);
  });
  after(() => lab.teardown());

  it('a healthy agent: nothing found, exit 0', async () => {
    const r = await lab.run(['doctor']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /everything matches/);
  });

  it('reports every kind of drift without changing anything, then --fix repairs it all', async () => {
    const s = lab.state();
    const a = s.branches[`${lab.db}/a`]!;
    const b = s.branches[`${lab.db}/b`]!;
    const c = s.branches[`${lab.db}/c`]!;
    const gone = s.branches[`${lab.db}/gone`]!;
    const main = s.branches[`${lab.db}/main`]!;
    const dbDs = `${lab.root}/${lab.db}`;
    // a: should run, its container was stopped behind the agent's back
    sh('docker', ['stop', a.container]);
    // b: recorded as stopped, started by hand
    sh('docker', ['start', b.container]);
    // c: its data moved to another name (as a half-done rename by hand would)
    sh('docker', ['rm', '-f', c.container]);
    zfsChange(['umount', c.dataset]);
    zfsChange(['rename', c.dataset, `${dbDs}/c-moved`]);
    // gone: its dataset destroyed by hand: the data is lost
    sh('docker', ['rm', '-f', gone.container]);
    zfsDestroy(gone.dataset);
    // orphans of every kind
    zfsChange(['create', '-o', 'betterpg:managed=true', `${dbDs}/leftover`]);
    zfsChange(['snapshot', '-o', 'betterpg:managed=true', `${main.dataset}@bpg-0000000000000000`]);
    zfsChange(['create', `${dbDs}/not-ours`]); // inherits betterpg:managed, but was not made by us
    // a WAL archive dataset of no branch, and a plain folder among the WAL archives' mount points
    zfsChange([
      'create',
      '-o',
      'betterpg:managed=true',
      '-o',
      'betterpg:wal=dddddddddddddddd',
      `${lab.root}/_wal/dddddddddddddddd`,
    ]);
    sh('docker', [
      'create',
      '--name',
      `bpg-${lab.db}.ghost`,
      '--label',
      'io.betterpg.managed=true',
      '--label',
      `io.betterpg.root=${lab.root}`,
      '--label',
      'io.betterpg.id=ffffffffffffffff',
      'betterpg/postgres:15-local',
    ]);
    mkdirSync(join(stateDir(), 'wal', 'eeeeeeeeeeeeeeee'), { recursive: true });
    mkdirSync(join(stateDir(), 'tmp'), { recursive: true });
    writeFileSync(join(stateDir(), 'tmp', 'pw-eeeeeeeeeeeeeeee'), 'secret\n', { mode: 0o600 });

    const seen = await lab.run(['doctor', '--json']);
    assert.equal(seen.code, 1, 'unhealthy: exit 1');
    assert.match(seen.stderr, /^error: \d+ problem\(s\) need attention: run 'bpg doctor --fix'\n$/);
    const report = JSON.parse(seen.stdout) as DoctorReport;
    const kinds = (r: DoctorReport) => r.findings.map((f) => `${f.kind} ${f.subject}`).sort();
    const expected: Array<[FindingKind, string]> = [
      ['not-running', `${lab.db}/a`],
      ['running-but-stopped', `${lab.db}/b`],
      ['moved-dataset', `${lab.db}/c`],
      ['missing-dataset', `${lab.db}/gone`],
      ['orphan-dataset', `${dbDs}/leftover`],
      ['orphan-snapshot', `${main.dataset}@bpg-0000000000000000`],
      ['foreign-dataset', `${dbDs}/not-ours`],
      ['orphan-container', `bpg-${lab.db}.ghost`],
      ['orphan-wal-folder', join(stateDir(), 'wal', 'eeeeeeeeeeeeeeee')],
      ['orphan-wal-folder', `${lab.root}/_wal/dddddddddddddddd`],
      ['orphan-temp-file', join(stateDir(), 'tmp', 'pw-eeeeeeeeeeeeeeee')],
    ];
    assert.deepEqual(kinds(report), expected.map(([k, s]) => `${k} ${s}`).sort());
    assert.ok(report.findings.every((f) => f.status === 'found'));
    // nothing was changed by looking
    assert.ok(existsSync(join(stateDir(), 'wal', 'eeeeeeeeeeeeeeee')));
    sh('zfs', ['list', `${lab.root}/_wal/dddddddddddddddd`]);
    assert.equal(sh('docker', ['inspect', '-f', '{{.State.Running}}', a.container]).trim(), 'false');

    const fixed = await lab.run(['doctor', '--fix', '--json']);
    assert.equal(fixed.code, 0, fixed.stderr);
    const fr = JSON.parse(fixed.stdout) as DoctorReport;
    for (const f of fr.findings)
      assert.equal(
        f.status,
        f.kind === 'foreign-dataset' ? 'left' : 'fixed',
        `${f.kind} ${f.subject}: ${f.error ?? ''}`,
      );

    // the foreign dataset is never touched; everything else is back in line
    sh('zfs', ['list', `${dbDs}/not-ours`]);
    zfsDestroy(`${dbDs}/not-ours`);
    assert.ok(!existsSync(join(stateDir(), 'wal', 'eeeeeeeeeeeeeeee')), 'the stray folder is gone');
    assert.throws(
      () => sh('zfs', ['list', `${lab.root}/_wal/dddddddddddddddd`]),
      /does not exist/,
      'the orphan WAL dataset is gone',
    );
    assert.equal(lab.state().branches[`${lab.db}/gone`], undefined, 'a lost branch is forgotten');
    assert.equal(lab.state().branches[`${lab.db}/b`]!.status, 'running');
    for (const name of ['a', 'b', 'c']) {
      const v = await lab.branch(name);
      assert.equal(v.status, 'running', name);
      assert.equal(
        (await queryOne<{ n: number }>(v, 'SELECT count(*)::int AS n FROM t')).n,
        2000,
        `${name} has its data`,
      );
    }
    const clean = await lab.run(['doctor']);
    assert.equal(clean.code, 0, clean.stdout + clean.stderr);
    await lab.assertConsistent();
  });

  it('never offers to forget main: a lost main is reported with no automatic fix', async () => {
    // On a copy of the state whose main points at a dataset (and id) that do not exist; looked at
    // without --fix, then the real state is put back.
    const { readFileSync, writeFileSync: write } = await import('node:fs');
    const path = join(stateDir(), 'state.json');
    const original = readFileSync(path, 'utf8');
    const s = JSON.parse(original);
    s.branches[`${lab.db}/main`].dataset = `${lab.root}/${lab.db}/nowhere`;
    s.branches[`${lab.db}/main`].id = '1111111111111111';
    write(path, JSON.stringify(s));
    try {
      const r = await lab.run(['doctor', '--json']);
      assert.equal(r.code, 1);
      const rep = JSON.parse(r.stdout) as DoctorReport;
      const f = rep.findings.find((x) => x.kind === 'missing-dataset')!;
      assert.equal(f.subject, `${lab.db}/main`);
      assert.equal(f.action, null);
      assert.match(f.detail, /main branch/);
    } finally {
      write(path, original);
    }
    assert.equal((await lab.run(['doctor'])).code, 0);
  });

  it('bpg serve reconciles before it listens: a create killed mid-way is cleaned up', async () => {
    await lab.kill(['branch', 'create', `${lab.db}/half`], 'branch create', 'start container');
    const child = spawn(process.execPath, [BPG, 'serve', '--listen', '127.0.0.1:0'], {
      env: { ...process.env, ...lab.env, BPG_API_TOKEN: 'doctor-test-token-0123456789' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    try {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`serve did not listen in time:\n${log}`)), 120_000);
        child.stderr!.on('data', (d) => {
          log += d;
          if (log.includes('"listening"') || log.includes('listening')) {
            clearTimeout(t);
            resolve();
          }
        });
        child.on('exit', (code) => reject(new Error(`serve exited ${code}:\n${log}`)));
      });
      assert.match(log, /reconciled on start/);
      assert.match(log, /interrupted-operation/);
      assert.equal(lab.state().branches[`${lab.db}/half`], undefined);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    await lab.assertConsistent({ spares: true }); // the daemon keeps spare port slots
  });
});

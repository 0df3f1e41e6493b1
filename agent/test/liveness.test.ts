import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import type { DoctorReport } from '../engine/doctor.js';
import { cli, okJson, ownStateConfig, uniqueDb } from './helpers.js';

/**
 * Issue 11, point 6: an operation's owner is its boot and process, not a PID. A journal entry that
 * names the PID of a live but unrelated process (PID reuse), or that was written before a reboot,
 * is an interrupted operation, recovered like any other; one whose process still runs is busy.
 */
describe('operation owners survive PID reuse and reboots', () => {
  const path = ownStateConfig('live', 19);
  const env = { BPG_CONFIG: path };
  const stateFile = join(YAML.parse(readFileSync(path, 'utf8')).stateDir, 'state.json');
  const db = uniqueDb('lv');
  const key = `${db}/x`;
  const run = (args: string[]) => cli(args, env);
  const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  const startOf = (pid: number) => {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).split(' ')[19]!;
  };
  let stranger: ChildProcess;

  /** Writes an operation into the branch's record, as a process that died (or did not) left it. */
  const forge = (op: Record<string, unknown>) => {
    const s = JSON.parse(readFileSync(stateFile, 'utf8'));
    s.branches[key].operation = { kind: 'stop', startedAt: new Date().toISOString(), ...op };
    writeFileSync(stateFile, JSON.stringify(s, null, 2), { mode: 0o600 });
  };
  const operation = () => JSON.parse(readFileSync(stateFile, 'utf8')).branches[key].operation;

  before(async () => {
    // A live process that has nothing to do with the agent: its PID is the one a reused PID would be.
    stranger = spawn('sleep', ['600'], { stdio: 'ignore' });
    assert.equal((await run(['db', 'create', db])).code, 0);
    assert.equal((await run(['branch', 'create', key, '--fast'])).code, 0);
  });
  after(async () => {
    stranger.kill('SIGKILL');
    await run(['db', 'delete', db, '--force']);
  });

  it("a live stranger's PID with another start time: interrupted, and recovered by the next operation", async () => {
    forge({ pid: stranger.pid, boot, pidStart: String(Number(startOf(stranger.pid!)) - 100) });
    assert.equal((await okJson(['branch', 'get', key], env)).status, 'interrupted');
    const doc = await run(['doctor', '--json']);
    const report = JSON.parse(doc.stdout) as DoctorReport;
    assert.ok(
      report.findings.some((f) => f.kind === 'interrupted-operation' && f.subject === key),
      doc.stdout,
    );
    assert.equal((await run(['stop', key])).code, 0, 'the stale entry does not block');
    assert.equal(operation(), null);
    assert.equal((await okJson(['branch', 'get', key], env)).status, 'stopped');
  });

  it('an entry written before a reboot (another boot id): interrupted, whatever runs under that PID now', async () => {
    forge({ pid: stranger.pid, boot: '00000000-0000-4000-8000-000000000000', pidStart: startOf(stranger.pid!) });
    assert.equal((await okJson(['branch', 'get', key], env)).status, 'interrupted');
    assert.equal((await run(['start', key])).code, 0);
    assert.equal(operation(), null);
  });

  it('the same boot, PID and start time: the operation is live and the branch busy', async () => {
    forge({ pid: stranger.pid, boot, pidStart: startOf(stranger.pid!) });
    const r = await run(['stop', key]);
    assert.equal(r.code, 4);
    assert.match(r.stderr, new RegExp(`^error: branch '${key}' is busy: 'stop' in progress \\(pid ${stranger.pid}`));
    assert.equal((await okJson(['branch', 'get', key], env)).status, 'running');
    // Once that process is gone, the entry is stale.
    stranger.kill('SIGKILL');
    await new Promise((r) => stranger.once('exit', r));
    assert.equal((await okJson(['branch', 'get', key], env)).status, 'interrupted');
    assert.equal((await run(['stop', key])).code, 0);
  });
});

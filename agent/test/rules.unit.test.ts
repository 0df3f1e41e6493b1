import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../config.js';
import { BpgError } from '../errors.js';
import { branchRecoveryFor } from '../engine/recovery.js';
import {
  assertIdle,
  deletionOrder,
  descendantsOf,
  expiryFor,
  freshBranchFields,
  requireBranch,
  snapshotInUse,
} from '../engine/rules.js';
import { choosePitrSnapshot, parseTime } from '../engine/pitr.js';
import { branchView } from '../engine/view.js';
import { BRANCH_OPERATIONS, DATABASE_OPERATIONS, newOperation, operationAlive } from '../state/operation.js';
import type { SnapshotRecord } from '../state/schema.js';
import { branch, state } from './fixtures.js';

const cfg = parseConfig({}, 'test');

describe('branch rules', () => {
  it('new branches: a pr-<n> branch expires by expiry.prBranchTtl, others never, an explicit TTL wins', () => {
    const from = Date.parse('2026-11-30T00:00:00Z');
    assert.equal(expiryFor(cfg, 'pr-12', undefined, from), '2026-12-07T00:00:00.000Z');
    assert.equal(expiryFor(cfg, 'feature', undefined, from), null);
    assert.equal(expiryFor(cfg, 'pr-12', null, from), null);
    assert.equal(expiryFor(cfg, 'feature', 3600_000, from), '2026-11-30T01:00:00.000Z');
    assert.deepEqual(
      { ...freshBranchFields({ protect: true, disk: 5 }), lastActiveAt: null },
      {
        expiresAt: null,
        protected: true,
        lastActiveAt: null,
        stoppedBy: null,
        memory: null,
        cpus: null,
        disk: 5,
        schemaOnly: false,
        seed: null,
        generation: 0,
      },
    );
  });

  it('children are deleted before their parents, however deep', () => {
    const main = branch('a', 'main');
    const x = branch('a', 'x');
    const y = branch('a', 'y', { parent: 'a/x' });
    const z = branch('a', 'z', { parent: 'a/y' });
    const s = state([main, x, y, z]);
    assert.deepEqual(
      descendantsOf(s, 'a/x')
        .map((b) => b.branch)
        .sort(),
      ['y', 'z'],
    );
    assert.deepEqual(
      deletionOrder([x, z, y]).map((b) => b.branch),
      ['z', 'y', 'x'],
    );
  });

  it('a snapshot is in use while a branch was cloned from it or it is kept', () => {
    const main = branch('a', 'main');
    const x = branch('a', 'x');
    const kept: SnapshotRecord = {
      id: 'snap-00000001',
      branchId: main.id,
      name: 'bpg-snap-00000001',
      label: null,
      consistency: 'application',
      backup: null,
      createdAt: '2026-11-01T00:00:00Z',
      scheduled: false,
    };
    const s = state([main, x], [kept]);
    assert.equal(snapshotInUse(s, x.origin!.snapshot), true);
    assert.equal(snapshotInUse(s, `${main.dataset}@bpg-snap-00000001`), true);
    assert.equal(snapshotInUse(s, `${main.dataset}@bpg-gone`), false);
    assert.throws(
      () => requireBranch(s, { database: 'a', branch: 'nope' }),
      (e: BpgError) => e.code === 'not_found' && /branch 'a\/nope' does not exist/.test(e.message),
    );
    assert.throws(() => requireBranch(s, { database: 'b', branch: 'x' }), /database 'b' does not exist/);
  });

  it('an operation of a live process makes its branch busy; one of a dead process (or another boot) does not', () => {
    const mine = newOperation('reset');
    assert.equal(operationAlive(mine), true);
    assert.throws(
      () => assertIdle("branch 'a/x'", mine),
      (e: BpgError) => e.code === 'conflict' && /is busy: 'reset' in progress/.test(e.message),
    );
    assert.doesNotThrow(() => assertIdle("branch 'a/x'", { ...mine, boot: '00000000-0000-4000-8000-000000000000' }));
    assert.doesNotThrow(() => assertIdle("branch 'a/x'", { ...mine, pidStart: '1' }));
    assert.doesNotThrow(() => assertIdle("branch 'a/x'", null));
  });

  it('recovery has a way for every kind of operation, and only drops the marker of one it does not know', () => {
    for (const k of BRANCH_OPERATIONS)
      assert.ok(['destroy', 'reset', 'rename', 'snapshot', 'marker'].includes(branchRecoveryFor(k)), k);
    assert.equal(branchRecoveryFor('create'), 'destroy');
    assert.equal(branchRecoveryFor('recover'), 'destroy');
    assert.equal(branchRecoveryFor('recover-reset'), 'reset');
    assert.equal(branchRecoveryFor('stop'), 'marker');
    assert.equal(branchRecoveryFor('from-a-newer-version'), 'marker');
    assert.ok(DATABASE_OPERATIONS.includes('create-database'));
  });

  it('a branch view: the connection string quotes what it must, main never expires', () => {
    const b = branch('a', 'x', { password: 'p@ss/w:rd' });
    const v = branchView(cfg, state([b]).databases.a!, b, {
      status: 'running',
      disk: { used: 10, available: 1, quota: 100 },
      wal: null,
    });
    assert.equal(v.connection.uri, `postgresql://postgres:p%40ss%2Fw%3Ard@127.0.0.1:${b.port}/a`);
    assert.equal(v.diskFull, true);
    assert.equal(v.walFull, false);
  });
});

describe('point-in-time recovery planning', () => {
  const snaps = (...times: string[]): SnapshotRecord[] =>
    times.map((t, i) => ({
      id: `snap-0000000${i}`,
      branchId: 'x',
      name: `bpg-${i}`,
      label: null,
      consistency: 'application',
      createdAt: t,
      scheduled: false,
      backup: { labelfile: '', spcmapfile: '', firstSegment: '', lastSegment: '' },
    }));
  const nowMs = Date.parse('2026-11-30T12:00:00Z');

  it('starts from the newest snapshot at or before the target', () => {
    const list = snaps('2026-11-30T08:00:00.000Z', '2026-11-30T10:00:00.000Z');
    assert.equal(
      choosePitrSnapshot('a/main', list, new Date('2026-11-30T09:00:00Z'), { nowMs, archivedUntil: null }).id,
      'snap-00000000',
    );
    assert.equal(
      choosePitrSnapshot('a/main', list, new Date('2026-11-30T11:00:00Z'), { nowMs, archivedUntil: null }).id,
      'snap-00000001',
    );
  });

  it('names the recoverable range when the target is outside it', () => {
    const list = snaps('2026-11-30T08:00:00.000Z');
    assert.throws(
      () => choosePitrSnapshot('a/main', [], new Date(nowMs), { nowMs, archivedUntil: null }),
      /has no snapshot to recover from: take one with 'bpg snapshot create a\/main'/,
    );
    assert.throws(
      () => choosePitrSnapshot('a/main', list, new Date('2026-11-30T07:00:00Z'), { nowMs, archivedUntil: null }),
      /before the oldest snapshot; recoverable range for a\/main: 2026-11-30T08:00:00.000Z \.\. now/,
    );
    assert.throws(
      () => choosePitrSnapshot('a/main', list, new Date('2026-11-30T13:00:00Z'), { nowMs, archivedUntil: null }),
      /is in the future/,
    );
    assert.throws(
      () =>
        choosePitrSnapshot('a/main', list, new Date('2026-11-30T11:00:00Z'), {
          nowMs,
          archivedUntil: '2026-11-30T10:00:00.000Z',
        }),
      /past the archived WAL; recoverable range for a\/main: .* \.\. 2026-11-30T10:00:00.000Z/,
    );
  });

  it('reads times with a zone, or relative ones', () => {
    assert.equal(parseTime('2026-10-07T14:30:00Z').toISOString(), '2026-10-07T14:30:00.000Z');
    assert.equal(parseTime('2 hours ago', nowMs).toISOString(), '2026-11-30T10:00:00.000Z');
    assert.throws(() => parseTime('2026-10-07 14:30'), /use ISO 8601 with a time zone/);
  });
});

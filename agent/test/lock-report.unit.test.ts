import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LockTracker, blocks, buildReport, modeName } from '../engine/lock-report.js';

/** The migration safety report from lock samples and relfilenodes, without a server. */
describe('migration safety report', () => {
  const before = [
    { oid: 10, name: 'orders', relfilenode: 100 },
    { oid: 11, name: 'users', relfilenode: 110 },
    { oid: 12, name: 'audit.log', relfilenode: 120 },
  ];

  it('names lock modes as LOCK TABLE does and knows what each blocks', () => {
    assert.equal(modeName('AccessExclusiveLock'), 'ACCESS EXCLUSIVE');
    assert.equal(modeName('ShareUpdateExclusiveLock'), 'SHARE UPDATE EXCLUSIVE');
    assert.equal(blocks('AccessExclusiveLock'), 'reads and writes');
    assert.equal(blocks('ShareLock'), 'writes');
    assert.equal(blocks('ShareUpdateExclusiveLock'), null);
    assert.equal(blocks('RowExclusiveLock'), null);
  });

  it('measures the longest continuous stretch of each lock, one interval per sample', () => {
    const t = new LockTracker(50);
    // orders: ACCESS EXCLUSIVE seen at 0..3000 ms (61 samples), released, seen again briefly.
    for (let at = 0; at <= 3000; at += 50) t.observe(at, [{ oid: 10, mode: 'AccessExclusiveLock' }]);
    t.observe(3050, []);
    t.observe(3100, [{ oid: 10, mode: 'AccessExclusiveLock' }]);
    t.observe(3150, [{ oid: 11, mode: 'RowExclusiveLock' }]);
    const held = t.finish(3200);
    assert.equal(held.get('10:AccessExclusiveLock'), 3050);
    assert.equal(held.get('11:RowExclusiveLock'), 50);
  });

  it('flags write-blocking locks over the limit, says rewrites, skips tables the migration made', () => {
    const held = new Map([
      ['10:AccessExclusiveLock', 3200],
      ['10:RowExclusiveLock', 4000],
      ['11:ShareLock', 800],
      ['12:ShareUpdateExclusiveLock', 9000],
      ['99:AccessExclusiveLock', 9000], // a table the migration created
    ]);
    const after = [
      { oid: 10, name: 'orders', relfilenode: 101 }, // rewritten
      { oid: 12, name: 'audit.log', relfilenode: 120 },
      { oid: 99, name: 'new_table', relfilenode: 990 },
    ];
    const r = buildReport({
      before,
      after,
      held,
      rows: new Map([[10, { rows: 1500, estimated: false }]]),
      durationMs: 5000.4,
      maxLockSeconds: 1,
      samples: 100,
      intervalMs: 50,
    });
    assert.deepEqual(r.flagged, [
      'ACCESS EXCLUSIVE on orders for 3.2 s (table rewrite): blocks reads and writes on production',
    ]);
    assert.deepEqual(
      r.locks.map((l) => [l.table, l.mode, l.seconds]),
      [
        ['audit.log', 'ShareUpdateExclusiveLock', 9],
        ['orders', 'AccessExclusiveLock', 3.2],
        ['users', 'ShareLock', 0.8],
      ],
    );
    assert.deepEqual(r.rewritten, ['orders']);
    assert.deepEqual(r.dropped, ['users']);
    assert.deepEqual(r.rows, [
      { table: 'audit.log', rows: null, estimated: false },
      { table: 'orders', rows: 1500, estimated: false },
    ]);
    assert.equal(r.durationMs, 5000);
    assert.equal(r.incomplete, null);
  });
});

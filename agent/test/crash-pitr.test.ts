import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CrashLab } from './crash-lab.js';
import { query, queryOne } from './helpers.js';

/**
 * Issue 7, crash tests: a point-in-time recovery killed right after each of its steps. The kept
 * snapshot and the source's WAL archive it recovers from must survive every kill untouched, and
 * the same recovery run again must reach the same point.
 */
const PITR = [
  'check image',
  'port slot',
  'wal archive',
  'zfs clone',
  'prepare data',
  'start recovery',
  'recover to target',
  'detach source archive',
  'start container',
  'wait ready',
  'set password',
];

describe('crash tests: point-in-time recovery killed after every step', () => {
  const lab = new CrashLab('crash3', 3);
  let target = '';
  before(async () => {
    await lab.setup();
    await lab.ok(['snapshot', 'create', `${lab.db}/main`]);
    const main = await lab.branch('main');
    await query(main, 'CREATE TABLE events (n int)');
    await query(main, 'INSERT INTO events SELECT generate_series(1, 100)');
    await new Promise((r) => setTimeout(r, 1100));
    target = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 1100));
    await query(main, 'INSERT INTO events SELECT generate_series(101, 200)');
    await lab.remember('main', 'events');
  });
  after(() => lab.teardown());

  const recover = (name: string) => ['branch', 'create', `${lab.db}/${name}`, '--pitr', target];
  const eventsIn = async (name: string) =>
    (await query<{ n: number }>(await lab.branch(name), 'SELECT count(*)::int AS n FROM events'))[0]!.n;

  it('the crash tests cover every step a recovery runs', async () => {
    assert.deepEqual(await lab.stepsOf(recover('probe'), 'branch create'), PITR);
    assert.equal(await eventsIn('probe'), 100, 'recovered to the target: the first 100 rows, not the later ones');
    await lab.ok(['branch', 'delete', `${lab.db}/probe`]);
  });

  for (const step of PITR) {
    it(`recovery killed after '${step}'`, async () => {
      const kept = lab.state().snapshots;
      await lab.kill(recover('restored'), 'branch create', step);
      await lab.reconcile();
      assert.equal(lab.state().branches[`${lab.db}/restored`], undefined);
      assert.deepEqual(lab.state().snapshots, kept, 'the kept snapshot it recovers from is untouched');
      await lab.assertConsistent();
      const again = await lab.json(recover('restored'));
      assert.equal((await queryOne<{ n: number }>(again, 'SELECT count(*)::int AS n FROM events')).n, 100);
      await lab.ok(['branch', 'delete', `${lab.db}/restored`]);
    });
  }

  it('after all of it: nothing left over, every branch intact', () => lab.assertConsistent());
});

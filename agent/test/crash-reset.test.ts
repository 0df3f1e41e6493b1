import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { BranchView } from '../engine/view.js';
import { CrashLab } from './crash-lab.js';
import { query, queryOne } from './helpers.js';

/**
 * Issue 7, crash tests: a branch reset killed right after each of its steps. Before its commit
 * the reset is undone (the branch is as it was: its own rows, its old password, its WAL); after
 * the commit it is finished (the branch is the parent's fresh copy). Either way reconcile leaves
 * nothing behind and the reset can be run again to success.
 */
const RESET = [
  'check image',
  'connect to parent',
  'zfs snapshot',
  'backup mode',
  'zfs clone',
  'prepare data',
  'remove old container',
  'swap datasets',
  'clear WAL folder',
  'start container',
  'wait ready',
  'set password',
  'commit',
  'drop old dataset',
  'drop old WAL',
  'drop old origin',
];

describe('crash tests: branch reset killed after every step', () => {
  const lab = new CrashLab('crash2', 2);
  before(async () => {
    await lab.setup();
    dev = await lab.json(['branch', 'create', `${lab.db}/dev`]);
  });
  after(() => lab.teardown());

  // A reset keeps the port and password, so one view of the branch serves the whole file.
  let dev: BranchView;
  /** A row only this branch has: a reset removes it, an undone reset keeps it. */
  const mark = async (v: string) => {
    await query(dev, 'CREATE TABLE IF NOT EXISTS mine (v text)');
    await query(dev, 'INSERT INTO mine VALUES ($1)', [v]);
  };
  const marks = async () => {
    const [{ exists }] = (await query<{ exists: boolean }>(
      dev,
      "SELECT to_regclass('mine') IS NOT NULL AS exists",
    )) as [{ exists: boolean }];
    return exists ? (await query<{ v: string }>(dev, 'SELECT v FROM mine ORDER BY v')).map((r) => r.v) : [];
  };

  it('the crash tests cover every step a reset runs', async () => {
    assert.deepEqual(await lab.stepsOf(['branch', 'reset', `${lab.db}/dev`], 'branch reset'), RESET);
  });

  for (const step of RESET) {
    it(`reset killed after '${step}'`, async () => {
      await mark(step);
      await lab.kill(['branch', 'reset', `${lab.db}/dev`], 'branch reset', step);
      const report = await lab.reconcile();
      assert.ok(report.findings.some((f) => f.kind === 'interrupted-operation' && f.subject === `${lab.db}/dev`));
      await lab.assertConsistent();
      // (assertConsistent found it running; `dev` still connects: same port and password)
      const committed = RESET.indexOf(step) >= RESET.indexOf('commit');
      assert.deepEqual(
        await marks(),
        committed ? [] : [step],
        committed ? 'a committed reset is finished' : 'an unfinished reset is undone',
      );
      // retried to success
      const again = await lab.json(['branch', 'reset', `${lab.db}/dev`]);
      assert.equal((await queryOne<{ n: number }>(again, 'SELECT count(*)::int AS n FROM t')).n, 2000);
      assert.deepEqual(await marks(), []);
    });
  }

  it('after all of it: nothing left over, every branch intact', () => lab.assertConsistent());
});

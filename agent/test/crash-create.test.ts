import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CrashLab } from './crash-lab.js';
import { leftovers, query, queryOne } from './helpers.js';

/**
 * Issue 7, crash tests: a branch create or delete killed (SIGKILL, as a power loss would) right
 * after each of its steps, then reconcile (`bpg doctor --fix`): the state is valid, nothing is
 * orphaned, the parent is not left in backup mode, every branch that existed before still has
 * its data, and the operation can be run again to success.
 */
const CREATE = [
  'check image',
  'port slot',
  'wal archive',
  'connect to parent',
  'zfs snapshot',
  'backup mode',
  'zfs clone',
  'prepare data',
  'start container',
  'wait ready',
  'set password',
];
const DELETE = ['remove container', 'destroy dataset', 'remove WAL folder', 'forget'];

describe('crash tests: branch create and delete killed after every step', () => {
  const lab = new CrashLab('crash1', 1);
  before(() => lab.setup());
  after(() => lab.teardown());

  it('the crash tests cover every step the operations run', async () => {
    assert.deepEqual(await lab.stepsOf(['branch', 'create', `${lab.db}/probe`], 'branch create'), CREATE);
    assert.deepEqual(await lab.stepsOf(['branch', 'delete', `${lab.db}/probe`], 'branch delete'), DELETE);
  });

  for (const step of CREATE) {
    it(`create killed after '${step}'`, async () => {
      await lab.kill(['branch', 'create', `${lab.db}/pr-1`], 'branch create', step);
      const report = await lab.reconcile();
      assert.ok(
        report.findings.some((f) => f.kind === 'interrupted-operation' && f.subject === `${lab.db}/pr-1`),
        'the interrupted create was found',
      );
      assert.equal(lab.state().branches[`${lab.db}/pr-1`], undefined, 'a half-made branch is removed');
      await lab.assertConsistent();
      // retried to success: the new branch has main's data
      const again = await lab.json(['branch', 'create', `${lab.db}/pr-1`]);
      const { n } = await queryOne<{ n: number }>(again, 'SELECT count(*)::int AS n FROM t');
      assert.equal(n, 2000);
      await lab.ok(['branch', 'delete', `${lab.db}/pr-1`]);
    });
  }

  for (const step of DELETE) {
    it(`delete killed after '${step}'`, async () => {
      await lab.ok(['branch', 'create', `${lab.db}/victim`, '--fast']);
      await lab.kill(['branch', 'delete', `${lab.db}/victim`], 'branch delete', step);
      await lab.reconcile();
      // reconcile finishes a delete: the branch is gone, with everything it owned
      assert.equal(lab.state().branches[`${lab.db}/victim`], undefined);
      await lab.assertConsistent();
      const left = await leftovers(lab.db, lab.env.BPG_CONFIG);
      assert.ok(!left.datasets.some((d) => d.includes('victim')), `left: ${left.datasets}`);
      assert.ok(!left.containers.some((c) => c.includes('victim')), `left: ${left.containers}`);
      // and the name can be used again, and deleted cleanly
      await lab.ok(['branch', 'create', `${lab.db}/victim`, '--fast']);
      await lab.ok(['branch', 'delete', `${lab.db}/victim`]);
    });
  }

  // Not in the list, but a rename moves a dataset: killed half-way it is undone.
  for (const step of ['remove container', 'zfs rename']) {
    it(`rename killed after '${step}' is undone`, async () => {
      const mv = await lab.json(['branch', 'create', `${lab.db}/mv`, '--fast']);
      await query(mv, 'CREATE TABLE moved AS SELECT 42 AS answer');
      await lab.kill(['branch', 'rename', `${lab.db}/mv`, `${lab.db}/mv2`], 'branch rename', step);
      await lab.reconcile();
      const back = await lab.branch('mv');
      assert.equal(back.status, 'running');
      assert.equal(back.connection.uri, mv.connection.uri);
      assert.equal((await queryOne<{ answer: number }>(back, 'SELECT answer FROM moved')).answer, 42);
      assert.equal(lab.state().branches[`${lab.db}/mv2`], undefined);
      await lab.assertConsistent();
      await lab.ok(['branch', 'rename', `${lab.db}/mv`, `${lab.db}/mv2`]);
      assert.equal(
        (await queryOne<{ answer: number }>(await lab.branch('mv2'), 'SELECT answer FROM moved')).answer,
        42,
      );
      await lab.ok(['branch', 'delete', `${lab.db}/mv2`]);
    });
  }

  it('a kill with no reconcile in between is recovered by the next command, which then succeeds', async () => {
    await lab.kill(['branch', 'create', `${lab.db}/pr-2`], 'branch create', 'backup mode');
    const r = await lab.ok(['branch', 'create', `${lab.db}/pr-2`]);
    assert.match(r.stderr, /cleaning up branch .*pr-2 left behind by an interrupted operation/);
    await lab.ok(['branch', 'delete', `${lab.db}/pr-2`]);
  });

  it('after all of it: nothing left over, every branch intact', () => lab.assertConsistent());
});

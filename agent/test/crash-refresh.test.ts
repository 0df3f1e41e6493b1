import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BranchView } from '../engine/view.js';
import { CrashLab } from './crash-lab.js';
import { queryOne } from './helpers.js';
import { SourcePg } from './refresh-source.js';

/**
 * Issue 16, crash tests: a refresh of main killed right after each of its steps. Before its commit
 * the refresh is undone (main is the old one: its data, its dataset, its container with the same
 * port and password); after it, finished (main serves the source's newer data). Either way
 * reconcile leaves nothing behind (no new dataset, container, temporary file or WAL folder; an
 * old main only while a branch is cloned from it), every other branch keeps its data, and the next
 * refresh works. One database and one source serve every step.
 */
const REFRESH = [
  'check image',
  'zfs create',
  'prepare folders',
  'import',
  'mask',
  'wait for main',
  'stop main',
  'clear WAL folder',
  'start container',
  'wait ready',
  'commit',
  'drop old WAL',
  'drop unused generations',
];

describe('crash tests: db refresh killed after every step', () => {
  const lab = new CrashLab('crash-refresh', 49);
  const src = new SourcePg();
  let port = 0;
  /** A refresh from a URL records no source (an import does): every refresh here names it. */
  const refresh = () => ['db', 'refresh', lab.db, '--from-url', src.urlWithPassword('src')];
  const marker = async (main: BranchView) =>
    queryOne<{ v: string; masked: boolean }>(main, 'SELECT v, masked FROM marker');

  before(async () => {
    await src.start();
    await src.query('postgres', 'CREATE DATABASE src');
    // the source's t is main's t (the lab remembers its checksum); marker says which refresh main holds
    await src.query(
      'src',
      `CREATE TABLE t (id int PRIMARY KEY, v text);
       INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g;
       CREATE TABLE marker (v text, masked boolean NOT NULL DEFAULT false);
       INSERT INTO marker VALUES ('first');`,
    );
    await lab.setup();
    const mask = join(dirname(lab.env.BPG_CONFIG), 'mask.sql');
    writeFileSync(mask, 'UPDATE marker SET masked = true;\n');
    // The first refresh records the masking; `keep` stays on the first generation.
    await lab.ok([...refresh(), '--masking-sql', mask]);
    const main = await lab.branch('main');
    port = main.port;
    assert.deepEqual(await marker(main), { v: 'first', masked: true });
  });
  after(async () => {
    await lab.teardown();
    await src.stop();
  });

  it('the crash tests cover every step a refresh runs', async () => {
    assert.deepEqual(await lab.stepsOf(refresh(), 'db refresh'), REFRESH);
  });

  for (const step of REFRESH) {
    it(`refresh killed after '${step}'`, async () => {
      const gen = lab.state().databases[lab.db]!.generation;
      const was = (await marker(await lab.branch('main'))).v;
      await src.query('src', 'UPDATE marker SET v = $1', [step]);
      await lab.kill(refresh(), 'db refresh', step);
      const report = await lab.reconcile();
      assert.ok(
        report.findings.some((f) => f.kind === 'interrupted-operation'),
        JSON.stringify(report.findings),
      );
      await lab.assertConsistent();
      const committed = REFRESH.indexOf(step) >= REFRESH.indexOf('commit');
      assert.equal(lab.state().databases[lab.db]!.generation, committed ? gen + 1 : gen);
      const main = await lab.branch('main');
      assert.equal(main.port, port, 'main keeps its port');
      assert.deepEqual(
        await marker(main),
        { v: committed ? step : was, masked: true },
        committed ? 'a committed refresh is finished' : 'an unfinished refresh is undone: the old main serves',
      );
    });
  }

  it('after all of it: nothing left over, every branch intact, a refresh works', async () => {
    await lab.assertConsistent();
    await src.query('src', "UPDATE marker SET v = 'last'");
    await lab.ok(refresh());
    assert.deepEqual(await marker(await lab.branch('main')), { v: 'last', masked: true });
    await lab.assertConsistent();
  });
});

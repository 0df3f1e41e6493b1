import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { BranchView } from '../engine/view.js';
import { State } from '../state/schema.js';
import { cli, config, ok, okJson, query, uniqueDb } from './helpers.js';

const db = uniqueDb('cc');

/** Child process that adds `n` databases to a state store, one locked update each. */
const WORKER = fileURLToPath(new URL('./state-worker.js', import.meta.url));

describe('concurrent processes', () => {
  before(async () => {
    await ok(['db', 'create', db]);
  });
  after(async () => {
    await cli(['db', 'delete', db, '--force']);
  });

  it('two bpg branch create processes at once both succeed, on different ports, with a valid state', async () => {
    const [a, b] = await Promise.all([
      ok(['branch', 'create', `${db}/one`, '--json']),
      ok(['branch', 'create', `${db}/two`, '--json']),
    ]);
    const one = JSON.parse(a.stdout) as BranchView;
    const two = JSON.parse(b.stdout) as BranchView;
    assert.notEqual(one.port, two.port);
    const cfg = await config();
    const state = State.parse(JSON.parse(readFileSync(join(cfg.stateDir, 'state.json'), 'utf8')));
    assert.equal(state.branches[`${db}/one`]?.status, 'running');
    assert.equal(state.branches[`${db}/two`]?.status, 'running');
    for (const x of [one, two]) assert.deepEqual(await query(x, 'SELECT 1 AS ok'), [{ ok: 1 }]);
    const list = await okJson<BranchView[]>(['branch', 'list', db]);
    assert.equal(list.length, 3);
  });

  it('an operation on a busy branch is refused instead of interleaving', async () => {
    const [stop, del] = await Promise.all([
      cli(['stop', `${db}/one`]),
      new Promise<Awaited<ReturnType<typeof cli>>>((r) =>
        setTimeout(() => cli(['branch', 'delete', `${db}/one`]).then(r), 30),
      ),
    ]);
    // Either the delete came first (and the stop found nothing) or it found the stop in progress.
    if (stop.code === 0) {
      assert.ok(del.code === 0 || /busy: 'stop' in progress/.test(del.stderr), del.stderr);
    } else {
      assert.equal(del.code, 0);
      assert.match(stop.stderr, /busy|does not exist/);
    }
  });

  it('the state store loses no update with 4 processes writing at once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bpg-state-'));
    const runs = await Promise.all(
      [0, 1, 2, 3].map(
        (i) =>
          new Promise<number>((resolve) => {
            const c = spawn(process.execPath, [WORKER, dir, `w${i}`, '25'], { stdio: 'inherit' });
            c.on('close', (code) => resolve(code ?? 1));
          }),
      ),
    );
    assert.deepEqual(runs, [0, 0, 0, 0]);
    const state = State.parse(JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')));
    assert.equal(Object.keys(state.databases).length, 100);
    assert.equal(statSync(join(dir, 'state.json')).mode & 0o777, 0o600);
  });
});

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import type { BranchView } from '../engine/view.js';
import { cli, config, leftovers, ok, okJson, ownStateConfig, queryOne, uniqueDb } from './helpers.js';

/** A config file like the test one with some keys changed, for errors that depend on the config. */
function variantConfig(change: (raw: Record<string, any>) => void): string {
  const raw = YAML.parse(readFileSync(process.env.BPG_CONFIG!, 'utf8'));
  change(raw);
  const path = join(mkdtempSync(join(tmpdir(), 'bpg-cfg-')), 'config.yaml');
  writeFileSync(path, YAML.stringify(raw));
  return path;
}

/** The state of this file's database plus the number of databases and branches (other files run in parallel). */
async function stateText(): Promise<string> {
  const cfg = await config();
  const s = JSON.parse(readFileSync(join(cfg.stateDir, 'state.json'), 'utf8'));
  const mine = Object.fromEntries(Object.entries(s.branches).filter(([k]) => k.startsWith(`${db}/`)));
  const names = [...Object.keys(s.databases), ...Object.keys(s.branches)].filter(
    (k) => !/^[a-z]{2,3}[0-9a-f]{6}(\/|$)/.test(k) || k.startsWith(db),
  );
  return JSON.stringify({ db: s.databases[db], mine, names });
}

function oneLine(stderr: string) {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${stderr}`);
  assert.match(lines[0]!, /^error: /);
  assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
}

const db = uniqueDb('er');

/**
 * Backup mode (PostgreSQL 15+) belongs to the session that started it and ends when that session
 * does; the agent's sessions say application_name=betterpg. None may outlive the agent process.
 */
async function assertNotInBackup(b: BranchView): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const { n } = await queryOne<{ n: number }>(
      b,
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'betterpg'",
    );
    if (n === 0) return;
    if (Date.now() > deadline)
      assert.fail(`${n} agent session(s) still open on ${b.name}: backup mode could still be held`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('bad input gets one clear line and changes nothing', () => {
  before(async () => {
    await ok(['db', 'create', db]);
  });
  after(async () => {
    await cli(['db', 'delete', db, '--force']);
  });

  for (const bad of ['a;rm -rf', '../x', '$(id)', 'with space', '-dash', 'x'.repeat(41), 'a/b', 'é']) {
    it(`refuses database name ${JSON.stringify(bad)}`, async () => {
      const before = await stateText();
      const r = await cli(['db', 'create', bad]);
      assert.equal(r.code, 2);
      oneLine(r.stderr);
      assert.match(r.stderr, /invalid name|too many arguments|unknown option/);
      assert.equal(await stateText(), before);
    });
  }

  for (const bad of ['nodb', `${db}/a;b`, `${db}/../x`, `${db}/${'b'.repeat(64)}`, `${db}/x/y`]) {
    it(`refuses branch name ${JSON.stringify(bad)}`, async () => {
      const before = await stateText();
      const r = await cli(['branch', 'create', bad]);
      assert.equal(r.code, 2);
      oneLine(r.stderr);
      assert.match(r.stderr, /invalid branch name|invalid name/);
      assert.equal(await stateText(), before);
    });
  }

  it('refuses unknown databases and branches', async () => {
    for (const args of [
      ['db', 'get', 'nosuchdb'],
      ['branch', 'get', `${db}/nope`],
      ['branch', 'create', 'nosuchdb/x'],
      ['branch', 'create', `${db}/x`, '--from', `${db}/nope`],
      ['stop', `${db}/nope`],
      ['branch', 'delete', `${db}/nope`],
    ]) {
      const r = await cli(args);
      assert.equal(r.code, 3, args.join(' '));
      oneLine(r.stderr);
      assert.match(r.stderr, /does not exist/);
    }
  });

  it('refuses duplicates', async () => {
    const before = await stateText();
    const d = await cli(['db', 'create', db]);
    assert.equal(d.code, 4);
    assert.match(d.stderr, /already exists/);
    await ok(['branch', 'create', `${db}/dup`, '--fast']);
    const mid = await stateText();
    const b = await cli(['branch', 'create', `${db}/dup`]);
    assert.equal(b.code, 4);
    oneLine(b.stderr);
    assert.match(b.stderr, /already exists/);
    assert.equal(await stateText(), mid);
    await ok(['branch', 'delete', `${db}/dup`]);
    assert.notEqual(before, '');
  });

  it('shows a stack trace only with --debug', async () => {
    const r = await cli(['--debug', 'branch', 'get', `${db}/nope`]);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /\n\s+at /);
  });

  it('names the key of an invalid config', async () => {
    const path = variantConfig((raw) => {
      raw.postgres.portRange = [20000, 'x'];
    });
    const r = await cli(['db', 'list'], { BPG_CONFIG: path });
    assert.equal(r.code, 2);
    oneLine(r.stderr);
    assert.match(r.stderr, /postgres\.portRange\.1/);
    const unknown = variantConfig((raw) => {
      raw.zfs.poool = 'x';
    });
    const u = await cli(['db', 'list'], { BPG_CONFIG: unknown });
    assert.match(u.stderr, /invalid config .*zfs.*poool/);
    const missing = await cli(['db', 'list'], { BPG_CONFIG: '/nonexistent/config.yaml' });
    assert.match(missing.stderr, /no config file at \/nonexistent\/config.yaml: run 'bpg init'/);
  });

  it('reports a missing pool, a stopped Docker engine and a missing image, and creates nothing', async () => {
    const cfg = await config();
    const noPool = variantConfig((raw) => {
      raw.zfs.pool = 'nosuchpool';
    });
    const name = uniqueDb('np');
    const p = await cli(['db', 'create', name], { BPG_CONFIG: noPool });
    assert.equal(p.code, 1);
    oneLine(p.stderr);
    assert.match(p.stderr, /ZFS pool 'nosuchpool' does not exist/);

    const d = await cli(['db', 'create', name], { DOCKER_SOCKET: '/nonexistent/docker.sock' });
    assert.equal(d.code, 1);
    oneLine(d.stderr);
    assert.match(d.stderr, /Docker engine is not reachable/);

    const refused = await cli(['db', 'create', name, '--image', 'betterpg/no-such-image:1']);
    assert.equal(refused.code, 2);
    oneLine(refused.stderr);
    assert.match(refused.stderr, /image 'betterpg\/no-such-image:1' is not allowed.*postgres\.allowedImages/);
    const allowing = variantConfig((raw) => {
      raw.postgres.allowedImages = ['betterpg/no-such-image:1'];
    });
    const i = await cli(['db', 'create', name, '--image', 'betterpg/no-such-image:1'], { BPG_CONFIG: allowing });
    assert.equal(i.code, 1);
    oneLine(i.stderr);
    assert.match(i.stderr, /image 'betterpg\/no-such-image:1' is not present.*scripts\/build-local-image\.sh/);

    assert.deepEqual(await leftovers(name), { datasets: [], containers: [] });
    const list = await okJson<Array<{ name: string }>>(['db', 'list']);
    assert.ok(!list.some((x) => x.name === name));
    assert.ok(cfg.stateDir);
  });

  for (const step of ['zfs snapshot', 'zfs clone', 'prepare data', 'start container', 'wait ready']) {
    it(`a create that fails after '${step}' undoes every finished step`, async () => {
      const main = await okJson<BranchView>(['branch', 'get', `${db}/main`]);
      const snapsBefore = await leftovers(db);
      const r = await cli(['branch', 'create', `${db}/doomed`], { BPG_FAULT_FAIL_AFTER: `branch create:${step}` });
      assert.equal(r.code, 1);
      oneLine(r.stderr);
      assert.match(r.stderr, new RegExp(`failed at step '${step}'.*every finished step was undone`));
      assert.deepEqual(await leftovers(db), snapsBefore, 'no dataset, snapshot or container left');
      const list = await okJson<BranchView[]>(['branch', 'list', db]);
      assert.deepEqual(
        list.map((b) => b.name),
        [`${db}/main`],
      );
      // main still answers and is not left in backup mode
      await assertNotInBackup(main);
    });
  }

  it('a create killed mid-way is cleaned up by the next command, and can be retried', async () => {
    // A state of its own: the next mutating command of ANY process cleans up interrupted work, so
    // in the shared state a test file running beside this one would race it (and log about it).
    const env = {
      BPG_CONFIG: ownStateConfig('kill', 0),
    };
    const kdb = uniqueDb('ek');
    await ok(['db', 'create', kdb], env);
    try {
      // killed while the parent is in backup mode (the snapshot is taken between start and stop)
      const r = await cli(['branch', 'create', `${kdb}/killed`], {
        ...env,
        BPG_FAULT_KILL_AFTER: 'branch create:zfs snapshot',
      });
      assert.notEqual(r.code, 0);
      const half = await okJson<BranchView[]>(['branch', 'list', kdb], env);
      assert.equal(half.find((b) => b.name === `${kdb}/killed`)?.status, 'interrupted');
      const main = half.find((b) => b.name === `${kdb}/main`)!;
      await assertNotInBackup(main);
      const again = await ok(['branch', 'create', `${kdb}/killed`, '--json'], env);
      assert.match(again.stderr, /cleaning up branch .*killed left behind by an interrupted operation/);
      assert.equal((JSON.parse(again.stdout) as BranchView).status, 'running');
      await ok(['branch', 'delete', `${kdb}/killed`], env);
      const left = await leftovers(kdb, env.BPG_CONFIG);
      assert.equal(left.containers.length, 1);
      assert.equal(left.datasets.length, 2, `datasets: ${left.datasets}`); // <db> and <db>/main
      assert.equal(left.datasets.filter((d) => d.includes('@')).length, 0, `snapshots left: ${left.datasets}`);
    } finally {
      await cli(['db', 'delete', kdb, '--force'], env);
    }
  });
});

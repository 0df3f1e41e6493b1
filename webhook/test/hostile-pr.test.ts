import assert from 'node:assert/strict';
import { lstatSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BranchView } from '../../agent/api/schemas.js';
import {
  addressesOf,
  assertReachBlocked,
  attacks,
  BombWatch,
  HostileStack,
  HostListener,
} from '../../agent/test/hostile-kit.js';
import { query, queryOne } from '../../agent/test/helpers.js';
import { startReceiver, type Receiver } from '../src/receiver.js';
import { FakeGitHub } from '../../shared/test/fake-github.js';
import { deliver, MIGRATION_001, prPayload, receiverConfig, recorder, sha, uniqueName, waitFor } from './helpers.js';

/**
 * Issue 11, point 11, through the receiver: a hostile pull request's own migration files, served by
 * the fake GitHub's contents API at the PR's head commit and applied by the real receiver after real
 * signed pull_request deliveries, against a real `bpg serve` (its own state: every branch has a
 * 64 MiB disk quota). The attacks and the checks after each are in agent/test/hostile-kit.ts, shared
 * with the Action's run of the same attacks (action/test/hostile-sql.test.ts). A migration that
 * lifts statement_timeout and sleeps is webhook/test/hostile.test.ts's (not repeated here).
 */

const owner = uniqueName('org');
const REPO = `${owner}/hostile-pr`;
const GH_TOKEN = `ghs_${uniqueName('t')}${uniqueName('t')}`;
const DIR = 'db/migrations';
/** Per file: the fill and the fork bomb end well within it; it bounds the bomb should the test die. */
const LIMIT_S = 90;
const PR = { link: 61, fifo: 62, settings: 63, fill: 64, bomb: 65 };

const stack = new HostileStack('hostile-pr', 27);
const listener = new HostListener();
let gh: FakeGitHub;
let receiver: Receiver;
let secret: string;
let hook: string;
const heads = new Map<number, string>();

const finalStatus = (s: string) => () => gh.statusesOf(REPO, s).find((x) => x.state !== 'pending');
const prBranch = (n: number) => `pr-${n}`;

/** A push of `files` (under db/migrations) as PR `n`'s head commit, delivered as GitHub does. */
async function push(n: number, action: 'opened' | 'synchronize', files: Record<string, string>): Promise<string> {
  const s = sha();
  heads.set(n, s);
  gh.commit(REPO, s, Object.fromEntries(Object.entries(files).map(([name, sql]) => [`${DIR}/${name}`, sql])));
  const r = await deliver(hook, secret, 'pull_request', prPayload(action, REPO, n, s));
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return s;
}

/** The PR's final commit status, and its comment. */
async function reported(n: number): Promise<{ state: string; description: string; comment: string }> {
  const st = await waitFor(`PR ${n}'s final status`, finalStatus(heads.get(n)!), 240_000);
  const comments = gh.botComments(REPO, n);
  assert.equal(comments.length, 1, `one comment on PR ${n}`);
  return { state: st.state, description: st.description, comment: comments[0]!.body };
}

const applied = async (b: BranchView) =>
  (await query<{ name: string }>(b, 'SELECT name FROM betterpg.migrations ORDER BY name')).map((r) => r.name);

before(async () => {
  await stack.start();
  await listener.open();
  gh = new FakeGitHub(GH_TOKEN);
  await gh.start();
  gh.repo(REPO);
  const r = await receiverConfig({
    githubUrl: gh.url,
    githubToken: GH_TOKEN,
    agentUrl: stack.url,
    agentToken: stack.token,
    repos: {
      [REPO]: { database: stack.db, fast: true, resetOnPush: true, migrations: { path: DIR, timeoutSeconds: LIMIT_S } },
    },
    queue: { concurrency: 4 },
  });
  secret = r.secret;
  receiver = await startReceiver(r.cfg, { log: recorder() });
  hook = `${receiver.url}/webhook`;

  // Four pull requests at once (the fork bomb comes alone, later). Every branch is on one network:
  // the other branch's address and that network's gateway (the host) are known before the PR is.
  const other = addressesOf((await stack.branch('other')).container);
  await Promise.all([
    push(PR.link, 'opened', {
      '001_accounts.sql': MIGRATION_001,
      '002_link.sql': attacks.linkAtSettings(stack.canary),
    }),
    push(PR.fifo, 'opened', { '001_fifo.sql': attacks.fifoAtPgVersion() }),
    push(PR.settings, 'opened', {
      '001_accounts.sql': MIGRATION_001,
      '002_alter_system.sql': attacks.alterSystem('dblink'),
      '003_reach.sql': attacks.reach({
        neighbour: other.ip,
        host: other.gateway,
        hostPort: listener.port,
        connectTimeout: 2,
      }),
    }),
    push(PR.fill, 'opened', { '001_accounts.sql': MIGRATION_001, '002_fill.sql': attacks.fillDisk() }),
  ]);
});

after(async () => {
  try {
    await receiver?.close(5_000);
    await gh?.close();
    await listener.close();
  } finally {
    await stack.stop(); // deleting the database also ends whatever a failed test left running in a branch
  }
});

describe('a hostile pull request through the receiver (its own migration files)', () => {
  it('the canary check notices a host file written and chowned through a link (so the checks below can fail)', () => {
    stack.proveCanaryCheck();
  });

  it('(a) a link at betterpg.conf: the restart is refused in one line naming it, the host file untouched; a push gets a fresh, working branch', async () => {
    const r = await reported(PR.link);
    assert.equal(r.state, 'success', r.description);
    assert.match(r.description, /is ready; 2 migrations applied/);
    const b = await stack.branch(prBranch(PR.link));
    assert.ok(lstatSync(join(stack.dataDir(b), 'betterpg.conf')).isSymbolicLink(), 'the migration planted the link');

    stack.assertRefused(await stack.restart(prBranch(PR.link)), 'betterpg.conf', 'a symbolic link');
    await stack.assertContained(['main', 'other', prBranch(PR.link)]);

    // The author pushes again: the receiver resets the branch (a new clone of main) and applies the files from scratch.
    await push(PR.link, 'synchronize', {
      '001_accounts.sql': MIGRATION_001,
      '003_orders.sql': 'CREATE TABLE orders (id bigserial PRIMARY KEY);\n',
    });
    const again = await reported(PR.link);
    assert.equal(again.state, 'success', again.description);
    const fresh = await stack.branch(prBranch(PR.link));
    assert.equal(fresh.status, 'running');
    assert.ok(lstatSync(join(stack.dataDir(fresh), 'betterpg.conf')).isFile(), 'a regular settings file again');
    assert.deepEqual(
      await applied(fresh),
      ['001_accounts.sql', '003_orders.sql'],
      'applied on a fresh clone (the link file is not recorded)',
    );
    assert.equal((await queryOne<{ n: number }>(fresh, 'SELECT count(*)::int AS n FROM t')).n, 1000, "main's data");
    assert.equal((await stack.restart(prBranch(PR.link))).status, 200, 'and it restarts');
    await stack.assertContained();
  });

  it('(b) a FIFO at PG_VERSION: the restart is refused at once naming it; the API answers meanwhile', async () => {
    const r = await reported(PR.fifo);
    assert.equal(r.state, 'success', r.description);
    const b = await stack.branch(prBranch(PR.fifo));
    assert.ok(lstatSync(join(stack.dataDir(b), 'PG_VERSION')).isFIFO(), 'the migration planted the FIFO');
    // A blocking open of the FIFO would hang the restart (60 s timeout) and whatever waits behind it.
    const [restart, list, health] = await Promise.all([
      stack.restart(prBranch(PR.fifo)),
      stack.api('GET', `/v1/databases/${stack.db}/branches`, 30_000),
      stack.api('GET', '/v1/health', 30_000),
    ]);
    stack.assertRefused(restart, 'PG_VERSION', 'a FIFO');
    assert.equal(list.status, 200);
    assert.equal(health.status, 200);
    await stack.assertContained(['main', 'other', prBranch(PR.fifo)]);
  });

  it("(e, f) ALTER SYSTEM on archiving and the port, then a restart: the branch archives into its own folder and listens where the agent expects; from SQL, another branch's container and the host are out of reach", async () => {
    const r = await reported(PR.settings);
    assert.equal(r.state, 'failure');
    assert.match(r.description, /^Migration 003_reach\.sql failed: ERROR: reach: self-socket=connected/);
    assertReachBlocked(r.comment, listener);

    const b = await stack.branch(prBranch(PR.settings));
    assert.deepEqual(
      await applied(b),
      ['001_accounts.sql', '002_alter_system.sql'],
      'ALTER SYSTEM went through; the reach file was rolled back',
    );
    const restarted = await stack.restart(prBranch(PR.settings));
    assert.equal(restarted.status, 200, JSON.stringify(restarted.body));
    assert.equal(restarted.body.port, b.port, 'the same published port');
    await stack.assertSettingsHeld(prBranch(PR.settings));
    await stack.assertContained();
  });

  it('(d) filling the disk: the file fails with "Disk quota exceeded" on the PR, rolled back; main and the others are fine', async () => {
    const r = await reported(PR.fill);
    assert.equal(r.state, 'failure');
    assert.match(
      r.description,
      /^Migration 002_fill\.sql failed: ERROR: could not (extend file|write block \d+ in file) "[^"]+": Disk quota exceeded/,
    );
    assert.match(r.comment, /❌ failed at `002_fill\.sql` \(1 applied: `001_accounts\.sql`\)/);
    const b = await stack.branch(prBranch(PR.fill));
    assert.equal(b.diskQuotaBytes, 64 * 1024 * 1024);
    assert.equal(b.status, 'running');
    assert.deepEqual(await applied(b), ['001_accounts.sql'], 'the branch answers; the fill was rolled back');
    await stack.assertContained();
    // Both still write (the pool is not full).
    for (const name of ['main', 'other'])
      await query(
        await stack.branch(name),
        'CREATE TABLE after_fill AS SELECT g FROM generate_series(1, 10000) g; DROP TABLE after_fill',
      );
  });

  it('(c) a fork bomb stops at the pids limit; main, the other branches and the agent answer meanwhile', async () => {
    await push(PR.bomb, 'opened', { '001_accounts.sql': MIGRATION_001, '002_bomb.sql': attacks.forkBomb() });
    const b = await waitFor(
      'the bomb branch running',
      async () => {
        const v = await stack.branch(prBranch(PR.bomb)).catch(() => undefined);
        return v?.status === 'running' ? v : undefined;
      },
      120_000,
    );
    const bomb = new BombWatch(stack, b);
    try {
      assert.equal(bomb.limit(), 512);
      await bomb.atLimit();
      assert.ok(bomb.current() <= 512);
      await stack.assertContained(['main', 'other', prBranch(PR.bomb)]);
      assert.ok(bomb.current() > 100, `the bomb was still running (${bomb.current()} processes)`);
    } finally {
      await bomb.stop();
    }
    const r = await reported(PR.bomb);
    assert.equal(r.state, 'success', r.description);
    assert.match(r.description, /is ready; 2 migrations applied/);
    const after = await stack.branch(prBranch(PR.bomb));
    assert.equal(after.status, 'running');
    assert.deepEqual(await applied(after), ['001_accounts.sql', '002_bomb.sql']);
    await stack.assertContained();
  });
});

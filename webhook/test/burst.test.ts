import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { BpgApiError } from '../../agent/api/client.js';
import { query, uniqueDb } from '../../agent/test/helpers.js';
import { startReceiver, type Receiver } from '../src/receiver.js';
import { FakeGitHub } from '../../shared/test/fake-github.js';
import {
  deliver,
  MIGRATION_001,
  MIGRATION_002,
  MIGRATION_003,
  prPayload,
  queuedIds,
  receiverConfig,
  recorder,
  sha,
  startAgent,
  uniqueName,
  waitFor,
  type TestAgent,
} from './helpers.js';

/**
 * A burst: 20 deliveries for 5 pull requests sent back to back (opened, two pushes, and a replay of
 * each `opened`), as GitHub sends them when several PRs are busy. Every one is answered at once;
 * afterwards each PR's work was done exactly once and in order, PRs in parallel.
 */

const db = uniqueDb('whb');
const REPO = `${uniqueName('org')}/burst`;
const GH_TOKEN = `ghs_${uniqueName('t')}${uniqueName('t')}`;
const PRS = [21, 22, 23, 24, 25];

let agent: TestAgent;
let gh: FakeGitHub;
let receiver: Receiver;
let secret: string;
let stateDir: string;
const log = recorder();

before(async () => {
  agent = await startAgent();
  await agent.client.createDatabase({ name: db });
  gh = new FakeGitHub(GH_TOKEN);
  await gh.start();
  gh.repo(REPO);
  const r = await receiverConfig({
    githubUrl: gh.url,
    githubToken: GH_TOKEN,
    agentUrl: agent.server.url,
    agentToken: agent.token,
    // fast branches and 3 PRs at a time: the point is ordering and counting, on a shared 2-core box.
    repos: { [REPO]: { database: db, fast: true, migrations: { path: 'migrations' } } },
    queue: { concurrency: 3 },
  });
  secret = r.secret;
  stateDir = r.stateDir;
  receiver = await startReceiver(r.cfg, { log });
});

after(async () => {
  await receiver?.close(5_000);
  await gh?.close();
  await agent?.client.deleteDatabase(db, { force: true }).catch(() => {});
  await agent?.close();
});

it('20 deliveries over 5 pull requests: each answered at once, nothing lost, nothing done twice, in order per PR', async () => {
  const shas = new Map<number, [string, string, string]>();
  for (const n of PRS) {
    const s: [string, string, string] = [sha(), sha(), sha()];
    shas.set(n, s);
    gh.commit(REPO, s[0], { 'migrations/001_accounts.sql': MIGRATION_001 });
    gh.commit(REPO, s[1], { 'migrations/001_accounts.sql': MIGRATION_001, 'migrations/002_orders.sql': MIGRATION_002 });
    gh.commit(REPO, s[2], {
      'migrations/001_accounts.sql': MIGRATION_001,
      'migrations/002_orders.sql': MIGRATION_002,
      'migrations/003_invoices.sql': MIGRATION_003,
    });
  }

  // Round-robin over the PRs, one delivery after the other as GitHub sends them.
  const openedIds = new Map<number, string>();
  const replies: { status: number; ms: number }[] = [];
  const t0 = performance.now();
  for (const round of ['opened', 'synchronize-1', 'replay', 'synchronize-2'] as const) {
    for (const n of PRS) {
      const [s1, s2, s3] = shas.get(n)!;
      let r;
      if (round === 'opened') {
        r = await deliver(`${receiver.url}/webhook`, secret, 'pull_request', prPayload('opened', REPO, n, s1));
        openedIds.set(n, r.id);
      } else if (round === 'replay') {
        r = await deliver(`${receiver.url}/webhook`, secret, 'pull_request', prPayload('opened', REPO, n, s1), {
          id: openedIds.get(n)!,
        });
      } else {
        r = await deliver(
          `${receiver.url}/webhook`,
          secret,
          'pull_request',
          prPayload('synchronize', REPO, n, round === 'synchronize-1' ? s2 : s3),
        );
      }
      replies.push(r);
    }
  }
  const sendMs = performance.now() - t0;
  assert.equal(replies.length, 20);
  assert.deepEqual(replies.map((r) => r.status).sort(), [...Array(5).fill(200), ...Array(15).fill(202)]);
  const slowest = Math.max(...replies.map((r) => r.ms));
  assert.ok(slowest < 1000, `slowest answer ${slowest} ms`);

  await waitFor(
    'every PR done',
    () => PRS.every((n) => gh.statusesOf(REPO, shas.get(n)![2]).some((s) => s.state !== 'pending')),
    120_000,
  );
  await receiver.queue.idle();
  const doneMs = performance.now() - t0;

  for (const n of PRS) {
    const [s1, s2, s3] = shas.get(n)!;
    for (const s of [s1, s2, s3])
      assert.deepEqual(
        gh.statusesOf(REPO, s).map((x) => x.state),
        ['pending', 'success'],
        `PR ${n} ${s}`,
      );
    // In order: the pushes' statuses come after the opened one's.
    const ats = [s1, s2, s3].map((s) => gh.statusesOf(REPO, s)[1]!.at);
    assert.deepEqual(
      [...ats].sort((a, b) => a - b),
      ats,
      `PR ${n} in order`,
    );
    assert.equal(gh.botComments(REPO, n).length, 1, `PR ${n}: one comment`);
    assert.match(gh.botComments(REPO, n)[0]!.body, /1 applied: `003_invoices.sql`; 2 applied before/);

    const b = await agent.client.getBranch(db, `pr-${n}`);
    const rows = await query<{ name: string; commit: string }>(
      b,
      'SELECT name, commit FROM betterpg.migrations ORDER BY applied_at',
    );
    assert.deepEqual(rows, [
      { name: '001_accounts.sql', commit: s1 },
      { name: '002_orders.sql', commit: s2 },
      { name: '003_invoices.sql', commit: s3 },
    ]);
    assert.equal(
      agent.log.lines.filter((l) => l.msg === 'branch created' && l.branch === `${db}/pr-${n}`).length,
      1,
      `pr-${n} created once`,
    );
  }
  assert.equal(log.lines.filter((l) => l.msg === 'delivery done').length, 15);
  assert.deepEqual(queuedIds(stateDir), []);

  // Different PRs ran side by side: some PR started before another one's first job had finished.
  const firstPending = PRS.map((n) => gh.statusesOf(REPO, shas.get(n)![0])[0]!.at);
  const firstDone = PRS.map((n) => gh.statusesOf(REPO, shas.get(n)![0])[1]!.at);
  assert.ok(
    firstPending.some((p, i) => firstDone.some((d, j) => i !== j && p < d && p > firstPending[j]!)),
    'PRs overlapped',
  );
  const inside = Math.max(...log.lines.filter((l) => l.msg === 'delivery').map((l) => Number(l.ms)));
  process.stderr.write(
    `# burst: 20 deliveries sent in ${Math.round(sendMs)} ms (slowest answer ${Math.round(slowest)} ms, ${inside} ms of it in the receiver), all work done after ${Math.round(doneMs)} ms\n`,
  );

  // Close them all: the branches go.
  for (const n of PRS)
    await deliver(`${receiver.url}/webhook`, secret, 'pull_request', prPayload('closed', REPO, n, shas.get(n)![2]));
  await waitFor(
    'every comment to say deleted',
    () => PRS.every((n) => gh.botComments(REPO, n)[0]!.body.includes('was deleted')),
    60_000,
  );
  for (const n of PRS)
    await assert.rejects(agent.client.getBranch(db, `pr-${n}`), (e) => e instanceof BpgApiError && e.status === 404);
});

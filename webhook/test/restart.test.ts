import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import YAML from 'yaml';
import { query, uniqueDb } from '../../agent/test/helpers.js';
import { FakeGitHub } from '../../shared/test/fake-github.js';
import {
  deliver,
  MIGRATION_001,
  MIGRATION_002,
  MIGRATION_003,
  prPayload,
  queuedIds,
  receiverConfig,
  sha,
  spawnReceiver,
  startAgent,
  uniqueName,
  waitFor,
  type ReceiverProcess,
  type TestAgent,
} from './helpers.js';

/**
 * The receiver as it runs in production, `bin/bpg-webhook.js --config <file>` in a process of its
 * own, killed with SIGKILL in the middle of a pull request's work while more deliveries wait in
 * its queue. After a restart every accepted delivery is done, each once, in order.
 */

const db = uniqueDb('whr');
const REPO = `${uniqueName('org')}/restart`;
const GH_TOKEN = `ghs_${uniqueName('t')}${uniqueName('t')}`;

let agent: TestAgent;
let gh: FakeGitHub;
let proc: ReceiverProcess | null = null;

before(async () => {
  agent = await startAgent();
  await agent.client.createDatabase({ name: db });
  gh = new FakeGitHub(GH_TOKEN);
  await gh.start();
  gh.repo(REPO);
});

after(async () => {
  if (proc && proc.child.exitCode === null) proc.child.kill('SIGKILL');
  await gh?.close();
  await agent?.client.deleteDatabase(db, { force: true }).catch(() => {});
  await agent?.close();
});

it('a receiver killed mid-work finishes the work after a restart', async () => {
  const r = await receiverConfig({
    githubUrl: gh.url,
    githubToken: GH_TOKEN,
    agentUrl: agent.server.url,
    agentToken: agent.token,
    repos: { [REPO]: { database: db, fast: true, migrations: { path: 'db/migrations' } } },
    queue: { concurrency: 2 },
  });
  const file = join(r.stateDir, 'webhook.yaml');
  // Secrets from the environment, as an operator would keep them out of the file.
  const { secret: _s, ...raw } = r.raw as { secret: string };
  writeFileSync(file, YAML.stringify(raw), { mode: 0o600 });
  const env = { BPG_WEBHOOK_SECRET: r.secret };

  const [s1, s2, s3] = [sha(), sha(), sha()];
  gh.commit(REPO, s1, {
    'db/migrations/001_accounts.sql': MIGRATION_001,
    'db/migrations/002_orders.sql': MIGRATION_002,
  });
  gh.commit(REPO, s2, {
    'db/migrations/001_accounts.sql': MIGRATION_001,
    'db/migrations/002_orders.sql': MIGRATION_002,
    'db/migrations/003_invoices.sql': MIGRATION_003,
  });
  gh.commit(REPO, s3, { 'db/migrations/001_accounts.sql': MIGRATION_001 });

  proc = await spawnReceiver(file, env);
  const hook = () => `${proc!.url}/webhook`;
  // PR 31's first job stops in the middle (its status set, a migration file being read)...
  const held = gh.hold('GET', /\/contents\/db\/migrations\/002_orders\.sql$/);
  const first = await deliver(hook(), r.secret, 'pull_request', prPayload('opened', REPO, 31, s1));
  assert.equal(first.status, 202);
  // ...while its push and another PR wait in the queue.
  assert.equal((await deliver(hook(), r.secret, 'pull_request', prPayload('synchronize', REPO, 31, s2))).status, 202);
  await held.arrived;
  const hold32 = gh.hold('POST', new RegExp(`/statuses/${s3}$`));
  assert.equal((await deliver(hook(), r.secret, 'pull_request', prPayload('opened', REPO, 32, s3))).status, 202);
  await hold32.arrived;

  proc.child.kill('SIGKILL');
  const gone = await proc.exited;
  assert.equal(gone.signal, 'SIGKILL');
  held.release();
  hold32.release();
  assert.equal(queuedIds(r.stateDir).length, 3, 'all three deliveries are still on disk');
  assert.equal(gh.statusesOf(REPO, s1).filter((s) => s.state !== 'pending').length, 0, 'PR 31 was not finished');

  proc = await spawnReceiver(file, env);
  assert.ok(proc.lines.some((l) => l.msg === 'listening' && l.queued === 3));
  await waitFor('PR 31 push done', () => gh.statusesOf(REPO, s2).find((s) => s.state !== 'pending'), 90_000);
  await waitFor('PR 32 done', () => gh.statusesOf(REPO, s3).find((s) => s.state !== 'pending'), 90_000);
  await waitFor('the queue empty', () => queuedIds(r.stateDir).length === 0);

  for (const s of [s1, s2, s3]) assert.equal(gh.statusesOf(REPO, s).at(-1)!.state, 'success', s);
  // Order held across the restart: opened's success before the push's.
  assert.ok(gh.statusesOf(REPO, s1).at(-1)!.at <= gh.statusesOf(REPO, s2).at(-1)!.at);
  const b31 = await agent.client.getBranch(db, 'pr-31');
  const rows = await query<{ name: string; commit: string }>(
    b31,
    'SELECT name, commit FROM betterpg.migrations ORDER BY applied_at',
  );
  assert.deepEqual(rows, [
    { name: '001_accounts.sql', commit: s1 },
    { name: '002_orders.sql', commit: s1 },
    { name: '003_invoices.sql', commit: s2 },
  ]);
  assert.equal((await query(b31, 'SELECT count(*)::int AS n FROM accounts'))[0]!.n, 2, 'applied once');
  for (const [n, name] of [
    [31, 'pr-31'],
    [32, 'pr-32'],
  ] as const) {
    assert.equal(gh.botComments(REPO, n).length, 1, `PR ${n}: one comment`);
    assert.equal(
      agent.log.lines.filter((l) => l.msg === 'branch created' && l.branch === `${db}/${name}`).length,
      1,
      `${name} created once`,
    );
  }
  assert.ok(proc.lines.some((l) => l.msg === 'resuming queued deliveries' && l.count === 3));

  // A replay of a delivery accepted before the kill is still recognised.
  const again = await deliver(hook(), r.secret, 'pull_request', prPayload('opened', REPO, 31, s1), { id: first.id });
  assert.equal(again.status, 200);
  assert.equal(again.body.status, 'duplicate');

  // SIGTERM: a clean stop.
  proc.child.kill('SIGTERM');
  assert.deepEqual(await proc.exited, { code: 0, signal: null });
  proc = null;
  await agent.client.deleteBranch(db, 'pr-31');
  await agent.client.deleteBranch(db, 'pr-32');
});

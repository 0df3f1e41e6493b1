import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { BpgApiError } from '../../agent/api/client.js';
import type { BranchView } from '../../agent/api/schemas.js';
import { leftovers, query, uniqueDb } from '../../agent/test/helpers.js';
import { commentMarker } from '../../shared/pr-comment.js';
import { startReceiver, type Receiver } from '../src/receiver.js';
import { BOT_LOGIN, FakeGitHub } from '../../shared/test/fake-github.js';
import {
  deliver,
  example,
  MIGRATION_001,
  MIGRATION_002,
  MIGRATION_003_BAD,
  prPayload,
  queuedIds,
  receiverConfig,
  recorder,
  sha,
  sign,
  startAgent,
  uniqueName,
  waitFor,
  type TestAgent,
} from './helpers.js';

/**
 * The receiver in this process, a real agent on the real stack in this process, and a fake GitHub:
 * real example payloads, signed as GitHub signs them, drive a pull request through its whole life.
 */

const db = uniqueDb('wh');
const owner = uniqueName('org');
const PUBLIC = `${owner}/shop`;
const PRIVATE = `${owner}/internal`;
const NO_DB = `${owner}/nodb`;
const GH_TOKEN = `ghs_${uniqueName('t')}${uniqueName('t')}`;

let agent: TestAgent;
let gh: FakeGitHub;
let receiver: Receiver;
let secret: string;
let stateDir: string;
let hook: string;
const log = recorder();

const finalStatus = (repo: string, s: string) => () => gh.statusesOf(repo, s).find((x) => x.state !== 'pending');
const branchOf = (name: string): Promise<BranchView> => agent.client.getBranch(db, name);

before(async () => {
  agent = await startAgent();
  await agent.client.createDatabase({ name: db });
  gh = new FakeGitHub(GH_TOKEN);
  await gh.start();
  gh.repo(PUBLIC, { private: false });
  gh.repo(PRIVATE, { private: true });
  gh.repo(NO_DB);
  const r = await receiverConfig({
    githubUrl: gh.url,
    githubToken: GH_TOKEN,
    agentUrl: agent.server.url,
    agentToken: agent.token,
    repos: {
      [PUBLIC]: { database: db, migrations: { path: 'db/migrations' } },
      [PRIVATE]: {
        database: db,
        branchName: 'internal-{number}',
        migrations: { path: 'db/migrations' },
        resetOnPush: true,
        fast: true,
      },
      [NO_DB]: { database: `${db}x` },
    },
  });
  secret = r.secret;
  stateDir = r.stateDir;
  receiver = await startReceiver(r.cfg, { log });
  hook = `${receiver.url}/webhook`;
});

after(async () => {
  await receiver?.close(5_000);
  await gh?.close();
  await agent?.client.deleteDatabase(db, { force: true }).catch(() => {});
  await agent?.close();
});

const queued = () => queuedIds(stateDir);

describe('verification first', () => {
  it('a bad, missing or foreign signature gets 401 and no work', async () => {
    const payload = prPayload('opened', PUBLIC, 1, sha());
    const before = gh.requests.length;
    const wrongSecret = await deliver(hook, 'not-the-secret-at-all', 'pull_request', payload);
    const missing = await deliver(hook, secret, 'pull_request', payload, { signature: null });
    const garbage = await deliver(hook, secret, 'pull_request', payload, { signature: 'sha256=xyz' });
    // A valid signature for other bytes: the body was tampered with.
    const tampered = await deliver(hook, secret, 'pull_request', payload, {
      signature: sign(secret, JSON.stringify({ ...payload, number: 999 })),
    });
    for (const r of [wrongSecret, missing, garbage, tampered]) {
      assert.equal(r.status, 401, JSON.stringify(r.body));
      assert.ok(r.ms < 1000);
    }
    // The same delivery id may still come with the right signature: a refusal does not mark it seen.
    assert.equal(gh.requests.length, before, 'no GitHub call');
    assert.deepEqual(queued(), []);
    assert.equal(receiver.queue.size, 0);
    assert.ok(!agent.log.lines.some((l) => l.msg === 'branch created'), 'no agent call');
    assert.ok(!log.lines.some((l) => JSON.stringify(l).includes('Codertocat')), 'nothing of a payload is logged');
  });

  it('a body over 1 MiB is refused before anything else', async () => {
    const payload = { ...prPayload('opened', PUBLIC, 1, sha()), padding: 'x'.repeat(1024 * 1024) };
    const r = await deliver(hook, secret, 'pull_request', payload);
    assert.equal(r.status, 413);
    assert.deepEqual(queued(), []);
  });

  it('ping, other events, other actions and other repositories: 2xx and no work', async () => {
    const before = gh.requests.length;
    const ping = await deliver(hook, secret, 'ping', example('ping'));
    assert.equal(ping.status, 200);
    const issue = await deliver(hook, secret, 'issues', example('issues', 'opened'));
    assert.equal(issue.status, 200);
    assert.equal(issue.body.status, 'ignored');
    const labeled = { ...prPayload('opened', PUBLIC, 2, sha()), action: 'labeled' };
    assert.equal((await deliver(hook, secret, 'pull_request', labeled)).body.status, 'ignored');
    const other = await deliver(hook, secret, 'pull_request', prPayload('opened', `${owner}/unlisted`, 3, sha()));
    assert.equal(other.status, 200);
    assert.match(other.body.reason, /not configured/);
    const fork = await deliver(
      hook,
      secret,
      'pull_request',
      prPayload('opened', PUBLIC, 4, sha(), { fork: 'stranger/shop' }),
    );
    assert.match(fork.body.reason, /fork/);
    await receiver.queue.idle();
    assert.equal(gh.requests.length, before);
    assert.deepEqual(queued(), []);
  });
});

describe('a pull request from opened to closed', () => {
  const n = 7;
  const [sha1, sha2, sha3] = [sha(), sha(), sha()];
  let commentId = 0;
  let password = '';

  before(() => {
    // A long PR: 150 comments by people, one of them quoting our marker. Ours must still be found.
    for (let i = 0; i < 150; i++)
      gh.addComment(PUBLIC, n, i === 120 ? `quoting: ${commentMarker(db)}` : `comment ${i}`, 'alice');
    gh.commit(PUBLIC, sha1, {
      'README.md': '# shop\n',
      'db/migrations/001_accounts.sql': MIGRATION_001,
      'db/migrations/notes.txt': 'not sql',
    });
    gh.commit(PUBLIC, sha2, {
      'db/migrations/001_accounts.sql': MIGRATION_001,
      'db/migrations/002_orders.sql': MIGRATION_002,
    });
    gh.commit(PUBLIC, sha3, {
      'db/migrations/001_accounts.sql': MIGRATION_001,
      'db/migrations/002_orders.sql': MIGRATION_002,
      'db/migrations/003_invoices.sql': MIGRATION_003_BAD,
    });
  });

  it('opened: the branch, its migration, a pending then successful status and one comment', async () => {
    const r = await deliver(hook, secret, 'pull_request', prPayload('opened', PUBLIC, n, sha1));
    assert.equal(r.status, 202, JSON.stringify(r.body));
    assert.ok(r.ms < 1000, `answered in ${r.ms} ms`);
    await waitFor('the final status', finalStatus(PUBLIC, sha1));

    const statuses = gh.statusesOf(PUBLIC, sha1);
    assert.deepEqual(
      statuses.map((s) => s.state),
      ['pending', 'success'],
    );
    assert.ok(statuses.every((s) => s.context === 'betterpg/database'));
    assert.match(statuses[1]!.description, new RegExp(`${db}/pr-${n} is ready; 1 migration applied`));

    const mine = gh.botComments(PUBLIC, n);
    assert.equal(mine.length, 1);
    assert.equal(statuses[1]!.target_url, mine[0]!.html_url);
    commentId = mine[0]!.id;
    const b = await branchOf(`pr-${n}`);
    password = b.connection.password;
    const body = mine[0]!.body;
    assert.ok(body.includes(commentMarker(db)));
    assert.match(body, new RegExp(`\`${db}/pr-${n}\``));
    assert.match(body, new RegExp(`\\| Port \\| \`${b.port}\` \\|`));
    assert.match(body, /\| Created \| in [\d.]+ s for this pull request \|/);
    assert.match(body, /1 applied: `001_accounts.sql`/);
    assert.match(body, /\| Password \| hidden \(this repository is public\)/);
    assert.ok(body.includes(':********@'), 'masked connection string');
    assert.ok(!body.includes(password), 'public repository: no password in the comment');
    assert.equal(
      gh.commentsOf(PUBLIC, n).find((c) => c.user.login === 'alice' && c.body.includes('quoting'))!.body,
      `quoting: ${commentMarker(db)}`,
    );

    assert.equal((await query(b, 'SELECT count(*)::int AS n FROM accounts'))[0]!.n, 2);
    const rec = await query<{ name: string; commit: string }>(
      b,
      'SELECT name, commit FROM betterpg.migrations ORDER BY name',
    );
    assert.deepEqual(rec, [{ name: '001_accounts.sql', commit: sha1 }]);
    const main = await branchOf('main');
    assert.equal((await query(main, "SELECT to_regclass('public.accounts') AS t"))[0]!.t, null, 'main is untouched');
    // Every page was read to look for the comment (150 others: 2 pages of 100).
    assert.ok(gh.requests.some((q) => q.path.endsWith(`/issues/${n}/comments`) && q.query.includes('page=2')));
  });

  it('synchronize: only the new migration, the same comment updated', async () => {
    const b = await branchOf(`pr-${n}`);
    const before = (
      await query<{ at: Date }>(b, "SELECT applied_at AS at FROM betterpg.migrations WHERE name = '001_accounts.sql'")
    )[0]!.at;
    const r = await deliver(hook, secret, 'pull_request', prPayload('synchronize', PUBLIC, n, sha2));
    assert.equal(r.status, 202);
    await waitFor('the final status', finalStatus(PUBLIC, sha2));
    assert.deepEqual(
      gh.statusesOf(PUBLIC, sha2).map((s) => s.state),
      ['pending', 'success'],
    );
    const mine = gh.botComments(PUBLIC, n);
    assert.equal(mine.length, 1);
    assert.equal(mine[0]!.id, commentId);
    assert.match(mine[0]!.body, /1 applied: `002_orders.sql`; 1 applied before/);
    assert.match(mine[0]!.body, /Created \| .*\(reused\)/);
    const rows = await query<{ name: string; at: Date }>(
      b,
      'SELECT name, applied_at AS at FROM betterpg.migrations ORDER BY name',
    );
    assert.deepEqual(
      rows.map((x) => x.name),
      ['001_accounts.sql', '002_orders.sql'],
    );
    assert.equal(rows[0]!.at.getTime(), before.getTime(), '001 was not applied again');
    assert.equal((await query(b, "SELECT to_regclass('public.orders')::text AS t"))[0]!.t, 'orders');
    assert.equal((await branchOf(`pr-${n}`)).port, b.port);
  });

  it('a failing migration is rolled back, stops the run and is named in the status and the comment', async () => {
    await deliver(hook, secret, 'pull_request', prPayload('synchronize', PUBLIC, n, sha3));
    const s = await waitFor('the final status', finalStatus(PUBLIC, sha3));
    assert.equal(s.state, 'failure');
    assert.match(s.description, /^Migration 003_invoices\.sql failed: ERROR: syntax error at or near "SELEC"/);
    const body = gh.botComments(PUBLIC, n)[0]!.body;
    assert.match(body, /: migration failed/);
    assert.match(body, /❌ failed at `003_invoices.sql` \(2 applied before\)/);
    assert.match(body, /LINE 3: SELEC 1;/);
    const b = await branchOf(`pr-${n}`);
    assert.equal((await query(b, "SELECT to_regclass('public.invoices') AS t"))[0]!.t, null, 'rolled back');
    assert.equal((await query(b, 'SELECT count(*)::int AS n FROM betterpg.migrations'))[0]!.n, 2);
  });

  it('closed: the branch is deleted and the comment says so', async () => {
    const statusesBefore = gh.statusesOf(PUBLIC).length;
    const r = await deliver(hook, secret, 'pull_request', prPayload('closed', PUBLIC, n, sha3));
    assert.equal(r.status, 202);
    await waitFor('the comment to say deleted', () => gh.botComments(PUBLIC, n)[0]!.body.includes('was deleted'));
    await assert.rejects(branchOf(`pr-${n}`), (e) => e instanceof BpgApiError && e.status === 404);
    assert.equal(gh.botComments(PUBLIC, n).length, 1);
    assert.equal(gh.botComments(PUBLIC, n)[0]!.id, commentId);
    assert.equal(gh.statusesOf(PUBLIC).length, statusesBefore, 'no status for a closed PR');
    const left = await leftovers(db);
    assert.ok(!left.containers.some((c) => c.includes(`pr-${n}`)), `containers left: ${left.containers}`);
    assert.ok(!left.datasets.some((d) => d.includes(`pr-${n}`)), `datasets left: ${left.datasets}`);
    await receiver.queue.idle();
    assert.deepEqual(queued(), []);
    // Nothing secret in the receiver's log.
    const text = JSON.stringify(log.lines);
    assert.ok(
      !text.includes(password) && !text.includes(secret) && !text.includes(GH_TOKEN) && !text.includes(agent.token),
    );
  });
});

describe('delivery guarantees', () => {
  it('a replayed delivery is done once', async () => {
    const n = 8;
    const s = sha();
    gh.commit(PUBLIC, s, { 'db/migrations/001_accounts.sql': MIGRATION_001 });
    const payload = prPayload('opened', PUBLIC, n, s);
    // Two copies at once (a redelivery racing the original), then one more after the work is done.
    const [a, b] = await Promise.all([
      deliver(hook, secret, 'pull_request', payload, { id: 'a7c1e2d4-0000-4000-8000-000000000008' }),
      deliver(hook, secret, 'pull_request', payload, { id: 'a7c1e2d4-0000-4000-8000-000000000008' }),
    ]);
    assert.deepEqual([a.status, b.status].sort(), [200, 202]);
    await waitFor('the final status', finalStatus(PUBLIC, s));
    await receiver.queue.idle();
    const c = await deliver(hook, secret, 'pull_request', payload, { id: 'a7c1e2d4-0000-4000-8000-000000000008' });
    assert.equal(c.status, 200);
    assert.equal(c.body.status, 'duplicate');
    await receiver.queue.idle();
    assert.deepEqual(
      gh.statusesOf(PUBLIC, s).map((x) => x.state),
      ['pending', 'success'],
    );
    assert.equal(gh.botComments(PUBLIC, n).length, 1);
    assert.equal(
      log.lines.filter((l) => l.msg === 'delivery done' && l.pr === `${PUBLIC}#${n}`.toLowerCase()).length,
      1,
    );
    await agent.client.deleteBranch(db, `pr-${n}`);
  });

  it('GitHub 502s are retried with backoff, then the work completes', async () => {
    const n = 9;
    const s = sha();
    gh.fail('POST', new RegExp(`/statuses/${s}$`), 502, 2);
    gh.fail('GET', new RegExp(`/contents/db/migrations$`), 503, 1);
    gh.commit(PUBLIC, s, { 'db/migrations/001_accounts.sql': MIGRATION_001 });
    await deliver(hook, secret, 'pull_request', prPayload('opened', PUBLIC, n, s));
    await waitFor('the final status', finalStatus(PUBLIC, s));
    // Each attempt starts with "pending" again: the failed ones may not have set it.
    assert.match(
      gh
        .statusesOf(PUBLIC, s)
        .map((x) => x.state)
        .join(' '),
      /^(pending )+success$/,
    );
    const retries = log.lines.filter(
      (l) => l.msg === 'delivery failed, will retry' && l.pr === `${PUBLIC}#${n}`.toLowerCase(),
    );
    assert.equal(retries.length, 3);
    assert.match(String(retries[0]!.error), /Server Error|502/);
    assert.equal(gh.botComments(PUBLIC, n).length, 1);
    await agent.client.deleteBranch(db, `pr-${n}`);
  });

  it('a failure that retrying cannot fix is reported on the pull request at once', async () => {
    const n = 10;
    const s = sha();
    await deliver(hook, secret, 'pull_request', prPayload('opened', NO_DB, n, s));
    const st = await waitFor('the final status', finalStatus(NO_DB, s));
    assert.equal(st.state, 'error');
    assert.match(st.description, /^Preparing .* failed: agent: .*does not exist|not found/i);
    const body = (await waitFor('the comment', () => gh.botComments(NO_DB, n)[0])).body;
    assert.match(body, /: not ready/);
    assert.ok(
      !log.lines.some((l) => l.msg === 'delivery failed, will retry' && l.pr === `${NO_DB}#${n}`.toLowerCase()),
      'not retried',
    );
  });

  it('an unreachable agent is retried with backoff, then reported', async () => {
    const other = await receiverConfig({
      githubUrl: gh.url,
      githubToken: GH_TOKEN,
      agentUrl: 'http://127.0.0.1:9',
      agentToken: 'x'.repeat(20),
      repos: { [PUBLIC]: { database: db } },
      queue: { attempts: 3, backoffSeconds: 0.1 },
    });
    const olog = recorder();
    const r2 = await startReceiver(other.cfg, { log: olog });
    try {
      const n = 11;
      const s = sha();
      const t0 = Date.now();
      const res = await deliver(`${r2.url}/webhook`, other.secret, 'pull_request', prPayload('opened', PUBLIC, n, s));
      assert.equal(res.status, 202);
      const st = await waitFor('the error status', () => gh.statusesOf(PUBLIC, s).find((x) => x.state === 'error'));
      assert.match(st.description, /agent: .*cannot reach the agent/);
      assert.equal(olog.lines.filter((l) => l.msg === 'delivery failed, will retry').length, 2);
      assert.ok(Date.now() - t0 >= 250, 'backed off between attempts');
      const c = await waitFor('the comment', () => gh.botComments(PUBLIC, n)[0]);
      assert.match(c.body, /after 3 attempts/);
    } finally {
      await r2.close(1000);
    }
  });
});

describe('private repository with resetOnPush', () => {
  it('shows the password, and a push resets the branch and applies every migration again', async () => {
    const n = 12;
    const [s1, s2] = [sha(), sha()];
    gh.commit(PRIVATE, s1, { 'db/migrations/001_accounts.sql': MIGRATION_001 });
    gh.commit(PRIVATE, s2, {
      'db/migrations/001_accounts.sql': MIGRATION_001,
      'db/migrations/002_orders.sql': MIGRATION_002,
    });
    await deliver(hook, secret, 'pull_request', prPayload('opened', PRIVATE, n, s1, { private: true }));
    await waitFor('the final status', finalStatus(PRIVATE, s1));
    const b = await branchOf(`internal-${n}`);
    await query(b, "INSERT INTO accounts (email) VALUES ('scratch@example.com')");
    const body = gh.botComments(PRIVATE, n)[0]!.body;
    assert.ok(body.includes(b.connection.uri), 'private repository: the full connection string');

    await deliver(hook, secret, 'pull_request', prPayload('synchronize', PRIVATE, n, s2, { private: true }));
    const st = await waitFor('the final status', finalStatus(PRIVATE, s2));
    assert.equal(st.state, 'success', st.description);
    const after = await branchOf(`internal-${n}`);
    assert.equal(after.port, b.port);
    assert.equal(after.connection.password, b.connection.password, 'reset keeps the password');
    assert.equal(
      (await query(after, 'SELECT count(*)::int AS n FROM accounts'))[0]!.n,
      2,
      'the scratch row went with the reset',
    );
    const rows = await query<{ name: string }>(after, 'SELECT name FROM betterpg.migrations ORDER BY name');
    assert.deepEqual(
      rows.map((r) => r.name),
      ['001_accounts.sql', '002_orders.sql'],
    );
    assert.match(gh.botComments(PRIVATE, n)[0]!.body, /2 applied/);
    assert.ok(log.lines.some((l) => l.msg === 'branch reset to its parent'));
    await agent.client.deleteBranch(db, `internal-${n}`);
    assert.equal(BOT_LOGIN, gh.botComments(PRIVATE, n)[0]!.user.login);
  });
});

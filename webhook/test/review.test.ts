import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { query, uniqueDb } from '../../agent/test/helpers.js';
import { span } from '../../shared/pr-comment.js';
import { FakeGitHub } from '../../shared/test/fake-github.js';
import { olderAgent, type OlderAgent } from '../../shared/test/older-agent.js';
import { startReceiver, type Receiver } from '../src/receiver.js';
import {
  deliver,
  prPayload,
  receiverConfig,
  recorder,
  sha,
  startAgent,
  uniqueName,
  waitFor,
  type TestAgent,
} from './helpers.js';

/**
 * What the receiver's comment tells a reviewer about a pull request's migrations (issue 15): each
 * file watched by a real agent on the real stack (the migration safety report, per file), the
 * migration time, the schema diff against the parent, and when the branch goes; driven by real
 * signed payloads through a fake GitHub. The agent flags write-blocking locks held over 0.05 s:
 * any lock seen in one sample (every 50 ms) counts 0.1 s, so rewriting a million rows (ACCESS
 * EXCLUSIVE for far longer than a sample) is flagged however slow the machine; an UPDATE takes row
 * locks (ROW EXCLUSIVE), which block no one's reads or writes of other rows, and is never flagged.
 * (`CREATE INDEX CONCURRENTLY` cannot run here: the receiver applies each file in a transaction.)
 */

const ROWS = 1_000_000;
const db = uniqueDb('wr');
const owner = uniqueName('org');
const REPO = `${owner}/shop`;
const GH_TOKEN = `ghs_${uniqueName('t')}${uniqueName('t')}`;
const LONG = 300_000; // a branch, a million rows rewritten and a count on a loaded machine

const FILES = {
  'db/migrations/001_add_random.sql': 'ALTER TABLE orders ADD COLUMN r float DEFAULT random();\n',
  'db/migrations/002_touch.sql': 'UPDATE orders SET v = v + 1 WHERE id <= 100000;\n',
  'db/migrations/003_audit.sql': 'CREATE TABLE audit (id bigserial PRIMARY KEY, note text);\n',
};

let agent: TestAgent;
let gh: FakeGitHub;
let receiver: Receiver;
let secret: string;
/** The agent's expiry.prBranchTtl: a pr-<n> branch expires this long after each push. */
let prBranchTtl: number | null = null;
const log = recorder();

const finalStatus = (s: string) => () => gh.statusesOf(REPO, s).find((x) => x.state !== 'pending');

before(async () => {
  agent = await startAgent(undefined, (cfg) => {
    prBranchTtl = cfg.expiry.prBranchTtl;
    return { ...cfg, review: { ...cfg.review, maxLockSeconds: 0.05 } };
  });
  await agent.client.createDatabase({ name: db });
  // Production's data: a table big enough that rewriting it takes a while.
  await query(
    await agent.client.getBranch(db, 'main'),
    `CREATE TABLE orders (id bigserial PRIMARY KEY, v int NOT NULL);
     INSERT INTO orders (v) SELECT g FROM generate_series(1, ${ROWS}) g; ANALYZE orders`,
  );
  gh = new FakeGitHub(GH_TOKEN);
  await gh.start();
  gh.repo(REPO, { private: false });
  const r = await receiverConfig({
    githubUrl: gh.url,
    githubToken: GH_TOKEN,
    agentUrl: agent.server.url,
    agentToken: agent.token,
    repos: { [REPO]: { database: db, migrations: { path: 'db/migrations' } } },
  });
  secret = r.secret;
  receiver = await startReceiver(r.cfg, { log });
});

after(async () => {
  await receiver?.close(5_000);
  await gh?.close();
  await agent?.client.deleteDatabase(db, { force: true }).catch(() => {});
  await agent?.close();
});

describe('the review comment of the receiver', { timeout: 900_000 }, () => {
  it('each file watched: the rewrite flagged first and named by file, the UPDATE not; times, schema diff and expiry', async () => {
    const n = 21;
    const s1 = sha();
    gh.commit(REPO, s1, FILES);
    const r = await deliver(`${receiver.url}/webhook`, secret, 'pull_request', prPayload('opened', REPO, n, s1));
    assert.equal(r.status, 202);
    const st = await waitFor('the final status', finalStatus(s1), LONG);
    assert.equal(st.state, 'success', st.description);
    const body = gh.botComments(REPO, n)[0]!.body;

    // Flagged first and prominent, named by its file; then one row per file and table.
    assert.match(
      body,
      /\n#### ⚠️ Migration safety: 1 flagged\n\n> \[!WARNING\]\n> - `001_add_random\.sql`: \*\*ACCESS EXCLUSIVE\*\* on `orders` for \d+\.\d s \(table rewrite\): blocks reads and writes on production\n\n/,
    );
    assert.match(
      body,
      /\n\| File \| Table \| Lock \| Held \| Rewritten \| Rows \|\n\| --- \| --- \| --- \| --- \| --- \| --- \|\n\| `001_add_random\.sql` \| `orders` \| ⚠️ ACCESS EXCLUSIVE \(blocks reads and writes\) \| \d+\.\d s \| yes \| 1,000,000 \|\n\| `002_touch\.sql` \| `orders` \| ROW EXCLUSIVE \| \d+\.\d s \| {2}\| 1,000,000 \|\n\n/,
    );
    assert.doesNotMatch(body, /betterpg\.migrations/, "the receiver's own record is not reported");
    assert.doesNotMatch(body, /`audit` \|/, 'a table the migration made is not reported');

    // The migration time, per file.
    assert.match(
      body,
      /\| Migration time \| \d+(\.\d)? s: `001_add_random\.sql` \d+(\.\d)? s, `002_touch\.sql` \d+(\.\d)? s, `003_audit\.sql` \d+(\.\d)? s \|/,
    );
    assert.match(body, /\| Migrations \| ✅ 3 applied: `001_add_random\.sql`, `002_touch\.sql`, `003_audit\.sql`/);

    // The schema diff against main: counts, then the SQL folded.
    const section = body.slice(body.indexOf('#### Schema changes'));
    assert.ok(section.startsWith(`#### Schema changes against \`${db}/main\`\n\n- `), section);
    assert.match(section, /\n- tables: 1 added/);
    assert.match(section, /\n- columns: 1 added/);
    assert.match(section, /<details><summary>SQL diff<\/summary>\n\n```diff\n/);
    assert.match(section, /\n\+CREATE TABLE public\.audit \(/);
    assert.ok(body.indexOf('Migration safety') < body.indexOf('#### Schema changes'), 'safety first');

    // Renewed on every push by the agent's expiry.prBranchTtl (a pr-<n> branch).
    const b = await agent.client.getBranch(db, `pr-${n}`);
    assert.ok(body.includes(`| Expires | deleted ${span(prBranchTtl!)} after the last push (`), body);
    assert.ok(b.expiresAt && body.includes(b.expiresAt.slice(0, 16).replace('T', ' ')), 'with the date');
    assert.ok(!body.includes(b.connection.password), 'no password');

    const line = log.lines.find((l) => l.msg === 'migrations' && l.branch === `${db}/pr-${n}`);
    assert.equal(line?.flagged, 1);
  });

  it('an agent without watches and schema diff (older): the same comment without them, no failure', async () => {
    let old: OlderAgent | undefined;
    let other: Receiver | undefined;
    try {
      old = await olderAgent(agent.server.url);
      const r = await receiverConfig({
        githubUrl: gh.url,
        githubToken: GH_TOKEN,
        agentUrl: old.url,
        agentToken: agent.token,
        repos: { [REPO]: { database: db, migrations: { path: 'db/migrations' } } },
      });
      other = await startReceiver(r.cfg, { log: recorder() });
      const n = 22;
      const s1 = sha();
      gh.commit(REPO, s1, { 'db/migrations/001_add_random.sql': FILES['db/migrations/001_add_random.sql'] });
      await deliver(`${other.url}/webhook`, r.secret, 'pull_request', prPayload('opened', REPO, n, s1));
      const st = await waitFor('the final status', finalStatus(s1), LONG);
      assert.equal(st.state, 'success', st.description);
      assert.ok(
        old.seen.some((x) => /^POST .*\/watches$/.test(x)),
        'a watch was asked for',
      );
      assert.ok(
        old.seen.some((x) => /^GET .*\/schema-diff$/.test(x)),
        'the schema diff was asked for',
      );
      const body = gh.botComments(REPO, n)[0]!.body;
      assert.doesNotMatch(body, /Migration safety|Schema changes/);
      assert.match(body, /\| Migration time \| \d+(\.\d)? s \|/);
      assert.match(body, /\| Migrations \| ✅ 1 applied: `001_add_random\.sql`/);
      await agent.client.deleteBranch(db, `pr-${n}`);
    } finally {
      await other?.close(5_000);
      await old?.close();
    }
  });
});

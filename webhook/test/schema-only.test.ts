import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { ownStateConfig, query, uniqueDb } from '../../agent/test/helpers.js';
import { FakeGitHub } from '../../shared/test/fake-github.js';
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
 * A repository set to `data: schema-only` with a `seed` file: each pull request's branch has
 * main's structure and none of its rows, then the seed read from the PR's head through the fake
 * GitHub's contents API, then the PR's migrations; a seed missing from the PR fails the status with
 * one clear line. A real agent (ZFS, Docker, PostgreSQL), the receiver in this process.
 */

const db = uniqueDb('sow');
const owner = uniqueName('org');
const GH_TOKEN = `ghs_${uniqueName('t')}${uniqueName('t')}`;
const REPO = `${owner}/public-app`;

let agent: TestAgent;
let gh: FakeGitHub;
let receiver: Receiver;
let secret: string;
let hook: string;
const log = recorder();

before(async () => {
  agent = await startAgent(ownStateConfig('so-webhook', 47));
  await agent.client.createDatabase({ name: db });
  const main = await agent.client.getBranch(db, 'main');
  await query(
    main,
    "CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL); INSERT INTO users (email) SELECT 'real-' || g || '@customer.example' FROM generate_series(1, 50) g",
  );
  gh = new FakeGitHub(GH_TOKEN);
  await gh.start();
  const r = await receiverConfig({
    githubUrl: gh.url,
    githubToken: GH_TOKEN,
    agentUrl: agent.server.url,
    agentToken: agent.token,
    repos: {
      [REPO]: { database: db, data: 'schema-only', seed: 'db/seed.sql', migrations: { path: 'db/migrations' } },
    },
    queue: { attempts: 1 },
  });
  secret = r.secret;
  receiver = await startReceiver(r.cfg, { log });
  hook = `${receiver.url}/webhook`;
});

after(async () => {
  await receiver?.close(5_000);
  await gh?.close();
  await agent?.client.deleteDatabase(db, { force: true }).catch(() => {});
  await agent?.close();
});

async function run(n: number, headSha: string): Promise<{ state: string; description: string }> {
  const r = await deliver(hook, secret, 'pull_request', prPayload('opened', REPO, n, headSha));
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return waitFor(
    `the final status of ${REPO}#${n}`,
    () => gh.statusesOf(REPO, headSha).find((s) => s.state !== 'pending'),
    180_000,
  );
}

describe('receiver: data: schema-only with a seed', () => {
  it("main's structure, none of its rows, the PR's seed, then its migrations", async () => {
    const s = sha();
    const seed = "INSERT INTO users (email) VALUES ('fixture@example.com');\n";
    gh.commit(REPO, s, {
      'db/seed.sql': seed,
      'db/migrations/001_add_name.sql': 'ALTER TABLE users ADD COLUMN name text;\n',
    });
    const st = await run(1, s);
    assert.equal(st.state, 'success', st.description);
    const b = await agent.client.getBranch(db, 'pr-1');
    assert.equal(b.schemaOnly, true);
    // the seed as read at the PR's head, byte for byte
    assert.deepEqual(b.seed, {
      bytes: Buffer.byteLength(seed),
      sha256: createHash('sha256').update(seed).digest('hex'),
    });
    assert.deepEqual(await query(b, 'SELECT email, name FROM users'), [{ email: 'fixture@example.com', name: null }]);
  });

  it('a seed file missing from the pull request fails the status in one line, and makes no branch', async () => {
    const s = sha();
    gh.commit(REPO, s, { 'db/migrations/001_add_name.sql': 'ALTER TABLE users ADD COLUMN name text;\n' });
    const st = await run(2, s);
    assert.equal(st.state, 'error');
    assert.match(st.description, /seed file db\/seed.sql is not in the pull request/);
    const names = (await agent.client.listBranches(db)).map((x) => x.branch);
    assert.ok(!names.includes('pr-2'), names.join(', '));
  });
});

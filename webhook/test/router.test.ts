import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { BpgApiError } from '../../agent/api/client.js';
import type { BranchView } from '../../agent/api/schemas.js';
import { query, uniqueDb } from '../../agent/test/helpers.js';
import { metricValue, routerConfig } from '../../agent/test/router-agent.js';
import { startReceiver, type Receiver } from '../src/receiver.js';
import { FakeGitHub } from '../../shared/test/fake-github.js';
import {
  deliver,
  MIGRATION_001,
  MIGRATION_002,
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
 * The receiver against an agent that runs the router (proxy.enabled, a self-signed certificate,
 * TLS required): migrations are applied through the router with libpq's sslmode=require (node-postgres
 * reading the uri itself would verify the certificate and refuse it), a file past its time limit
 * is ended through the router too, and the comment gives the router's host, port, `<db>@<branch>`
 * and sslmode. Branches on the ports of slot 33, the router on the first port of slot 34.
 */

const db = uniqueDb('whr');
const owner = uniqueName('org');
const PUBLIC = `${owner}/routed`;
const PRIVATE = `${owner}/routed-private`;
const GH_TOKEN = `ghs_${uniqueName('t')}${uniqueName('t')}`;
const LIMIT_S = 4;

let agent: TestAgent;
let gh: FakeGitHub;
let receiver: Receiver;
let secret: string;
let hook: string;
let routerPort: number;
const log = recorder();

const finalStatus = (repo: string, s: string) => () => gh.statusesOf(repo, s).find((x) => x.state !== 'pending');
const branchOf = (name: string): Promise<BranchView> => agent.client.getBranch(db, name);
/** Connections the router made to a branch, by its own metrics. */
const routed = (branch: string) =>
  metricValue(agent.server.url, agent.token, 'bpg_proxy_connections_total', { branch: `${db}/${branch}` });

before(async () => {
  const rc = routerConfig('whrouter', 33, 34);
  routerPort = rc.routerPort;
  agent = await startAgent(rc.path);
  assert.ok(agent.server.router, 'serve() runs the router');
  await agent.client.createDatabase({ name: db });
  gh = new FakeGitHub(GH_TOKEN);
  await gh.start();
  gh.repo(PUBLIC, { private: false });
  gh.repo(PRIVATE, { private: true });
  const migrations = { path: 'db/migrations', timeoutSeconds: LIMIT_S };
  const r = await receiverConfig({
    githubUrl: gh.url,
    githubToken: GH_TOKEN,
    agentUrl: agent.server.url,
    agentToken: agent.token,
    repos: {
      [PUBLIC]: { database: db, fast: true, migrations },
      [PRIVATE]: { database: db, fast: true, branchName: 'internal-{number}', migrations },
    },
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

/** The comment's rows for a branch reached through the router. */
function assertCommentRouted(body: string, b: BranchView, showPassword: boolean): void {
  const name = `${db}@${b.branch}`;
  for (const row of [
    `| Host | \`127.0.0.1\` |`,
    `| Port | \`${routerPort}\` |`,
    `| Database | \`${name}\` |`,
    `| SSL | \`sslmode=require\` |`,
  ])
    assert.ok(body.includes(row), `comment has ${row}`);
  const masked = `postgresql://postgres:********@127.0.0.1:${routerPort}/${db}@${b.branch}?sslmode=require`;
  assert.ok(body.includes(showPassword ? b.connection.uri : masked), 'the router connection string');
  assert.ok(!body.includes(`\`${b.port}\``) && !body.includes(`:${b.port}/`), 'not the direct port');
  assert.equal(body.includes(b.connection.password), showPassword);
}

describe('the receiver with the router on', () => {
  const n = 21;
  const [sha1, sha2] = [sha(), sha()];

  it('opened: the migrations are applied through the router (TLS, <db>@<branch>), the comment gives the router', async () => {
    gh.commit(PUBLIC, sha1, { 'db/migrations/001_accounts.sql': MIGRATION_001 });
    const before = await routed(`pr-${n}`);
    assert.equal((await deliver(hook, secret, 'pull_request', prPayload('opened', PUBLIC, n, sha1))).status, 202);
    const st = await waitFor('the final status', finalStatus(PUBLIC, sha1));
    assert.equal(st.state, 'success', st.description);
    // Read before the test's own queries (they go through the router too): the migration's session
    // and the time-limit stopper's, both through the router; plaintext would have been refused.
    const through = (await routed(`pr-${n}`)) - before;
    assert.ok(through >= 2, `the router connected the branch ${through} times for the migrations`);

    const b = await branchOf(`pr-${n}`);
    assert.equal(b.connection.via, 'router');
    assert.equal(b.connection.port, routerPort);
    assert.equal(b.connection.database, `${db}@pr-${n}`);
    assert.equal(b.connection.sslmode, 'require');
    const mine = gh.botComments(PUBLIC, n);
    assert.equal(mine.length, 1);
    assertCommentRouted(mine[0]!.body, b, false);
    assert.match(mine[0]!.body, /1 applied: `001_accounts.sql`/);

    assert.equal((await query(b, 'SELECT count(*)::int AS n FROM accounts'))[0]!.n, 2);
    assert.deepEqual(await query(b, 'SELECT name, commit FROM betterpg.migrations'), [
      { name: '001_accounts.sql', commit: sha1 },
    ]);
  });

  it("node-postgres reading the router's uri itself would refuse its certificate: why the receiver configures it from the fields", async () => {
    const b = await branchOf(`pr-${n}`);
    const c = new pg.Client({ connectionString: b.connection.uri, connectionTimeoutMillis: 10_000 });
    c.on('error', () => {});
    await assert.rejects(c.connect(), /self[- ]signed certificate/);
    await c.end().catch(() => {});
  });

  it('a file past its time limit: its backend is ended through the router, the file rolled back and reported', async () => {
    gh.commit(PUBLIC, sha2, {
      'db/migrations/001_accounts.sql': MIGRATION_001,
      'db/migrations/002_orders.sql': MIGRATION_002,
      'db/migrations/003_sleep.sql': 'SET statement_timeout = 0;\nCREATE TABLE slept (x int);\nSELECT pg_sleep(1e6);\n',
    });
    await deliver(hook, secret, 'pull_request', prPayload('synchronize', PUBLIC, n, sha2));
    const st = await waitFor('the final status', finalStatus(PUBLIC, sha2), 120_000);
    assert.equal(st.state, 'failure', st.description);
    const body = gh.botComments(PUBLIC, n)[0]!.body;
    assert.match(
      body,
      new RegExp(
        `stopped after \\d+ s: over the limit of ${LIMIT_S} s per file \\(migrations.timeoutSeconds\\); its backend was terminated, and the file was rolled back`,
      ),
    );
    const b = await branchOf(`pr-${n}`);
    assert.equal(b.status, 'running', 'terminated, not restarted');
    assert.equal((await query(b, "SELECT to_regclass('public.slept')::text AS t"))[0]!.t, null, 'rolled back');
    assert.deepEqual(
      (await query<{ name: string }>(b, 'SELECT name FROM betterpg.migrations ORDER BY name')).map((r) => r.name),
      ['001_accounts.sql', '002_orders.sql'],
    );
    const left = await query<{ n: number }>(
      b,
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE query ILIKE '%pg_sleep(1e6)%' AND pid <> pg_backend_pid()",
    );
    assert.equal(left[0]!.n, 0, 'the sleeping backend is gone');
  });

  it("private repository: the router's full connection string in the comment; nothing secret in the log", async () => {
    const m = 22;
    const s = sha();
    gh.commit(PRIVATE, s, { 'db/migrations/001_accounts.sql': MIGRATION_001 });
    await deliver(hook, secret, 'pull_request', prPayload('opened', PRIVATE, m, s, { private: true }));
    const st = await waitFor('the final status', finalStatus(PRIVATE, s));
    assert.equal(st.state, 'success', st.description);
    const b = await branchOf(`internal-${m}`);
    assertCommentRouted(gh.botComments(PRIVATE, m)[0]!.body, b, true);
    const pub = await branchOf(`pr-${n}`);
    const text = JSON.stringify(log.lines);
    for (const pw of [b.connection.password, pub.connection.password])
      assert.ok(!text.includes(pw) && !text.includes(encodeURIComponent(pw)), 'no password in the log');
    assert.ok(!text.includes(secret) && !text.includes(GH_TOKEN) && !text.includes(agent.token));
  });

  it('closed: deleted, and the comment says so', async () => {
    await deliver(hook, secret, 'pull_request', prPayload('closed', PUBLIC, n, sha2));
    await waitFor('the comment to say deleted', () => gh.botComments(PUBLIC, n)[0]!.body.includes('was deleted'));
    await assert.rejects(branchOf(`pr-${n}`), (e) => e instanceof BpgApiError && e.status === 404);
  });
});

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BpgApiError, BpgClient } from '../../agent/api/client.js';
import type { BranchView } from '../../agent/api/schemas.js';
import { serve, type RunningServer } from '../../agent/api/serve.js';
import { silentLogger } from '../../agent/log.js';
import { config, freePort, query, sh, uniqueDb } from '../../agent/test/helpers.js';
import { commentMarker } from '../../shared/pr-comment.js';
import { ACTIONS_BOT, FakeGitHub, type User } from '../../shared/test/fake-github.js';
import { errorLines, payload as examplePayload, runBundle, type Payload, type Run } from './bundle.js';
import { selfSignedCert } from '../../agent/test/tls-helpers.js';

/**
 * The committed bundle (action/dist/index.js), run as the runner runs it: a Node process with
 * INPUT_* variables, a real pull_request payload from @octokit/webhooks-examples, GITHUB_OUTPUT
 * and GITHUB_STEP_SUMMARY files, and GITHUB_API_URL pointing at a local fake of GitHub's REST API.
 * The agent is real (serve() in this process, on the real ZFS pool and Docker), so is psql.
 * One branch is created for the whole file; the runs build on each other in order.
 */

const TOKEN = `tok-${randomBytes(16).toString('hex')}`;
const GH_TOKEN = `ghs_${randomBytes(18).toString('hex')}`;
const OWNER = 'octo-org';
const REPO = `preview-${randomBytes(3).toString('hex')}`;
const FULL = `${OWNER}/${REPO}`;
const PR = 4242;
const BRANCH = `pr-${PR}`;
const db = uniqueDb('ac');
const work = mkdtempSync(join(tmpdir(), 'bpg-action-test-'));

/** Creates the table on the first run, adds a row on every run: the row count says how often it ran. */
const MIGRATE = [
  'echo "migrating $PGDATABASE on $PGHOST:$PGPORT as $PGUSER"',
  'echo "a careless migration prints its password: $PGPASSWORD"',
  `psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -c 'create table if not exists preview_runs (n serial primary key)' -c 'insert into preview_runs default values'`,
].join('\n');

/** A real example payload of GitHub's docs, moved to our repository and pull request. */
function payload(
  event: 'pull_request' | 'workflow_dispatch',
  action: string | null,
  o: { private?: boolean; fork?: boolean } = {},
): Payload {
  return examplePayload({ owner: OWNER, repo: REPO, pr: PR }, event, action, o);
}

const timings: Array<[string, number]> = [];

/** Runs the bundle once, as a workflow step would. */
async function runAction(
  label: string,
  event: Payload,
  eventName: string,
  inputs: Record<string, string>,
): Promise<Run> {
  const defaults = { agent_url: srv.url, agent_token: TOKEN, database: db, github_token: GH_TOKEN };
  const r = await runBundle({
    label,
    work,
    eventName,
    event,
    inputs: { ...defaults, ...inputs },
    env: { GITHUB_REPOSITORY: FULL, GITHUB_API_URL: gh.url },
  });
  timings.push([label, r.ms]);
  return r;
}

/** The password may only appear on the `::add-mask::` line, which the runner swallows. */
function assertNotLogged(r: Run, secret: string): void {
  const lines = `${r.stdout}\n${r.stderr}`.split('\n');
  const leaks = lines.filter((l) => l.includes(secret) && l !== `::add-mask::${secret}`);
  assert.deepEqual(leaks, [], 'the password is in the log');
  assert.ok(!r.summary.includes(secret), 'the password is in the job summary');
}

function ourComments() {
  return gh
    .commentsOf(FULL, PR)
    .filter((c) => c.user.login === ACTIONS_BOT.login && c.body.includes(commentMarker(db)));
}

function datasetExists(name: string): boolean {
  try {
    return sh('zfs', ['list', '-H', '-o', 'name', name]).trim() === name;
  } catch {
    return false;
  }
}

function containerRunning(name: string): boolean {
  try {
    return sh('docker', ['inspect', '-f', '{{.State.Running}}', name]).trim() === 'true';
  } catch {
    return false;
  }
}

async function hasTable(b: BranchView, table: string): Promise<boolean> {
  const rows = await query<{ t: string | null }>(b, 'SELECT to_regclass($1)::text AS t', [table]);
  return rows[0]?.t != null;
}

let srv: RunningServer;
let client: BpgClient;
let gh: FakeGitHub;
/** The branch as the first run made it. */
let first: BranchView;

describe('GitHub Action (the committed bundle, against a real agent and a fake GitHub API)', () => {
  before(async () => {
    const cfg = await config();
    srv = await serve(
      { ...cfg, api: { ...cfg.api, tokens: [{ name: 'action-tests', token: TOKEN }] } },
      { listen: '127.0.0.1:0', log: silentLogger, handleSignals: false, env: {} },
    );
    client = new BpgClient({ baseUrl: srv.url, token: TOKEN });
    await client.createDatabase({ name: db });

    gh = new FakeGitHub(GH_TOKEN, { as: ACTIONS_BOT, userForbidden: true });
    await gh.start();
    gh.repo(FULL, { private: false });
    // A long discussion: our comment will land on the second page of 100.
    const people: User[] = [
      { login: 'octocat', id: 1, type: 'User' },
      { login: 'hubot', id: 2, type: 'User' },
      { login: 'dependabot[bot]', id: 49699333, type: 'Bot' },
    ];
    for (let i = 0; i < 150; i++) gh.addComment(FULL, PR, `comment ${i}`, people[i % 3]!);
    // A person quoting the marker must not have their comment taken over.
    gh.addComment(FULL, PR, `quoting the bot:\n${commentMarker(db)}\nlooks good`, people[0]!);
  });

  after(async () => {
    for (const [label, ms] of timings) process.stderr.write(`# action run ${label}: ${ms} ms\n`);
    await client?.deleteDatabase(db, { force: true }).catch(() => {});
    await srv?.close();
    await gh?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('opened: creates the branch, migrates it, sets the outputs, comments once without the password (public repo)', async () => {
    const r = await runAction('opened (create)', payload('pull_request', 'opened'), 'pull_request', {
      migrate: MIGRATE,
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);

    const b = await client.getBranch(db, BRANCH);
    first = b;
    const pw = b.connection.password;
    assert.equal(b.parent, `${db}/main`);
    assert.ok(datasetExists(b.dataset), `dataset ${b.dataset} exists`);
    assert.ok(containerRunning(b.container), `container ${b.container} is running`);

    // Outputs: every one of them, for this branch.
    assert.deepEqual(r.outputs, {
      connection_string: b.connection.uri,
      host: b.connection.host,
      port: String(b.port),
      user: b.connection.user,
      password: pw,
      database_name: b.connection.database,
      sslmode: '',
      branch: BRANCH,
      created: 'true',
    });

    // The migration ran on the branch, and only there.
    assert.deepEqual(await query(b, 'SELECT count(*)::int AS n FROM preview_runs'), [{ n: 1 }]);
    assert.equal(await hasTable(await client.getBranch(db, 'main'), 'preview_runs'), false);

    // The secret is registered before anything else is printed, and never printed otherwise.
    const lines = r.stdout.split('\n');
    const mask = lines.indexOf(`::add-mask::${pw}`);
    assert.ok(mask >= 0, 'setSecret was called');
    assert.ok(mask < lines.findIndex((l) => l.startsWith('Connection:')), 'masked before the connection is logged');
    assertNotLogged(r, pw);
    assert.match(r.stdout, /a careless migration prints its password: \*\*\*/);

    // One comment among 151, with the details and without the password.
    assert.equal(gh.commentsOf(FULL, PR).length, 152);
    const ours = ourComments();
    assert.equal(ours.length, 1);
    const body = ours[0]!.body;
    assert.ok(!body.includes(pw), 'no password in a public repository');
    for (const s of [
      BRANCH,
      'main',
      'running',
      b.connection.host,
      String(b.port),
      b.connection.database,
      b.connection.user,
      '✅',
    ])
      assert.ok(body.includes(s), `comment shows ${s}`);
    assert.match(body, /postgresql:\/\/[^:]+:\*+@/);
    assert.match(body, /\| Created \| in \d+(\.\d)? s by this run/);
    assert.ok(gh.commentsOf(FULL, PR)[150]!.body.startsWith('quoting the bot'), "the person's quote is untouched");
    // The summary has the same content.
    assert.ok(r.summary.includes(`${db}/${BRANCH}`) && r.summary.includes('✅'));
  });

  it('synchronize: reuses the branch, re-runs the migration, updates the same comment (private repo: password shown there only)', async () => {
    gh.repo(FULL).private = true;
    const earlier = { ...ourComments()[0]! };
    const r = await runAction(
      'synchronize (reuse)',
      payload('pull_request', 'synchronize', { private: true }),
      'pull_request',
      { migrate: MIGRATE },
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.outputs.created, 'false');
    assert.equal(r.outputs.port, String(first.port));
    assert.deepEqual(await query(first, 'SELECT count(*)::int AS n FROM preview_runs'), [{ n: 2 }]);

    assert.equal(gh.commentsOf(FULL, PR).length, 152, 'no new comment');
    const ours = ourComments();
    assert.equal(ours.length, 1);
    assert.equal(ours[0]!.id, earlier.id);
    assert.notEqual(ours[0]!.body, earlier.body);
    assert.ok(ours[0]!.body.includes(first.connection.password), 'private repository: the comment shows the password');
    assert.match(ours[0]!.body, /reused by this run/);
    assertNotLogged(r, first.connection.password);
    // The page with our comment was found through GitHub's `Link: rel="next"` (a /repositories/{id} URL).
    assert.ok(
      gh.requests.some((q) => q.method === 'GET' && q.path.startsWith('/repositories/') && q.query.includes('page=2')),
    );
    gh.repo(FULL).private = false;
  });

  it("a fork's read-only token: the comment is a warning, not a failure", async () => {
    gh.readOnly = true;
    try {
      const earlier = ourComments()[0]!.body;
      const r = await runAction(
        'fork (read-only token)',
        payload('pull_request', 'synchronize', { fork: true }),
        'pull_request',
        {},
      );
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /^::warning::cannot comment on pull request #4242: the token is read-only here/m);
      assert.deepEqual(errorLines(r), []);
      assert.equal(ourComments()[0]!.body, earlier);
      assert.equal(r.outputs.created, 'false');
    } finally {
      gh.readOnly = false;
    }
  });

  it('a branch that is down (recorded running, its container not) is started before migrate runs', async () => {
    // What an agent-side failure leaves: the container stopped behind the agent's back.
    sh('docker', ['stop', '-t', '10', first.container]);
    assert.equal((await client.getBranch(db, BRANCH)).status, 'down');
    const r = await runAction('down (started first)', payload('pull_request', 'synchronize'), 'pull_request', {
      migrate: MIGRATE,
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const started = r.stdout.indexOf(`Branch ${db}/${BRANCH} is down: starting it`);
    assert.ok(started >= 0, r.stdout);
    assert.ok(started < r.stdout.indexOf('Migration succeeded'), 'started before the migration ran');
    assert.equal(r.outputs.created, 'false');
    assert.equal(r.outputs.port, String(first.port), 'the same port');
    assert.equal(r.outputs.password, first.connection.password, 'the same password');
    assert.equal((await client.getBranch(db, BRANCH)).status, 'running');
    assert.ok(containerRunning(first.container));
    assert.deepEqual(
      await query(first, 'SELECT count(*)::int AS n FROM preview_runs'),
      [{ n: 3 }],
      'migrated once more, on the branch',
    );
    assertNotLogged(r, first.connection.password);
  });

  it('a failing migration fails the step with its output, marks the comment and keeps the branch', async () => {
    const migrate = `echo "before the broken statement"\npsql "$DATABASE_URL" -v ON_ERROR_STOP=1 -c 'select * from no_such_table'`;
    const r = await runAction('failing migration', payload('pull_request', 'synchronize'), 'pull_request', { migrate });
    assert.equal(r.code, 1);
    const errors = errorLines(r);
    assert.equal(errors.length, 1, r.stdout);
    assert.ok(
      errors[0]!.startsWith(
        `::error::migration failed: it exited with code 1; branch ${db}/${BRANCH} is kept for debugging`,
      ),
      errors[0],
    );
    assert.match(errors[0]!, /relation "no_such_table" does not exist/);
    const body = ourComments()[0]!.body;
    assert.match(body, /migration failed/);
    assert.match(body, /❌ failed \(exit code 1\)/);
    assert.match(body, /before the broken statement/);
    assert.match(body, /no_such_table/);
    assert.equal((await client.getBranch(db, BRANCH)).status, 'running', 'the branch is kept');
    assert.ok(datasetExists(first.dataset));
    assertNotLogged(r, first.connection.password);
  });

  it('reset (workflow_dispatch): back to the parent, port and password kept, migrated again', async () => {
    const migrate = `psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -c 'create table after_reset (x int)'`;
    const r = await runAction('reset (workflow_dispatch)', payload('workflow_dispatch', null), 'workflow_dispatch', {
      command: 'reset',
      branch: BRANCH,
      migrate,
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.outputs.created, 'false');
    assert.equal(r.outputs.password, first.connection.password);
    assert.equal(r.outputs.port, String(first.port));
    const b = await client.getBranch(db, BRANCH);
    assert.equal(await hasTable(b, 'preview_runs'), false, 'the earlier migrations are gone');
    assert.equal(await hasTable(b, 'after_reset'), true);
    assert.match(r.stdout, /No pull request in this event: no comment/);
    assert.match(r.summary, /reset to `main`/);
    assertNotLogged(r, first.connection.password);
  });

  it('closed: deletes the branch and updates the comment; closing again succeeds', async () => {
    const r = await runAction('closed (delete)', payload('pull_request', 'closed'), 'pull_request', {});
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await assert.rejects(client.getBranch(db, BRANCH), (e: BpgApiError) => e.status === 404);
    assert.equal(datasetExists(first.dataset), false, 'dataset gone');
    assert.equal(containerRunning(first.container), false, 'container gone');
    const ours = ourComments();
    assert.equal(ours.length, 1);
    assert.match(ours[0]!.body, /deleted/);
    assert.ok(!ours[0]!.body.includes(first.connection.password));
    assert.equal(gh.commentsOf(FULL, PR).length, 152);

    const again = await runAction('closed again (already gone)', payload('pull_request', 'closed'), 'pull_request', {});
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.match(again.stdout, /was already gone/);
    assert.equal(ourComments().length, 1);
  });

  it('an unreachable agent, a bad token and a bad input each fail with one clear message', async () => {
    const ev = payload('pull_request', 'opened');
    const [down, badToken, badInput] = await Promise.all([
      freePort().then((port) =>
        runAction('unreachable agent', ev, 'pull_request', { agent_url: `http://127.0.0.1:${port}` }),
      ),
      runAction('bad token', ev, 'pull_request', { agent_token: 'not-the-token-at-all' }),
      runAction('bad input', ev, 'pull_request', { command: 'explode' }),
    ]);
    for (const [r, re] of [
      [
        down,
        /^::error::cannot reach the BetterPG agent at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\): check agent_url/,
      ],
      [badToken, /^::error::the BetterPG agent at http:\/\/127\.0\.0\.1:\d+ refused agent_token \(401\)/],
      [badInput, /^::error::input command must be one of create, delete, reset, not 'explode'$/],
    ] as const) {
      assert.equal(r.code, 1, r.stdout);
      const errors = errorLines(r);
      assert.equal(errors.length, 1, r.stdout);
      assert.match(errors[0]!, re);
      assert.doesNotMatch(r.stdout + r.stderr, /\n\s+at /, 'no stack trace');
      assert.deepEqual(r.outputs, {});
    }
    await assert.rejects(client.getBranch(db, BRANCH), (e: BpgApiError) => e.status === 404, 'nothing was created');
    assert.equal(ourComments().length, 1);
  });

  it('an https agent with a self-signed certificate: refused in one line without agent_ca, trusted with it (PEM text or a file)', async () => {
    const tls = selfSignedCert(mkdtempSync(join(work, 'tls-')));
    const cfg = await config();
    const secure = await serve(
      {
        ...cfg,
        api: { ...cfg.api, tls: { cert: tls.cert, key: tls.key }, tokens: [{ name: 'action-tests', token: TOKEN }] },
      },
      { listen: '127.0.0.1:0', log: silentLogger, handleSignals: false, env: {} },
    );
    try {
      assert.match(secure.url, /^https:\/\/127\.0\.0\.1:\d+$/);
      // Deleting a branch that does not exist succeeds without touching ZFS: the call itself is what is tested.
      const ev = payload('workflow_dispatch', null);
      const inputs = { agent_url: secure.url, branch: 'tls-probe', command: 'delete', comment: 'false' };
      const [untrusted, pemText, pemFile, plain] = await Promise.all([
        runAction('tls: no agent_ca', ev, 'workflow_dispatch', inputs),
        runAction('tls: agent_ca text', ev, 'workflow_dispatch', { ...inputs, agent_ca: tls.pem }),
        runAction('tls: agent_ca file', ev, 'workflow_dispatch', { ...inputs, agent_ca: tls.cert }),
        runAction('tls: agent_ca with http', ev, 'workflow_dispatch', {
          ...inputs,
          agent_url: srv.url,
          agent_ca: tls.pem,
        }),
      ]);
      assert.equal(untrusted.code, 1, untrusted.stdout);
      assert.deepEqual(errorLines(untrusted).length, 1, untrusted.stdout);
      assert.match(
        errorLines(untrusted)[0]!,
        /^::error::the BetterPG agent at https:\/\/127\.0\.0\.1:\d+ has a TLS certificate this runner does not trust: pass its CA as agent_ca \(DEPTH_ZERO_SELF_SIGNED_CERT\)$/,
      );
      for (const r of [pemText, pemFile]) {
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.equal(errorLines(r).length, 0, r.stdout);
      }
      assert.equal(plain.code, 1);
      assert.match(errorLines(plain)[0]!, /^::error::input agent_ca is only used with an https:\/\/ agent_url/);
    } finally {
      await secure.close();
    }
  });
});

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BpgApiError, BpgClient } from '../../agent/api/client.js';
import type { BranchView } from '../../agent/api/schemas.js';
import { serve, type RunningServer } from '../../agent/api/serve.js';
import { loadConfig } from '../../agent/config.js';
import { silentLogger } from '../../agent/log.js';
import { query, uniqueDb } from '../../agent/test/helpers.js';
import { metricValue, routerConfig } from '../../agent/test/router-agent.js';
import pg from 'pg';
import { pgClientConfig } from '../../shared/pg-config.js';
import { commentMarker } from '../../shared/pr-comment.js';
import { ACTIONS_BOT, FakeGitHub } from '../../shared/test/fake-github.js';
import { node24, payload as examplePayload, runBundle, type Payload, type Run } from './bundle.js';

/**
 * The committed bundle against an agent that runs the router (serve() with proxy.enabled, a
 * self-signed certificate, TLS required): the outputs, the `migrate` environment, the comment and
 * the job summary give the router's host and port, `<db>@<branch>` and sslmode=require; the
 * migration really goes through the router (its connection counter for the branch rises, and a
 * plaintext client would be refused); the password shows nowhere it must not. On Node 20 and 24.
 * Branches on the ports of slot 31, the router on the first port of slot 32.
 */

const TOKEN = `tok-${randomBytes(16).toString('hex')}`;
const GH_TOKEN = `ghs_${randomBytes(18).toString('hex')}`;
const OWNER = 'octo-org';
const REPO = `routed-${randomBytes(3).toString('hex')}`;
const FULL = `${OWNER}/${REPO}`;
const PR = 4343;
const BRANCH = `pr-${PR}`;
const db = uniqueDb('ar');
const ROUTED = `${db}@${BRANCH}`;
const work = mkdtempSync(join(tmpdir(), 'bpg-action-router-test-'));

/**
 * Says where it was pointed (the password in DATABASE_URL is scrubbed), migrates with DATABASE_URL,
 * then asks the server through the PG* variables alone: the cluster's own database name comes back.
 */
const MIGRATE = [
  'echo "target $PGHOST:$PGPORT database $PGDATABASE sslmode $PGSSLMODE"',
  'echo "url $DATABASE_URL"',
  'echo "a careless migration prints its password: $PGPASSWORD"',
  `psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -c 'create table if not exists preview_runs (n serial primary key)' -c 'insert into preview_runs default values'`,
  `psql -v ON_ERROR_STOP=1 -Atc "select 'cluster database ' || current_database()"`,
].join('\n');

const event = (action: string, o: { private?: boolean } = {}): Payload =>
  examplePayload({ owner: OWNER, repo: REPO, pr: PR }, 'pull_request', action, o);

const timings: Array<[string, number]> = [];

async function runAction(label: string, ev: Payload, inputs: Record<string, string>, node?: string): Promise<Run> {
  const r = await runBundle({
    label,
    work,
    eventName: 'pull_request',
    event: ev,
    inputs: { agent_url: srv.url, agent_token: TOKEN, database: db, github_token: GH_TOKEN, ...inputs },
    env: { GITHUB_REPOSITORY: FULL, GITHUB_API_URL: gh.url },
    ...(node ? { node } : {}),
  });
  timings.push([label, r.ms]);
  return r;
}

/** The password (in any form) only on the `::add-mask::` lines the runner swallows; never in the summary. */
function assertNotLogged(r: Run, pw: string): void {
  const forms = [pw, encodeURIComponent(pw)];
  const leaks = `${r.stdout}\n${r.stderr}`
    .split('\n')
    .filter((l) => forms.some((f) => l.includes(f)) && !l.startsWith('::add-mask::'));
  assert.deepEqual(leaks, [], 'the password is in the log');
  assert.ok(!forms.some((f) => r.summary.includes(f)), 'the password is in the job summary');
}

const ourComment = () =>
  gh
    .commentsOf(FULL, PR)
    .filter((c) => c.user.login === ACTIONS_BOT.login && c.body.includes(commentMarker(db)))
    .map((c) => c.body);

/** Connections the router made to the branch, all reasons together, by its own metrics. */
const routed = () => metricValue(srv.url, TOKEN, 'bpg_proxy_connections_total', { branch: `${db}/${BRANCH}` });

let srv: RunningServer;
let client: BpgClient;
let gh: FakeGitHub;
let routerPort: number;

/** What every face must say of the branch through the router. */
function assertRouted(b: BranchView): void {
  const c = b.connection;
  assert.equal(c.via, 'router');
  assert.equal(c.host, '127.0.0.1');
  assert.equal(c.port, routerPort);
  assert.notEqual(b.port, routerPort);
  assert.equal(c.direct.port, b.port);
  assert.equal(c.database, ROUTED);
  assert.equal(c.sslmode, 'require');
  assert.equal(
    c.uri,
    `postgresql://postgres:${encodeURIComponent(c.password)}@127.0.0.1:${routerPort}/${db}@${BRANCH}?sslmode=require`,
  );
}

function assertCommentRouted(body: string, b: BranchView, showPassword: boolean): void {
  for (const row of [
    `| Host | \`127.0.0.1\` |`,
    `| Port | \`${routerPort}\` |`,
    `| Database | \`${ROUTED}\` |`,
    `| SSL | \`sslmode=require\` |`,
  ])
    assert.ok(body.includes(row), `comment has ${row}`);
  const masked = `postgresql://postgres:********@127.0.0.1:${routerPort}/${db}@${BRANCH}?sslmode=require`;
  assert.ok(body.includes(showPassword ? b.connection.uri : masked), 'the router connection string');
  assert.ok(!body.includes(`\`${b.port}\``) && !body.includes(`:${b.port}/`), 'not the direct port');
  assert.equal(body.includes(b.connection.password), showPassword);
}

describe('GitHub Action with the router on (the committed bundle, Node 20 and 24)', () => {
  before(async () => {
    const rc = routerConfig('actrouter', 31, 32, (raw) => {
      raw.api = { ...raw.api, tokens: [{ name: 'action-router-tests', token: TOKEN }] };
    });
    routerPort = rc.routerPort;
    srv = await serve(await loadConfig(rc.path), {
      listen: '127.0.0.1:0',
      log: silentLogger,
      handleSignals: false,
      env: {},
    });
    assert.ok(srv.router, 'serve() runs the router');
    client = new BpgClient({ baseUrl: srv.url, token: TOKEN });
    await client.createDatabase({ name: db });
    gh = new FakeGitHub(GH_TOKEN, { as: ACTIONS_BOT, userForbidden: true });
    await gh.start();
    gh.repo(FULL, { private: false });
  });

  after(async () => {
    for (const [label, ms] of timings) process.stderr.write(`# action (router) run ${label}: ${ms} ms\n`);
    await client?.deleteDatabase(db, { force: true }).catch(() => {});
    await srv?.close();
    await gh?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it("opened (Node 20): outputs, migrate's environment, comment and summary give the router; the migration went through it", async () => {
    const before = await routed();
    const r = await runAction('opened through the router (node 20)', event('opened'), {
      migrate: MIGRATE,
      role: 'app_user',
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // Read before anything of the test's own connects through the router.
    const through = (await routed()) - before;

    const b = await client.getBranch(db, BRANCH);
    const pw = b.connection.password;
    assertRouted(b);
    const rolePw = r.outputs.role_password!;
    const { schema_diff: schemaDiff, comment_url: commentUrl, ...outputs } = r.outputs;
    assert.deepEqual(outputs, {
      connection_string: b.connection.uri,
      host: '127.0.0.1',
      port: String(routerPort),
      user: 'postgres',
      password: pw,
      database_name: ROUTED,
      sslmode: 'require',
      branch: BRANCH,
      created: 'true',
      expires_at: b.expiresAt ?? '',
      role_user: 'app_user',
      role_password: rolePw,
      role_connection_string: `postgresql://app_user:${rolePw}@127.0.0.1:${routerPort}/${db}@${BRANCH}?sslmode=require`,
    });
    assert.equal((JSON.parse(schemaDiff!) as { branch: string }).branch, `${db}/${BRANCH}`);
    assert.ok(commentUrl?.startsWith('https://github.com/'));
    // The role was made through the router, and logs in through it (TLS, libpq's sslmode=require).
    const asRole = new pg.Client({
      ...pgClientConfig({ ...b.connection, user: 'app_user', password: rolePw }),
      connectionTimeoutMillis: 10_000,
    });
    await asRole.connect();
    try {
      const me = await asRole.query<{ u: string; su: boolean; db: string }>(
        'SELECT current_user AS u, rolsuper AS su, current_database() AS db FROM pg_roles WHERE rolname = current_user',
      );
      assert.deepEqual(me.rows, [{ u: 'app_user', su: false, db }]);
      await assert.rejects(asRole.query('CREATE ROLE intruder'), (e: { code?: string }) => e.code === '42501');
    } finally {
      await asRole.end();
    }
    assertNotLogged(r, rolePw);
    // Both psql sessions of the migration went through the router, with TLS (it refuses plaintext).
    assert.ok(through >= 2, `the router connected the branch ${through} times during the run`);
    assert.match(
      r.stdout,
      new RegExp(`^target 127\\.0\\.0\\.1:${routerPort} database ${ROUTED} sslmode require$`, 'm'),
    );
    assert.ok(
      r.stdout.includes(`url postgresql://postgres:***@127.0.0.1:${routerPort}/${db}@${BRANCH}?sslmode=require\n`),
      'DATABASE_URL is the router one (its password scrubbed)',
    );
    assert.ok(r.stdout.includes(`cluster database ${b.connection.direct.database}\n`), 'the router rewrote the name');
    assert.match(r.stdout, /a careless migration prints its password: \*\*\*/);
    assert.ok(
      r.stdout.includes(
        `Connection: host 127.0.0.1, port ${routerPort}, database ${ROUTED}, user postgres, through the router, sslmode require (status running)`,
      ),
    );

    // Masked before the first line that names the connection; never printed otherwise.
    const lines = r.stdout.split('\n');
    const mask = lines.indexOf(`::add-mask::${pw}`);
    assert.ok(mask >= 0 && mask < lines.findIndex((l) => l.startsWith('Connection:')), 'masked first');
    assertNotLogged(r, pw);

    const bodies = ourComment();
    assert.equal(bodies.length, 1);
    assertCommentRouted(bodies[0]!, b, false);
    assert.ok(r.summary.includes(`| Database | \`${ROUTED}\` |`) && r.summary.includes('sslmode=require'));

    assert.deepEqual(await query(b, 'SELECT count(*)::int AS n FROM preview_runs'), [{ n: 1 }]);
  });

  it('synchronize (Node 24, private repository): the full router connection string in the comment only', async () => {
    gh.repo(FULL).private = true;
    const before = await routed();
    const r = await runAction(
      'synchronize through the router (node 24)',
      event('synchronize', { private: true }),
      { migrate: MIGRATE },
      node24(),
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const through = (await routed()) - before;
    const b = await client.getBranch(db, BRANCH);
    assertRouted(b);
    assert.equal(r.outputs.created, 'false');
    assert.equal(r.outputs.connection_string, b.connection.uri);
    assert.equal(r.outputs.port, String(routerPort));
    assert.equal(r.outputs.database_name, ROUTED);
    assert.equal(r.outputs.sslmode, 'require');
    assert.ok(through >= 2, `the router connected the branch ${through} times during the run`);
    assertNotLogged(r, b.connection.password);
    const bodies = ourComment();
    assert.equal(bodies.length, 1, 'the same comment, updated');
    assertCommentRouted(bodies[0]!, b, true);
    assert.deepEqual(await query(b, 'SELECT count(*)::int AS n FROM preview_runs'), [{ n: 2 }]);
    gh.repo(FULL).private = false;
  });

  it('a branch stopped by a person (the router would not wake it): the Action starts it, then migrates through the router', async () => {
    await client.stopBranch(db, BRANCH);
    assert.equal((await client.getBranch(db, BRANCH)).stoppedBy, 'user');
    const before = await routed();
    const r = await runAction('idle-stopped, through the router', event('synchronize'), { migrate: MIGRATE });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.ok((await routed()) - before >= 2);
    const b = await client.getBranch(db, BRANCH);
    assert.equal(b.status, 'running');
    assert.deepEqual(await query(b, 'SELECT count(*)::int AS n FROM preview_runs'), [{ n: 3 }]);
    assertNotLogged(r, b.connection.password);
  });

  it('closed: the branch is deleted and the comment says so, without the password', async () => {
    const pw = (await client.getBranch(db, BRANCH)).connection.password;
    const r = await runAction('closed (router)', event('closed'), {});
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await assert.rejects(client.getBranch(db, BRANCH), (e: BpgApiError) => e.status === 404);
    const bodies = ourComment();
    assert.equal(bodies.length, 1);
    assert.match(bodies[0]!, /deleted/);
    assert.ok(!bodies[0]!.includes(pw));
  });
});

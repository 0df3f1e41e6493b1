import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { BpgApiError, BpgClient } from '../../agent/api/client.js';
import { serve, type RunningServer } from '../../agent/api/serve.js';
import { silentLogger } from '../../agent/log.js';
import { config, query, uniqueDb } from '../../agent/test/helpers.js';
import { commentMarker, span } from '../../shared/pr-comment.js';
import { ACTIONS_BOT, FakeGitHub } from '../../shared/test/fake-github.js';
import { olderAgent } from '../../shared/test/older-agent.js';
import { errorLines, node24, payload as examplePayload, runBundle, type Payload, type Run } from './bundle.js';

/**
 * What the pull request comment tells a reviewer, and the inputs for apps (issue 15), through the
 * committed bundle on Node 20 and Node 24 against a real agent and a fake GitHub API: a migration
 * that rewrites a big table is flagged in the comment, `CREATE INDEX CONCURRENTLY` is not; `ttl`
 * sets the expiry; `role` makes a login role that works and is no superuser; `command: get` only
 * reads; an agent without migration watches (older) gives no report and no failure.
 *
 * The agent flags write-blocking locks held over 0.05 s (review.maxLockSeconds): any lock seen in
 * one sample (every 50 ms) counts 0.1 s, so the rewrite of a million rows, which holds ACCESS
 * EXCLUSIVE for far longer than one sample, is flagged on a machine however slow; the concurrent
 * index build takes SHARE UPDATE EXCLUSIVE, which blocks no writes, and is never flagged.
 */

const TOKEN = `tok-${randomBytes(16).toString('hex')}`;
const GH_TOKEN = `ghs_${randomBytes(18).toString('hex')}`;
const OWNER = 'octo-org';
const REPO = `review-${randomBytes(3).toString('hex')}`;
const FULL = `${OWNER}/${REPO}`;
const PR = 5151;
const BRANCH = `pr-${PR}`;
const ROLE = 'app_user';
const ROWS = 1_000_000;
const DAY = 864e5;
const db = uniqueDb('ar');
const work = mkdtempSync(join(tmpdir(), 'bpg-action-review-'));

const REWRITE = `psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -c 'ALTER TABLE orders ADD COLUMN r float DEFAULT random()'`;
const CONCURRENT = [
  `psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -c 'CREATE INDEX CONCURRENTLY orders_v ON orders (v)'`,
  `psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -c 'CREATE TABLE audit (id int)'`,
  // Names the pull request chose: one holds the branch's password, one Markdown, HTML and a mention.
  `psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -c "CREATE TABLE \\"leak_$PGPASSWORD\\" (x int)"`,
  `psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -c 'CREATE TABLE "x\`|<b>y</b> @octocat" (id int)'`,
].join('\n');

let srv: RunningServer;
/** The agent's expiry.prBranchTtl: a pr-<n> branch made without ttl expires this long after each push. */
let prBranchTtl: number | null = null;
let client: BpgClient;
let gh: FakeGitHub;
/** What the first run gave: the role's password must be the same on later runs. */
let firstRole: { password: string; uri: string } | null = null;

const payload = (event: 'pull_request' | 'workflow_dispatch', action: string | null, pr = PR): Payload =>
  examplePayload({ owner: OWNER, repo: REPO, pr }, event, action);

async function runAction(
  label: string,
  event: Payload,
  eventName: string,
  inputs: Record<string, string>,
  o: { node?: string; agentUrl?: string } = {},
): Promise<Run> {
  const r = await runBundle({
    label,
    work,
    eventName,
    event,
    inputs: { agent_url: o.agentUrl ?? srv.url, agent_token: TOKEN, database: db, github_token: GH_TOKEN, ...inputs },
    env: { GITHUB_REPOSITORY: FULL, GITHUB_API_URL: gh.url },
    ...(o.node ? { node: o.node } : {}),
  });
  process.stderr.write(`# action run ${label}: ${r.ms} ms\n`);
  return r;
}

function ourComment(pr = PR) {
  const mine = gh
    .commentsOf(FULL, pr)
    .filter((c) => c.user.login === ACTIONS_BOT.login && c.body.includes(commentMarker(db)));
  assert.equal(mine.length, 1, `one comment of ours on #${pr}`);
  return mine[0]!;
}

/** A secret may only appear on its `::add-mask::` line, which the runner swallows. */
function assertNotLogged(r: Run, secret: string, what: string): void {
  const leaks = `${r.stdout}\n${r.stderr}`
    .split('\n')
    .filter((l) => l.includes(secret) && l !== `::add-mask::${secret}`);
  assert.deepEqual(leaks, [], `${what} is in the log`);
  assert.ok(!r.summary.includes(secret), `${what} is in the job summary`);
}

/** A session as the role, from its connection string (no router here: a plain URI). */
async function asRole<T>(uri: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: uri, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** The SQLSTATE a statement fails with (null: it succeeded). */
async function sqlstate(c: pg.Client, sql: string): Promise<string | null> {
  try {
    await c.query(sql);
    return null;
  } catch (e) {
    return (e as { code?: string }).code ?? 'no code';
  }
}

/** The role works, owns the database's objects, and is no superuser. */
async function assertRoleWorks(uri: string, tables: string[]): Promise<void> {
  await asRole(uri, async (c) => {
    const me = (
      await c.query<{ u: string; su: boolean; cr: boolean; cdb: boolean }>(
        'SELECT current_user AS u, rolsuper AS su, rolcreaterole AS cr, rolcreatedb AS cdb FROM pg_roles WHERE rolname = current_user',
      )
    ).rows[0]!;
    assert.deepEqual(me, { u: ROLE, su: false, cr: false, cdb: false });
    const memberOf = await c.query(
      'SELECT roleid::regrole::text AS r FROM pg_auth_members WHERE member = current_user::regrole',
    );
    assert.deepEqual(memberOf.rows, [], 'member of no role');
    assert.equal((await c.query('SHOW statement_timeout')).rows[0].statement_timeout, '0', 'no settings of its own');
    const owners = await c.query<{ what: string; owner: string }>(
      `SELECT 'database' AS what, pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = current_database()
       UNION ALL SELECT 'schema public', pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'
       UNION ALL SELECT relname::text, pg_get_userbyid(relowner) FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'S') ORDER BY 1`,
    );
    const byWhat = new Map(owners.rows.map((r) => [r.what, r.owner]));
    for (const what of ['database', ...tables]) assert.equal(byWhat.get(what), ROLE, `${what} is the role's`);
    // PostgreSQL 15 gives public to pg_database_owner: whoever owns the database, now the role.
    assert.ok(['pg_database_owner', ROLE].includes(byWhat.get('schema public')!), byWhat.get('schema public'));
    // The app's work: read, write, change its own schema.
    assert.equal((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n >= ROWS, true);
    assert.equal(await sqlstate(c, 'INSERT INTO orders (v) VALUES (1)'), null);
    assert.equal(await sqlstate(c, 'CREATE TABLE IF NOT EXISTS app_made (x int); DROP TABLE app_made'), null);
    // Not a superuser's: no roles, no other roles' secrets, no server files or programs.
    assert.equal(await sqlstate(c, 'CREATE ROLE intruder'), '42501');
    assert.equal(await sqlstate(c, 'SELECT rolpassword FROM pg_authid'), '42501');
    assert.equal(await sqlstate(c, "COPY (SELECT 1) TO PROGRAM 'true'"), '42501');
    assert.equal(await sqlstate(c, 'SET ROLE postgres'), '42501');
  });
}

describe('the review comment and the inputs for apps (ttl, role, command get)', { timeout: 900_000 }, () => {
  before(async () => {
    const cfg = await config();
    prBranchTtl = cfg.expiry.prBranchTtl;
    srv = await serve(
      {
        ...cfg,
        review: { ...cfg.review, maxLockSeconds: 0.05 },
        api: { ...cfg.api, tokens: [{ name: 'action-tests', token: TOKEN }] },
      },
      { listen: '127.0.0.1:0', log: silentLogger, handleSignals: false, env: {} },
    );
    client = new BpgClient({ baseUrl: srv.url, token: TOKEN });
    await client.createDatabase({ name: db });
    // Production's data: a table big enough that rewriting it takes a while.
    await query(
      await client.getBranch(db, 'main'),
      `CREATE TABLE orders (id bigserial PRIMARY KEY, v int NOT NULL);
       INSERT INTO orders (v) SELECT g FROM generate_series(1, ${ROWS}) g; ANALYZE orders;
       -- A role of that name the branch inherits, made into everything it must not be: the action
       -- must bring it back in line (no superuser, no way to become one, no settings of its own).
       CREATE ROLE ${ROLE} LOGIN SUPERUSER CREATEROLE CREATEDB PASSWORD 'known-to-everyone';
       GRANT postgres TO ${ROLE};
       GRANT pg_execute_server_program, pg_read_server_files TO ${ROLE};
       ALTER ROLE ${ROLE} SET statement_timeout = '1ms'`,
    );
    gh = new FakeGitHub(GH_TOKEN, { as: ACTIONS_BOT, userForbidden: true });
    await gh.start();
    gh.repo(FULL, { private: false });
  });

  after(async () => {
    await client?.deleteDatabase(db, { force: true }).catch(() => {});
    await srv?.close();
    await gh?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('opened (Node 20): a table rewrite is flagged in the comment; ttl sets the expiry; role works and is no superuser', async () => {
    const t0 = Date.now();
    const r = await runAction('opened: rewrite, ttl, role', payload('pull_request', 'opened'), 'pull_request', {
      migrate: REWRITE,
      ttl: '3d',
      role: ROLE,
    });
    const t1 = Date.now();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const b = await client.getBranch(db, BRANCH);

    // ttl: three days from this run, in the output and on the agent.
    assert.equal(r.outputs.expires_at, b.expiresAt);
    const expires = Date.parse(b.expiresAt!);
    assert.ok(expires >= t0 + 3 * DAY && expires <= t1 + 3 * DAY, `expires ${b.expiresAt}`);

    // The comment: the flagged lock first and prominent, then the table, the migration time, the expiry.
    const c = ourComment();
    assert.equal(r.outputs.comment_url, c.html_url);
    const body = c.body;
    assert.match(
      body,
      /\n#### ⚠️ Migration safety: 1 flagged\n\n> \[!WARNING\]\n> - \*\*ACCESS EXCLUSIVE\*\* on `orders` for \d+\.\d s \(table rewrite\): blocks reads and writes on production\n/,
    );
    assert.match(
      body,
      /\n\| Table \| Lock \| Held \| Rewritten \| Rows \|\n\| --- \| --- \| --- \| --- \| --- \|\n\| `orders` \| ⚠️ ACCESS EXCLUSIVE \(blocks reads and writes\) \| \d+\.\d s \| yes \| 1,000,000 \|\n/,
    );
    assert.ok(body.indexOf('[!WARNING]') < body.indexOf('| Table |'), 'flagged before the table');
    assert.match(body, /\| Migration \| ✅ succeeded in \d+(\.\d)? s \|/);
    assert.match(
      body,
      /\| Expires \| deleted 3 days after the last push \(\d{4}-\d\d-\d\d \d\d:\d\d UTC without one\) \|/,
    );
    assert.match(body, new RegExp(`\\| Role \\| \`${ROLE}\`, owner of the database's objects`));
    assert.match(r.stdout, /^::warning::migration safety: ACCESS EXCLUSIVE on orders for .* \(table rewrite\)/m);
    assert.match(r.summary, /Migration safety: 1 flagged/);

    // The schema diff against main: a short summary, the SQL folded; the whole of it as an output.
    const section = body.slice(body.indexOf('#### Schema changes'));
    assert.ok(section.startsWith(`#### Schema changes against \`${db}/main\`\n\n- `), section);
    assert.match(section, /\n- columns: 1 added\n/);
    assert.match(section, /<details><summary>SQL diff<\/summary>\n\n```diff\n--- [^\n]+\n\+\+\+ [^\n]+\n/);
    assert.match(section, /\n\+\s+r double precision DEFAULT random\(\)/);
    assert.ok(body.indexOf('Migration safety') < body.indexOf('#### Schema changes'), 'the safety report first');
    const diff = JSON.parse(r.outputs.schema_diff!) as {
      branch: string;
      against: string;
      counts: { column: { added: number } };
    };
    assert.equal(diff.branch, `${db}/${BRANCH}`);
    assert.equal(diff.against, `${db}/main`);
    assert.equal(diff.counts.column.added, 1);

    // role: its outputs, masked, never in the comment, the summary or the log; it works as an app's role.
    assert.equal(r.outputs.role_user, ROLE);
    const pw = r.outputs.role_password!;
    assert.match(pw, /^[A-Za-z0-9_-]{32}$/);
    assert.notEqual(pw, b.connection.password);
    assert.ok(r.stdout.split('\n').includes(`::add-mask::${pw}`), 'the role password is registered as a secret');
    assertNotLogged(r, pw, 'the role password');
    assertNotLogged(r, b.connection.password, 'the branch password');
    assert.ok(!body.includes(pw) && !body.includes(b.connection.password), 'no password in the comment');
    const uri = new URL(r.outputs.role_connection_string!);
    assert.equal(decodeURIComponent(uri.username), ROLE);
    assert.equal(decodeURIComponent(uri.password), pw);
    assert.equal(`${uri.hostname}:${uri.port}${uri.pathname}`, `${b.connection.host}:${b.connection.port}/${db}`);
    await assertRoleWorks(r.outputs.role_connection_string!, ['orders']);
    firstRole = { password: pw, uri: r.outputs.role_connection_string! };
  });

  it('synchronize (Node 24): CREATE INDEX CONCURRENTLY is not flagged; the role keeps its password and gets what migrate made', async () => {
    const before = Date.parse((await client.getBranch(db, BRANCH)).expiresAt!);
    const r = await runAction(
      'synchronize: concurrent index (Node 24)',
      payload('pull_request', 'synchronize'),
      'pull_request',
      { migrate: CONCURRENT, ttl: '3d', role: ROLE },
      { node: node24() },
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const body = ourComment().body;
    assert.match(body, /\n#### ✅ Migration safety: nothing flagged\n/);
    assert.match(body, /\n\| `orders` \| SHARE UPDATE EXCLUSIVE \| \d+\.\d s \| {2}\| 1,000,001 \|\n/);
    assert.ok(!body.includes('[!WARNING]') && !body.includes('⚠️'), 'nothing flagged');
    assert.match(body, /\n- indexes: 1 added\n/);
    assert.match(body, /\n\+CREATE INDEX orders_v ON public\.orders USING btree \(v\);?\n/);
    assert.doesNotMatch(r.stdout, /::warning::migration safety/);
    // What the pull request named: never the password (public repository), HTML only inside the fenced diff.
    const pw = (await client.getBranch(db, BRANCH)).connection.password;
    assert.ok(!body.includes(pw) && body.includes('leak_***'), 'the password scrubbed from the schema diff');
    assert.ok(!r.outputs.schema_diff!.includes(pw) && r.outputs.schema_diff!.includes('leak_***'));
    const fenced = body.slice(body.indexOf('```diff\n'), body.indexOf('\n```\n', body.indexOf('```diff\n')));
    assert.ok(fenced.includes('<b>y</b> @octocat'), fenced);
    assert.equal(body.split('<b>y</b>').length, fenced.split('<b>y</b>').length, 'the name only in the fenced SQL');
    // Renewed by this push.
    assert.ok(Date.parse(r.outputs.expires_at!) >= before, 'the expiry moved on');
    assert.equal(r.outputs.role_password, firstRole!.password, 'the same password on every run');
    assert.equal(r.outputs.role_connection_string, firstRole!.uri);
    await assertRoleWorks(firstRole!.uri, ['orders', 'audit']);
  });

  it('command get: the connection details of the branch, the role checked, nothing created, migrated or commented', async () => {
    const earlier = ourComment();
    const b = await client.getBranch(db, BRANCH);
    const r = await runAction('get', payload('workflow_dispatch', null), 'workflow_dispatch', {
      command: 'get',
      branch: BRANCH,
      role: ROLE,
      migrate: `psql "$DATABASE_URL" -c 'CREATE TABLE must_not_exist (x int)'`,
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.outputs.connection_string, b.connection.uri);
    assert.equal(r.outputs.password, b.connection.password);
    assert.equal(r.outputs.created, 'false');
    assert.equal(r.outputs.expires_at, b.expiresAt);
    assert.equal(r.outputs.role_password, firstRole!.password);
    assert.equal(r.outputs.role_connection_string, firstRole!.uri);
    assert.match(r.stdout, /command get: migrate is not run/);
    assert.deepEqual(await query(b, "SELECT to_regclass('must_not_exist') AS t"), [{ t: null }]);
    assert.equal((await client.getBranch(db, BRANCH)).expiresAt, b.expiresAt, 'the expiry is not renewed');
    assert.deepEqual(ourComment(), earlier, 'the comment is left alone');
    assert.match(r.summary, /not run \(command `get`\)/);
    assertNotLogged(r, firstRole!.password, 'the role password');
    assertNotLogged(r, b.connection.password, 'the branch password');

    const missing = await runAction('get a missing branch', payload('workflow_dispatch', null), 'workflow_dispatch', {
      command: 'get',
      branch: 'pr-999999',
    });
    assert.equal(missing.code, 1);
    assert.deepEqual(errorLines(missing), [
      `::error::branch ${db}/pr-999999 does not exist: command get does not create it (run the action with command create first)`,
    ]);
    await assert.rejects(client.getBranch(db, 'pr-999999'), (e: BpgApiError) => e.status === 404);
  });

  it('command get with a role the branch does not have fails in one line', async () => {
    const r = await runAction('get: unknown role', payload('workflow_dispatch', null), 'workflow_dispatch', {
      command: 'get',
      branch: BRANCH,
      role: 'nobody_here',
    });
    assert.equal(r.code, 1);
    assert.deepEqual(errorLines(r), [
      '::error::role nobody_here does not exist on the branch or has another password; run the action with command create and role nobody_here first',
    ]);
  });

  it('an agent without migration watches (older): no report, no failure', async () => {
    const old = await olderAgent(srv.url);
    try {
      const pr = PR + 1;
      const r = await runAction(
        'older agent',
        payload('pull_request', 'opened', pr),
        'pull_request',
        { migrate: REWRITE },
        { agentUrl: old.url },
      );
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.ok(
        old.seen.some((s) => s.startsWith('POST ') && s.endsWith('/watches')),
        'the watch was asked for',
      );
      assert.match(r.stdout, /No migration safety report: the agent has no migration watches/);
      assert.doesNotMatch(r.stdout, /::warning::/);
      const body = ourComment(pr).body;
      assert.doesNotMatch(body, /Migration safety|Schema changes/);
      assert.equal(r.outputs.schema_diff, '');
      assert.match(r.stdout, /No schema diff: the agent has none/);
      assert.match(body, /\| Migration \| ✅ succeeded/);
      assert.ok(
        body.includes(`| Expires | deleted ${span(prBranchTtl!)} after the last push (`),
        'the renewal is read from the expiry the agent set',
      );
      await client.deleteBranch(db, `pr-${pr}`);
    } finally {
      await old.close();
    }
  });
});

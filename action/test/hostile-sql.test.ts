import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  addressesOf,
  assertReachBlocked,
  attacks,
  BombWatch,
  HostileStack,
  HostListener,
} from '../../agent/test/hostile-kit.js';
import { query, queryOne } from '../../agent/test/helpers.js';
import { commentMarker } from '../../shared/pr-comment.js';
import { errorLines, payload, runBundle, type Run } from './bundle.js';
import { ACTIONS_BOT, FakeGitHub } from '../../shared/test/fake-github.js';

/**
 * Issue 11, point 11, through the Action: the committed bundle (action/dist/index.js) on Node 20,
 * as a workflow runs it on a pull request, with a `migrate` that applies the PR's own SQL files
 * from its checkout with psql (`psql -f`, the host's /usr/bin/psql), against a real `bpg serve` (its
 * own state: every branch has a 64 MiB disk quota) and the fake GitHub API. The attacks and the
 * checks after each are agent/test/hostile-kit.ts's, shared with the receiver's run of the same
 * attacks (webhook/test/hostile-pr.test.ts). Node 24, and a `migrate` that goes after the
 * workflow's secrets, are action/test/hostile.test.ts's.
 */

const GH_TOKEN = `ghs_${randomBytes(18).toString('hex')}`;
const OWNER = 'octo-org';
const REPO = `hostile-sql-${randomBytes(3).toString('hex')}`;
const FULL = `${OWNER}/${REPO}`;
const PR = { link: 71, fifo: 72, settings: 73, fill: 74, bomb: 75 };
/** What a workflow would run: every file of the PR's migrations folder, in order, stopping at the first error. */
const MIGRATE = 'for f in db/migrations/*.sql; do echo "== $f"; psql -X -v ON_ERROR_STOP=1 -f "$f"; done';
const ACCOUNTS =
  "CREATE TABLE accounts (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE);\nINSERT INTO accounts (email) VALUES ('a@example.com'), ('b@example.com');\n";

const stack = new HostileStack('hostile-sql', 28);
const listener = new HostListener();
const work = mkdtempSync(join(tmpdir(), 'bpg-action-hostile-sql-'));
let gh: FakeGitHub;
const runs = new Map<number, Promise<Run>>();
let checkouts = 0;

/** One workflow run for PR `pr` whose checkout holds `files` in db/migrations. */
function step(
  pr: number,
  action: 'opened' | 'synchronize',
  files: Record<string, string>,
  inputs: Record<string, string> = {},
): Promise<Run> {
  const dir = join(work, `checkout-${++checkouts}`);
  mkdirSync(join(dir, 'db', 'migrations'), { recursive: true });
  for (const [name, sql] of Object.entries(files)) writeFileSync(join(dir, 'db', 'migrations', name), sql);
  return runBundle({
    label: `PR ${pr} ${action}`,
    work: dir,
    eventName: 'pull_request',
    event: payload({ owner: OWNER, repo: REPO, pr }, 'pull_request', action),
    inputs: {
      agent_url: stack.url,
      agent_token: stack.token,
      database: stack.db,
      github_token: GH_TOKEN,
      migrate: MIGRATE,
      fast: 'true',
      ...inputs,
    },
    env: { GITHUB_REPOSITORY: FULL, GITHUB_API_URL: gh.url },
  });
}

const prBranch = (n: number) => `pr-${n}`;
/** A run's output for a failure message, without the `::add-mask::` lines (they carry the secrets to mask). */
const log = (r: Run) =>
  `${r.stdout}\n${r.stderr}`
    .split('\n')
    .filter((l) => !l.startsWith('::add-mask::'))
    .join('\n');
const ourComment = (pr: number) => {
  const ours = gh
    .commentsOf(FULL, pr)
    .filter((c) => c.user.login === ACTIONS_BOT.login && c.body.includes(commentMarker(stack.db)));
  assert.equal(ours.length, 1, `one comment on PR ${pr}`);
  return ours[0]!.body;
};
const hasTable = async (branch: string, table: string) =>
  (await queryOne<{ t: string | null }>(await stack.branch(branch), 'SELECT to_regclass($1)::text AS t', [table])).t !==
  null;

/** The step failed with one error line: the migration's, naming the branch, carrying `what`. */
function assertMigrationFailed(r: Run, pr: number, what: RegExp): void {
  assert.equal(r.code, 1, log(r));
  const errors = errorLines(r);
  assert.equal(errors.length, 1, r.stdout);
  assert.ok(
    errors[0]!.startsWith(
      `::error::migration failed: it exited with code 3; branch ${stack.db}/${prBranch(pr)} is kept for debugging`,
    ),
    errors[0],
  );
  assert.match(errors[0]!, what);
  assert.match(ourComment(pr), /migration failed/);
}

before(async () => {
  await stack.start();
  await listener.open();
  gh = new FakeGitHub(GH_TOKEN, { as: ACTIONS_BOT, userForbidden: true });
  await gh.start();
  gh.repo(FULL, { private: false });
  // Four pull requests at once (the fork bomb comes alone, later). Every branch is on one network:
  // the other branch's address and that network's gateway (the host) are known before the PR is.
  const other = addressesOf((await stack.branch('other')).container);
  runs.set(
    PR.link,
    step(PR.link, 'opened', { '001_accounts.sql': ACCOUNTS, '002_link.sql': attacks.linkAtSettings(stack.canary) }),
  );
  runs.set(PR.fifo, step(PR.fifo, 'opened', { '001_fifo.sql': attacks.fifoAtPgVersion() }));
  runs.set(
    PR.settings,
    step(PR.settings, 'opened', {
      '001_accounts.sql': ACCOUNTS,
      '002_alter_system.sql': attacks.alterSystem('statements'),
      '003_reach.sql': attacks.reach({
        neighbour: other.ip,
        host: other.gateway,
        hostPort: listener.port,
        connectTimeout: 2,
      }),
    }),
  );
  runs.set(PR.fill, step(PR.fill, 'opened', { '001_accounts.sql': ACCOUNTS, '002_fill.sql': attacks.fillDisk() }));
  await Promise.all(runs.values());
});

after(async () => {
  try {
    await gh?.close();
    await listener.close();
  } finally {
    await stack.stop(); // deleting the database also ends whatever a failed test left running in a branch
    rmSync(work, { recursive: true, force: true });
  }
});

describe('a hostile pull request through the Action (its own SQL files, psql -f, the committed bundle on Node 20)', () => {
  it('the canary check notices a host file written and chowned through a link (so the checks below can fail)', () => {
    stack.proveCanaryCheck();
  });

  it('(a) a link at betterpg.conf: the restart is refused in one line naming it, the host file untouched; a push with reset gets a fresh, working branch', async () => {
    const r = await runs.get(PR.link)!;
    assert.equal(r.code, 0, log(r));
    const b = await stack.branch(prBranch(PR.link));
    assert.ok(lstatSync(join(stack.dataDir(b), 'betterpg.conf')).isSymbolicLink(), 'the migration planted the link');

    stack.assertRefused(await stack.restart(prBranch(PR.link)), 'betterpg.conf', 'a symbolic link');
    await stack.assertContained(['main', 'other', prBranch(PR.link)]);

    // The next push, in a workflow that resets on synchronize: a new clone of main, the files again.
    const again = await step(
      PR.link,
      'synchronize',
      { '001_accounts.sql': ACCOUNTS, '003_orders.sql': 'CREATE TABLE orders (id bigserial PRIMARY KEY);\n' },
      { command: 'reset' },
    );
    assert.equal(again.code, 0, log(again));
    assert.match(again.stdout, new RegExp(`Reset ${stack.db}/${prBranch(PR.link)} to main`));
    const fresh = await stack.branch(prBranch(PR.link));
    assert.equal(fresh.status, 'running');
    assert.equal(fresh.port, b.port, 'the same port');
    assert.ok(lstatSync(join(stack.dataDir(fresh), 'betterpg.conf')).isFile(), 'a regular settings file again');
    // 001 creates its table without IF NOT EXISTS: it ran again, so the branch was a fresh clone.
    assert.equal((await queryOne<{ n: number }>(fresh, 'SELECT count(*)::int AS n FROM accounts')).n, 2);
    assert.equal(await hasTable(prBranch(PR.link), 'orders'), true);
    assert.equal((await queryOne<{ n: number }>(fresh, 'SELECT count(*)::int AS n FROM t')).n, 1000, "main's data");
    assert.equal((await stack.restart(prBranch(PR.link))).status, 200, 'and it restarts');
    await stack.assertContained();
  });

  it('(b) a FIFO at PG_VERSION: the restart is refused at once naming it; the API answers meanwhile', async () => {
    const r = await runs.get(PR.fifo)!;
    assert.equal(r.code, 0, log(r));
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
    const r = await runs.get(PR.settings)!;
    assertMigrationFailed(r, PR.settings, /003_reach\.sql:\d+: ERROR: {2}reach: self-socket=connected/);
    assertReachBlocked(r.stdout, listener);

    const b = await stack.branch(prBranch(PR.settings));
    assert.match(r.stdout, /^ALTER SYSTEM$/m, 'psql ran the ALTER SYSTEM statements');
    const restarted = await stack.restart(prBranch(PR.settings));
    assert.equal(restarted.status, 200, JSON.stringify(restarted.body));
    assert.equal(restarted.body.port, b.port, 'the same published port');
    await stack.assertSettingsHeld(prBranch(PR.settings));
    await stack.assertContained();
  });

  it('(d) filling the disk: the step fails with "Disk quota exceeded" in its one error line and the comment; main and the others are fine', async () => {
    const r = await runs.get(PR.fill)!;
    assertMigrationFailed(
      r,
      PR.fill,
      /002_fill\.sql:\d+: ERROR: {2}could not (extend file|write block \d+ in file) "[^"]+": Disk quota exceeded/,
    );
    assert.match(ourComment(PR.fill), /Disk quota exceeded/);
    const b = await stack.branch(prBranch(PR.fill));
    assert.equal(b.diskQuotaBytes, 64 * 1024 * 1024);
    assert.equal(b.status, 'running');
    assert.equal(await hasTable(prBranch(PR.fill), 'accounts'), true, 'the branch answers with what came before');
    assert.equal(await hasTable(prBranch(PR.fill), 'fill'), false, 'what the fill wrote went with it');
    await stack.assertContained();
    for (const name of ['main', 'other'])
      await query(
        await stack.branch(name),
        'CREATE TABLE after_fill AS SELECT g FROM generate_series(1, 10000) g; DROP TABLE after_fill',
      );
  });

  it('(c) a fork bomb stops at the pids limit; main, the other branches and the agent answer meanwhile', async () => {
    const run = step(PR.bomb, 'opened', { '001_accounts.sql': ACCOUNTS, '002_bomb.sql': attacks.forkBomb() });
    let r: Run | null = null;
    void run.then((x) => (r = x));
    const b = await (async () => {
      const deadline = Date.now() + 120_000;
      for (;;) {
        const v = await stack.branch(prBranch(PR.bomb)).catch(() => undefined);
        if (v?.status === 'running') return v;
        assert.ok(r === null, `the step ended before its branch ran: ${r && log(r)}`);
        assert.ok(Date.now() < deadline, 'the bomb branch never ran');
        await new Promise((res) => setTimeout(res, 100));
      }
    })();
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
    const done = await run;
    assert.equal(done.code, 0, log(done));
    assert.match(done.stdout, /^Migration succeeded in /m);
    const after = await stack.branch(prBranch(PR.bomb));
    assert.equal(after.status, 'running');
    assert.equal(await hasTable(prBranch(PR.bomb), 'accounts'), true);
    await stack.assertContained();
  });
});

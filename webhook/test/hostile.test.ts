import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import YAML from 'yaml';
import { BpgApiError } from '../../agent/api/client.js';
import type { BranchView } from '../../agent/api/schemas.js';
import { query, sh, uniqueDb } from '../../agent/test/helpers.js';
import { RowlessQuery } from '../src/migrations.js';
import { startReceiver, type Receiver } from '../src/receiver.js';
import { FakeGitHub } from '../../shared/test/fake-github.js';
import {
  BPG_WEBHOOK,
  deliver,
  MIGRATION_001,
  MIGRATION_002,
  prPayload,
  queuedIds,
  receiverConfig,
  recorder,
  sha,
  spawnReceiver,
  startAgent,
  tempDir,
  uniqueName,
  waitFor,
  type ReceiverProcess,
  type TestAgent,
} from './helpers.js';

/**
 * Hostile pull requests through the real receiver, on the real stack: a real agent (ZFS, Docker,
 * PostgreSQL), real signed payloads, the fake GitHub. A migration that lifts statement_timeout and
 * sleeps, one that swallows cancels, one stuck in a program that ignores SIGTERM: each is stopped
 * at the per-file limit, its backend really gone, and reported, while other pull requests go on.
 * Too many, too large and too much SQL is refused with nothing applied. A delivery that takes the
 * receiver down is given up after a bounded number of starts, across restarts. A body sent again
 * under a new delivery id is not worked on twice. Two repositories that would share branches stop
 * the receiver at start.
 */

const db = uniqueDb('whh');
const owner = uniqueName('org');
const REPO = `${owner}/hostile`;
const CRASH_REPO = `${owner}/crash`;
const GH_TOKEN = `ghs_${uniqueName('t')}${uniqueName('t')}`;
const LIMIT_S = 4;

let agent: TestAgent;
let gh: FakeGitHub;
let receiver: Receiver;
let cfg: Awaited<ReturnType<typeof receiverConfig>>;
let hook: string;
const log = recorder();

const finalStatus = (repo: string, s: string) => () => gh.statusesOf(repo, s).find((x) => x.state !== 'pending');
const branchOf = (name: string): Promise<BranchView> => agent.client.getBranch(db, name);
const sleepers = async (b: BranchView) =>
  (
    await query<{ n: number }>(
      b,
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND (query ILIKE '%pg_sleep%' OR query ILIKE '%TO PROGRAM%')`,
    )
  )[0]!.n;

before(async () => {
  agent = await startAgent();
  await agent.client.createDatabase({ name: db });
  const main = await branchOf('main');
  await query(main, `CREATE TABLE marker (v text); INSERT INTO marker VALUES ('main data')`);
  gh = new FakeGitHub(GH_TOKEN);
  await gh.start();
  gh.repo(REPO);
  gh.repo(CRASH_REPO);
  cfg = await receiverConfig({
    githubUrl: gh.url,
    githubToken: GH_TOKEN,
    agentUrl: agent.server.url,
    agentToken: agent.token,
    repos: {
      [REPO]: {
        database: db,
        fast: true,
        migrations: {
          path: 'db/migrations',
          timeoutSeconds: LIMIT_S,
          maxFiles: 3,
          maxFileSize: '2k',
          maxTotalSize: '3k',
        },
      },
    },
    queue: { concurrency: 4 },
  });
  receiver = await startReceiver(cfg.cfg, { log });
  hook = `${receiver.url}/webhook`;
});

after(async () => {
  await receiver?.close(5_000);
  await gh?.close();
  await agent?.client.deleteDatabase(db, { force: true }).catch(() => {});
  await agent?.close();
});

describe('a migration past its time limit', () => {
  it('SET statement_timeout = 0 and pg_sleep, or a loop that swallows cancels: stopped at the limit, backend gone, reported; other pull requests go on', async () => {
    const [s41, s42, s43] = [sha(), sha(), sha()];
    gh.commit(REPO, s41, {
      'db/migrations/001_accounts.sql': MIGRATION_001,
      'db/migrations/002_sleep.sql': 'SET statement_timeout = 0;\nSELECT pg_sleep(1e6);\n',
    });
    gh.commit(REPO, s42, {
      'db/migrations/001_loop.sql': `SET statement_timeout = 0;
DO $$ BEGIN
  LOOP
    BEGIN PERFORM pg_sleep(1e6); EXCEPTION WHEN query_canceled THEN NULL; END;
  END LOOP;
END $$;
`,
    });
    gh.commit(REPO, s43, {
      'db/migrations/001_accounts.sql': MIGRATION_001,
      'db/migrations/002_orders.sql': MIGRATION_002,
    });
    assert.equal((await deliver(hook, cfg.secret, 'pull_request', prPayload('opened', REPO, 41, s41))).status, 202);
    assert.equal((await deliver(hook, cfg.secret, 'pull_request', prPayload('opened', REPO, 42, s42))).status, 202);
    // The sleeper really runs on its branch...
    const b41 = await waitFor('PR 41 sleeping', async () => {
      const b = await branchOf('pr-41').catch(() => undefined);
      return b && (await sleepers(b).catch(() => 0)) > 0 ? b : undefined;
    });
    // ... while another pull request is worked on.
    assert.equal((await deliver(hook, cfg.secret, 'pull_request', prPayload('opened', REPO, 43, s43))).status, 202);
    const st43 = await waitFor('PR 43 done', finalStatus(REPO, s43), 120_000);
    assert.equal(st43.state, 'success', st43.description);

    for (const [n, s, file] of [
      [41, s41, '002_sleep.sql'],
      [42, s42, '001_loop.sql'],
    ] as const) {
      const st = await waitFor(`PR ${n} reported`, finalStatus(REPO, s), 120_000);
      assert.equal(st.state, 'failure');
      assert.match(
        st.description,
        new RegExp(
          `^Migration ${file.replace('.', '\\.')} failed: stopped after \\d+ s: over the limit of ${LIMIT_S} s per file`,
        ),
      );
      const body = gh.botComments(REPO, n)[0]!.body;
      assert.match(body, new RegExp(`❌ failed at \`${file.replace('.', '\\.')}\``));
      assert.match(body, /its backend was terminated, and the file was rolled back/);
      const secs = Number(/stopped after (\d+) s/.exec(body)![1]);
      assert.ok(secs >= LIMIT_S, `stopped after ${secs} s, not before the limit`);
      // The backend is gone, not merely abandoned by the receiver.
      const b = await branchOf(`pr-${n}`);
      assert.equal(await sleepers(b), 0, `PR ${n}: nothing still sleeping`);
      assert.equal(b.status, 'running');
    }
    // What came before the sleeper stays applied; the sleeper itself was rolled back.
    assert.deepEqual(
      (await query<{ name: string }>(b41, 'SELECT name FROM betterpg.migrations ORDER BY name')).map((r) => r.name),
      ['001_accounts.sql'],
    );
    const b43 = await branchOf('pr-43');
    assert.deepEqual(
      (await query<{ name: string }>(b43, 'SELECT name FROM betterpg.migrations ORDER BY name')).map((r) => r.name),
      ['001_accounts.sql', '002_orders.sql'],
    );
    for (const b of [await branchOf('main'), b41, b43])
      assert.deepEqual(await query(b, 'SELECT v FROM marker'), [{ v: 'main data' }], `${b.name} answers with its data`);
    assert.equal((await fetch(`${receiver.url}/healthz`)).status, 200);
  });

  it('a backend that outlives pg_terminate_backend (waiting on a program that ignores SIGTERM) is ended by restarting the branch', async () => {
    const s = sha();
    // Only /bin/sh in the image: the program keeps its own stdin open for writing, so it never sees
    // end of input, and ignores SIGTERM, so the backend waits for it in pclose().
    gh.commit(REPO, s, {
      'db/migrations/001_stuck.sql': `SET statement_timeout = 0;\nCOPY (SELECT 1) TO PROGRAM 'trap "" TERM; exec 3>/proc/self/fd/0; exec cat >/dev/null';\n`,
    });
    assert.equal((await deliver(hook, cfg.secret, 'pull_request', prPayload('opened', REPO, 44, s))).status, 202);
    const st = await waitFor('PR 44 reported', finalStatus(REPO, s), 240_000);
    assert.equal(st.state, 'failure');
    const body = gh.botComments(REPO, 44)[0]!.body;
    assert.match(
      body,
      /stopped after \d+ s: over the limit of 4 s per file \(migrations.timeoutSeconds\); its backend did not end when told to, so the branch was restarted, and the file was rolled back/,
    );
    assert.ok(
      log.lines.some((l) => l.msg.startsWith('a migration outlived its time limit') && l.branch === `${db}/pr-44`),
    );
    const b = await branchOf('pr-44');
    assert.equal(b.status, 'running');
    assert.equal(await sleepers(b), 0);
    const procs = sh('docker', ['top', b.container, '-eo', 'pid,comm'])
      .split('\n')
      .map((l) => l.trim().split(/\s+/)[1] ?? '');
    assert.ok(!procs.includes('cat'), `the program is gone with the restart: ${procs.join(' ')}`);
    assert.deepEqual(await query(b, 'SELECT v FROM marker'), [{ v: 'main data' }]);
    assert.equal(
      (await query<{ n: number }>(b, 'SELECT count(*)::int AS n FROM betterpg.migrations'))[0]!.n,
      0,
      'rolled back',
    );
  });
});

describe('what a migration selects', () => {
  it('is dropped as it arrives, not gathered in the receiver', async () => {
    const b = await branchOf('pr-43');
    const c = new pg.Client({ connectionString: b.connection.uri });
    await c.connect();
    try {
      const res = await new Promise<{ rows: unknown[]; rowCount: number | null }>((resolve, reject) => {
        c.query(
          new RowlessQuery(
            { text: `SELECT 1; SELECT repeat('x', 1000) FROM generate_series(1, 100000)` },
            (err: Error | undefined, r: any) => (err ? reject(err) : resolve(Array.isArray(r) ? r.at(-1) : r)),
          ),
        );
      });
      assert.equal(res.rowCount, 100_000, 'every row came');
      assert.deepEqual(res.rows, [], 'none was kept');
    } finally {
      await c.end();
    }
  });
});

describe('migration limits', () => {
  it('too many files, one too large, or too much in all: refused before anything is created or applied, and said on the PR', async () => {
    const small = 'SELECT 1;\n';
    const cases: [number, Record<string, string>, RegExp][] = [
      [
        45,
        {
          'db/migrations/1.sql': small,
          'db/migrations/2.sql': small,
          'db/migrations/3.sql': small,
          'db/migrations/4.sql': small,
        },
        /^Migrations refused: 4 \.sql files in db\/migrations; at most 3 \(migrations\.maxFiles\)/,
      ],
      [
        46,
        { 'db/migrations/1.sql': small, 'db/migrations/2.sql': `-- ${'x'.repeat(3000)}\nSELECT 1;\n` },
        /^Migrations refused: 2\.sql is 2\.9 KiB; at most 2 KiB per file \(migrations\.maxFileSize\)/,
      ],
      [
        47,
        { 'db/migrations/1.sql': `-- ${'x'.repeat(1800)}\n`, 'db/migrations/2.sql': `-- ${'x'.repeat(1800)}\n` },
        /^Migrations refused: the \.sql files in db\/migrations come to 3\.5 KiB; at most 3 KiB in all \(migrations\.maxTotalSize\)/,
      ],
    ];
    const shas = new Map<number, string>();
    for (const [n, files] of cases) {
      const s = sha();
      shas.set(n, s);
      gh.commit(REPO, s, files);
      assert.equal((await deliver(hook, cfg.secret, 'pull_request', prPayload('opened', REPO, n, s))).status, 202);
    }
    for (const [n, , re] of cases) {
      const s = shas.get(n)!;
      const st = await waitFor(`PR ${n} refused`, finalStatus(REPO, s));
      assert.equal(st.state, 'failure');
      assert.match(st.description, re);
      const body = gh.botComments(REPO, n)[0]!.body;
      assert.match(body, /: migrations refused/);
      assert.match(body, /Nothing was applied/);
      await assert.rejects(
        branchOf(`pr-${n}`),
        (e) => e instanceof BpgApiError && e.status === 404,
        `PR ${n}: no branch`,
      );
      assert.equal(
        gh.requests.filter((r) => r.query.includes(s) && /\/contents\/db\/migrations\/.+/.test(r.path)).length,
        0,
        `PR ${n}: no file downloaded`,
      );
    }

    // A push over a limit on a PR that has a branch: the branch is left as it was.
    const before = await branchOf('pr-43');
    const s = sha();
    gh.commit(REPO, s, {
      ...Object.fromEntries(['1', '2', '3'].map((i) => [`db/migrations/00${i}_x.sql`, small])),
      'db/migrations/004_drop.sql': 'DROP TABLE marker;\n',
    });
    await deliver(hook, cfg.secret, 'pull_request', prPayload('synchronize', REPO, 43, s));
    assert.match(
      (await waitFor('PR 43 refused', finalStatus(REPO, s))).description,
      /^Migrations refused: 4 \.sql files/,
    );
    const after = await branchOf('pr-43');
    assert.equal(after.createdAt, before.createdAt);
    assert.deepEqual(
      (await query<{ name: string }>(after, 'SELECT name FROM betterpg.migrations ORDER BY name')).map((r) => r.name),
      ['001_accounts.sql', '002_orders.sql'],
    );
    assert.deepEqual(await query(after, 'SELECT v FROM marker'), [{ v: 'main data' }]);
  });
});

describe('a body delivered again', () => {
  it('under a new delivery id, before and after a restart, is not worked on twice; a new body for the same PR is', async () => {
    const n = 48;
    const s = sha();
    gh.commit(REPO, s, { 'db/migrations/001_accounts.sql': MIGRATION_001 });
    const raw = JSON.stringify(prPayload('opened', REPO, n, s));
    const first = await deliver(hook, cfg.secret, 'pull_request', null, { raw });
    assert.equal(first.status, 202);
    await waitFor('PR 48 done', finalStatus(REPO, s), 120_000);
    await receiver.queue.idle();

    const again = await deliver(hook, cfg.secret, 'pull_request', null, { raw });
    assert.notEqual(again.id, first.id);
    assert.equal(again.status, 200);
    assert.deepEqual(again.body, { status: 'duplicate', delivery: again.id, sameBodyAs: first.id });

    // Known across a restart: the digest is in the journal.
    await receiver.close(5_000);
    receiver = await startReceiver(cfg.cfg, { log });
    hook = `${receiver.url}/webhook`;
    const afterRestart = await deliver(hook, cfg.secret, 'pull_request', null, { raw });
    assert.deepEqual(afterRestart.body, { status: 'duplicate', delivery: afterRestart.id, sameBodyAs: first.id });

    // The same pull request with another body (a push) is new work.
    const s2 = sha();
    gh.commit(REPO, s2, {
      'db/migrations/001_accounts.sql': MIGRATION_001,
      'db/migrations/002_orders.sql': MIGRATION_002,
    });
    assert.equal((await deliver(hook, cfg.secret, 'pull_request', prPayload('synchronize', REPO, n, s2))).status, 202);
    assert.equal((await waitFor('PR 48 push done', finalStatus(REPO, s2), 120_000)).state, 'success');
    await receiver.queue.idle();

    assert.deepEqual(
      gh.statusesOf(REPO, s).map((x) => x.state),
      ['pending', 'success'],
      'the first body was worked on once',
    );
    assert.equal(log.lines.filter((l) => l.msg === 'delivery done' && l.pr === `${REPO}#${n}`.toLowerCase()).length, 2);
    assert.equal(log.lines.filter((l) => l.msg === 'delivery' && l.duplicate === 'body').length, 2);
    assert.deepEqual(queuedIds(cfg.stateDir), []);
  });
});

describe('a delivery that takes the receiver down', () => {
  let proc: ReceiverProcess | null = null;
  after(() => {
    if (proc && proc.child.exitCode === null) proc.child.kill('SIGKILL');
  });

  it('is tried a bounded number of times across restarts, then given up and reported on the PR; other work goes on', async () => {
    const r = await receiverConfig({
      githubUrl: gh.url,
      githubToken: GH_TOKEN,
      agentUrl: agent.server.url,
      agentToken: agent.token,
      repos: {
        [CRASH_REPO]: { database: db, branchName: 'crash-{number}', fast: true, migrations: { path: 'db/migrations' } },
      },
      queue: { attempts: 2 },
    });
    const file = join(r.stateDir, 'webhook.yaml');
    writeFileSync(file, YAML.stringify(r.raw), { mode: 0o600 });
    const [s51, s52] = [sha(), sha()];
    gh.commit(CRASH_REPO, s51, { 'db/migrations/001_accounts.sql': MIGRATION_001 });
    gh.commit(CRASH_REPO, s52, { 'db/migrations/001_accounts.sql': MIGRATION_001 });
    const listings = () =>
      gh.requests.filter((q) => q.path === `/repos/${CRASH_REPO}/contents/db/migrations` && q.query.includes(s51))
        .length;

    // Each start: the job gets as far as reading its migration, and the receiver dies (SIGKILL: no
    // chance to write anything more), as it would on a job that crashes it.
    for (let start = 1; start <= 2; start++) {
      const held = gh.hold('GET', /\/contents\/db\/migrations\/001_accounts\.sql$/);
      proc = await spawnReceiver(file);
      if (start === 1)
        assert.equal(
          (await deliver(`${proc.url}/webhook`, r.secret, 'pull_request', prPayload('opened', CRASH_REPO, 51, s51)))
            .status,
          202,
        );
      await held.arrived;
      if (start === 2)
        await waitFor('the cut-short try noticed', () =>
          proc!.lines.some((l) => l.msg.startsWith('a delivery was cut short') && l.attempt === 1),
        );
      proc.child.kill('SIGKILL');
      assert.equal((await proc.exited).signal, 'SIGKILL');
      held.release();
      assert.deepEqual(queuedIds(r.stateDir).length, 1);
    }
    assert.equal(listings(), 2);

    // The third start does not run it again: it reports it.
    proc = await spawnReceiver(file);
    const st = await waitFor('PR 51 given up', finalStatus(CRASH_REPO, s51), 60_000);
    assert.equal(st.state, 'error');
    assert.match(
      st.description,
      /^Preparing .*crash-51 failed: the receiver stopped during attempt 2 of this job \(a crash or a kill\)/,
    );
    const body = (await waitFor('the comment', () => gh.botComments(CRASH_REPO, 51)[0])).body;
    assert.match(body, /: not ready/);
    assert.match(
      body,
      /failed \(after 2 attempts\):\nthe receiver stopped during attempt 2 of this job \(a crash or a kill\): not trying again/,
    );
    assert.equal(listings(), 2, 'not tried a third time');
    await assert.rejects(agent.client.getBranch(db, 'crash-51'), (e) => e instanceof BpgApiError && e.status === 404);

    // The receiver that gave up goes on working.
    assert.equal(
      (await deliver(`${proc.url}/webhook`, r.secret, 'pull_request', prPayload('opened', CRASH_REPO, 52, s52))).status,
      202,
    );
    assert.equal((await waitFor('PR 52 done', finalStatus(CRASH_REPO, s52), 120_000)).state, 'success');
    await waitFor('the queue empty', () => queuedIds(r.stateDir).length === 0);
    proc.child.kill('SIGTERM');
    assert.deepEqual(await proc.exited, { code: 0, signal: null });
    proc = null;
  });
});

describe('a file running when the receiver dies', () => {
  let proc: ReceiverProcess | null = null;
  after(() => {
    if (proc && proc.child.exitCode === null) proc.child.kill('SIGKILL');
  });

  it('does not run on in the branch without its client', async () => {
    const r = await receiverConfig({
      githubUrl: gh.url,
      githubToken: GH_TOKEN,
      agentUrl: agent.server.url,
      agentToken: agent.token,
      repos: {
        [CRASH_REPO]: {
          database: db,
          branchName: 'orphan-{number}',
          fast: true,
          migrations: { path: 'db/migrations' },
        },
      },
    });
    const file = join(r.stateDir, 'webhook.yaml');
    writeFileSync(file, YAML.stringify(r.raw), { mode: 0o600 });
    const s = sha();
    // An honest slow migration (it leaves the server's settings alone), well inside its 600 s.
    gh.commit(CRASH_REPO, s, { 'db/migrations/001_slow.sql': 'SELECT pg_sleep(1e6);\n' });
    proc = await spawnReceiver(file);
    assert.equal(
      (await deliver(`${proc.url}/webhook`, r.secret, 'pull_request', prPayload('opened', CRASH_REPO, 53, s))).status,
      202,
    );
    const b = await waitFor(
      'the file running',
      async () => {
        const b = await agent.client.getBranch(db, 'orphan-53').catch(() => undefined);
        return b && (await sleepers(b).catch(() => 0)) > 0 ? b : undefined;
      },
      120_000,
    );
    proc.child.kill('SIGKILL');
    await proc.exited;
    proc = null;
    // The backend notices its client gone (client_connection_check_interval) and ends the file.
    await waitFor('the backend gone', async () => (await sleepers(b)) === 0, 60_000);
    assert.equal((await query<{ n: number }>(b, 'SELECT count(*)::int AS n FROM betterpg.migrations'))[0]!.n, 0);
  });
});

describe('configuration', () => {
  it('two repositories that would share branches of one database stop the receiver at start with one line naming both', async () => {
    const dir = tempDir();
    const file = join(dir, 'webhook.yaml');
    const raw = {
      secret: 's'.repeat(32),
      github: { token: 'ghp_x' },
      agent: { token: 't'.repeat(20) },
      stateDir: dir,
      repos: { 'acme/shop': { database: 'shop' }, 'acme/admin': { database: 'shop' } },
    };
    writeFileSync(file, YAML.stringify(raw));
    const r = await promisify(execFile)(process.execPath, [BPG_WEBHOOK, '--config', file]).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
    );
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      `error: invalid config ${file}: repos: 'acme/shop' and 'acme/admin' both use database 'shop' with the same branchName 'pr-{number}': both would make branch 'pr-1'; give one of them another branchName\n`,
    );
  });
});

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { silentLogger } from '../../agent/log.js';
import { commonBranchName } from '../src/branch-templates.js';
import { renderComment } from '../src/comment.js';
import { parseWebhookConfig, repoSettings } from '../src/config.js';
import { GitHub } from '../src/github.js';
import { fetchMigrations, type MigrationLimits } from '../src/migration-files.js';
import { InterruptedError, JobQueue } from '../src/queue.js';
import { JobStore, type Job } from '../src/store.js';
import { FakeGitHub } from '../../shared/test/fake-github.js';
import { sha, tempDir } from './fixtures.js';

/**
 * The receiver's guards without the stack: migration limits and branch-name clashes in the config,
 * the migration folder held to its limits (real Octokit against the fake GitHub), deliveries known by
 * the digest of their body across restarts, and tries counted on disk before they run.
 */

const SECRET = 's'.repeat(32);
const base = { secret: SECRET, github: { token: 'ghp_x' }, agent: { token: 't'.repeat(20) } };

function job(id: string, key = 'k', seq = 1, digest: string | null = null): Job {
  return {
    id,
    seq,
    key,
    kind: 'open',
    action: 'opened',
    owner: 'o',
    repo: 'r',
    number: 1,
    headSha: 'a'.repeat(40),
    installationId: null,
    receivedAt: new Date().toISOString(),
    attempts: 0,
    notBefore: 0,
    lastError: null,
    startedAt: null,
    digest,
  };
}

describe('config: migration limits and branch names', () => {
  it('has sane defaults for the migration limits and reads sizes with units', async () => {
    const c = await parseWebhookConfig(
      {
        ...base,
        repos: {
          'o/r': { database: 'x' },
          'o/s': {
            database: 'y',
            migrations: { path: 'm', maxFiles: 20, maxFileSize: '64k', maxTotalSize: 1_000_000, timeoutSeconds: 5 },
          },
        },
      },
      't',
      {},
    );
    const d = repoSettings(c, 'o/r')!.migrations;
    assert.deepEqual(
      [d.timeoutSeconds, d.maxFiles, d.maxFileSize, d.maxTotalSize],
      [600, 500, 1024 * 1024, 16 * 1024 * 1024],
    );
    const s = repoSettings(c, 'o/s')!.migrations;
    assert.deepEqual([s.timeoutSeconds, s.maxFiles, s.maxFileSize, s.maxTotalSize], [5, 20, 64 * 1024, 1_000_000]);
  });

  it('refuses bad limits with one line naming the key', async () => {
    const bad: [unknown, RegExp][] = [
      [{ maxFiles: 0 }, /migrations\.maxFiles/],
      [{ maxFiles: 5000 }, /migrations\.maxFiles/],
      [{ maxFileSize: 'huge' }, /migrations\.maxFileSize: 'huge' is not a size/],
      [{ maxFileSize: '200m' }, /migrations\.maxFileSize: must be at most 100m/],
      [{ maxTotalSize: 0 }, /migrations\.maxTotalSize/],
      [{ timeoutSeconds: 0 }, /migrations\.timeoutSeconds/],
    ];
    for (const [migrations, re] of bad) {
      await assert.rejects(
        parseWebhookConfig({ ...base, repos: { 'o/r': { database: 'x', migrations } } }, 'f.yaml', {}),
        (e: Error) => re.test(e.message) && !e.message.includes('\n'),
        `${JSON.stringify(migrations)} -> ${re}`,
      );
    }
  });

  it('two repositories that could make the same branch of one database are refused at start, naming both', async () => {
    const clash = async (a: Record<string, unknown>, b: Record<string, unknown>) => {
      try {
        await parseWebhookConfig({ ...base, repos: { 'acme/shop': a, 'acme/admin': b } }, 'f.yaml', {});
        return null;
      } catch (e) {
        return (e as Error).message;
      }
    };
    const same = await clash({ database: 'shop' }, { database: 'shop' });
    assert.equal(
      same,
      "invalid config f.yaml: repos: 'acme/shop' and 'acme/admin' both use database 'shop' with the same branchName 'pr-{number}': both would make branch 'pr-1'; give one of them another branchName",
    );
    const overlap = await clash(
      { database: 'shop', branchName: 'pr-{number}' },
      { database: 'shop', branchName: 'pr-1{number}' },
    );
    assert.match(
      overlap ?? '',
      /'acme\/shop' and 'acme\/admin' both use database 'shop' with branchName 'pr-\{number\}' and 'pr-1\{number\}': both would make branch 'pr-11'/,
    );
    assert.equal(
      await clash({ database: 'shop' }, { database: 'shop', branchName: 'admin-{number}' }),
      null,
      'different templates',
    );
    assert.equal(await clash({ database: 'shop' }, { database: 'admin' }), null, 'different databases');
    assert.equal(
      await clash({ database: 'shop', branchName: '{number}' }, { database: 'shop', branchName: 'pr-{number}' }),
      null,
    );
  });

  it('finds the shortest name two templates share, and none when there is none', () => {
    assert.equal(commonBranchName('pr-{number}', 'pr-{number}'), 'pr-1');
    assert.equal(commonBranchName('pr-{number}', 'pr-1{number}'), 'pr-11');
    assert.equal(commonBranchName('pr-1{number}', 'pr-{number}'), 'pr-11');
    assert.equal(commonBranchName('{number}-x', '1{number}-x'), '11-x');
    assert.equal(commonBranchName('pr-{number}', 'pr-0{number}'), null, 'PR numbers have no leading zero');
    assert.equal(commonBranchName('pr-{number}', 'pr-{number}-a'), null);
    assert.equal(commonBranchName('a{number}', 'b{number}'), null);
    assert.equal(commonBranchName('{number}', 'v{number}'), null);
    assert.equal(commonBranchName('x{number}{number}', 'x1{number}'), 'x11', 'two numbers in one template');
  });
});

describe('migration files within limits', () => {
  const limits: MigrationLimits = { maxFiles: 3, maxFileSize: 100, maxTotalSize: 250 };

  async function withRepo<T>(
    files: Record<string, string>,
    f: (gh: ReturnType<GitHub['forRepo']>, s: string, fake: FakeGitHub) => Promise<T>,
  ): Promise<T> {
    const fake = new FakeGitHub('ghp_limits');
    await fake.start();
    try {
      const s = sha();
      fake.commit('o/r', s, files);
      return await f(
        new GitHub({ kind: 'token', token: 'ghp_limits' }, fake.url, silentLogger).forRepo(
          { owner: 'o', repo: 'r' },
          null,
        ),
        s,
        fake,
      );
    } finally {
      await fake.close();
    }
  }

  const contentsReads = (fake: FakeGitHub) => fake.count('GET', /\/contents\/m\/.+\.sql$/);

  it('reads a folder within every limit, in name order, skipping other files', async () => {
    await withRepo(
      { 'm/002_b.sql': 'SELECT 2;', 'm/001_a.sql': 'SELECT 1;', 'm/notes.md': 'x'.repeat(1000) },
      async (gh, s) => {
        assert.deepEqual(await fetchMigrations(gh, 'm', s, limits), {
          format: 'plain',
          detectedFrom: "no other tool's layout",
          files: [
            { name: '001_a.sql', sql: 'SELECT 1;' },
            { name: '002_b.sql', sql: 'SELECT 2;' },
          ],
        });
        assert.equal(await fetchMigrations(gh, 'nope', s, limits), null);
      },
    );
  });

  it('refuses too many files, one too large, or too much in all, before downloading any', async () => {
    const cases: [Record<string, string>, string][] = [
      [
        { 'm/1.sql': 'a', 'm/2.sql': 'a', 'm/3.sql': 'a', 'm/4.sql': 'a' },
        '4 .sql files in m; at most 3 (migrations.maxFiles)',
      ],
      [
        { 'm/1.sql': 'a', 'm/2.sql': 'x'.repeat(101) },
        '2.sql is 101 bytes; at most 100 bytes per file (migrations.maxFileSize)',
      ],
      [
        { 'm/1.sql': 'x'.repeat(90), 'm/2.sql': 'x'.repeat(90), 'm/3.sql': 'x'.repeat(90) },
        'the .sql files in m come to 270 bytes; at most 250 bytes in all (migrations.maxTotalSize)',
      ],
    ];
    for (const [files, reason] of cases) {
      await withRepo(files, async (gh, s, fake) => {
        assert.deepEqual(await fetchMigrations(gh, 'm', s, limits), { refused: reason });
        assert.equal(contentsReads(fake), 0, `${reason}: nothing downloaded`);
      });
    }
  });

  it('checks what arrives too, when the listing says no size', async () => {
    await withRepo({ 'm/1.sql': 'x'.repeat(90), 'm/2.sql': 'x'.repeat(101) }, async (gh, s) => {
      const silent = {
        ...gh,
        listDir: async (p: string, r: string) => (await gh.listDir(p, r))!.map(({ size: _size, ...e }) => e),
      };
      assert.deepEqual(await fetchMigrations(silent, 'm', s, limits), {
        refused: '2.sql is 101 bytes; at most 100 bytes per file (migrations.maxFileSize)',
      });
      assert.deepEqual(await fetchMigrations(silent, 'm', s, { ...limits, maxFileSize: 200, maxTotalSize: 150 }), {
        refused: 'the .sql files in m come to at least 191 bytes; at most 150 bytes in all (migrations.maxTotalSize)',
      });
    });
  });

  it('refuses a folder GitHub lists only in part', async () => {
    const many = Object.fromEntries(
      Array.from({ length: 1000 }, (_, i) => [`m/${String(i).padStart(4, '0')}.txt`, '']),
    );
    await withRepo(many, async (gh, s) => {
      const r = await fetchMigrations(gh, 'm', s, { ...limits, maxFiles: 1000 });
      assert.ok(r !== null && 'refused' in r && /1000 entries or more/.test(r.refused));
    });
  });

  it('the refusal is a comment of its own that says nothing was applied', () => {
    const body = renderComment({
      state: 'refused',
      database: 'shop',
      branch: 'pr-1',
      parent: 'main',
      showPassword: false,
      error: '4 .sql files in m; at most 3 (migrations.maxFiles)',
    });
    assert.match(body, /`shop\/pr-1`: migrations refused/);
    assert.match(body, /4 \.sql files in m; at most 3 \(migrations\.maxFiles\)/);
    assert.match(body, /Nothing was applied/);
  });
});

describe('deliveries known by their body', () => {
  it('a body seen before is a duplicate under any id, queued or done, after a restart and a compaction', async () => {
    const dir = tempDir();
    const d1 = 'a'.repeat(64);
    const d2 = 'b'.repeat(64);
    const store = new JobStore(dir);
    await store.open();
    assert.deepEqual(await store.accept(job('id-1', 'k', 1, d1)), { accepted: true });
    assert.deepEqual(await store.accept(job('id-2', 'k', 2, d1)), { accepted: false, duplicate: 'body', of: 'id-1' });
    // Two copies at once under different ids: one wins.
    const race = await Promise.all([store.accept(job('id-3', 'k', 3, d2)), store.accept(job('id-4', 'k', 4, d2))]);
    assert.deepEqual(race.map((r) => r.accepted).sort(), [false, true]);
    await store.remove(job('id-1', 'k', 1, d1));
    await store.close();

    for (let i = 0; i < 2; i++) {
      // Reopened twice: the first open compacts the journal, the second reads the compacted one.
      const again = new JobStore(dir);
      const { jobs } = await again.open();
      assert.deepEqual(
        jobs.map((j) => j.id),
        ['id-3'],
      );
      assert.deepEqual(
        await again.accept(job(`new-${i}`, 'k', 9, d1)),
        { accepted: false, duplicate: 'body', of: 'id-1' },
        'done, still known',
      );
      assert.deepEqual(
        await again.accept(job(`new-${i}`, 'k', 9, d2)),
        { accepted: false, duplicate: 'body', of: 'id-3' },
        'queued, known',
      );
      await again.close();
    }
    const lines = readFileSync(join(dir, 'queue.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      lines.find((l) => l.done === 'id-1'),
      { done: 'id-1', at: lines.find((l) => l.done === 'id-1').at, digest: d1 },
    );
  });

  it('journals written before digests were kept still load', async () => {
    const dir = tempDir();
    const { digest: _d, startedAt: _s, ...old } = job('old-1');
    writeFileSync(
      join(dir, 'queue.jsonl'),
      `${JSON.stringify({ job: old })}\n${JSON.stringify({ done: 'old-0', at: new Date().toISOString() })}\n`,
    );
    const store = new JobStore(dir);
    const { jobs, skipped } = await store.open();
    assert.equal(skipped, 0);
    assert.deepEqual(
      jobs.map((j) => [j.id, j.digest, j.startedAt]),
      [['old-1', null, null]],
    );
    assert.ok(store.hasSeen('old-0'));
    await store.close();
  });
});

describe('tries counted before they run', () => {
  function queue(
    store: JobStore,
    run: (j: Job) => Promise<void>,
    given: { job: Job; err: unknown }[],
    attempts = 3,
  ): JobQueue {
    return new JobQueue({
      store,
      log: silentLogger,
      concurrency: 2,
      attempts,
      backoffMs: 10,
      maxBackoffMs: 20,
      isPermanent: () => false,
      giveUp: async (j, err) => void given.push({ job: j, err }),
      run,
    });
  }

  it('the count is on disk before the work starts', async () => {
    const dir = tempDir();
    const store = new JobStore(dir);
    await store.open();
    let onDisk: unknown;
    const q = queue(
      store,
      async (j) => {
        // What a restart at this instant would read.
        onDisk = readFileSync(join(dir, 'queue.jsonl'), 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l))
          .filter((l) => l.job?.id === j.id)
          .at(-1).job;
      },
      [],
    );
    q.resume([]);
    await q.add(job('j-1', 'k', q.nextSeq()));
    await q.idle();
    assert.equal((onDisk as Job).attempts, 1);
    assert.equal(typeof (onDisk as Job).startedAt, 'number');
    await store.close();
  });

  it('a try the receiver did not survive counts: after the last one the job is reported, not run', async () => {
    const dir = tempDir();
    // Three starts that never came back, as three crashes during the job leave the journal.
    for (let crash = 1; crash <= 3; crash++) {
      const store = new JobStore(dir);
      const { jobs } = await store.open();
      if (crash === 1) {
        assert.equal((await store.accept(job('boom', 'k', 1))).accepted, true);
        jobs.push(job('boom', 'k', 1));
      }
      assert.equal(jobs.length, 1);
      assert.equal(jobs[0]!.attempts, crash - 1);
      const started = new Promise<void>((resolve) => {
        const q = queue(store, () => {
          resolve();
          return new Promise<void>(() => {}); // "crashes": never returns
        }, []);
        q.resume(jobs);
      });
      await started;
      await store.close(); // the process is gone; what is on disk is what the next start sees
    }
    const store = new JobStore(dir);
    const { jobs } = await store.open();
    assert.equal(jobs[0]!.attempts, 3);
    assert.equal(typeof jobs[0]!.startedAt, 'number', 'the third try never came back');
    const given: { job: Job; err: unknown }[] = [];
    let ran = 0;
    const q = queue(store, async () => void ran++, given);
    q.resume(jobs);
    await q.idle();
    assert.equal(ran, 0, 'not run a fourth time');
    assert.equal(given.length, 1);
    assert.equal(given[0]!.job.attempts, 3);
    assert.ok(given[0]!.err instanceof InterruptedError);
    assert.match(
      (given[0]!.err as Error).message,
      /the receiver stopped during attempt 3 of this job \(a crash or a kill\): not trying again/,
    );
    await store.close();
    const last = new JobStore(dir);
    assert.deepEqual((await last.open()).jobs, []);
    assert.ok(last.hasSeen('boom'));
    await last.close();
  });

  it('a try cut short by a clean stop is given back', async () => {
    const dir = tempDir();
    const store = new JobStore(dir);
    await store.open();
    let started!: () => void;
    const isStarted = new Promise<void>((r) => (started = r));
    const q = queue(store, () => {
      started();
      return new Promise<void>(() => {});
    }, []);
    q.resume([]);
    await q.add(job('slow', 'k', q.nextSeq()));
    await isStarted;
    // The grace timer does not hold the process open (a receiver's server does): this does.
    const keepAlive = setInterval(() => {}, 1000);
    try {
      assert.equal(await q.stop(50), false);
    } finally {
      clearInterval(keepAlive);
    }
    await store.close();
    const again = new JobStore(dir);
    const { jobs } = await again.open();
    assert.deepEqual(
      jobs.map((j) => [j.id, j.attempts, j.startedAt]),
      [['slow', 0, null]],
    );
    await again.close();
  });
});

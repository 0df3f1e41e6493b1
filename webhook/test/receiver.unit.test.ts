import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import YAML from 'yaml';
import { silentLogger } from '../../agent/log.js';
import { BpgApiError } from '../../agent/api/client.js';
import { commentMarker, digestOf, maskedUri } from '../../shared/pr-comment.js';
import { renderComment, type CommentInput } from '../src/comment.js';
import { branchNameFor, parseWebhookConfig, repoSettings } from '../src/config.js';
import { routeDelivery } from '../src/events.js';
import { isPermanent } from '../src/lifecycle.js';
import { describeSqlError } from '../src/migrations.js';
import { JobQueue } from '../src/queue.js';
import { JobStore, type Job } from '../src/store.js';
import { generateKeyPairSync } from 'node:crypto';
import { GitHub } from '../src/github.js';
import { BOT_LOGIN, FakeGitHub } from '../../shared/test/fake-github.js';
import { prPayload, sha, tempDir } from './fixtures.js';

/** The pure parts and the on-disk queue, without the stack: config, comment, routing, store, ordering. */

const SECRET = 's'.repeat(32);
const base = { secret: SECRET, github: { token: 'ghp_x' }, agent: { token: 't'.repeat(20) } };

describe('config', () => {
  it('fills the defaults the issue names', async () => {
    const c = await parseWebhookConfig({ ...base, repos: { 'Octo/Shop': { database: 'shop' } } }, 't', {});
    assert.equal(c.listen, '127.0.0.1:7433');
    assert.equal(c.path, '/webhook');
    assert.equal(c.github.apiUrl, 'https://api.github.com');
    const r = repoSettings(c, 'octo/shop')!;
    assert.equal(r.parent, 'main');
    assert.equal(branchNameFor(r, 42), 'pr-42');
    assert.equal(r.resetOnPush, false);
    assert.equal(r.showPassword, 'auto');
    assert.equal(r.forks, false);
    assert.equal(r.data, 'full');
    assert.equal(r.seed, undefined);
    assert.equal(r.migrations.path, undefined);
    assert.equal(repoSettings(c, 'OCTO/SHOP'), r, 'owner/name is case-insensitive');
  });

  it('takes secrets from the environment', async () => {
    const c = await parseWebhookConfig({ repos: {} }, 't', {
      BPG_WEBHOOK_SECRET: SECRET,
      BPG_WEBHOOK_GITHUB_TOKEN: 'ghp_env',
      BPG_WEBHOOK_AGENT_TOKEN: 'a'.repeat(20),
    });
    assert.deepEqual(c.github.auth, { kind: 'token', token: 'ghp_env' });
    assert.equal(c.secret, SECRET);
  });

  it('a GitHub App: appId and a PEM key, from a file', async () => {
    const pem = '-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----\n';
    const c = await parseWebhookConfig(
      { ...base, github: { appId: '123', privateKeyPath: '/k.pem', apiUrl: 'https://ghe.example/api/v3/' } },
      't',
      {},
      async () => pem,
    );
    assert.deepEqual(c.github.auth, { kind: 'app', appId: 123, privateKey: pem });
    assert.equal(c.github.apiUrl, 'https://ghe.example/api/v3');
  });

  it('refuses bad files with one line naming the key', async () => {
    const bad: [unknown, RegExp][] = [
      [{ ...base, secret: undefined }, /secret: missing/],
      [{ ...base, secret: 'short' }, /secret: must be at least 16/],
      [{ ...base, github: {} }, /github: set token/],
      [{ ...base, github: { token: 'x', appId: 1, privateKey: '-----BEGIN PRIVATE KEY-----' } }, /not both/],
      [{ ...base, agent: {} }, /agent.token: missing/],
      [{ ...base, repos: { shop: { database: 'x' } } }, /repos\.shop: must be 'owner\/name'/],
      [{ ...base, repos: { 'o/r': { database: 'a;b' } } }, /repos\.o\/r\.database/],
      [{ ...base, repos: { 'o/r': { database: 'x', branchName: 'preview' } } }, /must contain \{number\}/],
      [{ ...base, repos: { 'o/r': { database: 'x', branchName: 'pr/{number}' } } }, /valid branch name/],
      [{ ...base, repos: { 'o/r': { database: 'x', migrations: { path: '../etc' } } } }, /migrations\.path/],
      [{ ...base, repos: { 'o/r': { database: 'x', showPassword: 'maybe' } } }, /showPassword/],
      [{ ...base, repos: { 'o/r': { database: 'x', data: 'some' } } }, /data: must be 'full' or 'schema-only'/],
      [{ ...base, repos: { 'o/r': { database: 'x', seed: 'db/seed.sql' } } }, /seed: needs data: schema-only/],
      [{ ...base, repos: { 'o/r': { database: 'x', data: 'schema-only', seed: '../s.sql' } } }, /seed: must be a file/],
      [{ ...base, repos: { 'o/r': { database: 'x', data: 'schema-only', fast: true } } }, /fast: does not go/],
      [{ ...base, repos: { 'o/r': { database: 'x', extra: 1 } } }, /repos\.o\/r/],
      [{ ...base, repos: { 'o/r': { database: 'x' }, 'O/R': { database: 'y' } } }, /listed twice/],
      [{ ...base, stateDir: 'relative' }, /stateDir: must be an absolute path/],
    ];
    for (const [raw, re] of bad)
      await assert.rejects(
        parseWebhookConfig(raw, 'f.yaml', {}),
        (e: Error) => re.test(e.message) && /^invalid config f\.yaml: /.test(e.message),
        `${JSON.stringify(raw)} -> ${re}`,
      );
  });

  it('the example config in examples/webhook/ is valid', async () => {
    const raw = YAML.parse(readFileSync(new URL('../../../examples/webhook/webhook.yaml', import.meta.url), 'utf8'));
    const pem = '-----BEGIN PRIVATE KEY-----\\nabc\\n-----END PRIVATE KEY-----';
    const c = await parseWebhookConfig(raw, 'example', {
      BPG_WEBHOOK_SECRET: SECRET,
      BPG_WEBHOOK_AGENT_TOKEN: 'a'.repeat(20),
      BPG_WEBHOOK_PRIVATE_KEY: pem,
    });
    assert.equal(c.github.auth.kind, 'app');
    assert.ok(
      c.github.auth.kind === 'app' && c.github.auth.privateKey.includes('\nabc\n'),
      'literal \\n in an environment line become line breaks',
    );
    assert.deepEqual(Object.keys(c.repos), ['acme/shop', 'acme/billing']);
  });

  it('showPassword accepts auto/always/never, and the older true/false (YAML booleans or strings)', async () => {
    for (const [v, want] of [
      [true, 'always'],
      ['false', 'never'],
      ['auto', 'auto'],
      ['always', 'always'],
      ['never', 'never'],
      [false, 'never'],
      ['true', 'always'],
    ] as const) {
      const c = await parseWebhookConfig({ ...base, repos: { 'o/r': { database: 'x', showPassword: v } } }, 't', {});
      assert.equal(repoSettings(c, 'o/r')!.showPassword, want);
    }
  });
});

describe('comment', () => {
  const conn = {
    host: 'db.example',
    port: 15433,
    user: 'postgres',
    password: 'Sup3rSecretPassw0rd',
    database: 'postgres',
    uri: 'postgresql://postgres:Sup3rSecretPassw0rd@db.example:15433/postgres',
  };
  const input: CommentInput = {
    state: 'ready',
    database: 'api',
    branch: 'pr-7',
    parent: 'main',
    branchStatus: 'running',
    connection: conn,
    showPassword: false,
    passwordHiddenReason: 'this repository is public',
    created: true,
    createMs: 1430,
    migrations: { path: 'db/migrations', applied: ['001_a.sql'], alreadyApplied: [], changed: [] },
    commit: 'a'.repeat(40),
  };

  it('masks the password unless asked to show it', () => {
    const hidden = renderComment(input);
    assert.ok(!hidden.includes(conn.password));
    assert.ok(hidden.includes('postgresql://postgres:********@db.example:15433/postgres'));
    assert.ok(hidden.startsWith(commentMarker('api')));
    assert.match(hidden, /\| Created \| in 1\.4 s/);
    assert.match(hidden, /\| Password \| hidden \(this repository is public\)/);
    const shown = renderComment({ ...input, showPassword: true });
    assert.ok(shown.includes(conn.uri));
    assert.equal(maskedUri({ ...conn, uri: 'not a uri' }), 'postgresql://postgres:********@db.example:15433/postgres');
  });

  it('carries a digest of its content: the same input gives the same body', () => {
    assert.equal(digestOf(renderComment(input)), digestOf(renderComment({ ...input })));
    assert.notEqual(digestOf(renderComment(input)), digestOf(renderComment({ ...input, commit: 'b'.repeat(40) })));
  });

  it('names a failed file with the last lines of its error; a pipe in a name does not break the table', () => {
    const body = renderComment({
      ...input,
      state: 'migration-failed',
      migrations: {
        path: 'm',
        applied: [],
        alreadyApplied: ['001|x.sql'],
        changed: ['001|x.sql'],
        failed: { name: '002.sql', output: Array.from({ length: 30 }, (_, i) => `line ${i}`).join('\n') },
      },
    });
    assert.match(body, /❌ failed at `002.sql`/);
    assert.match(body, /line 29/);
    assert.doesNotMatch(body, /line 5\n/);
    assert.match(body, /`001\\\|x\.sql`/);
    assert.match(body, /Changed since they were applied/);
  });

  it('deleted and error states', () => {
    assert.match(renderComment({ ...input, state: 'deleted' }), /was deleted/);
    const err = renderComment({ ...input, state: 'error', error: 'agent: unreachable' });
    assert.match(err, /: not ready/);
    assert.ok(!err.includes(conn.password));
  });
});

describe('routing', () => {
  it('maps the four actions to jobs and acknowledges the rest', async () => {
    const cfg = await parseWebhookConfig({ ...base, repos: { 'o/r': { database: 'x' } } }, 't', {});
    const s = sha();
    const opened = routeDelivery(cfg, 'd1', 'pull_request', prPayload('opened', 'o/r', 5, s));
    assert.ok('work' in opened);
    assert.equal(opened.work.kind, 'open');
    assert.equal(opened.work.key, 'o/r#5');
    assert.equal(opened.work.headSha, s);
    for (const [a, k] of [
      ['reopened', 'open'],
      ['synchronize', 'push'],
      ['closed', 'close'],
    ] as const) {
      const r = routeDelivery(cfg, 'd', 'pull_request', prPayload(a, 'o/r', 5, s));
      assert.ok('work' in r && r.work.kind === k, a);
    }
    assert.ok(
      'ignored' in routeDelivery(cfg, 'd', 'pull_request', { ...prPayload('opened', 'o/r', 5, s), action: 'edited' }),
    );
    assert.ok('ignored' in routeDelivery(cfg, 'd', 'pull_request', prPayload('opened', 'o/other', 5, s)));
    assert.ok('ignored' in routeDelivery(cfg, 'd', 'pull_request', { nonsense: true }));
    assert.ok('ignored' in routeDelivery(cfg, 'd', 'push', {}));
    const fork = routeDelivery(cfg, 'd', 'pull_request', prPayload('opened', 'o/r', 5, s, { fork: 'x/r' }));
    assert.ok('ignored' in fork && /fork/.test(fork.ignored));
    assert.ok(
      'work' in routeDelivery(cfg, 'd', 'pull_request', prPayload('closed', 'o/r', 5, s, { fork: 'x/r' })),
      'closing a fork PR only deletes',
    );
  });

  it('retries what waiting can fix, not what it cannot', () => {
    assert.equal(isPermanent(new BpgApiError(0, 'unreachable', 'x')), false);
    assert.equal(isPermanent(new BpgApiError(503, 'unavailable', 'x')), false);
    assert.equal(isPermanent(new BpgApiError(409, 'conflict', "branch 'a/b' is busy: creating")), false);
    assert.equal(isPermanent(new BpgApiError(409, 'conflict', 'exists with parent')), true);
    assert.equal(isPermanent(new BpgApiError(404, 'not_found', 'x')), true);
    assert.equal(isPermanent(new BpgApiError(500, 'internal', 'x')), false);
    const gh = (status: number, headers: Record<string, string> = {}) =>
      Object.assign(new Error('x'), { name: 'HttpError', status, response: { headers } });
    assert.equal(isPermanent(gh(502)), false);
    assert.equal(isPermanent(gh(429)), false);
    assert.equal(isPermanent(gh(403, { 'x-ratelimit-remaining': '0' })), false);
    assert.equal(isPermanent(gh(403)), true);
    assert.equal(isPermanent(gh(422)), true);
  });

  it('points at the line of a SQL error', () => {
    const sql = 'CREATE TABLE a (id int);\n\nSELEC 1;\n';
    const out = describeSqlError(
      { message: 'syntax error at or near "SELEC"', code: '42601', position: String(sql.indexOf('SELEC') + 1) },
      sql,
    );
    assert.equal(out, 'ERROR: syntax error at or near "SELEC" (SQLSTATE 42601)\nLINE 3: SELEC 1;');
  });
});

function job(id: string, key: string, seq: number): Job {
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
    digest: null,
  };
}

describe('store and queue', () => {
  it('a job is on disk before it is accepted; a torn record and a half-written compaction are survived', async () => {
    const dir = tempDir();
    const store = new JobStore(dir);
    await store.open();
    assert.deepEqual(await store.accept(job('d-1', 'k', 1)), { accepted: true });
    assert.deepEqual(await store.accept(job('d-1', 'k', 2)), { accepted: false, duplicate: 'id', of: 'd-1' });
    // A burst accepted at once: group-committed, every one on disk when its promise resolves.
    const many = await Promise.all(
      Array.from({ length: 40 }, (_, i) => store.accept(job(`m-${i}`, `k${i % 5}`, 10 + i))),
    );
    assert.ok(many.every((r) => r.accepted));
    await store.save({ ...job('m-0', 'k0', 10), attempts: 2, lastError: 'x' });
    await store.close();
    appendFileSync(join(dir, 'queue.jsonl'), '{"job":{"id":"d-2","seq":'); // killed mid-append
    writeFileSync(join(dir, 'queue.jsonl.tmp-1-abcd'), '{"job":');

    const again = new JobStore(dir);
    const { jobs, skipped } = await again.open();
    assert.equal(skipped, 1);
    assert.equal(jobs.length, 41);
    assert.deepEqual(
      jobs.slice(0, 2).map((j) => [j.id, j.attempts]),
      [
        ['d-1', 0],
        ['m-0', 2],
      ],
      'in arrival order, the last record wins',
    );
    assert.ok(again.hasSeen('d-1'));
    assert.ok(!again.hasSeen('d-2'), 'a torn record was never accepted');
    assert.deepEqual(readdirSync(dir), ['queue.jsonl']);
    await again.remove(jobs[0]!);
    await again.close();

    const third = new JobStore(dir);
    assert.equal((await third.open()).jobs.length, 40);
    assert.ok(third.hasSeen('d-1'), 'done and still seen');
    assert.equal((await third.accept(job('d-1', 'k', 99))).accepted, false);
    await third.close();
    // Compacted: one line per queued job and per done id.
    assert.equal(readFileSync(join(dir, 'queue.jsonl'), 'utf8').split('\n').filter(Boolean).length, 41);
  });

  it('one key in order, keys in parallel up to the limit, retries hold back their key, permanent failures are given up', async () => {
    const dir = tempDir();
    const store = new JobStore(dir);
    await store.open();
    const events: string[] = [];
    let running = 0;
    let maxRunning = 0;
    const failOnce = new Set(['a2']);
    const given: string[] = [];
    const q = new JobQueue({
      store,
      log: silentLogger,
      concurrency: 2,
      attempts: 3,
      backoffMs: 20,
      maxBackoffMs: 50,
      isPermanent: (e) => (e as Error).message === 'permanent',
      giveUp: async (j) => void given.push(j.id),
      run: async (j) => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        events.push(`start ${j.id}`);
        await new Promise((r) => setTimeout(r, 15));
        running--;
        if (failOnce.delete(j.id)) throw new Error('transient');
        if (j.id === 'c1') throw new Error('permanent');
        events.push(`end ${j.id}`);
      },
    });
    q.resume([]);
    for (const [id, key] of [
      ['a1', 'A'],
      ['b1', 'B'],
      ['a2', 'A'],
      ['c1', 'C'],
      ['a3', 'A'],
      ['b2', 'B'],
    ])
      await q.add(job(id!, key!, q.nextSeq()));
    await q.idle();
    const order = (key: string) =>
      events.filter((e) => e.startsWith('end ' + key.toLowerCase())).map((e) => e.slice(4));
    assert.deepEqual(order('A'), ['a1', 'a2', 'a3'], 'a3 waited for a2 to be retried');
    assert.deepEqual(order('B'), ['b1', 'b2']);
    assert.equal(events.filter((e) => e === 'start a2').length, 2);
    assert.deepEqual(given, ['c1']);
    assert.equal(events.filter((e) => e === 'start c1').length, 1, 'a permanent failure is not retried');
    assert.equal(maxRunning, 2);
    await store.close();
    const reopened = new JobStore(dir);
    assert.equal((await reopened.open()).jobs.length, 0);
    await reopened.close();
  });
});

describe('GitHub App authentication', () => {
  it("signs a JWT with the App key, gets an installation token for the delivery's installation, and knows its bot login", async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    });
    const fake = new FakeGitHub('unused-token-for-app-test');
    fake.app = {
      id: 4242,
      slug: 'betterpg-test',
      publicKey,
      installationId: 77,
      installationToken: 'ghs_installation_token_77',
    };
    await fake.start();
    try {
      const cfg = await parseWebhookConfig(
        { ...base, github: { appId: 4242, privateKey, apiUrl: fake.url }, repos: { 'o/r': { database: 'x' } } },
        't',
        {},
      );
      fake.repo('o/r');
      const s = sha();
      const payload = { ...prPayload('opened', 'o/r', 3, s), installation: { id: 77 } };
      const routed = routeDelivery(cfg, 'd', 'pull_request', payload);
      assert.ok('work' in routed);
      assert.equal(routed.work.installationId, 77);
      const gh = new GitHub(cfg.github.auth, cfg.github.apiUrl, silentLogger).forRepo({ owner: 'o', repo: 'r' }, 77);
      assert.equal(await gh.selfLogin(), BOT_LOGIN);
      await gh.setStatus(s, 'pending', 'x'.repeat(200));
      assert.equal(fake.statusesOf('o/r', s)[0]!.description.length, 140, 'cut to what GitHub accepts');
      const body = renderComment({
        state: 'deleted',
        database: 'x',
        branch: 'pr-3',
        parent: 'main',
        showPassword: false,
      });
      assert.equal((await gh.upsertComment(3, 'x', body)).action, 'created');
      assert.equal(fake.issuedTokens.length, 1, 'the installation token is cached');
      // Without an installation in the delivery it is looked up for the repository (and finds the comment, written as the App's bot).
      const looked = new GitHub(cfg.github.auth, cfg.github.apiUrl, silentLogger).forRepo(
        { owner: 'o', repo: 'r' },
        null,
      );
      assert.equal((await looked.upsertComment(3, 'x', body)).action, 'unchanged');
      assert.equal(fake.botComments('o/r', 3).length, 1);
      assert.ok(fake.requests.some((r) => r.path === '/repos/o/r/installation'));
    } finally {
      await fake.close();
    }
  });
});

describe('sticky comment', () => {
  it('is found by marker and author through every page, created once, and left alone when unchanged', async () => {
    const fake = new FakeGitHub('ghp_sticky_test_token');
    await fake.start();
    try {
      fake.repo('o/r');
      for (let i = 0; i < 230; i++)
        fake.addComment('o/r', 1, i === 7 ? `${commentMarker('api')} a person quoting it` : `c${i}`, 'alice');
      const gh = new GitHub({ kind: 'token', token: 'ghp_sticky_test_token' }, fake.url, silentLogger).forRepo(
        { owner: 'o', repo: 'r' },
        null,
      );
      const body = renderComment({
        state: 'deleted',
        database: 'api',
        branch: 'pr-1',
        parent: 'main',
        showPassword: false,
      });
      assert.equal((await gh.upsertComment(1, 'api', body)).action, 'created');
      assert.equal((await gh.upsertComment(1, 'api', body)).action, 'unchanged');
      assert.equal(fake.count('PATCH', /comments/), 0);
      const other = renderComment({
        state: 'deleted',
        database: 'api',
        branch: 'pr-1',
        parent: 'main',
        showPassword: false,
        commit: 'c'.repeat(40),
      });
      assert.equal((await gh.upsertComment(1, 'api', other)).action, 'updated');
      assert.equal(fake.botComments('o/r', 1).length, 1);
      assert.equal((await gh.upsertComment(1, 'other-db', other)).action, 'created', 'one comment per database');
      assert.equal((await gh.upsertComment(2, 'api', body, { createIfMissing: false })).action, 'skipped');
      // A token that cannot say who it is (GET /user 403): any bot's comment with the marker is ours.
      fake.userForbidden = true;
      const anon = new GitHub({ kind: 'token', token: 'ghp_sticky_test_token' }, fake.url, silentLogger).forRepo(
        { owner: 'o', repo: 'r' },
        null,
      );
      assert.equal(await anon.selfLogin(), null);
      assert.equal((await anon.upsertComment(1, 'api', body)).action, 'updated');
      assert.equal(fake.botComments('o/r', 1).length, 2);
    } finally {
      await fake.close();
    }
  });
});

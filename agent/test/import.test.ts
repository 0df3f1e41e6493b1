import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BranchView } from '../engine/view.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { BpgApiError, BpgClient } from '../api/client.js';
import { serve } from '../api/serve.js';
import { cli, config, leftovers, ok, okJson, queryOne, recorder, uniqueDb } from './helpers.js';
import { CONTENT_SQL, seedSource, startPg16Source, startSourcePg, type SourcePg } from './source-pg.js';

/**
 * `bpg db create --from-url`: import from a live PostgreSQL the test starts itself (a container of
 * the image that the agent does not manage), by dump and by base backup, with the source's
 * password kept out of the state, the logs, errors and every process's arguments.
 */

let src: SourcePg;
const made: string[] = [];

before(async () => {
  src = await startSourcePg();
  await seedSource(src);
});

after(async () => {
  for (const db of made) await cli(['db', 'delete', db, '--force']);
  src?.stop();
});

async function stateText(): Promise<string> {
  const cfg = await config();
  return readFileSync(join(cfg.stateDir, 'state.json'), 'utf8');
}

/** Every place a password could leak to that the test can see: the state, the secrets folder names, the CLI's output. */
async function assertNoPassword(...texts: string[]): Promise<void> {
  const pw = src.password;
  const enc = encodeURIComponent(pw);
  for (const t of [await stateText(), ...texts]) {
    assert.ok(!t.includes(pw), `the source password leaked: ${t.slice(0, 300)}`);
    assert.ok(!t.includes(enc), `the source password (URL-encoded) leaked: ${t.slice(0, 300)}`);
  }
}

/**
 * Watches, while `run` goes, every process's arguments on the host and every container's
 * configuration (arguments, environment) for the password; returns what `run` returned.
 */
async function watchArgv<T>(run: Promise<T>, password = src.password): Promise<{ result: T; looked: number }> {
  const secrets = [password, encodeURIComponent(password)];
  let done = false;
  let looked = 0;
  const seen: string[] = [];
  const watcher = (async () => {
    while (!done) {
      const ps = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
      const ids = execFileSync('docker', ['ps', '-aq'], { encoding: 'utf8' }).split('\n').filter(Boolean);
      let inspect = '';
      if (ids.length)
        try {
          inspect = execFileSync('docker', ['inspect', ...ids], {
            encoding: 'utf8',
            stdio: ['ignore', 'pipe', 'ignore'],
          });
        } catch {
          // a container went away between the list and the inspect: next round
        }
      // The bpg command itself is left out: a password put in --from-url is in its arguments by the admin's choice.
      const lines = [...ps.split('\n').filter((l) => !l.includes('bin/bpg.js')), ...inspect.split('\n')];
      for (const l of lines) if (secrets.some((pw) => l.includes(pw))) seen.push(l.slice(0, 300));
      looked++;
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  try {
    const result = await run;
    return { result, looked };
  } finally {
    done = true;
    await watcher;
    assert.deepEqual(seen, [], 'the password was in a process argument or a container configuration');
  }
}

const content = (b: BranchView) => queryOne(b, CONTENT_SQL);

async function nothingLeft(db: string): Promise<void> {
  assert.deepEqual(await leftovers(db), { datasets: [], containers: [] });
  const st = JSON.parse(await stateText());
  assert.equal(st.databases[db], undefined);
  const cfg = await config();
  const tmp = readdirSync(join(cfg.stateDir, 'tmp'), { withFileTypes: true }).filter((e) =>
    e.name.startsWith('import-'),
  );
  assert.deepEqual(tmp, [], 'no import work folder is left');
}

describe('import by dump', () => {
  it('copies the data with 2 jobs, the password from an environment variable, no roles', async () => {
    const db = uniqueDb('im');
    made.push(db);
    const expected = (await src.query(CONTENT_SQL))[0];
    const { result: r } = await watchArgv(
      cli(['db', 'create', db, '--from-url', src.url, '--jobs', '2', '--password-env', 'SRC_PW', '--json'], {
        SRC_PW: src.password,
      }),
    );
    assert.equal(r.code, 0, r.stderr);
    const main = JSON.parse(r.stdout) as BranchView;
    assert.deepEqual(await content(main), expected);
    // progress on stderr, with a rate
    assert.match(r.stderr, /import: (dump|restore): [\d.]+ MB.*MB\/s/);
    // the database connection strings name is the new one; owners are the superuser, no source role came along
    const cfg = await config();
    const own = await queryOne<{ owner: string; role: number; stats: number }>(
      main,
      `SELECT (SELECT tableowner FROM pg_tables WHERE schemaname = 'crm' AND tablename = 'customers') AS owner,
              (SELECT count(*)::int FROM pg_roles WHERE rolname = 'app_reader') AS role,
              (SELECT count(*)::int FROM pg_stats WHERE tablename = 'pgbench_accounts') AS stats`,
    );
    assert.equal(own.owner, cfg.postgres.superuser);
    assert.equal(own.role, 0);
    assert.ok(own.stats > 0, 'ANALYZE ran after the restore');
    // the state keeps the source for refresh, with only a reference to the password
    const st = JSON.parse(await stateText());
    assert.deepEqual(
      { ...st.databases[db].source, importedAt: undefined },
      {
        url: src.url,
        method: 'dump',
        jobs: 2,
        roles: false,
        password: { kind: 'env', name: 'SRC_PW' },
        importedAt: undefined,
      },
    );
    await assertNoPassword(r.stdout, r.stderr);
    // nothing of the import is left: no temporary container, no work folder
    assert.deepEqual(
      readdirSync(join(cfg.stateDir, 'tmp')).filter((f) => f.startsWith('import-')),
      [],
    );
    const stray = execFileSync(
      'docker',
      ['ps', '-a', '--filter', `label=io.betterpg.database=${db}`, '--format', '{{.Names}}'],
      {
        encoding: 'utf8',
      },
    )
      .split('\n')
      .filter((n) => n.includes('import'));
    assert.deepEqual(stray, []);
    // main is a branch like any other: a branch of it has the data
    const child = await okJson(['branch', 'create', `${db}/feature`]);
    assert.deepEqual(await content(child), expected);
  });

  it('keeps a password given in the URL in a secrets file of its own, and copies roles with --roles', async () => {
    const db = uniqueDb('im');
    made.push(db);
    const r = await cli(['db', 'create', db, '--from-url', src.urlWithPassword, '--roles', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const main = JSON.parse(r.stdout) as BranchView;
    const cfg = await config();
    const own = await queryOne<{ owner: string; role: number; canlogin: boolean; pw: string | null; granted: boolean }>(
      main,
      `SELECT (SELECT tableowner FROM pg_tables WHERE schemaname = 'crm' AND tablename = 'customers') AS owner,
              (SELECT count(*)::int FROM pg_roles WHERE rolname = 'app_reader') AS role,
              (SELECT rolcanlogin FROM pg_roles WHERE rolname = 'app_reader') AS canlogin,
              (SELECT rolpassword FROM pg_authid WHERE rolname = 'app_reader') AS pw,
              has_table_privilege('app_reader', 'public.pgbench_accounts', 'SELECT') AS granted`,
    );
    assert.deepEqual(own, { owner: 'app_reader', role: 1, canlogin: true, pw: null, granted: true });
    const st = JSON.parse(await stateText());
    const ref = st.databases[db].source.password;
    assert.equal(ref.kind, 'secret');
    assert.equal(st.databases[db].source.url, src.url, 'the URL is recorded without its password');
    const secrets = join(cfg.stateDir, 'secrets');
    assert.equal(statSync(secrets).mode & 0o777, 0o700);
    const file = join(secrets, `source-${ref.id}`);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(readFileSync(file, 'utf8'), src.password);
    await assertNoPassword(r.stdout, r.stderr);
    // deleting the database removes its secret
    await ok(['db', 'delete', db, '--force']);
    assert.throws(() => statSync(file), /ENOENT/);
  });
});

describe('import failures create nothing', () => {
  it('a wrong password: one clear line, nothing created, the password nowhere', async () => {
    const db = uniqueDb('im');
    const wrong = `wrong-${src.password}`;
    const url = `postgres://postgres:${encodeURIComponent(wrong)}@${src.host}:5432/${src.database}`;
    const { result: r } = await watchArgv(cli(['db', 'create', db, '--from-url', url]), wrong);
    assert.equal(r.code, 1);
    const lines = r.stderr.trim().split('\n');
    assert.match(lines.pop()!, /^error: .*cannot read from the source .*password authentication failed/);
    for (const t of [r.stderr, r.stdout, await stateText()]) {
      assert.ok(!t.includes(wrong) && !t.includes(encodeURIComponent(wrong)), `the password leaked: ${t}`);
    }
    await nothingLeft(db);
    const cfg = await config();
    const secrets = join(cfg.stateDir, 'secrets');
    for (const f of readdirSync(secrets, { withFileTypes: true }).filter((e) => e.isFile()))
      assert.ok(!readFileSync(join(secrets, f.name), 'utf8').includes(wrong), 'no secret kept for a failed import');
  });

  it('an unreachable source: one clear line, nothing created', async () => {
    const db = uniqueDb('im');
    // a port nothing listens on, on the source's host
    const r = await cli(
      ['db', 'create', db, '--from-url', `postgres://postgres@${src.host}:1/app`, '--password-env', 'X'],
      {
        X: 'unused',
      },
    );
    assert.equal(r.code, 1);
    assert.match(r.stderr.trim().split('\n').pop()!, /^error: .*cannot read from the source .*(refused|connect)/i);
    await nothingLeft(db);
  });

  it('bad input is refused before anything is looked at', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--from-url', 'mysql://a@b/c'], /must start with postgres:\/\//],
      [['--from-url', 'postgres://b/c'], /names no user/],
      [['--from-url', 'postgres://a@b/c', '--jobs', '0'], /--jobs must be/],
      [['--from-url', 'postgres://a@b/c', '--method', 'basebackup', '--jobs', '2'], /dump method only/],
      [['--from-url', 'postgres://a:p@b/c', '--password-env', 'X'], /one way only/],
      [['--from-url', 'postgres://a@b/c?passfile=/etc/shadow'], /must not set 'passfile'/],
      [['--from-url', 'postgres://a@b/c', '--password-env', 'BPG_SURELY_UNSET'], /BPG_SURELY_UNSET .* not set/],
      [['--jobs', '2'], /go with --from-url/],
    ];
    for (const [args, re] of cases) {
      const db = uniqueDb('im');
      const r = await cli(['db', 'create', db, ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${args.join(' ')}: one line, got ${r.stderr}`);
      assert.match(lines[0]!, re);
      await nothingLeft(db);
    }
  });
});

describe('import by base backup', () => {
  it('copies the whole cluster, recovers and promotes it, with the password from a file', async () => {
    const db = uniqueDb('ib');
    made.push(db);
    const expected = (await src.query(CONTENT_SQL))[0];
    const pwFile = join(mkdtempSync(join(tmpdir(), 'bpg-pw-')), 'source-password');
    writeFileSync(pwFile, src.password + '\n', { mode: 0o600 });
    const { result: r } = await watchArgv(
      cli(['db', 'create', db, '--from-url', src.url, '--method', 'basebackup', '--password-file', pwFile, '--json']),
    );
    assert.equal(r.code, 0, r.stderr);
    const main = JSON.parse(r.stdout) as BranchView;
    // a base backup copies the cluster: connection strings name the source's database
    assert.match(main.connection.uri, new RegExp(`/${src.database}(\\?|$)`));
    assert.deepEqual(await content(main), expected);
    const cfg = await config();
    const after = await queryOne<{ recovering: boolean; timeline: number; role: number; su: boolean }>(
      main,
      `SELECT pg_is_in_recovery() AS recovering, (SELECT timeline_id FROM pg_control_checkpoint())::int AS timeline,
              (SELECT count(*)::int FROM pg_roles WHERE rolname = 'app_reader') AS role,
              (SELECT rolsuper FROM pg_roles WHERE rolname = $1) AS su`,
      [cfg.postgres.superuser],
    );
    assert.deepEqual(after, { recovering: false, timeline: 2, role: 1, su: true }, 'promoted onto a new timeline');
    assert.match(r.stderr, /import: basebackup: [\d.]+ MB/);
    const st = JSON.parse(await stateText());
    assert.deepEqual(st.databases[db].source.password, { kind: 'file', path: pwFile });
    await assertNoPassword(r.stdout, r.stderr);
    // branches of an imported main work as any other
    const child = await okJson(['branch', 'create', `${db}/feature`]);
    assert.deepEqual(await content(child), expected);
  });

  it('refuses another major version before anything is made (PostgreSQL 16 source, 15 image)', async () => {
    const pg16 = await startPg16Source();
    try {
      for (const method of ['basebackup', 'dump']) {
        const db = uniqueDb('iv');
        const r = await cli(
          ['db', 'create', db, '--from-url', pg16.url, '--method', method, '--password-env', 'PW16'],
          {
            PW16: pg16.password,
          },
        );
        assert.equal(r.code, 2, r.stderr); // refused before anything is made: invalid input
        const line = r.stderr.trim().split('\n').pop()!;
        assert.match(
          line,
          method === 'basebackup'
            ? /^error: the source runs PostgreSQL 16 and the image .* PostgreSQL 15: a base backup needs the same major version/
            : /^error: the source runs PostgreSQL 16, newer than the image .*pg_dump cannot read it/,
        );
        assert.ok(!r.stderr.includes(pg16.password));
        await nothingLeft(db);
      }
    } finally {
      pg16.stop();
    }
  });
});

describe('import through the API', () => {
  it('answers 202 with an operation, which ends with the database; the password is never echoed', async () => {
    const TOKEN = 'tok-import-test-0123456789abcdef';
    const base = await config();
    const cfg = { ...base, api: { ...base.api, listen: '127.0.0.1:0', tokens: [{ name: 'tests', token: TOKEN }] } };
    const log = recorder();
    const server = await serve(cfg, { listen: '127.0.0.1:0', log, handleSignals: false, env: {} });
    try {
      const client = new BpgClient({ baseUrl: server.url, token: TOKEN });
      const db = uniqueDb('ia');
      made.push(db);
      const expected = (await src.query(CONTENT_SQL))[0];
      const res = await fetch(`${server.url}/v1/databases`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}` },
        body: JSON.stringify({ name: db, from: { url: src.urlWithPassword, jobs: 2 } }),
      });
      const text = await res.text();
      assert.equal(res.status, 202, text);
      const { operation } = JSON.parse(text);
      assert.equal(res.headers.get('location'), `/v1/operations/${operation.id}`);
      assert.equal(operation.status, 'running');
      assert.equal(operation.database, db);
      // a second create of the same name while it runs: 409 at once
      const again = await fetch(`${server.url}/v1/databases`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}` },
        body: JSON.stringify({ name: db, from: { url: src.url } }),
      });
      assert.equal(again.status, 409);
      const seen: string[] = [text];
      const done = await client.waitOperation(operation.id, {
        pollMs: 200,
        onProgress: (op) => seen.push(JSON.stringify(op)),
      });
      seen.push(JSON.stringify(done));
      assert.equal(done.status, 'succeeded');
      assert.equal(done.progress?.phase, 'done');
      assert.ok(done.finishedAt);
      const main = done.result!.branches.find((b) => b.branch === 'main')!;
      assert.deepEqual(await content(main), expected);
      for (const t of [...seen, JSON.stringify(log.lines), await stateText()]) {
        assert.ok(
          !t.includes(src.password) && !t.includes(encodeURIComponent(src.password)),
          `password leaked: ${t.slice(0, 200)}`,
        );
      }

      // a failed import: the operation says why, nothing is left
      const bad = uniqueDb('ia');
      const op = await client.startCreateDatabase({
        name: bad,
        from: { url: `postgres://postgres:wrong-password@${src.host}:5432/app` },
      });
      await assert.rejects(client.waitOperation(op.id, { pollMs: 200 }), (e: unknown) => {
        assert.ok(e instanceof BpgApiError);
        assert.equal(e.code, 'failed');
        assert.match(e.message, /password authentication failed/);
        assert.doesNotMatch(e.message, /wrong-password/);
        return true;
      });
      await nothingLeft(bad);

      // refused before 202: an unset password variable, a bad method; an unknown operation
      const e1 = await client
        .startCreateDatabase({ name: uniqueDb('ia'), from: { url: src.url, passwordEnv: 'BPG_SURELY_UNSET' } })
        .catch((e) => e);
      assert.ok(e1 instanceof BpgApiError && e1.status === 400, String(e1));
      const e2 = await client.getOperation('op-0000000000000000').catch((e) => e);
      assert.ok(e2 instanceof BpgApiError && e2.status === 404, String(e2));
      const e3 = await client.getOperation('nope').catch((e) => e);
      assert.ok(e3 instanceof BpgApiError && e3.status === 400, String(e3));
    } finally {
      await server.close();
    }
  });
});

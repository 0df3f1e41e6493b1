import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BpgApiError, BpgClient } from '../api/client.js';
import * as S from '../api/schemas.js';
import { serve, type RunningServer } from '../api/serve.js';
import { loadConfig, type Config } from '../config.js';
import {
  datasetsUnder,
  cli,
  isSpareSlot,
  leftovers,
  readStateFile,
  ownStateConfig,
  recorder,
  sh,
  uniqueDb,
  type CliResult,
} from './helpers.js';
import { selfSignedCert } from './tls-helpers.js';

/**
 * Hostile input at every entry point of the agent (CLI arguments and flags; API paths, query
 * strings, bodies and tokens), each refused cleanly with nothing created; secrets nowhere but the
 * state file and the API's answers; file modes; HTTPS and the loopback rule. A state, dataset base
 * and port slice of its own (slot 15), so "nothing created" can compare everything exactly.
 */

const CONFIG = ownStateConfig('security', 15);
const ENV = { BPG_CONFIG: CONFIG };
const TOKEN = `tok-${randomBytes(16).toString('hex')}`;
const db = uniqueDb('sec');

/** Shell, path, SQL, look-alike and oversize names. */
const HOSTILE = [
  'a;id',
  '$(id)',
  'a`id`',
  'a|id',
  'a&&id',
  'a\nid',
  'a\rb',
  '../x',
  '..',
  '/etc/passwd',
  '%2e%2e%2f',
  "a'b",
  'a"b',
  "x'; DROP DATABASE postgres; --",
  'ＡＢＣ', // fullwidth
  'аpi', // Cyrillic а
  'a\u200bb', // zero-width space
  'a b',
  '-rf',
  '',
  'x'.repeat(64),
  'x'.repeat(5000),
];

const daemonLog = recorder();
/** Every CLI run's stderr, to look for passwords in. */
const cliStderr: string[] = [];

async function run(args: string[], env: Record<string, string | undefined> = ENV): Promise<CliResult> {
  const r = await cli(args, env);
  cliStderr.push(r.stderr);
  return r;
}

async function okRun(args: string[]): Promise<CliResult> {
  const r = await run(args);
  assert.equal(r.code, 0, `bpg ${args.join(' ')}: ${r.stderr}`);
  return r;
}

/** Runs `fn` over `items`, `n` at a time (the machine has 2 cores shared with other test files). */
async function pool<T, R>(items: T[], n: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

/**
 * Refused as bad input: exit 2 (invalid) or 3 (a name that is valid but names nothing, such as
 * `constructor`), nothing on stdout, exactly one `error: ...` line on stderr, no stack trace.
 */
function assertRefusedCli(r: CliResult, what: string): void {
  assert.ok(r.code === 2 || r.code === 3, `${what}: exit ${r.code}, stderr ${r.stderr}`);
  assert.equal(r.stdout, '', `${what}: stdout`);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `${what}: ${JSON.stringify(r.stderr)}`);
  assert.match(lines[0]!, /^error: \S/, what);
  assert.ok(lines[0]!.length < 400, `${what}: a short line`);
  assert.doesNotMatch(r.stderr, /\bat .*\.js:\d+|\n\s+at /, `${what}: stack trace`);
}

interface Reply {
  status: number;
  text: string;
  headers: Headers;
}

async function http(
  base: string,
  method: string,
  path: string,
  o: { headers?: Record<string, string>; body?: string; token?: string | null } = {},
): Promise<Reply> {
  const headers: Record<string, string> = { ...o.headers };
  const token = o.token === undefined ? TOKEN : o.token;
  if (token !== null && headers.authorization === undefined) headers.authorization = `Bearer ${token}`;
  const res = await fetch(base + path, { method, headers, body: o.body });
  return { status: res.status, text: await res.text(), headers: res.headers };
}

/** One of `statuses`, the API's error body with a one-line message, no stack trace. */
function assertRefusedHttp(r: Reply, statuses: number[], what: string): void {
  assert.ok(statuses.includes(r.status), `${what}: status ${r.status} ${r.text.slice(0, 300)}`);
  const body = JSON.parse(r.text) as unknown;
  const parsed = S.ErrorBody.safeParse(body);
  assert.ok(parsed.success, `${what}: error body ${r.text.slice(0, 300)}`);
  assert.deepEqual(Object.keys(body as object), ['error'], what);
  const msg = parsed.data.error.message;
  assert.ok(msg.length > 0 && msg.length < 400, `${what}: message length ${msg.length}`);
  assert.doesNotMatch(msg, /[\n\r]|\bat .*\.js:\d+/, `${what}: one line, no stack`);
}

/** Everything this file's agent has: the state file, ZFS under its root, its containers. */
function footprint(cfg: Config): { state: string; datasets: string[]; containers: string[] } {
  const root = `${cfg.zfs.pool}/${cfg.zfs.datasetBase}`;
  const stateFile = join(cfg.stateDir, 'state.json');
  const datasets = datasetsUnder(root, 'all');
  const ports = Object.values(readStateFile(cfg).branches ?? {}).map((b) => b.port);
  const containers = sh('docker', ['ps', '-a', '--filter', `label=io.betterpg.root=${root}`, '--format', '{{.Names}}'])
    .split('\n')
    .filter((n) => n && !isSpareSlot(n, ports)) // spares come and go behind a daemon (port-slots.ts)
    .sort();
  return { state: existsSync(stateFile) ? readFileSync(stateFile, 'utf8') : '', datasets, containers };
}

/** Every password the state holds. */
function passwords(cfg: Config): string[] {
  const state = JSON.parse(readFileSync(join(cfg.stateDir, 'state.json'), 'utf8')) as {
    branches: Record<string, { password: string }>;
  };
  return Object.values(state.branches).map((b) => b.password);
}

const mode = (p: string) => statSync(p).mode & 0o777;

describe('security: hostile input at every entry point, secrets, file modes, TLS', () => {
  let cfg: Config;
  let srv: RunningServer;

  before(async () => {
    cfg = await loadConfig(CONFIG);
    await okRun(['--debug', 'db', 'create', db]);
    srv = await serve(
      { ...cfg, api: { ...cfg.api, tokens: [{ name: 'security-tests', token: TOKEN }] } },
      { listen: '127.0.0.1:0', log: daemonLog, handleSignals: false, env: {} },
    );
  });

  after(async () => {
    await srv?.close();
    const r = await cli(['-q', 'db', 'delete', db, '--force'], ENV);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await leftovers(db, CONFIG), { datasets: [], containers: [] });
  });

  it('CLI: hostile names, flags and values are refused in one line each, and nothing is created', async () => {
    const before = footprint(cfg);
    const cases: string[][] = [];
    HOSTILE.forEach((bad, i) => {
      // Every value as a database name; half of them as a branch name, the others in another command or flag.
      cases.push(['db', 'create', bad]);
      const more: string[][] = [
        ['branch', 'create', `${bad}/x`],
        ['branch', 'create', `${db}/ok`, '--from', bad],
        ['branch', 'create', `${db}/ok`, '--from-snapshot', bad],
        ['branch', 'create', `${db}/ok`, '--pitr', bad],
        ['db', 'create', 'okdb', '--image', bad],
        ['branch', 'delete', `${db}/${bad}`, '--force'],
        ['db', 'delete', bad, '--force'],
        ['branch', 'rename', `${db}/main`, `${db}/${bad}`],
        ['db', 'rename', db, bad],
        ['stop', `${db}/${bad}`],
        ['snapshot', 'delete', bad],
        ['wal', 'cleanup', `${db}/main`, '--days', bad],
      ];
      cases.push(i % 2 === 0 ? ['branch', 'create', `${db}/${bad}`, '--json'] : more[Math.floor(i / 2) % more.length]!);
    });
    cases.push(
      ['db', 'get', 'constructor'],
      ['db', 'delete', 'toString'],
      ['branch', 'list', '__proto__'],
      ['snapshot', 'create', `${db}/main`, '--label', 'a\nb'],
      ['snapshot', 'create', `${db}/main`, '--label', 'x'.repeat(201)],
      ['branch', 'create', `${db}/ok`, '--from', `other/main`],
      ['serve', '--listen', '127.0.0.1:1;id'],
      ['serve', '--listen', '$(id):80'],
      ['db', 'create', db, '--bogus-flag'],
      ['wal', 'cleanup', `${db}/main`, '--days', '1;id'],
      // Empty values are refused, not taken as "not given".
      ['branch', 'create', `${db}/ok`, '--from', ''],
      ['branch', 'create', `${db}/ok`, '--from-snapshot', ''],
      ['branch', 'create', `${db}/ok`, '--pitr', ''],
      ['db', 'create', 'okdb', '--image', ''],
    );
    const results = await pool(cases, 4, (args) => run(args));
    results.forEach((r, i) => assertRefusedCli(r, `bpg ${JSON.stringify(cases[i])}`));

    // init writes nothing when a value is bad.
    const dir = mkdtempSync(join(tmpdir(), 'bpg-sec-init-'));
    const initCases = [
      ['--pool', 'a;id'],
      ['--dataset-base', '../x'],
      ['--image', 'postgres:17 --privileged'],
      ['--public-host', '$(id)'],
      ['--public-host', 'h@evil/x'],
      ['--bind-address', '0.0.0.0;id'],
      ['--state-dir', 'relative/dir'],
      ['--port-range', '1-2;id'],
    ];
    const inits = await pool(initCases, 4, async (flags) => {
      const path = join(dir, `c-${randomBytes(4).toString('hex')}.yaml`);
      return { r: await run(['init', ...flags], { BPG_CONFIG: path }), path };
    });
    inits.forEach(({ r, path }, i) => {
      assertRefusedCli(r, `bpg init ${initCases[i]!.join(' ')}`);
      assert.equal(existsSync(path), false, 'no config file written');
    });

    assert.deepEqual(footprint(cfg), before);
  });

  it('API: hostile paths, query strings and bodies are refused with the error body, and nothing is created', async () => {
    const before = footprint(cfg);
    const enc = encodeURIComponent;
    const requests: Array<[string, string, string | undefined, number[]]> = [];
    for (const bad of HOSTILE) {
      const e = enc(bad);
      // '' in a path is another route (GET /v1/databases/ is the list): bodies and the CLI cover it.
      if (bad === '') continue;
      // 404 where the URL parser folds '..' segments into another route.
      const st = [400, 404];
      requests.push(
        ['GET', `/v1/databases/${e}`, undefined, st],
        ['DELETE', `/v1/databases/${e}?force=true`, undefined, st],
        ['PUT', `/v1/databases/${db}/branches/${e}`, '{}', st],
        ['PUT', `/v1/databases/${e}/branches/x`, '{}', st],
        ['POST', `/v1/databases/${db}/branches/${e}/start`, undefined, st],
        ['POST', `/v1/databases/${db}/branches/${e}/reset`, undefined, st],
        ['POST', `/v1/databases/${db}/branches/${e}/snapshots`, '{}', st],
        ['DELETE', `/v1/snapshots/${e}`, undefined, st],
        ['POST', '/v1/databases', JSON.stringify({ name: bad }), [400]],
        // 503: well-formed (x*64) but no such image here; nothing is created either way.
        ['POST', '/v1/databases', JSON.stringify({ name: 'okdb', image: bad }), [400, 503]],
        ['PUT', `/v1/databases/${db}/branches/ok`, JSON.stringify({ from: bad }), [400]],
        ['PUT', `/v1/databases/${db}/branches/ok`, JSON.stringify({ fromSnapshot: bad }), [400]],
        ['PUT', `/v1/databases/${db}/branches/ok`, JSON.stringify({ pitr: bad }), [400]],
        ['PUT', `/v1/databases/${db}/branches/ok`, JSON.stringify({ ttl: bad }), [400]],
      );
    }
    const deepArray = '['.repeat(20_000) + ']'.repeat(20_000);
    const deepObject = '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000);
    requests.push(
      // raw, not encoded: NUL, double encoding, traversal
      ['GET', `/v1/databases/a%00b`, undefined, [400]],
      ['GET', `/v1/databases/%252e%252e%252f`, undefined, [400]],
      ['GET', `/v1/databases/${db}/branches/..%2f..%2fetc`, undefined, [400]],
      ['GET', `/v1/databases/${db}/branches/main/..%5c..%5c`, undefined, [404]],
      ['GET', `/v1/databases/${'x'.repeat(8000)}`, undefined, [400]],
      // query strings
      ['DELETE', `/v1/databases/${db}?force=1`, undefined, [400]],
      ['DELETE', `/v1/databases/${db}?force=true&force=true`, undefined, [400]],
      ['DELETE', `/v1/databases/${db}?force[$ne]=false`, undefined, [400]],
      ['DELETE', `/v1/databases/${db}/branches/nope?force=true;id`, undefined, [400]],
      ['DELETE', `/v1/databases/${db}?force=false&x=$(id)`, undefined, [400]],
      // bodies
      ['PUT', `/v1/databases/${db}/branches/ok`, '{"__proto__":{"fast":true}}', [400]],
      ['PUT', `/v1/databases/${db}/branches/ok`, '{"constructor":{"prototype":{"x":1}}}', [400]],
      ['PUT', `/v1/databases/${db}/branches/ok`, '{"from":"main","extra":"$(id)"}', [400]],
      ['PUT', `/v1/databases/${db}/branches/ok`, '{"fast":"true; id"}', [400]],
      ['PUT', `/v1/databases/${db}/branches/ok`, 'null', [400]],
      ['PUT', `/v1/databases/${db}/branches/ok`, '"main"', [400]],
      ['PUT', `/v1/databases/${db}/branches/ok`, '[]', [400]],
      ['PUT', `/v1/databases/${db}/branches/ok`, "{'from':'main'}", [400]],
      ['PUT', `/v1/databases/${db}/branches/ok`, 'from=main;id', [400]],
      ['PUT', `/v1/databases/${db}/branches/ok`, `{"from":${deepArray}}`, [400]],
      ['PUT', `/v1/databases/${db}/branches/ok`, deepObject, [400]],
      ['PUT', `/v1/databases/${db}/branches/ok`, JSON.stringify({ from: 'main', pad: 'x'.repeat(200_000) }), [413]],
      ['POST', '/v1/databases', JSON.stringify({ name: 'x'.repeat(3 * 1024 * 1024) }), [413]],
      ['POST', `/v1/databases/${db}/branches/main/snapshots`, JSON.stringify({ label: 'a\nb' }), [400]],
      ['POST', `/v1/databases/${db}/branches/main/snapshots`, JSON.stringify({ label: 'x'.repeat(201) }), [400]],
      ['POST', '/v1/databases', JSON.stringify({ name: 'okdb', image: '--privileged' }), [400]],
    );
    const replies = await pool(requests, 8, ([method, path, body]) =>
      http(srv.url, method, path, { body, headers: body === undefined ? {} : { 'content-type': 'application/json' } }),
    );
    replies.forEach((r, i) =>
      assertRefusedHttp(
        r,
        requests[i]![3],
        `${requests[i]![0]} ${requests[i]![1].slice(0, 100)} ${String(requests[i]![2]).slice(0, 60)}`,
      ),
    );

    // A URL longer than Node's header limit never reaches the API: Node answers 431 itself.
    const huge = await http(srv.url, 'GET', `/v1/databases/${'x'.repeat(20_000)}`);
    assert.equal(huge.status, 431);

    assert.deepEqual(footprint(cfg), before);
  });

  it('API: missing, wrong, prefixed and misplaced tokens all get the same 401, and nothing is created', async () => {
    const before = footprint(cfg);
    const basic = Buffer.from(`user:${TOKEN}`).toString('base64');
    const auths: Array<Record<string, string>> = [
      {},
      { authorization: '' },
      { authorization: 'Bearer' },
      { authorization: 'Bearer ' },
      { authorization: `Bearer ${TOKEN}x` },
      { authorization: `Bearer x${TOKEN}` },
      { authorization: `Bearer ${TOKEN.slice(0, -1)}` },
      { authorization: `Bearer ${TOKEN.slice(0, 16)}` },
      { authorization: `Bearer ${TOKEN.toUpperCase()}` },
      { authorization: `Bearer ${TOKEN} ${TOKEN}` },
      { authorization: `Bearer ${TOKEN},Bearer x` },
      { authorization: `Bearer\u00a0${TOKEN}` },
      { authorization: TOKEN },
      { authorization: `Token ${TOKEN}` },
      { authorization: `Basic ${basic}` },
      { authorization: `Bearer tok-${randomBytes(16).toString('hex')}` },
      { authorization: `Bearer ${'a'.repeat(8000)}` },
      { 'x-api-token': TOKEN },
      { cookie: `token=${TOKEN}` },
    ];
    const targets: Array<[string, string, string | undefined]> = [
      ['POST', '/v1/databases', JSON.stringify({ name: uniqueDb('tok') })],
      ['PUT', `/v1/databases/${db}/branches/tokentest`, '{}'],
      ['DELETE', `/v1/databases/${db}?force=true`, undefined],
      ['GET', `/v1/databases/${db}/branches/main`, undefined],
      ['GET', '/v1/no-such-route', undefined],
      ['GET', `/v1/databases?token=${TOKEN}`, undefined],
    ];
    const cases = auths.flatMap((h) => targets.map((t) => ({ h, t })));
    const replies = await pool(cases, 8, ({ h, t }) =>
      http(srv.url, t[0], t[1], {
        token: null,
        headers: { ...h, ...(t[2] ? { 'content-type': 'application/json' } : {}) },
        body: t[2],
      }),
    );
    const bodies = new Set<string>();
    replies.forEach((r, i) => {
      const what = `${JSON.stringify(cases[i]!.h).slice(0, 80)} ${cases[i]!.t[0]} ${cases[i]!.t[1]}`;
      assertRefusedHttp(r, [401], what);
      assert.equal(r.headers.get('www-authenticate'), 'Bearer realm="betterpg"', what);
      bodies.add(r.text);
    });
    assert.equal(bodies.size, 1, 'one answer whatever was asked: nothing about the route or the token');
    // Nothing of a presented token reaches the log.
    const logged = JSON.stringify(daemonLog.lines);
    assert.ok(!logged.includes(TOKEN.slice(4)), 'the token is not logged');
    assert.deepEqual(footprint(cfg), before);
  });

  it("names that are members of Object.prototype are ordinary names: 'constructor' is not found, 'valueOf' can be created", async () => {
    for (const name of ['constructor', 'toString', 'hasOwnProperty']) {
      const r = await http(srv.url, 'GET', `/v1/databases/${name}`);
      assertRefusedHttp(r, [404], name);
      assert.match(JSON.parse(r.text).error.message, new RegExp(`database '${name}' does not exist`));
    }
    const created = await http(srv.url, 'POST', '/v1/databases', { body: JSON.stringify({ name: 'valueOf' }) });
    try {
      assert.equal(created.status, 201, created.text);
      assert.equal(JSON.parse(created.text).name, 'valueOf');
    } finally {
      const del = await http(srv.url, 'DELETE', '/v1/databases/valueOf');
      assert.equal(del.status, created.status === 201 ? 200 : 404, del.text);
    }
    assert.deepEqual(await leftovers('valueOf', CONFIG), { datasets: [], containers: [] });
  });

  it('passwords: nowhere in docker inspect, container logs, process arguments, CLI --debug output or the daemon log; files are private', async () => {
    const client = new BpgClient({ baseUrl: srv.url, token: TOKEN });
    const parentPassword = (await client.getBranch(db, 'main')).connection.password;

    // Every process's arguments, sampled while a branch is created (its password is new, the
    // parent's is used to connect).
    const seen = new Set<string>();
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
          try {
            seen.add(readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' '));
          } catch {
            // gone already
          }
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    try {
      await okRun(['--debug', 'branch', 'create', `${db}/cli-branch`]);
      await okRun(['--debug', 'snapshot', 'create', `${db}/main`, '--label', 'security test']);
    } finally {
      sampling = false;
      await sampler;
    }
    const put = await client.putBranch(db, 'api-branch', { from: 'main' });
    assert.equal(put.created, true);
    await client.resetBranch(db, 'api-branch');
    await client.restartBranch(db, 'cli-branch');

    const secrets = passwords(cfg);
    assert.equal(secrets.length, 3);
    assert.ok(secrets.includes(parentPassword));
    assert.ok(seen.size > 20, `sampled ${seen.size} command lines`);

    // Every container on the host; some may go away meanwhile (other test files), so exit codes are ignored.
    const ids = sh('docker', ['ps', '-aq']).split('\n').filter(Boolean);
    const inspect =
      spawnSync('docker', ['inspect', ...ids], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 }).stdout || '[]';
    const ours = sh('docker', ['ps', '-a', '--filter', `label=io.betterpg.database=${db}`, '--format', '{{.Names}}'])
      .split('\n')
      .filter(Boolean);
    assert.equal(ours.length, 3, 'three branch containers to look at');
    const logs = ours
      .map((c) => {
        const r = spawnSync('docker', ['logs', c], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
        assert.equal(r.status, 0, r.stderr);
        return r.stdout + r.stderr; // PostgreSQL logs to stderr
      })
      .join('\n');
    assert.match(logs, /database system is ready to accept connections/, 'the logs were read');
    for (const [i, pw] of secrets.entries()) {
      const encoded = encodeURIComponent(pw);
      for (const [where, text] of [
        ['docker inspect (Env, Args, Cmd, Labels, Mounts)', inspect],
        ['container logs', logs],
        ['CLI stderr (with --debug)', cliStderr.join('\n')],
        ['daemon log', JSON.stringify(daemonLog.lines)],
        ['process arguments', [...seen].join('\n')],
      ] as const) {
        assert.ok(!text.includes(pw) && !text.includes(encoded), `password ${i} is in the ${where}`);
      }
    }
    // Containers are given no environment of their own.
    for (const c of JSON.parse(inspect) as Array<{ Name: string; Config: { Env: string[] | null } }>) {
      if (ours.includes(c.Name.replace(/^\//, '')))
        assert.ok(
          (c.Config.Env ?? []).every((e) => !/PASSWORD|PGPASS/i.test(e)),
          `${c.Name}: ${c.Config.Env}`,
        );
    }

    // Files: state 0600 in a 0700 folder, WAL folders and segments readable by their owner only,
    // initdb's password file gone.
    assert.equal(mode(join(cfg.stateDir, 'state.json')), 0o600);
    assert.equal(mode(cfg.stateDir) & 0o077, 0, 'state folder');
    const wal = join(cfg.stateDir, 'wal');
    assert.equal(mode(wal) & 0o077, 0, 'wal folder');
    const walDirs = readdirSync(wal);
    assert.equal(walDirs.length, 3);
    let segments = 0;
    for (const d of walDirs) {
      assert.equal(mode(join(wal, d)) & 0o077, 0, `wal/${d}`);
      for (const f of readdirSync(join(wal, d))) {
        segments++;
        assert.equal(mode(join(wal, d, f)) & 0o077, 0, `wal/${d}/${f}`);
      }
    }
    assert.ok(segments > 0, 'the snapshot archived WAL to look at');
    const tmp = join(cfg.stateDir, 'tmp');
    assert.equal(mode(tmp) & 0o077, 0, 'tmp folder');
    assert.deepEqual(readdirSync(tmp), [], "initdb's password file is removed");
  });

  it('bpg init writes its config 0600, also over a world-readable file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bpg-sec-init-'));
    const path = join(dir, 'config.yaml');
    const first = await run(['init', '--state-dir', join(dir, 'state')], { BPG_CONFIG: path });
    assert.equal(first.code, 0, first.stderr);
    assert.equal(mode(path), 0o600);
    writeFileSync(path, 'zfs: {}\n');
    chmodSync(path, 0o644);
    const again = await run(['init', '--force', '--state-dir', join(dir, 'state')], { BPG_CONFIG: path });
    assert.equal(again.code, 0, again.stderr);
    assert.equal(mode(path), 0o600);
  });

  it('HTTPS with api.tls: the client trusts it with ca or NODE_EXTRA_CA_CERTS, refuses it without, and plain HTTP gets nowhere', async () => {
    const tls = selfSignedCert();
    const log = recorder();
    chmodSync(tls.key, 0o644); // a key others can read: started, with a warning
    const secure = await serve(
      {
        ...cfg,
        api: { ...cfg.api, tls: { cert: tls.cert, key: tls.key }, tokens: [{ name: 'security-tests', token: TOKEN }] },
      },
      { listen: '127.0.0.1:0', log, handleSignals: false, env: {} },
    );
    try {
      assert.match(secure.url, /^https:\/\/127\.0\.0\.1:\d+$/);
      assert.ok(
        log.lines.some((l) => l.level === 'warn' && /TLS key .* can be read by other users \(mode 644\)/.test(l.msg)),
        JSON.stringify(log.lines),
      );

      const trusted = new BpgClient({ baseUrl: secure.url, token: TOKEN, ca: tls.pem });
      assert.deepEqual((await trusted.getDatabase(db)).name, db);

      const t0 = performance.now();
      await assert.rejects(new BpgClient({ baseUrl: secure.url, token: TOKEN }).getDatabase(db), (e: BpgApiError) => {
        assert.equal(e.code, 'unreachable');
        assert.match(e.message, /DEPTH_ZERO_SELF_SIGNED_CERT \(the agent's TLS certificate is not trusted/);
        return true;
      });
      assert.ok(performance.now() - t0 < 2000, 'a certificate error is not retried');

      // Trusted, the token still matters.
      await assert.rejects(
        new BpgClient({ baseUrl: secure.url, token: 'x'.repeat(32), ca: tls.pem }).getDatabase(db),
        (e: BpgApiError) => e.status === 401,
      );

      // Plain HTTP to the HTTPS port: no answer that could carry data.
      const plainUrl = secure.url.replace('https:', 'http:');
      const plain = await fetch(`${plainUrl}/v1/databases/${db}`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      }).then(
        async (r) => ({ status: r.status, text: await r.text() }),
        (e: Error) => ({ status: 0, text: String((e.cause as Error | undefined)?.message ?? e.message) }),
      );
      assert.ok(!plain.text.includes(db), `plain HTTP answered: ${plain.status} ${plain.text.slice(0, 200)}`);

      // NODE_EXTRA_CA_CERTS, read by Node at start-up, works for the client's global fetch.
      const script = `import { BpgClient } from ${JSON.stringify(new URL('../api/client.js', import.meta.url).href)};
        const c = new BpgClient({ baseUrl: process.argv[1], token: process.argv[2], retries: 0 });
        c.getDatabase(process.argv[3]).then((d) => console.log('ok ' + d.name), (e) => { console.log('failed ' + e.message); process.exitCode = 1; });`;
      const child = (extra: Record<string, string>) =>
        new Promise<{ code: number | null; out: string }>((resolve) => {
          const p = spawn(process.execPath, ['--input-type=module', '-e', script, secure.url, TOKEN, db], {
            env: { PATH: process.env.PATH, ...extra },
            stdio: ['ignore', 'pipe', 'pipe'],
          });
          let out = '';
          p.stdout.on('data', (d) => (out += d));
          p.stderr.on('data', (d) => (out += d));
          p.on('close', (code) => resolve({ code, out }));
        });
      const [withCa, without] = await Promise.all([child({ NODE_EXTRA_CA_CERTS: tls.cert }), child({})]);
      assert.equal(withCa.code, 0, withCa.out);
      assert.equal(withCa.out.trim(), `ok ${db}`);
      assert.equal(without.code, 1, without.out);
      assert.match(without.out, /certificate is not trusted/);
    } finally {
      await secure.close();
    }

    // Broken TLS files fail before anything listens, in one line.
    const other = selfSignedCert();
    const bad: Array<[{ cert: string; key: string }, RegExp]> = [
      [{ cert: join(tls.dir, 'missing.pem'), key: tls.key }, /^cannot read api\.tls\.cert .*missing\.pem: ENOENT$/],
      [{ cert: tls.cert, key: other.key }, /^api\.tls: .* are not a usable certificate and key: /],
      [{ cert: tls.key, key: tls.cert }, /^api\.tls: .* are not a usable certificate and key: /],
    ];
    for (const [files, message] of bad) {
      await assert.rejects(
        serve(
          { ...cfg, api: { ...cfg.api, tls: files, tokens: [{ name: 't', token: TOKEN }] } },
          { listen: '127.0.0.1:0', log: recorder(), handleSignals: false, env: {} },
        ),
        (e: Error) => message.test(e.message) && !e.message.includes('\n'),
      );
    }
  });

  it('plain HTTP only on loopback unless allowed explicitly', async () => {
    const withToken = (api: Partial<Config['api']> = {}): Config => ({
      ...cfg,
      api: { ...cfg.api, tokens: [{ name: 't', token: TOKEN }], ...api },
    });
    const opts = { log: recorder(), handleSignals: false, env: {} };
    for (const listen of ['0.0.0.0:0', '[::]:0', '10.1.2.3:0', 'example.com:0']) {
      await assert.rejects(
        serve(withToken(), { ...opts, listen }),
        (e: Error) => /^refusing to serve the API in plain HTTP on /.test(e.message),
        listen,
      );
    }
    for (const listen of ['127.0.0.1:0', 'localhost:0', '[::1]:0']) {
      const s = await serve(withToken(), { ...opts, listen }).catch((e: Error) => e);
      // ::1 may be missing on a host without IPv6; the rule is what is tested here.
      if (s instanceof Error) assert.match(s.message, /EADDRNOTAVAIL|EAFNOSUPPORT/, listen);
      else await s.close();
    }
    const flag = await serve(withToken(), { ...opts, listen: '0.0.0.0:0', allowPlaintext: true });
    assert.match(flag.url, /^http:\/\/0\.0\.0\.0:\d+$/);
    await flag.close();
    const conf = await serve(withToken({ allowPlaintext: true }), { ...opts, listen: '0.0.0.0:0' });
    await conf.close();

    // The CLI says it in one line and exits 2 (invalid).
    const r = await run(['serve', '--listen', '0.0.0.0:0'], { ...ENV, BPG_API_TOKEN: TOKEN });
    assertRefusedCli(r, 'bpg serve --listen 0.0.0.0:0');
    assert.match(r.stderr, /api\.tls|--allow-plaintext/);

    // A config holding tokens that others can read: a warning first (then the same refusal).
    const shared = ownStateConfig('security-mode', 16, (raw) => (raw.api = { tokens: [{ name: 'ci', token: TOKEN }] }));
    chmodSync(shared, 0o644);
    const w = await run(['serve', '--listen', '0.0.0.0:0'], { BPG_CONFIG: shared });
    assert.equal(w.code, 2);
    const [warning, error] = w.stderr.trim().split('\n');
    assert.match(
      JSON.parse(warning!).msg,
      /config file with api\.tokens .* can be read by other users \(mode 644\): chmod 600 it/,
    );
    assert.match(error!, /^error: refusing to serve the API in plain HTTP/);
  });
});

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CommanderError } from 'commander';
import { BpgApiError } from '../api/client.js';
import { agentSocketPath, listenLocalSocket, socketAnswers } from '../api/local-socket.js';
import { EXIT, exitCodeOf } from '../cli/exit-codes.js';
import { remoteFetch } from '../cli/remote-fetch.js';
import { BpgClient } from '../api/client.js';
import { resolveTarget, type TargetFlags } from '../cli/remote-target.js';
import { contextsPath, readContexts, withContext, writeContexts } from '../cli/saved-contexts.js';
import { BpgError } from '../errors.js';
import { selfSignedCert } from './tls-helpers.js';
import { BPG, NO_CONFIG, runChild } from './run-child.js';

/**
 * Remote use without the stack: exit codes by kind, which agent a command talks to (flags > env >
 * saved context > this host), the contexts file, and the daemon's local socket (mode, stale ones,
 * links). bpg runs as a child where the CLI as a whole is meant; agents it is pointed at are ports
 * nothing listens on, so nothing here reaches ZFS, Docker or PostgreSQL.
 */

const dir = mkdtempSync(join(tmpdir(), 'bpg-cli-remote-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = () => mkdtempSync(join(dir, `t${n++}-`));

const TOKEN = 'tok-0123456789abcdef0123456789abcdef';
const CA = selfSignedCert(fresh());

/** A port nothing listens on: bound, then closed. */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const { port } = s.address() as { port: number };
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const bpg = (args: string[], env: Record<string, string> = {}, stdin = '') =>
  runChild(
    process.execPath,
    [BPG, ...args],
    { PATH: process.env.PATH ?? '', HOME: dir, BPG_CONFIG: NO_CONFIG, ...env },
    stdin,
  );

describe('exit codes by kind', () => {
  it('maps engine errors, API answers and usage errors to 0-5, the same for local and remote', () => {
    const cases: Array<[unknown, number]> = [
      [new CommanderError(0, 'commander.helpDisplayed', ''), EXIT.ok],
      [new CommanderError(1, 'commander.unknownOption', "error: unknown option '--nope'"), EXIT.usage],
      [new BpgError('invalid', 'bad name'), EXIT.usage],
      [new BpgError('not_found', "branch 'a/b' does not exist"), EXIT.notFound],
      [new BpgError('conflict', 'exists'), EXIT.conflict],
      [new BpgError('failed', 'undone'), EXIT.failed],
      [new BpgError('unavailable', 'no config file'), EXIT.failed],
      [new BpgApiError(400, 'invalid', 'bad name'), EXIT.usage],
      [new BpgApiError(413, 'too_large', 'big'), EXIT.usage],
      [new BpgApiError(404, 'not_found', 'gone'), EXIT.notFound],
      [new BpgApiError(409, 'conflict', 'exists'), EXIT.conflict],
      [new BpgApiError(503, 'unavailable', 'create line full'), EXIT.conflict],
      [new BpgApiError(401, 'unauthorized', 'token'), EXIT.unreachable],
      [new BpgApiError(403, 'forbidden', 'role'), EXIT.unreachable],
      [new BpgApiError(0, 'unreachable', 'ECONNREFUSED'), EXIT.unreachable],
      [new BpgApiError(0, 'timeout', 'no answer'), EXIT.unreachable],
      [new BpgApiError(500, 'failed', 'undone'), EXIT.failed],
      [new BpgApiError(200, 'bad_response', 'not the API'), EXIT.failed],
      [new Error('anything else'), EXIT.failed],
    ];
    for (const [e, code] of cases) assert.equal(exitCodeOf(e), code, String(e));
    assert.deepEqual(Object.values(EXIT), [0, 1, 2, 3, 4, 5]);
  });

  it('bpg exits 2 on usage errors, 3 for an unknown context, 5 when the agent does not answer', async () => {
    const port = await deadPort();
    const cases: Array<[string[], number, RegExp]> = [
      [['brnach', 'list'], 2, /unknown command/],
      [['branch', 'list', '--nope'], 2, /unknown option/],
      [['branch', 'create', 'no-slash'], 2, /expected <database>\/<branch>/],
      [['--agent', 'ftp://x', '--token', TOKEN, 'db', 'list'], 2, /http or https/],
      [['--agent', `http://127.0.0.1:${port}`, 'db', 'list'], 2, /no token is given/],
      [['--agent', `http://127.0.0.1:${port}`, '--local', 'db', 'list'], 2, /--local/],
      [['--agent', `http://127.0.0.1:${port}`, '--token', TOKEN, 'housekeep'], 2, /runs only on the agent's host/],
      [['--agent', `http://127.0.0.1:${port}`, '--token', TOKEN, 'init'], 2, /runs only on the agent's host/],
      [['--agent', `http://127.0.0.1:${port}`, '--token', TOKEN, 'serve'], 2, /runs only on the agent's host/],
      [['--context', 'nope', 'db', 'list'], 3, /no context 'nope'/],
      [
        ['--agent', `http://127.0.0.1:${port}`, '--token', TOKEN, 'db', 'list'],
        5,
        /cannot reach the agent.*ECONNREFUSED/,
      ],
    ];
    for (const [args, code, msg] of cases) {
      const r = await bpg(args, { XDG_CONFIG_HOME: fresh() });
      assert.equal(r.code, code, `bpg ${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, msg);
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
      assert.ok(!r.stderr.includes(TOKEN), 'the token is never printed');
    }
  });
});

describe('which agent a command talks to', () => {
  const flagsFor = (f: TargetFlags) => f;
  async function contextsWith(...names: string[]): Promise<string> {
    const path = join(fresh(), 'betterpg', 'contexts.yaml');
    let file = await readContexts(path);
    for (const name of names)
      file = withContext(file, { name, url: `https://${name}.example.test:7432`, token: `${name}-token-0123456789` });
    await writeContexts(file, path);
    return path;
  }
  const io = (env: NodeJS.ProcessEnv, contextsFile: string, stdin = '') => ({
    env,
    contextsFile,
    stdin: async () => stdin,
  });

  it('flags, then the environment, then the current context, then this host', async () => {
    const ctx = await contextsWith('prod', 'stage'); // prod, the first saved, is current
    const env = { BPG_AGENT_URL: 'https://env.example.test', BPG_AGENT_TOKEN: 'env-token-0123456789' };
    const t = (f: TargetFlags, e: NodeJS.ProcessEnv) => resolveTarget(f, io(e, ctx));

    assert.equal(await t({ local: true }, env), null);
    assert.deepEqual(await t({}, {}), {
      url: 'https://prod.example.test:7432',
      token: 'prod-token-0123456789',
      caPem: undefined,
      source: "context 'prod'",
    });
    assert.equal((await t({ context: 'stage' }, {}))!.token, 'stage-token-0123456789');
    assert.equal((await t({}, { BPG_CONTEXT: 'stage' }))!.url, 'https://stage.example.test:7432');
    assert.deepEqual(await t({}, env), {
      url: 'https://env.example.test',
      token: 'env-token-0123456789',
      caPem: undefined,
      source: 'BPG_AGENT_URL',
    });
    const flag = await t({ agent: 'https://flag.example.test', token: 'flag-token-0123456789' }, env);
    assert.deepEqual(
      [flag!.url, flag!.token, flag!.source],
      ['https://flag.example.test', 'flag-token-0123456789', '--agent'],
    );
    // --agent with the environment's token; --context beats BPG_AGENT_URL
    assert.equal((await t({ agent: 'https://flag.example.test' }, env))!.token, 'env-token-0123456789');
    assert.equal((await t({ context: 'stage' }, env))!.token, 'stage-token-0123456789');
    // No context saved, nothing set: this host.
    assert.equal(await resolveTarget({}, io({}, join(fresh(), 'none.yaml'))), null);
  });

  it("sends a context's token only to its own URL, and the environment's only to a URL from flags or environment", async () => {
    const ctx = await contextsWith('prod');
    // BPG_AGENT_TOKEN alone does not go to the context's agent: the context's own token does.
    const r = await resolveTarget({}, io({ BPG_AGENT_TOKEN: 'env-token-0123456789' }, ctx));
    assert.equal(r!.token, 'prod-token-0123456789');
    // A URL from the environment never gets the context's token.
    await assert.rejects(
      resolveTarget({}, io({ BPG_AGENT_URL: 'https://elsewhere.example.test' }, ctx)),
      /BPG_AGENT_URL names an agent but no token is given/,
    );
  });

  it('reads the token from standard input (--token -) or a file, and the CA from a file', async () => {
    const ctx = join(fresh(), 'none.yaml');
    const fromStdin = await resolveTarget(
      flagsFor({ agent: 'https://a.example.test', token: '-', ca: CA.cert }),
      io({}, ctx, 'stdin-token-0123456789\n'),
    );
    assert.equal(fromStdin!.token, 'stdin-token-0123456789');
    assert.equal(fromStdin!.caPem, CA.pem);
    const file = join(fresh(), 'token');
    writeFileSync(file, 'file-token-0123456789\n', { mode: 0o600 });
    assert.equal(
      (await resolveTarget({ agent: 'https://a.example.test', tokenFile: file }, io({}, ctx)))!.token,
      'file-token-0123456789',
    );
    await assert.rejects(resolveTarget({ agent: 'https://a.example.test', token: 'x y' }, io({}, ctx)), /one word/);
    await assert.rejects(
      resolveTarget({ agent: 'https://a.example.test', token: TOKEN, ca: file }, io({}, ctx)),
      /PEM/,
    );
    await assert.rejects(resolveTarget({ token: TOKEN }, io({}, ctx)), /need an agent/);
  });
});

describe('bpg context', () => {
  it('adds, lists, uses and removes contexts in a 0600 file in a 0700 folder, never printing a token', async () => {
    const xdg = fresh();
    const env = { XDG_CONFIG_HOME: xdg };
    const path = contextsPath(env);
    assert.equal(path, join(xdg, 'betterpg', 'contexts.yaml'));
    const tokenFile = join(fresh(), 'token');
    writeFileSync(tokenFile, `${TOKEN}-b\n`, { mode: 0o600 });

    const add = await bpg(
      ['context', 'add', 'a', '--url', 'https://a.example.test:7432', '--token', '-'],
      env,
      `${TOKEN}-a\n`,
    );
    assert.equal(add.code, 0, add.stderr);
    assert.equal(add.stdout, 'saved context a (https://a.example.test:7432), the current one\n');
    const addB = await bpg(
      ['context', 'add', 'b', '--url', 'https://b.example.test', '--token-file', tokenFile, '--ca', CA.cert, '--json'],
      env,
    );
    assert.equal(addB.code, 0, addB.stderr);
    assert.deepEqual(JSON.parse(addB.stdout), {
      name: 'b',
      url: 'https://b.example.test',
      ca: CA.cert,
      current: false,
    });

    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(statSync(join(xdg, 'betterpg')).mode & 0o777, 0o700);
    const saved = await readContexts(path);
    assert.deepEqual(
      saved.contexts.map((c) => [c.name, c.token]),
      [
        ['a', `${TOKEN}-a`],
        ['b', `${TOKEN}-b`],
      ],
    );

    const list = await bpg(['context', 'list'], env);
    assert.equal(list.code, 0);
    assert.match(list.stdout, /^CURRENT\s+NAME\s+URL\s+CA\n\*\s+a\s+https:\/\/a\.example\.test:7432\s+-\n\s+b\s+/);
    const use = await bpg(['context', 'use', 'b'], env);
    assert.deepEqual([use.code, use.stdout], [0, 'now using context b\n']);
    const json = JSON.parse((await bpg(['context', 'list', '--json'], env)).stdout);
    assert.deepEqual(
      json.map((c: { name: string; current: boolean }) => [c.name, c.current]),
      [
        ['a', false],
        ['b', true],
      ],
    );
    for (const r of [add, addB, list, use]) assert.ok(!(r.stdout + r.stderr).includes(TOKEN), 'no token printed');
    assert.ok(!JSON.stringify(json).includes(TOKEN));

    // The current context is used: nothing answers at b.example.test's address here, so exit 5 names it.
    assert.equal((await bpg(['context', 'remove', 'b'], env)).code, 0);
    assert.equal((await readContexts(path)).current, null);
    const missing = await bpg(['context', 'use', 'b'], env);
    assert.equal(missing.code, 3);
    assert.match(missing.stderr, /no context 'b' \(saved: a\)/);
    const bad = await bpg(['context', 'add', '../x', '--url', 'https://a.example.test', '--token', '-'], env, TOKEN);
    assert.equal(bad.code, 2);
    assert.equal(statSync(path).mode & 0o777, 0o600, 'still 0600 after rewrites');
  });

  it('warns when the contexts file can be read by others', async () => {
    const xdg = fresh();
    const env = { XDG_CONFIG_HOME: xdg };
    assert.equal(
      (await bpg(['context', 'add', 'a', '--url', 'http://127.0.0.1:1', '--token', '-'], env, TOKEN)).code,
      0,
    );
    const { chmodSync } = await import('node:fs');
    chmodSync(contextsPath(env), 0o644);
    const r = await bpg(['context', 'list'], env);
    assert.match(r.stderr, /can be read by other users \(mode 644\): chmod 600 it/);
  });
});

describe("the daemon's local socket", () => {
  const servers: Server[] = [];
  after(() => servers.forEach((s) => s.close()));
  const server = () => {
    const s = createHttpServer((_req, res) => res.end('{}'));
    servers.push(s);
    return s;
  };

  it('is created with mode 0600 in the state folder, answers, and is removed on close', async () => {
    const path = agentSocketPath(fresh());
    assert.match(path, /\/agent\.sock$/);
    const sock = await listenLocalSocket(server(), path);
    const st = lstatSync(path);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(await socketAnswers(path), true);
    await sock.close();
    assert.equal(existsSync(path), false);
    assert.equal(await socketAnswers(path), false);
  });

  it('replaces a stale socket left by a daemon that was killed', async () => {
    const path = agentSocketPath(fresh());
    // A process that listens on the socket, then dies without closing it.
    await new Promise<void>((resolve, reject) => {
      const child = spawn(process.execPath, [
        '-e',
        `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`,
      ]);
      child.on('error', reject);
      child.on('exit', () => resolve());
    });
    assert.ok(lstatSync(path).isSocket(), 'the stale socket is there');
    assert.equal(await socketAnswers(path), false);
    const sock = await listenLocalSocket(server(), path);
    assert.equal(await socketAnswers(path), true);
    await sock.close();
  });

  it('refuses a socket another daemon answers on, and anything that is not a socket (a link is never followed)', async () => {
    const path = agentSocketPath(fresh());
    const first = await listenLocalSocket(server(), path);
    await assert.rejects(listenLocalSocket(server(), path), /another bpg serve answers/);
    await first.close();

    const folder = fresh();
    const target = join(folder, 'precious');
    writeFileSync(target, 'keep me');
    const link = agentSocketPath(folder);
    symlinkSync(target, link);
    await assert.rejects(listenLocalSocket(server(), link), /is a symbolic link, not a socket/);
    assert.equal(readFileSync(target, 'utf8'), 'keep me');
    assert.ok(lstatSync(link).isSymbolicLink());

    const file = agentSocketPath(fresh());
    writeFileSync(file, 'x');
    await assert.rejects(listenLocalSocket(server(), file), /is a file, not a socket/);
    assert.equal(readFileSync(file, 'utf8'), 'x');
  });
});

describe("the CLI's transport (node:http over a unix socket or TCP, for BpgClient)", () => {
  it('carries method, headers and body; answers status, headers and text; a refused connection is fetch-like', async () => {
    const seen: Array<{ method?: string; url?: string; auth?: string; body: string }> = [];
    const srv = createHttpServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        seen.push({ method: req.method, url: req.url, auth: req.headers.authorization, body });
        res.setHeader('x-request-id', 'r-1');
        res.setHeader('content-type', 'application/json');
        if (req.url === '/v1/databases/nope') {
          res.statusCode = 404;
          res.end(JSON.stringify({ error: { code: 'not_found', message: "database 'nope' does not exist" } }));
        } else res.end(JSON.stringify({ status: 'ok' }));
      });
    });
    const path = agentSocketPath(fresh());
    const sock = await listenLocalSocket(srv, path);
    try {
      const f = remoteFetch({ socketPath: path });
      const r = await f('http://localhost/v1/health?x=1', {
        method: 'POST',
        headers: { authorization: 'Bearer t', 'content-type': 'application/json' },
        body: '{"a":1}',
      });
      assert.deepEqual(
        [r.ok, r.status, r.headers.get('X-Request-Id'), await r.text()],
        [true, 200, 'r-1', '{"status":"ok"}'],
      );
      assert.deepEqual(seen[0], { method: 'POST', url: '/v1/health?x=1', auth: 'Bearer t', body: '{"a":1}' });

      // The typed client on it: answers parsed, the API's errors as BpgApiError with their message.
      const client = new BpgClient({ baseUrl: 'http://localhost', token: 't', fetch: f, retries: 0 });
      assert.deepEqual(await client.health(), { status: 'ok' });
      await assert.rejects(
        client.getDatabase('nope'),
        (e: BpgApiError) => e.status === 404 && e.code === 'not_found' && e.requestId === 'r-1',
      );
    } finally {
      await sock.close();
    }
    // Nobody listens any more: the same error fetch gives (a TypeError with the socket error as cause).
    await assert.rejects(
      remoteFetch({ socketPath: path })('http://localhost/v1/health'),
      (e: TypeError & { cause?: { code?: string } }) => e instanceof TypeError && e.cause?.code === 'ENOENT',
    );
    const port = await deadPort();
    const client = new BpgClient({ baseUrl: `http://127.0.0.1:${port}`, token: 't', fetch: remoteFetch(), retries: 0 });
    await assert.rejects(client.health(), (e: BpgApiError) => e.status === 0 && e.code === 'unreachable');
  });
});

import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lstatSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { fetchTrusting } from '../api/trust.js';
import { agentSocketPath } from '../api/local-socket.js';
import type { BranchView } from '../engine/view.js';
import { BPG, cli, freePort, ownStateConfig, query, uniqueDb, type CliResult } from './helpers.js';
import { BPG_UNBUNDLED, bundleChunksWith, ENGINE_CHUNK } from './run-child.js';
import { startSourcePg } from './source-pg.js';
import { issueCert, testCa } from './tls-helpers.js';

/**
 * The CLI from anywhere (issue 14), against a real `bpg serve` (a child process, HTTPS with a test
 * CA, its own state: slot 38) on the real engine, ZFS, Docker and PostgreSQL:
 * - every command through --agent prints what --local prints on the box, and changes the same things;
 * - the same exit codes and messages for each kind of failure, local and remote;
 * - saved contexts and the environment, in their order of precedence;
 * - on the box, with no agent set, commands go through the daemon's 0600 unix socket (its metrics
 *   count them); --local runs the engine in process;
 * - db create --from-url and db refresh through an agent (an operation followed, its progress shown);
 * - the remote and socket paths load neither dockerode, pg, express nor the engine.
 */

const TOKEN = `cli-${randomBytes(16).toString('hex')}`;
const READER = `cli-read-${randomBytes(16).toString('hex')}`;
const ca = testCa();
const cert = issueCert(ca, { name: 'agent', dns: ['localhost'], ips: ['127.0.0.1'] });
const CONFIG = ownStateConfig('cli-remote', 38, (raw) => {
  raw.api = {
    ...raw.api,
    tls: { cert: cert.cert, key: cert.key },
    tokens: [
      { name: 'laptop', token: TOKEN },
      { name: 'reader', token: READER, role: 'read' },
    ],
  };
  raw.housekeeping = { interval: '1h' };
});
const STATE = dirname(CONFIG);
const work = mkdtempSync(join(tmpdir(), 'bpg-cli-remote-'));
const TOKEN_FILE = join(work, 'token');
writeFileSync(TOKEN_FILE, `${TOKEN}\n`, { mode: 0o600 });
const NO_CONTEXTS = mkdtempSync(join(work, 'xdg-'));
const db = uniqueDb('cr');

/** The environment of a laptop: no agent config at all, no saved contexts. */
const LAPTOP = { BPG_CONFIG: '/nonexistent/laptop/config.yaml', XDG_CONFIG_HOME: NO_CONTEXTS };
/** The agent's host. */
const BOX = { BPG_CONFIG: CONFIG, XDG_CONFIG_HOME: NO_CONTEXTS };

let url = '';
const remote = (args: string[], env: Record<string, string> = {}) =>
  cli(['--agent', url, '--token-file', TOKEN_FILE, '--ca', ca.cert, ...args], { ...LAPTOP, ...env });
const local = (args: string[]) => cli(['--local', ...args], BOX);
/** On the box with nothing set: through bpg serve's socket. */
const onBox = (args: string[]) => cli(args, BOX);

function ok(r: CliResult, what: string): CliResult {
  assert.equal(r.code, 0, `${what}: exit ${r.code}: ${r.stderr}`);
  return r;
}

/** What changes from one read to the next by itself: sizes, percentages, activity. */
function steady(text: string): string {
  return text
    .replace(/\d+(\.\d+)? (B|KiB|MiB|GiB|TiB)\b/g, '<size>')
    .replace(/\d+(\.\d+)?%/g, '<pct>')
    .replace(/^last active .*$/gm, 'last active <time>')
    .replace(/\b(in|overdue) \d+[dhms]( \d+[dhms])?/g, '$1 <span>');
}
const VOLATILE = /Bytes$|^usedPercent$|^lastActiveAt$/;
function steadyJson(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(steadyJson);
  if (v && typeof v === 'object')
    return Object.fromEntries(
      Object.entries(v)
        .filter(([k]) => !VOLATILE.test(k))
        .map(([k, x]) => [k, steadyJson(x)]),
    );
  return v;
}

/** The same command through the agent and in process: same exit code, same stdout (steady parts). */
async function same(args: string[]): Promise<CliResult> {
  const [r, l] = [await remote(args), await local(args)];
  assert.equal(r.code, l.code, `bpg ${args.join(' ')}: remote ${r.code} (${r.stderr}), local ${l.code} (${l.stderr})`);
  if (args.includes('--json')) assert.deepEqual(steadyJson(JSON.parse(r.stdout)), steadyJson(JSON.parse(l.stdout)));
  else assert.equal(steady(r.stdout), steady(l.stdout), `bpg ${args.join(' ')}`);
  return r;
}

/** `bpg_operations_total` of one operation (all results), read from the daemon's /metrics over HTTPS. */
async function operations(operation: string): Promise<number> {
  const res = await fetchTrusting(ca.pem)(`${url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(res.status, 200);
  let sum = 0;
  for (const line of (await res.text()).split('\n')) {
    const m = /^bpg_operations_total\{([^}]*)\} (\d+)/.exec(line);
    if (m && m[1]!.includes(`operation="${operation}"`)) sum += Number(m[2]);
  }
  return sum;
}

describe('the CLI from anywhere (a real bpg serve over HTTPS, and its local socket)', { concurrency: 1 }, () => {
  let daemon: ChildProcess;
  let daemonLog = '';

  before(async () => {
    daemon = spawn(process.execPath, [BPG, 'serve', '--listen', '127.0.0.1:0'], {
      env: { ...process.env, BPG_CONFIG: CONFIG },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    process.once('exit', () => daemon.kill('SIGKILL'));
    url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`bpg serve did not listen within 120 s:\n${daemonLog}`)),
        120_000,
      );
      daemon.stderr!.on('data', (d: Buffer) => {
        daemonLog += d.toString();
        const m = /"msg":"listening","url":"([^"]+)"/.exec(daemonLog);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
      daemon.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`bpg serve exited ${code}:\n${daemonLog}`));
      });
    });
    assert.match(url, /^https:\/\/127\.0\.0\.1:\d+$/);
    ok(await remote(['db', 'create', db]), 'db create');
  });

  after(async () => {
    await local(['db', 'delete', db, '--force']);
    await local(['db', 'delete', `${db}x`, '--force']);
    if (daemon && daemon.exitCode === null) {
      const exited = new Promise((r) => daemon.once('exit', r));
      daemon.kill('SIGTERM');
      await exited;
    }
  });

  it('every command through --agent prints what --local prints, and does the same', async () => {
    // Creates: the branch answers queries, and the box sees it as the agent described it.
    const created = ok(await remote(['branch', 'create', `${db}/feat`, '--fast', '--json']), 'branch create');
    const b = JSON.parse(created.stdout) as BranchView;
    assert.equal(b.name, `${db}/feat`);
    assert.deepEqual(await query(b, 'select 1 as one'), [{ one: 1 }]);
    assert.match(created.stderr, new RegExp(`created ${db}/feat from ${db}/main in \\d+ ms`));
    ok(await remote(['snapshot', 'create', `${db}/feat`, '--label', 'before']), 'snapshot create');

    // Reads, text and JSON.
    for (const args of [
      ['db', 'list'],
      ['db', 'get', db],
      ['branch', 'list'],
      ['branch', 'list', db, '--json'],
      ['branch', 'get', `${db}/feat`],
      ['branch', 'get', `${db}/feat`, '--json'],
      ['branch', 'diff', `${db}/feat`],
      ['snapshot', 'list'],
      ['snapshot', 'list', `${db}/feat`, '--json'],
      ['wal', 'info', `${db}/main`, '--json'],
      ['wal', 'info', '--json'],
      ['wal', 'cleanup', `${db}/main`, '--days', '0', '--dry-run'],
      ['status', '--json'],
      ['doctor'],
    ])
      ok(await same(args), args.join(' '));

    // Changes through the agent, checked on the box.
    const set = ok(await remote(['branch', 'set', `${db}/feat`, '--ttl', '2d']), 'branch set');
    assert.equal(steady(set.stdout), steady(ok(await local(['branch', 'get', `${db}/feat`]), 'get').stdout));
    for (const verb of ['stop', 'start', 'restart']) {
      const r = ok(await remote([verb, `${db}/feat`]), verb);
      const want = verb === 'stop' ? 'stopped' : 'running';
      assert.equal(r.stdout, `${db}/feat ${want} on port ${b.port}\n`);
    }
    const snaps = JSON.parse(ok(await local(['snapshot', 'list', `${db}/feat`, '--json']), 'list').stdout);
    assert.equal(snaps.length, 1);
    assert.equal(
      ok(await remote(['snapshot', 'delete', snaps[0].id]), 'snapshot delete').stdout,
      `deleted snapshot ${snaps[0].id}\n`,
    );
    const reset = JSON.parse(ok(await remote(['branch', 'reset', `${db}/feat`, '--fast', '--json']), 'reset').stdout);
    assert.equal(reset.port, b.port);
    assert.equal(
      ok(await remote(['branch', 'rename', `${db}/feat`, `${db}/feat2`]), 'rename').stdout,
      `renamed ${db}/feat to ${db}/feat2\n`,
    );
    assert.equal(JSON.parse(ok(await local(['branch', 'get', `${db}/feat2`, '--json']), 'get').stdout).port, b.port);
    assert.equal(
      ok(await remote(['branch', 'delete', `${db}/feat2`]), 'branch delete').stdout,
      `deleted branch ${db}/feat2\n`,
    );
    assert.equal(
      ok(await remote(['db', 'rename', db, `${db}x`]), 'db rename').stdout,
      `renamed database ${db} to ${db}x\n`,
    );
    assert.equal(
      ok(await remote(['db', 'rename', `${db}x`, db]), 'db rename back').stdout,
      `renamed database ${db}x to ${db}\n`,
    );
    assert.equal((await local(['branch', 'get', `${db}/feat2`])).code, 3);
  });

  it('fails the same way remotely and locally: exit codes 2, 3 and 4 with the same message', async () => {
    for (const [args, code] of [
      [['branch', 'get', `${db}/nope`], 3],
      [['db', 'get', `${db}nope`], 3],
      [['snapshot', 'delete', 'snap-00000000'], 3],
      [['branch', 'delete', `${db}/nope`], 3],
      [['db', 'create', db], 4],
      [['branch', 'create', `${db}/x`, '--ttl', 'soon'], 2],
      [['branch', 'create', 'no-slash'], 2],
    ] as Array<[string[], number]>) {
      const [r, l] = [await remote(args), await local(args)];
      assert.equal(r.code, code, `remote bpg ${args.join(' ')}: ${r.stderr}`);
      assert.equal(l.code, code, `local bpg ${args.join(' ')}: ${l.stderr}`);
      assert.equal(r.stderr, l.stderr);
      assert.equal(r.stderr.split('\n').length, 2, 'one line');
    }
  });

  it('exit 5 when the agent cannot be reached, refuses the certificate, or refuses the token (never printed)', async () => {
    const wrong = join(work, 'wrong-token');
    writeFileSync(wrong, `wrong-${randomBytes(16).toString('hex')}`, { mode: 0o600 });
    const dead = `https://127.0.0.1:${await freePort()}`;
    const cases: Array<[string[], RegExp]> = [
      [['--agent', url, '--token-file', wrong, '--ca', ca.cert, 'db', 'list'], /missing or invalid bearer token/],
      [['--agent', url, '--token-file', TOKEN_FILE, 'db', 'list'], /TLS certificate is not trusted/],
      [['--agent', dead, '--token-file', TOKEN_FILE, 'db', 'list'], /cannot reach the agent.*ECONNREFUSED/],
    ];
    for (const [args, msg] of cases) {
      const r = await cli(args, LAPTOP);
      assert.equal(r.code, 5, `bpg ${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, msg);
      assert.equal(r.stdout, '');
      assert.ok(!r.stderr.includes(TOKEN));
    }
  });

  it("a token whose role does not allow a command: exit 5 with the agent's reason, nothing changed", async () => {
    const file = join(work, 'reader-token');
    writeFileSync(file, READER, { mode: 0o600 });
    const reader = (args: string[]) => cli(['--agent', url, '--token-file', file, '--ca', ca.cert, ...args], LAPTOP);
    ok(await reader(['branch', 'list', db]), 'a read token reads');
    const before = ok(await local(['branch', 'list', db, '--json']), 'before').stdout;
    for (const args of [
      ['branch', 'create', `${db}/nope`, '--fast'],
      ['branch', 'delete', `${db}/main`, '--force'],
      ['db', 'create', `${db}r`],
    ]) {
      const r = await reader(args);
      assert.equal(r.code, 5, `bpg ${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^error: token 'reader' has role read: .* needs role write\n$/);
      assert.ok(!r.stderr.includes(READER));
    }
    const after = ok(await local(['branch', 'list', db, '--json']), 'after').stdout;
    assert.deepEqual(
      (JSON.parse(after) as BranchView[]).map((b) => b.name),
      (JSON.parse(before) as BranchView[]).map((b) => b.name),
    );
    assert.equal((await local(['db', 'get', `${db}r`])).code, 3);
  });

  it('db create --from-url and db refresh through --agent: progress on stderr, the password read by bpg and never shown', async () => {
    const src = await startSourcePg();
    try {
      await src.query('CREATE TABLE marks (v text)');
      await src.query('INSERT INTO marks VALUES ($1)', ['first']);
      const imported = uniqueDb('ci');
      const env = { SRC_PW: src.password };
      const created = await remote(
        ['db', 'create', imported, '--from-url', src.url, '--password-env', 'SRC_PW', '-o', 'json'],
        env,
      );
      ok(created, 'remote import');
      const main = JSON.parse(created.stdout) as BranchView;
      assert.equal(main.name, `${imported}/main`);
      assert.match(created.stderr, /(dump|restore|analyze|done): .*MB/, "the operation's progress on stderr");
      assert.deepEqual(await query(main, 'SELECT v FROM marks'), [{ v: 'first' }]);
      // The password went in the request body: not in bpg's output, nor the agent's state.
      assert.ok(!created.stdout.includes(src.password) && !created.stderr.includes(src.password));
      assert.ok(!readFileSync(join(STATE, 'state.json'), 'utf8').includes(src.password));

      await src.query("UPDATE marks SET v = 'second'");
      const refreshed = await remote(['db', 'refresh', imported]);
      ok(refreshed, 'remote refresh from the recorded source');
      assert.match(refreshed.stderr, /refreshed .* \(generation 1\)/);
      assert.deepEqual(await query(main, 'SELECT v FROM marks'), [{ v: 'second' }], 'same port and password');

      const missing = await remote([
        'db',
        'create',
        uniqueDb('cj'),
        '--from-url',
        src.url,
        '--password-env',
        'NOPE_UNSET',
      ]);
      assert.equal(missing.code, 2, missing.stderr);
      assert.match(
        missing.stderr,
        /^error: --password-env NOPE_UNSET: the variable is not set in bpg's environment\n$/,
      );
      ok(await local(['db', 'delete', imported, '--force']), 'clean up');
    } finally {
      src.stop();
    }
  });

  it('a saved context, the environment and flags, in that order of precedence; on-box commands refused', async () => {
    const xdg = mkdtempSync(join(work, 'xdg-'));
    const env = { XDG_CONFIG_HOME: xdg };
    ok(
      await cli(['context', 'add', 'box', '--url', url, '--token-file', TOKEN_FILE, '--ca', ca.cert], {
        ...LAPTOP,
        ...env,
      }),
      'context add',
    );
    const viaContext = ok(await cli(['branch', 'list', db], { ...LAPTOP, ...env }), 'through the context');
    assert.equal(steady(viaContext.stdout), steady(ok(await local(['branch', 'list', db]), 'local').stdout));
    // The environment beats the current context: BPG_AGENT_URL points at nothing.
    const dead = { BPG_AGENT_URL: `https://127.0.0.1:${await freePort()}`, BPG_AGENT_TOKEN: TOKEN };
    assert.equal((await cli(['branch', 'list', db], { ...LAPTOP, ...env, ...dead })).code, 5);
    // Flags beat the environment.
    ok(await cli(['--context', 'box', 'branch', 'list', db], { ...LAPTOP, ...env, ...dead }), '--context');
    ok(await remote(['branch', 'list', db], { ...env, ...dead }), '--agent');
    // Commands of the box itself are refused with an agent set, and run with --local.
    const hk = await cli(['housekeep', '--dry-run'], { ...BOX, ...env });
    assert.equal(hk.code, 2);
    assert.match(
      hk.stderr,
      /'bpg housekeep' runs only on the agent's host, and a remote agent is set \(context 'box'\)/,
    );
    ok(await cli(['--local', 'housekeep', '--dry-run'], { ...BOX, ...env }), 'housekeep --local');
  });

  it("on the box, commands go through bpg serve's 0600 socket (its metrics count them); --local does not", async () => {
    const sock = agentSocketPath(STATE);
    const st = lstatSync(sock);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);

    const before = await operations('getBranch');
    const viaSocket = ok(await onBox(['branch', 'get', `${db}/main`]), 'through the socket');
    assert.equal(await operations('getBranch'), before + 1, 'the daemon ran it');
    const inProcess = ok(await local(['branch', 'get', `${db}/main`]), '--local');
    assert.equal(await operations('getBranch'), before + 1, '--local did not go through the daemon');
    assert.equal(steady(viaSocket.stdout), steady(inProcess.stdout));

    // A create through the socket runs under the daemon's locks and is logged as the caller `local`.
    const created = JSON.parse(
      ok(await onBox(['branch', 'create', `${db}/sock`, '--fast', '--json']), 'create').stdout,
    );
    assert.deepEqual(await query(created as BranchView, 'select 2 as two'), [{ two: 2 }]);
    const line = daemonLog.split('\n').find((l) => l.includes('"branch created"') && l.includes(`${db}/sock`));
    assert.ok(line, `the daemon logged the create:\n${daemonLog}`);
    assert.equal(JSON.parse(line!).token, 'local');
    ok(await onBox(['branch', 'delete', `${db}/sock`]), 'delete through the socket');
  });

  it('the remote and socket paths load neither dockerode, pg, express nor the engine (nor yaml and the config schema)', async () => {
    const recorder = fileURLToPath(new URL('../../webhook/test/load-recorder.js', import.meta.url));
    const run = promisify(execFile);
    const HEAVY = [
      /\/node_modules\/(dockerode|pg|express|prom-client|yaml)\//,
      // the socket is found from the config's stateDir alone (config-file.ts): no yaml, no config schema
      /\/agent\/config\.js$/,
      /\/agent\/engine\//,
      /\/agent\/drivers\//,
      /\/agent\/state\//,
    ];
    // tsc's modules (their paths tell what loaded); the bundle bin/bpg.js runs is checked below
    const loaded = async (args: string[], env: Record<string, string>, entry = BPG_UNBUNDLED) => {
      const file = join(work, `loads-${randomBytes(4).toString('hex')}.txt`);
      await run(process.execPath, ['--import', recorder, entry, ...args], {
        env: { ...process.env, ...env, BPG_LOAD_RECORD: file },
      });
      return readFileSync(file, 'utf8').split('\n').filter(Boolean);
    };
    const viaAgent = await loaded(
      ['--agent', url, '--token-file', TOKEN_FILE, '--ca', ca.cert, 'branch', 'list', db],
      LAPTOP,
    );
    const viaSocket = await loaded(['branch', 'list', db], BOX);
    for (const urls of [viaAgent, viaSocket]) {
      assert.ok(
        urls.some((u) => u.endsWith('/agent/cli/remote.js')),
        'the recording works',
      );
      assert.deepEqual(
        urls.filter((u) => HEAVY.some((re) => re.test(u))),
        [],
      );
    }
    // The control: --local loads the engine.
    const inProcess = await loaded(['--local', 'branch', 'list', db], BOX);
    assert.ok(inProcess.some((u) => /\/node_modules\/dockerode\//.test(u)));
    // The bundle keeps the split: through the socket, no chunk with yaml or the engine's libraries
    // (zod loads, for the answer), and nothing from node_modules but picocolors; --local loads them.
    const heavyChunks = (urls: string[]) => bundleChunksWith(urls, ENGINE_CHUNK);
    const bundled = await loaded(['branch', 'list', db], BOX, BPG);
    assert.ok(
      bundled.some((u) => u.endsWith('/build/cli/bpg.js')),
      'the bundle ran',
    );
    assert.deepEqual(heavyChunks(bundled), []);
    assert.deepEqual(
      bundled.filter((u) => /\/node_modules\//.test(u) && !/\/picocolors\//.test(u)),
      [],
    );
    assert.notDeepEqual(heavyChunks(await loaded(['--local', 'branch', 'list', db], BOX, BPG)), []);
  });
});

import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { serve, type RunningServer } from '../api/serve.js';
import { zshCompletion } from '../cli/completion.js';
import { buildProgram } from '../cli/program.js';
import { loadConfig } from '../config.js';
import { Engine } from '../engine/engine.js';
import type { BranchView, DatabaseView } from '../engine/view.js';
import { BPG, cli, ok, okJson, ownStateConfig, recorder, slotPort, uniqueDb, type CliResult } from './helpers.js';
import { onTty } from './tty.js';
import { issueCert, testCa } from './tls-helpers.js';

/**
 * Issue 14, points 3 and 4 on the real stack: -o json|yaml|table on read and create commands,
 * colour only on a terminal, `bpg connection-string` and `bpg psql` against real branches (direct
 * on the shared test state; through the router of a `serve()` on a state of its own: slot 41 for
 * its branches, slot 42 for the router's port), `bpg psql` keeping the password out of psql's
 * arguments (read from /proc while it runs), and `branch delete --if-exists`.
 */

const ESC = '\u001b[';
const sh = promisify(execFile);

/** Runs `line` (a psql command line bpg printed) in a real sh, with psql's own arguments after it. */
async function runLine(line: string, psqlArgs: string): Promise<string> {
  const { stdout } = await sh('sh', ['-c', `${line} ${psqlArgs}`], { timeout: 120_000 });
  return stdout;
}

/** psql (running as a child of bpg `parent`) once it has started: its pid. */
async function psqlChildOf(parent: number): Promise<number> {
  for (let i = 0; i < 1200; i++) {
    for (const d of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
      try {
        const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
        // pid (comm) state ppid ...: comm may hold spaces, so read after its closing parenthesis
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        // comm, not cmdline: between fork and exec the child still carries bpg's own command line
        // (`node bpg.js psql ...`) and environment; comm becomes `psql` only once psql runs
        if (ppid === parent && readFileSync(`/proc/${d}/comm`, 'utf8').trim() === 'psql') return Number(d);
      } catch {
        // a process that ended while being read
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no psql under bpg (pid ${parent}) after 60 s`);
}

/** `bpg psql` with SQL on its stdin, looking at psql's process while it waits for that SQL. */
function psqlWatched(
  args: string[],
  sql: string,
  env: NodeJS.ProcessEnv = {},
): Promise<CliResult & { cmdline: string[]; environ: string[]; bpgCmdline: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BPG, 'psql', ...args], {
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    let seen: { cmdline: string[]; environ: string[]; bpgCmdline: string } | null = null;
    psqlChildOf(child.pid!)
      .then((pid) => {
        // psql is blocked reading its stdin: what anyone on the box could see of it now
        seen = {
          cmdline: readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0'),
          environ: readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0'),
          bpgCmdline: readFileSync(`/proc/${child.pid}/cmdline`, 'utf8'),
        };
        child.stdin.end(sql);
      })
      .catch((e) => {
        child.kill('SIGKILL');
        reject(e);
      });
    child.on('close', (code) => {
      if (seen) resolve({ code: code ?? 1, stdout, stderr, ...seen });
      else reject(new Error(`bpg psql ended before psql was seen: ${stderr}`));
    });
  });
}

describe('bpg output formats, colour, connection strings and psql (shared state)', { concurrency: 1 }, () => {
  const db = uniqueDb('co');
  let main: BranchView;

  before(async () => {
    main = await okJson(['db', 'create', db]);
  });
  after(async () => {
    await cli(['db', 'delete', db, '--force']);
  });

  it('a create command and read commands in every format: json, yaml and --json agree, table is for people', async () => {
    const created = YAML.parse(
      (await ok(['branch', 'create', `${db}/fmt`, '--fast', '-o', 'yaml'])).stdout,
    ) as BranchView;
    assert.equal(created.name, `${db}/fmt`);
    assert.equal(created.status, 'running');
    const json = JSON.parse((await ok(['branch', 'get', `${db}/fmt`, '-o', 'json'])).stdout) as BranchView;
    const yaml = YAML.parse((await ok(['branch', 'get', `${db}/fmt`, '-o', 'yaml'])).stdout) as BranchView;
    const synonym = await okJson(['branch', 'get', `${db}/fmt`]);
    for (const v of [yaml, synonym])
      assert.deepEqual({ ...v, usedBytes: 0, lastActiveAt: null }, { ...json, usedBytes: 0, lastActiveAt: null });
    assert.equal(json.connection.password, created.connection.password);
    const table = (await ok(['branch', 'get', `${db}/fmt`, '-o', 'table'])).stdout;
    assert.equal(table, (await ok(['branch', 'get', `${db}/fmt`])).stdout, 'table is the default');
    assert.match(table, new RegExp(`^name +${db}/fmt\\n`));
    assert.match(table, /\nstatus +running\n/);

    const list = (await ok(['branch', 'list', db, '-o', 'yaml'])).stdout;
    assert.deepEqual((YAML.parse(list) as BranchView[]).map((b) => b.name).sort(), [`${db}/fmt`, `${db}/main`]);
    const dbs = YAML.parse((await ok(['db', 'list', '-o', 'yaml'])).stdout) as DatabaseView[];
    assert.ok(dbs.some((d) => d.name === db));
    const rows = (await ok(['branch', 'list', db])).stdout.split('\n');
    assert.match(rows[0]!, /^NAME +STATUS +PORT +PARENT/);
    assert.ok(rows.some((r) => r.startsWith(`${db}/fmt `) && / running /.test(r)));
    for (const out of [table, list, rows.join('\n')]) assert.ok(!out.includes(ESC), 'no colour through a pipe');
  });

  it('colour on a terminal; none with NO_COLOR, none in -o json or yaml', async () => {
    const env = { BPG_CONFIG: process.env.BPG_CONFIG, TERM: 'xterm-256color', NO_COLOR: undefined };
    const tty = await onTty([process.execPath, BPG, 'branch', 'list', db], env);
    assert.equal(tty.code, 0, tty.stdout);
    assert.ok(tty.stdout.includes(`${ESC}32mrunning${ESC}39m`), JSON.stringify(tty.stdout));
    assert.ok(tty.stdout.includes(`${ESC}1mNAME${ESC}22m`));
    const noColor = await onTty([process.execPath, BPG, 'branch', 'list', db], { ...env, NO_COLOR: '1' });
    assert.equal(noColor.code, 0);
    assert.ok(!noColor.stdout.includes(ESC), JSON.stringify(noColor.stdout));
    assert.match(noColor.stdout, / running /);
    for (const format of ['json', 'yaml']) {
      const r = await onTty([process.execPath, BPG, 'branch', 'list', db, '-o', format], env);
      assert.equal(r.code, 0);
      assert.ok(!r.stdout.includes(ESC), `${format}: ${JSON.stringify(r.stdout)}`);
    }
  });

  it("connection-string (cs): the branch's uri; without the router --direct is the same; --psql runs as printed", async () => {
    const printed = (await ok(['connection-string', `${db}/main`])).stdout;
    assert.equal(printed, `${main.connection.uri}\n`);
    assert.equal((await ok(['cs', `${db}/main`, '--direct'])).stdout, printed);
    const c = await okJson<Record<string, unknown>>(['cs', `${db}/main`]);
    const { host, port, user, password, database, uri } = main.connection;
    assert.deepEqual(c, { host, port, user, password, database, uri, sslmode: null });
    const line = (await ok(['cs', `${db}/main`, '--psql'])).stdout.trim();
    assert.ok(line.startsWith(`PGPASSWORD='${main.connection.password}' psql '`));
    assert.ok(!line.slice(line.indexOf(' psql ')).includes(main.connection.password), 'not in psql arguments');
    assert.equal(await runLine(line, `-X -A -t -c 'select 6 * 7'`), '42\n');
  });

  it('bpg psql: a real query; the password is in its environment, never in its arguments', async () => {
    const r = await psqlWatched([`${db}/main`, '--', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1'], 'select 40 + 2;\n');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '42\n');
    assert.equal(r.stderr, '');
    const pw = main.connection.password;
    assert.ok(r.cmdline[0]!.endsWith('psql') || r.cmdline.some((a) => a.endsWith('psql')), r.cmdline.join(' '));
    assert.ok(!r.cmdline.join(' ').includes(pw), `password in psql's arguments: ${r.cmdline.join(' ')}`);
    assert.ok(!r.bpgCmdline.includes(pw));
    assert.ok(r.environ.includes(`PGPASSWORD=${pw}`), "in psql's environment");
    assert.ok(r.environ.includes(`PGPORT=${main.port}`));
  });

  it("bpg psql exits with psql's code and adds nothing to its error; without psql on PATH one clear line", async () => {
    const failed = await cli(['psql', `${db}/main`, '--', '-X', '-v', 'ON_ERROR_STOP=1', '-c', 'select nope']);
    assert.equal(failed.code, 1);
    assert.match(failed.stderr, /column "nope" does not exist/);
    assert.doesNotMatch(failed.stderr, /^error:/m);
    // zfs in /usr/sbin, docker in /usr/local/bin; psql (in /usr/bin) is not reachable
    const missing = await cli(['psql', `${db}/main`, '--', '-c', 'select 1'], {
      PATH: '/usr/sbin:/sbin:/usr/local/bin',
    });
    assert.equal(missing.code, 1);
    assert.equal(missing.stdout, '');
    assert.match(missing.stderr, /^error: psql is not on PATH: install the PostgreSQL client/);
  });

  it('branch delete --if-exists: a missing branch or database is exit 0 with a note on stderr; an existing one is deleted', async () => {
    const missing = await cli(['branch', 'delete', `${db}/nope`, '--if-exists']);
    assert.deepEqual([missing.code, missing.stdout], [0, '']);
    assert.match(missing.stderr, new RegExp(`^${db}/nope does not exist: nothing to delete`));
    const json = await cli(['branch', 'delete', `${db}/nope`, '--if-exists', '-o', 'json']);
    assert.deepEqual(JSON.parse(json.stdout), { deleted: [] });
    const quiet = await cli(['-q', 'branch', 'delete', `nodb${randomBytes(3).toString('hex')}/x`, '--if-exists']);
    assert.deepEqual(quiet, { code: 0, stdout: '', stderr: '' });
    const plain = await cli(['branch', 'delete', `${db}/nope`]);
    assert.notEqual(plain.code, 0);
    assert.match(plain.stderr, /^error: .*nope/);
    await ok(['branch', 'create', `${db}/gone`, '--fast']);
    assert.equal((await ok(['branch', 'delete', `${db}/gone`, '--if-exists'])).stdout, `deleted branch ${db}/gone\n`);
    assert.notEqual((await cli(['branch', 'get', `${db}/gone`])).code, 0);
  });
});

describe('bpg connection-string and psql through the router', { concurrency: 1 }, () => {
  const ROUTER_PORT = slotPort(42);
  const db = uniqueDb('cr');
  const ca = testCa();
  const cert = issueCert(ca, { name: 'router', dns: ['localhost'], ips: ['127.0.0.1'] });
  const path = ownStateConfig('co', 41, (raw) => {
    raw.proxy = { enabled: true, listen: `127.0.0.1:${ROUTER_PORT}`, tls: { cert: cert.cert, key: cert.key } };
  });
  const env = { BPG_CONFIG: path };
  let srv: RunningServer;
  let dev: BranchView;

  before(async () => {
    const cfg = await loadConfig(path);
    const log = recorder();
    srv = await serve(
      { ...cfg, api: { ...cfg.api, listen: '127.0.0.1:0' } },
      {
        listen: '127.0.0.1:0',
        log,
        engine: new Engine(cfg, { log }),
        handleSignals: false,
        env: { BPG_API_TOKEN: `tok-${randomBytes(16).toString('hex')}` },
      },
    );
    await ok(['db', 'create', db], env);
    dev = await okJson(['branch', 'create', `${db}/dev`, '--fast'], env);
  });
  after(async () => {
    await srv?.close();
    await cli(['db', 'delete', db, '--force'], env);
    rmSync(ca.dir, { recursive: true, force: true });
  });

  it("cs prints the router's uri (<db>@<branch>, sslmode=require), --direct the branch's own port", async () => {
    const routed = (await ok(['cs', `${db}/dev`], env)).stdout;
    assert.equal(routed, `${dev.connection.uri}\n`);
    assert.match(routed, new RegExp(`:${ROUTER_PORT}/${db}@dev\\?sslmode=require\\n$`));
    const direct = (await ok(['cs', `${db}/dev`, '--direct'], env)).stdout;
    assert.equal(direct, `${dev.connection.direct.uri}\n`);
    assert.match(direct, new RegExp(`:${dev.port}/${db}\\n$`));
  });

  it('the printed psql lines reach the branch through the router and directly', async () => {
    const routed = (await ok(['cs', `${db}/dev`, '--psql'], env)).stdout.trim();
    assert.match(
      routed,
      new RegExp(`psql 'postgresql://postgres@127\\.0\\.0\\.1:${ROUTER_PORT}/${db}@dev\\?sslmode=require'$`),
    );
    // the router answers with TLS (psql asks for it with sslmode=require); the direct port has none
    assert.equal(
      await runLine(routed, `-X -A -t -c 'select ssl from pg_stat_ssl where pid = pg_backend_pid()'`),
      'f\n',
      'router to branch is plain; TLS ends at the router',
    );
    assert.equal(await runLine(routed, `-X -A -t -c 'select 1'`), '1\n');
    const direct = (await ok(['cs', `${db}/dev`, '--direct', '--psql'], env)).stdout.trim();
    assert.ok(direct.endsWith(`psql 'postgresql://postgres@127.0.0.1:${dev.port}/${db}'`), direct);
    assert.equal(await runLine(direct, `-X -A -t -c 'select 2'`), '2\n');
  });

  it('bpg psql goes through the router (TLS) by default, and to the branch port with --direct', async () => {
    const r = await psqlWatched([`${db}/dev`, '--', '-X', '-A', '-t'], 'select current_setting($$port$$);\n', env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '5432\n', "the branch's server, reached through the router");
    assert.ok(r.environ.includes(`PGPORT=${ROUTER_PORT}`));
    assert.ok(r.environ.includes('PGSSLMODE=require'));
    assert.ok(r.environ.includes(`PGDATABASE=${db}@dev`));
    assert.ok(!r.cmdline.join(' ').includes(dev.connection.password));
    const d = await psqlWatched([`${db}/dev`, '--direct', '--', '-X', '-A', '-t'], 'select 3;\n', env);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(d.stdout, '3\n');
    assert.ok(d.environ.includes(`PGPORT=${dev.port}`));
  });
});

const PROGRAM = await buildProgram();

describe('bpg completion zsh (zsh is installed by scripts/test.sh)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bpg-completion-'));
  const zshFile = join(dir, '_bpg');
  writeFileSync(zshFile, zshCompletion(PROGRAM, '0.0.0'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('zsh parses it, registers _bpg with compinit, and offers the same words', () => {
    execFileSync('zsh', ['-n', zshFile]);
    const script = `
      autoload -U compinit && compinit -u -d "$1.dump"
      source "$1"; shift
      print -r -- "comps=\${_comps[bpg]}"
      compadd() { [[ $1 == -- ]] && shift; print -r -- "$@"; }
      _files() { print -r -- files; }
      words=("$@"); CURRENT=$#; PREFIX=\${words[CURRENT]}
      _bpg`;
    const zsh = (line: string) =>
      execFileSync('zsh', ['-f', '-c', script, 'zsh', zshFile, ...line.split(' ')], { encoding: 'utf8' })
        .trim()
        .split('\n');
    assert.deepEqual(zsh('bpg branch cr'), ['comps=_bpg', 'create list get diff delete reset rename set help']);
    assert.deepEqual(zsh('bpg db get x -o j'), ['comps=_bpg', 'table json yaml']);
    assert.deepEqual(zsh('bpg init --state-dir /v'), ['comps=_bpg', 'files']);
  });
});

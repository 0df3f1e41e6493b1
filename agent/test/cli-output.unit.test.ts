import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import YAML from 'yaml';
import { colourOn, paintOf, plain } from '../cli/colour.js';
import { bashCompletion } from '../cli/completion.js';
import { connectionOf, psqlCommandLine, shellQuote, uriWithoutPassword } from '../cli/connection-string.js';
import { formatOf, Output } from '../cli/output.js';
import { buildProgram } from '../cli/program.js';
import { psqlEnvironment } from '../cli/psql.js';
import { onTty } from './tty.js';
import { BPG, NO_CONFIG, runChild } from './run-child.js';
import { branchTable, table } from '../cli/render.js';
import type { BranchView } from '../engine/view.js';

/**
 * Issue 14, points 3 and 4 without the stack: output formats, colour, completion scripts run in
 * real bash (zsh runs in cli-output.test.ts: scripts/test.sh installs it), the psql command line
 * run by a real sh. The stack half is cli-output.test.ts.
 */
const ESC = '\u001b[';

const run = (cmd: string, args: string[], env: NodeJS.ProcessEnv = {}) =>
  runChild(cmd, args, { ...process.env, BPG_CONFIG: NO_CONFIG, ...env });

/** process.stdout.write captured during `fn`. */
function stdoutOf(fn: () => void): string {
  let got = '';
  const write = process.stdout.write;
  process.stdout.write = ((s: string) => ((got += s), true)) as typeof process.stdout.write;
  try {
    fn();
  } finally {
    process.stdout.write = write;
  }
  return got;
}

const branch = (name: string, status: string): BranchView =>
  ({
    name,
    status,
    stoppedBy: null,
    port: 15433,
    parent: 'app/main',
    usedBytes: 1024,
    expiresAt: null,
    protected: false,
    createdAt: '2026-10-07T12:00:00Z',
  }) as BranchView;

describe('output formats', () => {
  it('-o json, -o yaml, -o table and --json: one value, three spellings', () => {
    assert.equal(formatOf({}), 'table');
    assert.equal(formatOf({ json: true }), 'json');
    assert.equal(formatOf({ output: 'yaml' }), 'yaml');
    const value = { name: 'app/dev', tags: ['a', 'b'], shared: { x: 1 }, again: null as unknown };
    value.again = value.shared; // the same object twice is written out twice, never as a YAML alias
    const out = new Output();
    const json = stdoutOf(() => out.result({ output: 'json' }, value, () => 'text\n'));
    assert.equal(json, JSON.stringify(value, null, 2) + '\n');
    assert.equal(
      stdoutOf(() => out.result({ json: true }, value, () => 'text\n')),
      json,
    );
    const yaml = stdoutOf(() => out.result({ output: 'yaml' }, value, () => 'text\n'));
    assert.doesNotMatch(yaml, /[&*]/);
    assert.deepEqual(YAML.parse(yaml), JSON.parse(json));
    assert.equal(
      stdoutOf(() => out.result({ output: 'table' }, value, () => 'text\n')),
      'text\n',
    );
    assert.equal(
      stdoutOf(() => out.result({}, value, (_, paint) => `${paint.enabled}\n`)),
      'false\n',
      'not a TTY',
    );
  });

  it('-o takes json, yaml or table; --json with -o is a usage error', async () => {
    const bad = await run(process.execPath, [BPG, 'db', 'list', '-o', 'xml']);
    assert.equal(bad.stdout, '');
    assert.match(
      bad.stderr,
      /^error: option '-o, --output <format>' argument 'xml' is invalid\. Allowed choices are table, json, yaml\.\n$/,
    );
    assert.notEqual(bad.code, 0);
    const both = await run(process.execPath, [BPG, 'db', 'list', '-o', 'yaml', '--json']);
    assert.match(both.stderr, /cannot be used with/);
    assert.notEqual(both.code, 0);
  });
});

describe('colour', () => {
  const tty = { isTTY: true, hasColors: () => true };
  it('only on a terminal with colours, never with NO_COLOR set (even empty, even with FORCE_COLOR)', () => {
    assert.equal(colourOn(tty, {}), true);
    assert.equal(colourOn({ isTTY: false, hasColors: () => true }, {}), false);
    assert.equal(colourOn({}, {}), false, 'a pipe or file has no isTTY');
    assert.equal(colourOn({ isTTY: true, hasColors: () => false }, {}), false, 'TERM=dumb');
    assert.equal(colourOn(tty, { NO_COLOR: '1' }), false);
    assert.equal(colourOn(tty, { NO_COLOR: '' }), false);
    assert.equal(colourOn(tty, { NO_COLOR: '1', FORCE_COLOR: '1' }), false);
  });

  it('colours statuses and headings without moving the columns', () => {
    const rows = [branch('app/a', 'running'), branch('app/bb', 'down'), branch('app/c', 'stopped')];
    const bare = branchTable(rows);
    assert.equal(bare, branchTable(rows, plain));
    assert.ok(!bare.includes(ESC));
    const coloured = branchTable(rows, paintOf(true));
    assert.ok(coloured.includes(`${ESC}32mrunning${ESC}39m`));
    assert.ok(coloured.includes(`${ESC}31mdown${ESC}39m`));
    assert.ok(coloured.includes(`${ESC}33mstopped${ESC}39m`));
    assert.ok(coloured.startsWith(`${ESC}1mNAME${ESC}22m`));
    assert.equal(coloured.replace(/\u001b\[\d+m/g, ''), bare, 'the same text once the codes are taken out');
    assert.equal(
      table([
        ['a', 'bb'],
        ['ccc', 'd'],
      ]),
      'a    bb\nccc  d\n',
    );
  });

  it("a usage error on a terminal has a red 'error:'; with NO_COLOR, or through a pipe, none", async () => {
    const tty = await onTty([process.execPath, BPG, 'brnach'], { NO_COLOR: undefined, TERM: 'xterm-256color' });
    assert.equal(tty.code, 2); // usage (exit-codes.ts)
    assert.ok(tty.stdout.includes(`${ESC}31merror:${ESC}39m unknown command 'brnach'`), JSON.stringify(tty.stdout));
    const noColor = await onTty([process.execPath, BPG, 'brnach'], { NO_COLOR: '1', TERM: 'xterm-256color' });
    assert.ok(!noColor.stdout.includes(ESC), JSON.stringify(noColor.stdout));
    assert.match(noColor.stdout, /^error: unknown command 'brnach'/);
    const piped = await run(process.execPath, [BPG, 'brnach'], { NO_COLOR: undefined, FORCE_COLOR: '1' });
    assert.ok(!piped.stderr.includes(ESC));
  });
});

const PROGRAM = await buildProgram();

describe('bpg completion', () => {
  const program = PROGRAM;
  const dir = mkdtempSync(join(tmpdir(), 'bpg-completion-'));
  const bashFile = join(dir, 'bpg.bash');
  writeFileSync(bashFile, bashCompletion(program, '0.0.0'));

  /** What bash offers after `line` (the last word is the one completed). */
  function bash(line: string): string[] {
    const words = line.split(' ');
    const script =
      'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _bpg; printf "%s\\n" "${COMPREPLY[@]}"';
    return execFileSync('bash', ['--norc', '--noprofile', '-c', script, 'bash', bashFile, ...words], {
      encoding: 'utf8',
    })
      .split('\n')
      .filter(Boolean);
  }

  it('bpg completion bash|zsh prints the script; another shell is a usage error', async () => {
    const r = await run(process.execPath, [BPG, 'completion', 'bash']);
    assert.equal(r.code, 0);
    assert.equal(r.stderr, '');
    assert.match(r.stdout, /^# bash completion for bpg \d+\.\d+\.\d+/);
    assert.match(r.stdout, /\ncomplete -F _bpg bpg\n$/);
    assert.match((await run(process.execPath, [BPG, 'completion', 'zsh'])).stdout, /^#compdef bpg\n/);
    const fish = await run(process.execPath, [BPG, 'completion', 'fish']);
    assert.notEqual(fish.code, 0);
    assert.match(fish.stderr, /value 'fish' is invalid for argument 'shell'\. Allowed choices are bash, zsh/);
  });

  it('bash parses it, and after sourcing it completes bpg', () => {
    execFileSync('bash', ['-n', bashFile]);
    const spec = execFileSync('bash', ['--norc', '-c', 'source "$1"; complete -p bpg', 'bash', bashFile], {
      encoding: 'utf8',
    });
    assert.equal(spec.trim(), 'complete -F _bpg bpg');
  });

  it('bash offers the commands, subcommands, options and values of the program tree', () => {
    const top = bash('bpg ');
    for (const c of program.commands) assert.ok(top.includes(c.name()), c.name());
    assert.ok(top.includes('cs'));
    assert.deepEqual(bash('bpg br'), ['branch']);
    assert.deepEqual(bash('bpg branch cr'), ['create']);
    assert.deepEqual(bash('bpg branch get app/dev -o '), ['table', 'json', 'yaml']);
    assert.deepEqual(bash('bpg branch get app/dev --output y'), ['yaml']);
    assert.deepEqual(bash('bpg cs app/dev --d'), ['--direct', '--debug']);
    assert.deepEqual(bash('bpg connection-string app/dev --p'), ['--psql']);
    assert.deepEqual(bash('bpg completion '), ['bash', 'zsh']);
    assert.deepEqual(bash('bpg --debug db l'), ['list']);
    assert.deepEqual(bash('bpg branch delete app/dev --if'), ['--if-exists']);
    assert.deepEqual(
      bash('bpg branch create app/x --from app/main --fa'),
      ['--fast'],
      'the value of --from is no command',
    );
    assert.deepEqual(bash('bpg psql app/dev -- -'), [], "after -- the words are psql's");
  });
});

describe('connection strings and psql command lines', () => {
  const view = {
    connection: {
      host: 'pg.example.com',
      port: 6432,
      user: 'postgres',
      password: "p'w $x `y`",
      database: 'app@pr-1',
      uri: `postgresql://postgres:${encodeURIComponent("p'w $x `y`")}@pg.example.com:6432/app@pr-1?sslmode=require`,
      via: 'router',
      sslmode: 'require',
      direct: {
        host: '10.0.0.5',
        port: 15433,
        user: 'postgres',
        password: "p'w $x `y`",
        database: 'app',
        uri: 'postgresql://postgres:x@10.0.0.5:15433/app',
      },
    },
  } as unknown as BranchView;

  it("picks the router's connection, or the branch's own port with --direct", () => {
    assert.equal(connectionOf(view).uri, view.connection.uri);
    assert.equal(connectionOf(view).sslmode, 'require');
    assert.deepEqual(connectionOf(view, true), { ...view.connection.direct, sslmode: null });
    assert.equal(
      uriWithoutPassword(view.connection.uri),
      'postgresql://postgres@pg.example.com:6432/app@pr-1?sslmode=require',
    );
    assert.equal(uriWithoutPassword('postgresql://u:p@[::1]:5/d'), 'postgresql://u@[::1]:5/d');
  });

  it('the psql line, run by a real sh, gives psql the password in its environment and only the uri as argument', () => {
    const line = psqlCommandLine(connectionOf(view));
    assert.equal(
      line,
      `PGPASSWORD='p'\\''w $x \`y\`' psql 'postgresql://postgres@pg.example.com:6432/app@pr-1?sslmode=require'`,
    );
    assert.equal(shellQuote("it's"), `'it'\\''s'`);
    // a psql on PATH that prints what it was given
    const bin = mkdtempSync(join(tmpdir(), 'bpg-psql-'));
    writeFileSync(join(bin, 'psql'), '#!/bin/sh\nprintf "%s\\n" "password=$PGPASSWORD" "$@"\n');
    chmodSync(join(bin, 'psql'), 0o755);
    const got = execFileSync('sh', ['-c', line], {
      encoding: 'utf8',
      env: { ...process.env, PATH: `${bin}:/usr/bin:/bin` },
    });
    assert.equal(got, `password=p'w $x \`y\`\npostgresql://postgres@pg.example.com:6432/app@pr-1?sslmode=require\n`);
  });

  it("bpg psql's environment: the branch's connection, no redirections, no agent tokens", () => {
    const env = psqlEnvironment(connectionOf(view), {
      PATH: '/bin',
      PGHOSTADDR: '1.2.3.4',
      PGSERVICE: 'other',
      BPG_AGENT_TOKEN: 'secret',
      PGOPTIONS: '-c x=y',
    });
    assert.deepEqual(env, {
      PATH: '/bin',
      PGOPTIONS: '-c x=y',
      PGHOST: 'pg.example.com',
      PGPORT: '6432',
      PGUSER: 'postgres',
      PGDATABASE: 'app@pr-1',
      PGPASSWORD: "p'w $x `y`",
      PGSSLMODE: 'require',
    });
    assert.equal(psqlEnvironment(connectionOf(view, true), {}).PGSSLMODE, undefined);
  });
});

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import type { Command } from 'commander';
import type { HousekeepingReport } from '../engine/housekeeping.js';
import { buildProgram } from '../cli/program.js';
import { jsonOption, oneLine, Output, outputOption } from '../cli/output.js';
import { housekeepingText } from '../cli/expiry.js';
import { snapshotTable, walCleanupText } from '../cli/history.js';
import { branchDetail, expiry, span, where } from '../cli/render.js';
import { parseConfig } from '../config.js';
import { branchView } from '../engine/view.js';
import { packageVersion } from '../cli/version.js';
import { BPG, BPG_UNBUNDLED, bundleChunksWith, ENGINE_CHUNK, NO_CONFIG, runChild, ZOD_CHUNK } from './run-child.js';

/**
 * The CLI without the stack: the program's shape, its start-up, its version and its usage errors.
 * bpg runs as a child with a config path that does not exist, so nothing here can reach ZFS,
 * Docker or PostgreSQL: a command that got as far as the engine would fail on the missing config.
 */
const CLI_BUILD = fileURLToPath(new URL('../cli/', import.meta.url));
const CLI_SOURCE = fileURLToPath(new URL('../../../agent/cli/', import.meta.url));

function run(file: string, args: string[], opts: { eval?: boolean } = {}) {
  const argv = opts.eval ? ['--input-type=module', '-e', file, '--', ...args] : [file, ...args];
  return runChild(process.execPath, argv, { ...process.env, BPG_CONFIG: NO_CONFIG });
}
const bpg = (...args: string[]) => run(BPG, args);

/** `db create`, `branch set`, ... for every command that has an action. */
function leaves(cmd: Command, prefix = ''): Map<string, Command> {
  const out = new Map<string, Command>();
  for (const c of cmd.commands) {
    const path = `${prefix}${c.name()}`;
    if (c.commands.length) for (const [k, v] of leaves(c, `${path} `)) out.set(k, v);
    else out.set(path, c);
  }
  return out;
}

/** Replaces process.stdout/stderr.write during `fn` (synchronous), returning what was written. */
function capture(fn: () => void): { stdout: string; stderr: string } {
  const got = { stdout: '', stderr: '' };
  const [out, err] = [process.stdout.write, process.stderr.write];
  process.stdout.write = ((s: string) => ((got.stdout += s), true)) as typeof process.stdout.write;
  process.stderr.write = ((s: string) => ((got.stderr += s), true)) as typeof process.stderr.write;
  try {
    fn();
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
  return got;
}

const PROGRAM = await buildProgram();

describe('the bpg program', () => {
  const program = PROGRAM;
  const commands = leaves(program);

  it('has every command, in the order --help lists them', () => {
    assert.deepEqual(
      program.commands.map((c) => c.name()),
      [
        'init',
        'db',
        'branch',
        'start',
        'stop',
        'restart',
        'connection-string',
        'psql',
        'status',
        'serve',
        'snapshot',
        'wal',
        'doctor',
        'housekeep',
        'context',
        'completion',
      ],
    );
    assert.deepEqual(
      [...commands.keys()].sort(),
      [
        'branch create',
        'branch delete',
        'branch diff',
        'branch get',
        'branch list',
        'branch rename',
        'branch reset',
        'branch set',
        'completion',
        'connection-string',
        'context add',
        'context list',
        'context remove',
        'context use',
        'psql',
        'db create',
        'db refresh',
        'db delete',
        'db get',
        'db list',
        'db rename',
        'doctor',
        'housekeep',
        'init',
        'restart',
        'serve',
        'snapshot create',
        'snapshot delete',
        'snapshot list',
        'start',
        'status',
        'stop',
        'wal cleanup',
        'wal info',
      ].sort(),
    );
  });

  it('gives every command that prints data the same -o and --json, and keeps the options the README documents', () => {
    const [json, output] = [jsonOption(), outputOption()];
    for (const [name, cmd] of commands) {
      const opt = cmd.options.find((o) => o.long === '--json');
      const o = cmd.options.find((o) => o.long === '--output');
      if (['serve', 'psql', 'completion'].includes(name)) assert.equal(opt ?? o, undefined, name);
      else {
        assert.deepEqual([opt?.flags, opt?.description], [json.flags, json.description], name);
        assert.deepEqual(
          [o?.flags, o?.description, o?.argChoices],
          [output.flags, output.description, ['table', 'json', 'yaml']],
          name,
        );
      }
    }
    const flags = (name: string) => commands.get(name)!.options.map((o) => o.long);
    for (const f of [
      '--from',
      '--fast',
      '--from-snapshot',
      '--pitr',
      '--memory',
      '--cpus',
      '--disk',
      '--ttl',
      '--protect',
    ])
      assert.ok(flags('branch create').includes(f), f);
    for (const f of ['--image', '--memory', '--cpus', '--disk']) assert.ok(flags('db create').includes(f), f);
    assert.deepEqual(
      flags('branch set').filter((f) => f !== '--json' && f !== '--output'),
      ['--ttl', '--protect', '--no-protect'],
    );
    assert.deepEqual(flags('branch diff'), ['--against', '--output', '--json']);
    assert.ok(flags('branch delete').includes('--if-exists'));
    assert.deepEqual(flags('connection-string'), ['--direct', '--psql', '--output', '--json']);
    assert.deepEqual(program.commands.find((c) => c.name() === 'connection-string')!.aliases(), ['cs']);
    assert.deepEqual(flags('psql'), ['--direct']);
    assert.ok(flags('doctor').includes('--fix'));
    assert.ok(flags('housekeep').includes('--dry-run') && flags('housekeep').includes('--now'));
    assert.ok(flags('wal cleanup').includes('--days'));
    assert.deepEqual(flags('serve'), ['--listen', '--allow-plaintext']);
    assert.deepEqual(
      program.options.map((o) => o.long),
      ['--debug', '--quiet', '--agent', '--token', '--token-file', '--ca', '--context', '--local', '--version'],
    );
  });

  it('builds a new program each time (no state shared between two)', async () => {
    const other = await buildProgram();
    assert.notEqual(other, program);
    assert.notEqual(leaves(other).get('db list'), commands.get('db list'));
  });

  it('runs nothing on import, and loads neither dockerode nor pg until a command needs the engine', async () => {
    // Every module of agent/cli imported with a misspelt command in argv: a module that parsed
    // argv on import would print (an error, or the help) and set the exit code.
    const modules = readdirSync(CLI_BUILD).filter((f) => f.endsWith('.js'));
    assert.ok(modules.includes('main.js') && modules.includes('program.js'));
    const script = `
      import { createRequire } from 'node:module';
      const dir = ${JSON.stringify(CLI_BUILD)};
      for (const f of ${JSON.stringify(modules)}) await import(dir + f);
      await (await import(dir + 'program.js')).buildProgram();
      const loaded = Object.keys(createRequire(import.meta.url).cache).filter((p) => /node_modules\\/(dockerode|pg)\\//.test(p));
      if (loaded.length) process.stdout.write('loaded: ' + loaded.join(' '));
    `;
    const r = await run(script, ['brnach'], { eval: true });
    assert.deepEqual(r, { code: 0, stdout: '', stderr: '' });
  });

  it('--version, --help and completion load commander and the command table only (no zod, yaml, picocolors, config, names or client); a command loads its own module only', async () => {
    // Every module the process loads: ES modules through the recorder's resolve hook, CommonJS
    // (yaml and picocolors are loaded with require) from require's cache when it exits.
    const recorder = fileURLToPath(new URL('../../webhook/test/load-recorder.js', import.meta.url));
    const cjs =
      'data:text/javascript,' +
      encodeURIComponent(
        "import { createRequire } from 'node:module'; import { appendFileSync } from 'node:fs';" +
          "process.on('exit', () => appendFileSync(process.env.BPG_LOAD_RECORD, Object.keys(createRequire(import.meta.url).cache).map((p) => p + '\\n').join('')));",
      );
    const dir = mkdtempSync(join(tmpdir(), 'bpg-cli-loads-'));
    try {
      const HEAVY = [
        /\/node_modules\/(zod|yaml|picocolors|undici|dockerode|pg|express)\//,
        /\/agent\/(names|config|api\/[^/]+|cli\/(backend|remote[^/]*|saved-contexts|render-schema-diff))\.js$/,
        /\/agent\/(engine|drivers|state)\//,
      ];
      // The module graph tsc built (bin/bpg.js runs esbuild's bundle of it: see the next test).
      const loads = async (args: string[]): Promise<string[]> => {
        const file = join(dir, `${randomBytes(4).toString('hex')}.txt`);
        await runChild(process.execPath, ['--import', recorder, '--import', cjs, BPG_UNBUNDLED, ...args], {
          ...process.env,
          BPG_CONFIG: NO_CONFIG,
          BPG_LOAD_RECORD: file,
        });
        const loaded = readFileSync(file, 'utf8').split('\n').filter(Boolean);
        assert.ok(
          loaded.some((u) => u.endsWith('/agent/cli/program.js')),
          'the recording works',
        );
        assert.ok(
          loaded.some((u) => /\/node_modules\/commander\//.test(u)),
          "require's cache is recorded",
        );
        return loaded;
      };
      const commandModules = (loaded: string[]) =>
        [...new Set(loaded)]
          .flatMap((u) => {
            const m =
              /\/agent\/cli\/(init|database|branch|connection-string|psql|status|serve|history|doctor|expiry|context-commands|completion)\.js$/.exec(
                u,
              );
            return m ? [m[1]!] : [];
          })
          .sort();
      for (const args of [['--version'], ['-V'], ['--help'], ['branch', '--help'], ['completion', 'bash']]) {
        const loaded = await loads(args);
        assert.deepEqual(
          loaded.filter((u) => HEAVY.some((re) => re.test(u))),
          [],
          `bpg ${args.join(' ')}`,
        );
        // --version needs no command; --help and completion list them all
        if (args[0] === '--version' || args[0] === '-V') assert.deepEqual(commandModules(loaded), []);
        if (args[0] === '--help' || args[0] === 'completion') assert.equal(commandModules(loaded).length, 12);
      }
      // A command loads its own module only (branch's with expiry.js, which adds `branch set`).
      assert.deepEqual(commandModules(await loads(['--quiet', '--context', 'x', 'branch', 'list'])), [
        'branch',
        'expiry',
      ]);
      assert.deepEqual(commandModules(await loads(['--agent=https://x', 'cs', 'a/b'])), ['connection-string']);
      assert.deepEqual(commandModules(await loads(['-q', 'db', 'list'])), ['database']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the bundle bin/bpg.js runs keeps that split: --version, --help and completion load no chunk with zod, yaml or the engine's libraries", async () => {
    const recorder = fileURLToPath(new URL('../../webhook/test/load-recorder.js', import.meta.url));
    const dir = mkdtempSync(join(tmpdir(), 'bpg-bundle-loads-'));
    try {
      for (const args of [['--version'], ['--help'], ['completion', 'bash'], ['branch', 'list', '--local']]) {
        const file = join(dir, `${randomBytes(4).toString('hex')}.txt`);
        await runChild(process.execPath, ['--import', recorder, BPG, ...args], {
          ...process.env,
          BPG_CONFIG: NO_CONFIG,
          BPG_LOAD_RECORD: file,
        });
        const loaded = readFileSync(file, 'utf8').split('\n');
        assert.ok(
          loaded.some((u) => u.endsWith('/build/cli/bpg.js')),
          `bpg ${args.join(' ')} runs the bundle`,
        );
        const heavy = bundleChunksWith(loaded, ZOD_CHUNK, ENGINE_CHUNK);
        // the check can fail: a command that runs the engine in process loads those chunks
        if (args.includes('--local')) assert.notDeepEqual(heavy, [], 'the engine and zod load for --local');
        else assert.deepEqual(heavy, [], `bpg ${args.join(' ')}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('has one door into agent/engine and one writer: no other CLI module loads the engine or writes to stdout/stderr', () => {
    for (const f of readdirSync(CLI_BUILD).filter((f) => f.endsWith('.js'))) {
      const js = readFileSync(CLI_BUILD + f, 'utf8');
      if (f !== 'engine.js')
        assert.doesNotMatch(js, /['"]\.\.\/engine\//, `${f} loads agent/engine (only engine.js may)`);
    }
    for (const f of readdirSync(CLI_SOURCE).filter((f) => f.endsWith('.ts'))) {
      const ts = readFileSync(CLI_SOURCE + f, 'utf8');
      if (f !== 'output.ts')
        assert.doesNotMatch(ts, /process\.(stdout|stderr)/, `${f} writes past the writer (output.ts)`);
    }
  });
});

describe('bpg run as a command', () => {
  it('--version and -V print the version in package.json on stdout and exit 0', async () => {
    const { version } = JSON.parse(
      readFileSync(fileURLToPath(new URL('../../../package.json', import.meta.url)), 'utf8'),
    ) as { version: string };
    assert.equal(packageVersion(), version);
    for (const flag of ['--version', '-V']) {
      assert.deepEqual(await bpg(flag), { code: 0, stdout: `${version}\n`, stderr: '' });
    }
  });

  it("a misspelt command or option: one line with commander's suggestion, exit 2 (usage), nothing on stdout", async () => {
    assert.deepEqual(await bpg('brnach'), {
      code: 2,
      stdout: '',
      stderr: "error: unknown command 'brnach' (Did you mean branch?)\n",
    });
    assert.deepEqual(await bpg('branch', 'craete', 'a/b'), {
      code: 2,
      stdout: '',
      stderr: "error: unknown command 'craete' (Did you mean create?)\n",
    });
    assert.deepEqual(await bpg('db', 'list', '--jsno'), {
      code: 2,
      stdout: '',
      stderr: "error: unknown option '--jsno' (Did you mean --json?)\n",
    });
    assert.deepEqual(await bpg('xyzzy'), { code: 2, stdout: '', stderr: "error: unknown command 'xyzzy'\n" });
    assert.deepEqual(await bpg('db', 'create'), {
      code: 2,
      stdout: '',
      stderr: "error: missing required argument 'db'\n",
    });
  });

  it('bad flags are refused before the config is read; a failure is one line, with its stack first under --debug', async () => {
    assert.deepEqual(await bpg('branch', 'create', 'a/b', '--cpus', 'many'), {
      code: 2,
      stdout: '',
      stderr: "error: --cpus must be a number of CPUs (e.g. 0.5, 2), not 'many'\n",
    });
    const missing = `error: no config file at ${NO_CONFIG}: run 'bpg init' (or set BPG_CONFIG)\n`;
    assert.deepEqual(await bpg('db', 'list', '--json'), { code: 1, stdout: '', stderr: missing });
    const debug = await bpg('--debug', 'db', 'list');
    assert.equal(debug.code, 1);
    assert.match(debug.stderr, /^BpgError: no config file[^\n]*\n\s+at /);
    assert.ok(debug.stderr.endsWith(`\n${missing}`));
  });

  it('--help is data: on stdout, exit 0', async () => {
    const r = await bpg('--help');
    assert.equal(r.code, 0);
    assert.equal(r.stderr, '');
    assert.match(r.stdout, /^Usage: bpg /);
    assert.match(r.stdout, /-V, --version +print the version of bpg/);
  });
});

describe('the writer', () => {
  it('puts data on stdout (JSON with --json, text without) and the rest on stderr', () => {
    const loud = new Output(() => ({}));
    assert.deepEqual(
      capture(() => loud.result({ json: true }, { a: [1] }, () => 'text\n')),
      { stdout: '{\n  "a": [\n    1\n  ]\n}\n', stderr: '' },
    );
    assert.deepEqual(
      capture(() => loud.result({}, { a: 1 }, (v) => `a=${v.a}\n`)),
      { stdout: 'a=1\n', stderr: '' },
    );
    assert.deepEqual(
      capture(() => loud.log().info('created x')),
      { stdout: '', stderr: 'created x\n' },
    );
    assert.deepEqual(
      capture(() => loud.warn('full')),
      { stdout: '', stderr: 'warning: full\n' },
    );
    assert.deepEqual(
      capture(() => loud.error(new Error('first\nsecond'))),
      { stdout: '', stderr: 'error: first\n' },
    );
    const quiet = new Output(() => ({ quiet: true }));
    assert.deepEqual(
      capture(() => quiet.log().info('created x')),
      { stdout: '', stderr: '' },
    );
    assert.deepEqual(
      capture(() => quiet.warn('full')),
      { stdout: '', stderr: 'warning: full\n' },
    );
  });

  it("joins commander's lines into one", () => {
    assert.equal(
      oneLine("error: unknown command 'brnach'\n(Did you mean branch?)\n"),
      "error: unknown command 'brnach' (Did you mean branch?)",
    );
    assert.equal(oneLine("error: missing required argument 'db'\n"), "error: missing required argument 'db'");
  });
});

describe('text for people', () => {
  it('counts down expiry in two units at most', () => {
    assert.equal(span(90061000), '1d 1h');
    assert.equal(span(0), '0s');
    const now = Date.parse('2026-10-07T12:00:00Z');
    assert.equal(expiry({ expiresAt: '2026-10-07T12:05:00Z', protected: false }, now), 'in 5m');
    assert.equal(expiry({ expiresAt: '2026-10-07T11:55:00Z', protected: false }, now), 'overdue 5m');
    assert.equal(expiry({ expiresAt: '2026-10-07T12:05:00Z', protected: true }, now), 'never (protected)');
    assert.equal(expiry({ expiresAt: null, protected: false }, now), '-');
  });

  it('says what a housekeeping pass did, or would do in a dry run', () => {
    const empty: HousekeepingReport = {
      now: '',
      dryRun: true,
      deleted: [],
      stopped: [],
      active: [],
      snapshots: [],
      refreshed: [],
      retired: [],
      pruned: [],
      wal: [],
      skipped: [],
      errors: [],
      ms: 1,
    };
    assert.equal(housekeepingText(empty), 'nothing to do\n');
    assert.equal(
      housekeepingText({
        ...empty,
        deleted: [{ branch: 'a/b', expiresAt: '2026-10-07T12:00:00Z' }],
        stopped: [{ branch: 'a/c', idleSince: 'x' }],
      }),
      'would delete a/b (expired 2026-10-07T12:00:00Z)\nwould stop a/c (no client since x)\n',
    );
    assert.equal(
      housekeepingText({ ...empty, dryRun: false, snapshots: [{ branch: 'a/main', id: 'snap-1a2b3c4d' }] }),
      'snapshot a/main as snap-1a2b3c4d (scheduled)\n',
    );
  });

  it('lists snapshots and WAL cleanups', () => {
    assert.equal(snapshotTable([]), 'no snapshots\n');
    assert.equal(
      walCleanupText({
        branch: 'a/b',
        dryRun: true,
        removed: ['x', 'y'],
        removedBytes: 32 * 1024 * 1024,
        kept: [{ segments: 3, reason: 'a kept snapshot needs them' }],
        removedTemp: [],
      }),
      'would remove 2 segment(s), 32 MiB\nkept 3 segment(s): a kept snapshot needs them\n',
    );
  });

  it("shows a branch's connection: the router's with the direct port beside it when the agent runs one", () => {
    const db = {
      name: 'app',
      image: 'img',
      createdAt: 'x',
      pgDatabase: 'app',
      operation: null,
      generation: 0,
      refreshedAt: null,
      retired: [],
      masking: null,
    };
    const rec = {
      id: '0123456789abcdef',
      database: 'app',
      branch: 'pr-7',
      parent: 'app/main',
      status: 'running' as const,
      port: 15433,
      password: 'pw-secret-1',
      image: 'img',
      dataset: 'tank/app/pr-7',
      container: 'bpg-app.pr-7',
      origin: null,
      createdAt: '2026-10-07T12:00:00Z',
      operation: null,
      expiresAt: null,
      protected: false,
      lastActiveAt: null,
      stoppedBy: null,
      memory: null,
      cpus: null,
      disk: null,
      schemaOnly: false,
      seed: null,
      generation: 0,
    };
    const live = { status: 'running', disk: null, wal: null };
    const rowsOf = (text: string) =>
      new Map(text.split('\n').map((l) => [l.split(/\s+/)[0]!, l.replace(/^\S+\s+/, '')]));

    const plain = branchView(parseConfig({ postgres: { publicHost: 'db.example.com' } }, 'test'), db, rec, live);
    const p = rowsOf(branchDetail(plain));
    assert.equal(p.get('host'), 'db.example.com');
    assert.equal(p.get('port'), '15433');
    assert.equal(p.get('database'), 'app');
    assert.equal(p.get('uri'), 'postgresql://postgres:pw-secret-1@db.example.com:15433/app');
    assert.ok(!p.has('via') && !p.has('sslmode') && !p.has('direct'));
    assert.equal(where(plain), 'on port 15433');

    const cfg = parseConfig(
      {
        postgres: { publicHost: 'db.example.com' },
        proxy: {
          enabled: true,
          listen: '0.0.0.0:6432',
          publicHost: 'pg.example.com',
          tls: { cert: '/c.pem', key: '/k.pem' },
        },
      },
      'test',
    );
    const routed = branchView(cfg, db, rec, live);
    const r = rowsOf(branchDetail(routed));
    assert.equal(r.get('via'), 'router');
    assert.equal(r.get('host'), 'pg.example.com');
    assert.equal(r.get('port'), '6432');
    assert.equal(r.get('database'), 'app@pr-7');
    assert.equal(r.get('sslmode'), 'require');
    assert.equal(r.get('uri'), 'postgresql://postgres:pw-secret-1@pg.example.com:6432/app@pr-7?sslmode=require');
    assert.equal(r.get('direct'), "db.example.com:15433, database app (the branch's own port, for use on this box)");
    assert.equal(where(routed), 'on port 15433 (router: pg.example.com:6432, database app@pr-7)');
  });
});

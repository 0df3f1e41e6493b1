import { Command } from 'commander';
import type { CliContext } from './context.js';
import { openEngine } from './engine.js';
import type { TargetFlags } from './remote-target.js';
import { Output, type OutputFlags } from './output.js';
import { packageVersion } from './version.js';

/** Commands that only make sense on the agent's host: refused when a remote agent is set (backend.ts). */
const ON_THE_BOX_ONLY = new Set(['init', 'serve', 'housekeep']);

/** What the modules that register commands are handed. */
interface Setup {
  program: Command;
  out: Output;
  cli: CliContext;
  /** `bpg branch`, for the modules that add subcommands to it (`branch set`). */
  branch?: Command;
}

/** A module that registers commands: the top-level names (and aliases) it registers; loading it gives its registering step. */
interface Registrar {
  names: string[];
  load: () => Promise<(s: Setup) => void>;
}

const registrar = <M>(names: string[], load: () => Promise<M>, register: (m: M, s: Setup) => void): Registrar => ({
  names,
  load: async () => {
    const m = await load();
    return (s) => register(m, s);
  },
});

/** Every command module, in the order `bpg --help` lists their commands. */
const REGISTRARS: Registrar[] = [
  registrar(
    ['init'],
    () => import('./init.js'),
    (m, s) => m.registerInitCommand(s.program, s.out),
  ),
  registrar(
    ['db'],
    () => import('./database.js'),
    (m, s) => m.registerDatabaseCommands(s.program, s.cli),
  ),
  registrar(
    ['branch', 'start', 'stop', 'restart', 'housekeep'], // housekeep: expiry.js needs `bpg branch`
    () => import('./branch.js'),
    (m, s) => (s.branch = m.registerBranchCommands(s.program, s.cli)),
  ),
  registrar(
    ['connection-string', 'cs'],
    () => import('./connection-string.js'),
    (m, s) => m.registerConnectionStringCommand(s.program, s.cli),
  ),
  registrar(
    ['psql'],
    () => import('./psql.js'),
    (m, s) => m.registerPsqlCommand(s.program, s.cli),
  ),
  registrar(
    ['status'],
    () => import('./status.js'),
    (m, s) => m.registerStatusCommand(s.program, s.cli),
  ),
  registrar(
    ['serve'],
    () => import('./serve.js'),
    (m, s) => m.registerServeCommand(s.program, s.out),
  ),
  registrar(
    ['snapshot', 'wal'],
    () => import('./history.js'),
    (m, s) => m.registerHistoryCommands(s.program, s.cli),
  ),
  registrar(
    ['doctor'],
    () => import('./doctor.js'),
    (m, s) => m.registerDoctorCommand(s.program, s.cli),
  ),
  // `branch set` and `housekeep`: needs `bpg branch` registered first
  registrar(
    ['branch', 'housekeep'],
    () => import('./expiry.js'),
    (m, s) => m.registerExpiryCommands(s.program, s.branch!, s.cli),
  ),
  registrar(
    ['context'],
    () => import('./context-commands.js'),
    (m, s) => m.registerContextCommands(s.program, s.out),
  ),
  registrar(
    ['completion'],
    () => import('./completion.js'),
    (m, s) => m.registerCompletionCommand(s.program, s.out, packageVersion()),
  ),
];

/** The program's options that take a value: the word after one is not a command. */
const VALUE_OPTIONS = new Set(['--agent', '--token', '--token-file', '--ca', '--context']);
const FLAG_OPTIONS = new Set(['--debug', '-q', '--quiet', '--local', '-V', '--version']);

/**
 * The modules `args` (argv after node and the script) needs: those of its command, read past the
 * program's own options. Everything whenever that is not certain: no command word (help), `help`,
 * `completion` (its script lists every command), an option or a word bpg does not know (commander
 * then suggests the nearest command of all), except a bare `--version`/`-V`, which needs none.
 */
export function registrarsFor(args: string[]): Registrar[] {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (VALUE_OPTIONS.has(a)) i++;
    else if (a.startsWith('--') && a.includes('=') && VALUE_OPTIONS.has(a.slice(0, a.indexOf('=')))) continue;
    else if (FLAG_OPTIONS.has(a)) continue;
    else if (a.startsWith('-'))
      return REGISTRARS; // -h, --help, -qV, a misspelt option: as commander decides
    else {
      const wanted = REGISTRARS.filter((r) => r.names.includes(a));
      return wanted.length === 0 || a === 'completion' ? REGISTRARS : wanted;
    }
  }
  return args.some((a) => a === '-V' || a === '--version') ? [] : REGISTRARS;
}

/**
 * The `bpg` program. Building it runs nothing: `main` parses argv with it, tests inspect it.
 * Commands are registered in the order `bpg --help` lists them.
 *
 * Light on purpose. With `argv`, only the modules of the command it names are loaded (all of them
 * when that is not certain: registrarsFor), and registering loads commander and those modules only;
 * what a command runs with (names.js and zod, yaml, the config, the client, the engine) is imported
 * when it runs. So `--version`, `--help`, completion and usage errors start in about the time of
 * Node itself, and a command pays for its own module alone.
 */
export async function buildProgram(argv?: string[]): Promise<Command> {
  const program = new Command('bpg')
    .description('BetterPG: instant PostgreSQL branches on ZFS')
    .option('--debug', 'log every step, and show stack traces on error')
    .option('-q, --quiet', 'no progress on stderr')
    .option('--agent <url>', 'talk to the agent at this URL (or BPG_AGENT_URL), e.g. https://agent.example.com:7432')
    .option('--token <token>', "the agent's API token (or BPG_AGENT_TOKEN); '-' reads it from standard input")
    .option('--token-file <file>', "read the agent's API token from this file")
    .option('--ca <file>', "PEM file of the CA that signed the agent's certificate (or BPG_AGENT_CA)")
    .option('--context <name>', 'talk to this saved agent (or BPG_CONTEXT; default: the current one: bpg context)')
    .option('--local', "run on this host's engine in this process, even when bpg serve runs or an agent is set")
    .version(packageVersion(), '-V, --version', 'print the version of bpg')
    .showHelpAfterError(false)
    .exitOverride();
  const out = outputOf(program);
  // commander's usage errors, with its '(Did you mean ...?)' when it has one, on one line
  program.configureOutput({ outputError: (text) => out.usageError(text) });
  const flags = () => program.opts<TargetFlags>();
  const cli: CliContext = {
    out,
    engine: async () => (await import('./backend.js')).openCliEngine(flags(), out.log()),
    localEngine: () => openEngine(out.log()),
  };
  // init, serve and housekeep run on the agent's host: with a remote agent set, say so (exit 2).
  program.hook('preAction', async (_program, action) => {
    if (ON_THE_BOX_ONLY.has(action.name()) && action.parent === program)
      await (await import('./backend.js')).refuseIfRemote(action.name(), flags());
  });

  const setup: Setup = { program, out, cli };
  const wanted = argv === undefined ? REGISTRARS : registrarsFor(argv.slice(2));
  // Loaded together, registered in order.
  for (const register of await Promise.all(wanted.map((r) => r.load()))) register(setup);
  return program;
}

/** The writer for `program`: --debug and --quiet are read from its options when something is written. */
export const outputOf = (program: Command): Output => new Output(() => program.opts<OutputFlags>());

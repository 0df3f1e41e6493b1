import { Command } from 'commander';
import type { CliContext } from './context.js';
import { openEngine } from './engine.js';
import { registerContextCommands } from './context-commands.js';
import type { TargetFlags } from './remote-target.js';
import { Output, type OutputFlags } from './output.js';
import { registerInitCommand } from './init.js';
import { registerDatabaseCommands } from './database.js';
import { registerBranchCommands } from './branch.js';
import { registerStatusCommand } from './status.js';
import { registerServeCommand } from './serve.js';
import { registerHistoryCommands } from './history.js';
import { registerDoctorCommand } from './doctor.js';
import { registerExpiryCommands } from './expiry.js';
import { registerConnectionStringCommand } from './connection-string.js';
import { registerPsqlCommand } from './psql.js';
import { registerCompletionCommand } from './completion.js';
import { packageVersion } from './version.js';

/** Commands that only make sense on the agent's host: refused when a remote agent is set (backend.ts). */
const ON_THE_BOX_ONLY = new Set(['init', 'serve', 'housekeep']);

/**
 * The `bpg` program with all its commands. Building it runs nothing: `main` parses argv with it,
 * tests inspect it. Commands are registered in the order `bpg --help` lists them.
 *
 * Light on purpose: registering loads commander and the command modules only; what a command runs
 * with (names.js and zod, yaml, the config, the client, the engine) is imported when it runs, so
 * `--version`, `--help`, completion and usage errors start in about the time of Node itself.
 */
export function buildProgram(): Command {
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

  registerInitCommand(program, out);
  registerDatabaseCommands(program, cli);
  const branch = registerBranchCommands(program, cli);
  registerConnectionStringCommand(program, cli);
  registerPsqlCommand(program, cli);
  registerStatusCommand(program, cli);
  registerServeCommand(program, out);
  registerHistoryCommands(program, cli);
  registerDoctorCommand(program, cli);
  registerExpiryCommands(program, branch, cli);
  registerContextCommands(program, out);
  registerCompletionCommand(program, out, packageVersion());
  return program;
}

/** The writer for `program`: --debug and --quiet are read from its options when something is written. */
export const outputOf = (program: Command): Output => new Output(() => program.opts<OutputFlags>());

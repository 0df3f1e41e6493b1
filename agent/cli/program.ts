import { Command } from 'commander';
import type { CliContext } from './context.js';
import { openEngine } from './engine.js';
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

/**
 * The `bpg` program with all its commands. Building it runs nothing: `main` parses argv with it,
 * tests inspect it. Commands are registered in the order `bpg --help` lists them.
 */
export function buildProgram(): Command {
  const program = new Command('bpg')
    .description('BetterPG: instant PostgreSQL branches on ZFS')
    .option('--debug', 'log every step, and show stack traces on error')
    .option('-q, --quiet', 'no progress on stderr')
    .version(packageVersion(), '-V, --version', 'print the version of bpg')
    .showHelpAfterError(false)
    .exitOverride();
  const out = outputOf(program);
  // commander's usage errors, with its '(Did you mean ...?)' when it has one, on one line
  program.configureOutput({ outputError: (text) => out.usageError(text) });
  const cli: CliContext = { out, engine: () => openEngine(out.log()) };

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
  registerCompletionCommand(program, out, packageVersion());
  return program;
}

/** The writer for `program`: --debug and --quiet are read from its options when something is written. */
export const outputOf = (program: Command): Output => new Output(() => program.opts<OutputFlags>());

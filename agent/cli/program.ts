import { Command } from 'commander';
import { loadConfig } from '../config.js';
import type { Engine } from '../engine/engine.js';
import { createLogger } from '../log.js';
import type { CliContext } from './context.js';
import { registerInitCommand } from './init.js';
import { registerDatabaseCommands } from './database.js';
import { registerBranchCommands } from './branch.js';
import { registerStatusCommand } from './status.js';
import { registerServeCommand } from './serve.js';
import { registerHistoryCommands } from './history.js';
import { registerDoctorCommand } from './doctor.js';
import { registerExpiryCommands } from './expiry.js';

interface Globals {
  debug?: boolean;
  quiet?: boolean;
}

/**
 * The `bpg` program with all its commands. Building it runs nothing: `main` parses argv with it,
 * tests inspect it. Commands are registered in the order `bpg --help` lists them.
 */
export function buildProgram(): Command {
  const program = new Command('bpg')
    .description('BetterPG: instant PostgreSQL branches on ZFS')
    .option('--debug', 'log every step, and show stack traces on error')
    .option('-q, --quiet', 'no progress on stderr')
    .showHelpAfterError(false)
    .configureOutput({ outputError: (str, write) => write(str.split('\n')[0] + '\n') })
    .exitOverride();

  const globals = (): Globals => program.opts<Globals>();
  const log = () => createLogger({ debug: globals().debug, quiet: globals().quiet });
  const cli: CliContext = {
    log,
    async engine(): Promise<Engine> {
      // Loaded on demand: dockerode and pg cost ~0.3 s of start-up that --help and bad input need not pay.
      const [{ Engine }, cfg] = await Promise.all([import('../engine/engine.js'), loadConfig()]);
      return new Engine(cfg, { log: log() });
    },
  };

  registerInitCommand(program);
  registerDatabaseCommands(program, cli);
  const branch = registerBranchCommands(program, cli);
  registerStatusCommand(program, cli);
  registerServeCommand(program, globals);
  registerHistoryCommands(program, cli);
  registerDoctorCommand(program, cli);
  registerExpiryCommands(program, branch, cli);
  return program;
}

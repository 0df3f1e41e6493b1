/**
 * `bpg psql <db>/<branch> [-- psql args]`: runs psql from PATH on a branch. The connection goes in
 * psql's environment (PGHOST, PGPASSWORD, ...), never in its arguments: those are readable by every
 * user of the machine (`ps`, /proc/<pid>/cmdline); the environment only by the same user.
 */
import { spawn } from 'node:child_process';
import type { Command } from 'commander';
import { BpgError } from '../errors.js';
import { connectionOf, type BranchConnection } from './connection-string.js';
import type { CliContext } from './context.js';
import { ExitWith } from './output.js';

/** names.js (and zod, ~50 ms) when a command runs: --help, --version and completion need not load it. */
const names = () => import('../names.js');

/**
 * psql's environment: the caller's, with the branch's connection, and without what would send libpq
 * elsewhere (PGHOSTADDR, PGSERVICE) or what psql has no use for (the agent's tokens).
 */
export function psqlEnvironment(c: BranchConnection, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...env };
  for (const k of ['PGHOSTADDR', 'PGSERVICE', 'PGSERVICEFILE', 'BPG_AGENT_TOKEN', 'BPG_API_TOKEN']) delete e[k];
  Object.assign(e, {
    PGHOST: c.host,
    PGPORT: String(c.port),
    PGUSER: c.user,
    PGDATABASE: c.database,
    PGPASSWORD: c.password,
  });
  if (c.sslmode) e.PGSSLMODE = c.sslmode;
  return e;
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };

/**
 * Runs psql with the terminal (stdio inherited) and resolves with its exit code (128 + n after
 * signal n, as a shell reports it). While it runs, Ctrl-C and Ctrl-\ are psql's (it cancels the
 * query); this process ignores them, and passes SIGTERM and SIGHUP on.
 */
export function runPsql(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('psql', args, { env, stdio: 'inherit' });
    const ignore = () => {};
    const forward = (signal: NodeJS.Signals) => child.kill(signal);
    const listeners: [NodeJS.Signals, (s: NodeJS.Signals) => void][] = [
      ['SIGINT', ignore],
      ['SIGQUIT', ignore],
      ['SIGTERM', forward],
      ['SIGHUP', forward],
    ];
    for (const [s, fn] of listeners) process.on(s, fn);
    const done = () => {
      for (const [s, fn] of listeners) process.off(s, fn);
    };
    child.on('error', (e: NodeJS.ErrnoException) => {
      done();
      reject(
        e.code === 'ENOENT'
          ? new BpgError(
              'failed',
              'psql is not on PATH: install the PostgreSQL client (e.g. apt install postgresql-client), or use bpg connection-string',
            )
          : e,
      );
    });
    child.on('exit', (code, signal) => {
      done();
      resolve(code ?? 128 + (signal ? (SIGNALS[signal] ?? 0) : 0));
    });
  });
}

export function registerPsqlCommand(program: Command, { engine }: CliContext): void {
  program
    .command('psql <branch> [args...]')
    .description("run psql on a branch (psql's own arguments after --; the password in its environment)")
    .option('--direct', "the branch's own port (for use on the agent's box) instead of the router's")
    .usage('[--direct] <db>/<branch> [-- psql arguments]')
    .action(async (name: string, args: string[], o: { direct?: boolean }) => {
      const { parseBranchRef } = await names();
      const c = connectionOf(await (await engine()).getBranch(parseBranchRef(name)), o.direct);
      const code = await runPsql(args, psqlEnvironment(c));
      if (code !== 0) throw new ExitWith(code);
    });
}

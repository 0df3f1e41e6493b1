/**
 * `bpg connection-string <db>/<branch>` (alias `cs`): the uri clients use, or a ready psql command
 * line. Pure functions here; the command asks the engine (local or remote) for the branch.
 */
import type { Command } from 'commander';
import type { BranchView, Connection } from '../engine/view.js';
import type { CliContext } from './context.js';
import { jsonOption, outputOption } from './output.js';

/** names.js (and zod, ~50 ms) when a command runs: --help, --version and completion need not load it. */
const names = () => import('../names.js');

/** A branch's connection: the router's when the agent runs one, or with `direct` the branch's own port. */
export type BranchConnection = Connection & { sslmode: 'require' | null };

export function connectionOf(b: BranchView, direct = false): BranchConnection {
  const { host, port, user, password, database, uri } = direct ? b.connection.direct : b.connection;
  return { host, port, user, password, database, uri, sslmode: direct ? null : b.connection.sslmode };
}

/** The uri with its password taken out (WHATWG URL keeps the rest, `<db>@<branch>` and `?sslmode` too). */
export function uriWithoutPassword(uri: string): string {
  const u = new URL(uri);
  u.password = '';
  return u.href;
}

/** One word for a POSIX shell: in single quotes, a quote inside as '\'' . */
export const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * `PGPASSWORD='…' psql 'postgresql://user@host:port/db'`: the password reaches psql through its
 * environment (libpq reads PGPASSWORD), so it is never among psql's arguments, which every user of
 * the machine can read in `ps`.
 */
export function psqlCommandLine(c: BranchConnection): string {
  return `PGPASSWORD=${shellQuote(c.password)} psql ${shellQuote(uriWithoutPassword(c.uri))}`;
}

export function registerConnectionStringCommand(program: Command, { out, engine }: CliContext): void {
  program
    .command('connection-string <branch>')
    .alias('cs')
    .description("print a branch's connection string (the router's when the agent runs one)")
    .option('--direct', "the branch's own port (for use on the agent's box) instead of the router's")
    .option('--psql', "print a ready psql command line (the password in PGPASSWORD, not in psql's arguments)")
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o) => {
      const { parseBranchRef } = await names();
      const c = connectionOf(await (await engine()).getBranch(parseBranchRef(name)), o.direct);
      out.result(o, c, () => `${o.psql ? psqlCommandLine(c) : c.uri}\n`);
    });
}

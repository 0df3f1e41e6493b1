import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';

import type { BranchView } from '../../agent/api/schemas.js';
import { scrubber } from '../../shared/scrub.js';

/** Where a migration runs: a branch's connection, as the agent returns it. */
export type MigrationTarget = BranchView['connection'];

export interface MigrationResult {
  ok: boolean;
  /** The shell's exit code; null when it could not start or was killed by a signal. */
  exitCode: number | null;
  ms: number;
  /** The last lines of stdout and stderr together, every secret replaced by `***`. */
  tail: string[];
  /** How many lines it printed in all. */
  lines: number;
}

/** How many lines of output the comment and the error message keep. */
export const TAIL_LINES = 30;

/** libpq's sslmodes that verify the server's certificate: stricter than `require`. */
const VERIFYING = ['verify-ca', 'verify-full'];

/**
 * PGSSLMODE for a connection through the router (`sslmode: require`): `require`, unless the job's
 * own environment asks for more (verify-ca, verify-full, with its PGSSLROOTCERT), which is kept.
 * Nothing for a direct connection: the job's setting, if any, stays as it is.
 */
export function sslEnv(target: Pick<MigrationTarget, 'sslmode'>, env: Record<string, string>): Record<string, string> {
  if (!target.sslmode) return {};
  const own = env.PGSSLMODE;
  return { PGSSLMODE: own !== undefined && VERIFYING.includes(own) ? own : target.sslmode };
}

/**
 * Runs the user's migration command the way a workflow's `run:` step with `shell: bash` does
 * (`bash --noprofile --norc -eo pipefail`), with DATABASE_URL and the libpq PG* variables pointing
 * at the branch (through the router when the agent runs one: PGDATABASE `<db>@<branch>`, PGSSLMODE). The command is the user's own script, handed to bash as one argument.
 *
 * The command is the pull request's code: it runs in `env` (the runner's environment without the
 * action's secrets, see secrets.ts), and its output is streamed to `print` line by line as it
 * comes, with the password and every one of `secrets` replaced: the runner masks registered
 * secrets in its log, but the comment and the summary are not masked by anyone.
 */
export async function runMigration(
  command: string,
  cwd: string,
  target: MigrationTarget,
  print: (line: string) => void,
  o: { env: Record<string, string>; secrets: string[] },
): Promise<MigrationResult> {
  const t0 = performance.now();
  const dir = resolve(cwd);
  const tail: string[] = [];
  let lines = 0;
  const scrub = scrubber([target.password, ...o.secrets]);
  const keep = (line: string) => {
    const clean = scrub(line);
    print(clean);
    tail.push(clean);
    lines++;
    if (tail.length > TAIL_LINES) tail.shift();
  };
  const ms = () => Math.round(performance.now() - t0);

  let isDir: boolean;
  try {
    isDir = statSync(dir).isDirectory();
  } catch {
    isDir = false;
  }
  if (!isDir) {
    keep(`working_directory ${cwd} does not exist (resolved to ${dir})`);
    return { ok: false, exitCode: null, ms: ms(), tail, lines };
  }

  const child = spawn('bash', ['--noprofile', '--norc', '-eo', 'pipefail', '-c', command], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...o.env,
      DATABASE_URL: target.uri,
      PGHOST: target.host,
      PGPORT: String(target.port),
      PGUSER: target.user,
      PGPASSWORD: target.password,
      PGDATABASE: target.database,
      ...sslEnv(target, o.env),
    },
  });
  // Both streams in arrival order, a line at a time (a password split across chunks is still caught).
  const done = [child.stdout, child.stderr].map(
    (stream) =>
      new Promise<void>((res) => {
        const rl = createInterface({ input: stream, crlfDelay: Infinity });
        rl.on('line', keep);
        rl.on('close', res);
      }),
  );
  const exitCode = await new Promise<number | null>((res) => {
    child.on('error', (e) => {
      keep(`could not start bash: ${e.message}`);
      res(null);
    });
    child.on('close', (code, signal) => {
      if (signal) keep(`migration killed by ${signal}`);
      res(code);
    });
  });
  await Promise.all(done);
  return { ok: exitCode === 0, exitCode, ms: ms(), tail, lines };
}

/**
 * What the migration must not get and what nothing we publish may contain. `migrate` runs code
 * from the pull request, so it gets the runner's environment without the secrets the action holds,
 * and every line it prints is scrubbed of them before it reaches the log, the comment or the summary.
 */
import { closeSync, constants, fstatSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { secretForms } from '../../shared/scrub.js';

/**
 * Variables that carry the runner's own credentials (their values are secrets too, and scrubbed):
 * the cache/artifact service token, the OIDC token request, and the usual names a workflow gives
 * the GitHub token in `env:` (the `gh` CLI reads GH_TOKEN).
 */
const RUNNER_SECRET_VARS = ['ACTIONS_RUNTIME_TOKEN', 'ACTIONS_ID_TOKEN_REQUEST_TOKEN', 'GITHUB_TOKEN', 'GH_TOKEN'];

/**
 * The action's own file commands: what `migrate` wrote there would become this step's outputs,
 * job summary, state, or the environment and PATH of every later step. It is not a step of its own.
 */
const FILE_COMMANDS = ['GITHUB_OUTPUT', 'GITHUB_ENV', 'GITHUB_PATH', 'GITHUB_STATE', 'GITHUB_STEP_SUMMARY'];

/** Why a variable is not passed to `migrate`; the names (never the values) go to the log. */
export type Removed = 'input' | 'runner' | 'file-command' | 'holds-secret';

/**
 * The secrets the action holds: the agent and GitHub tokens (from its inputs) and the runner's
 * credentials found in its environment. The branch password is added once it is known.
 */
export function heldSecrets(tokens: string[], env: NodeJS.ProcessEnv): string[] {
  const fromEnv = RUNNER_SECRET_VARS.map((k) => env[k]).filter((v): v is string => !!v);
  return [...new Set([...tokens, ...fromEnv].filter((v) => v !== ''))];
}

/**
 * The environment for `migrate`: the runner's, without every INPUT_* variable (the tokens are
 * inputs), every ACTIONS_* variable (the runner's service handles: the runtime token, OIDC,
 * cache and results URLs), GITHUB_TOKEN and GH_TOKEN, the action's file commands, and any other
 * variable whose value contains one of the secrets (a token the workflow also put in `env:` under
 * a name of its own).
 */
export function migrationEnv(
  env: NodeJS.ProcessEnv,
  secrets: string[],
): { env: Record<string, string>; removed: Map<string, Removed> } {
  const forms = secretForms(secrets);
  const out: Record<string, string> = {};
  const removed = new Map<string, Removed>();
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) continue;
    const upper = k.toUpperCase();
    let why: Removed | null = null;
    if (upper.startsWith('INPUT_')) why = 'input';
    else if (upper.startsWith('ACTIONS_') || RUNNER_SECRET_VARS.includes(upper)) why = 'runner';
    else if (FILE_COMMANDS.includes(upper)) why = 'file-command';
    else if (forms.some((f) => v.includes(f))) why = 'holds-secret';
    if (why) removed.set(k, why);
    else out[k] = v;
  }
  return { env: out, removed };
}

/** One log line naming what `migrate` runs without (names only: the values are secrets). */
export function describeRemoved(removed: Map<string, Removed>): string {
  const inputs = [...removed].filter(([, why]) => why === 'input').length;
  const others = [...removed]
    .filter(([, why]) => why !== 'input')
    .map(([k]) => k)
    .sort();
  const parts = [inputs ? `${inputs} INPUT_* variable${inputs === 1 ? '' : 's'}` : '', ...others].filter(Boolean);
  return parts.length
    ? `migrate runs without the action's secrets: ${parts.join(', ')} removed from its environment`
    : "migrate runs with the runner's environment (no secrets found in it)";
}

/**
 * Scrubs a file the runner reads after the step (the job summary) in place: `migrate` gets no
 * path to it, but code that goes looking (its parent's /proc/<pid>/environ) can still find and
 * append to it. Opened without following links (a planted link must not make us rewrite another
 * file) and only when it is a regular file. Returns whether anything was replaced.
 */
export function scrubFile(path: string | undefined, scrub: (s: string) => string): boolean {
  if (!path) return false;
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR | constants.O_NOFOLLOW);
  } catch {
    return false; // gone or a link: nothing of ours to clean
  }
  try {
    if (!fstatSync(fd).isFile()) return false;
    const text = readFileSync(fd, 'utf8');
    const clean = scrub(text);
    if (clean === text) return false;
    ftruncateSync(fd, 0);
    writeSync(fd, clean, 0, 'utf8');
    return true;
  } finally {
    closeSync(fd);
  }
}

/**
 * Every input of action.yml, read and validated here and nowhere else. `getInputs` is pure (it
 * gets the input reader and the event), so its rules are testable without a runner.
 */
import { BranchPart, DatabaseName, firstIssue, Ttl } from '../../agent/api/schemas.js';
import { parseTtl } from '../../agent/duration.js';
import { parseShowPassword, SHOW_PASSWORD_CHOICES, type ShowPassword } from '../../shared/pr-comment.js';
import { ActionError } from './errors.js';

export type Command = 'create' | 'delete' | 'reset' | 'get';

/** What the action needs to know about the event that started the workflow. */
export interface EventInfo {
  /** GITHUB_EVENT_NAME: pull_request, pull_request_target, workflow_dispatch, ... */
  name: string;
  /** The payload's `action`: opened, synchronize, closed, ... (empty when there is none). */
  action: string;
  /** The pull request's number, or null when the event has none. */
  pullRequest: number | null;
  /** The head repository differs from the base (a fork): GITHUB_TOKEN is read-only, secrets are missing. */
  fromFork: boolean;
  owner: string;
  repo: string;
}

export interface Settings {
  /** Base URL of `bpg serve`, e.g. https://db.example.com:7432. */
  agentUrl: string;
  /** Bearer token, one of the agent's api.tokens. */
  agentToken: string;
  /** CA for an https agent with a self-signed or private certificate: PEM text, or a file in the workspace; null for none. */
  agentCa: string | null;
  /** Database on the agent whose branch this is. */
  database: string;
  /** Branch name; default `pr-<number>`. */
  branch: string;
  /** Branch to create from (and reset to); default `main`. */
  parent: string;
  /** What to do; default `delete` for a closed pull request, otherwise `create`. `get`: connection details only. */
  command: Command;
  /** Expire this long after each run (`3d`), or never (`none`: ms null); null: the agent's default. */
  ttl: { text: string; ms: number | null } | null;
  /** A non-superuser login role made on the branch, owning the database's objects; null for none. */
  role: string | null;
  /** Crash-consistent snapshot of the parent: faster creation. */
  fast: boolean;
  /** The parent's structure without its rows (no copy of its data): for public repositories. */
  schemaOnly: boolean;
  /** SQL file in the workspace run after the structure (schema-only only); null for none. */
  seedFile: string | null;
  /** Shell command run with DATABASE_URL and PG* set to the branch; null for none. */
  migrate: string | null;
  /** The workflow's author accepts running `migrate` on pull_request_target (see refuseTarget). */
  allowPullRequestTarget: boolean;
  /** Where `migrate` runs (relative to the workspace). */
  workingDirectory: string;
  /** Keep one comment on the pull request up to date. */
  comment: boolean;
  /** Token for the comment and the repository's visibility. */
  githubToken: string;
  /** Put the password in the comment: `always`, `never`, or `auto` (only when the repository is private). */
  showPassword: ShowPassword;
  /** The pull request to comment on, or null when the event has none. */
  pullRequest: number | null;
  owner: string;
  repo: string;
}

/** Reads one input ('' when not set), like core.getInput. */
export type InputReader = (name: string) => string;

const COMMANDS: readonly Command[] = ['create', 'delete', 'reset', 'get'];
const PR_EVENTS = new Set(['pull_request', 'pull_request_target']);

/**
 * pull_request_target runs in the base repository's context: its secrets (agent_token among them)
 * and a GITHUB_TOKEN that can write. `migrate` is the pull request's code (its migrations, its
 * package.json scripts) as soon as the workflow checks out the head, so running it there hands
 * those to whoever opened the pull request, from any fork. Only the workflow's author can say
 * that this workflow's `migrate` runs trusted code only: allow_pull_request_target.
 */
const REFUSE_TARGET =
  "refusing to run migrate on pull_request_target: that event runs with the base repository's secrets and a write token, " +
  "so running the pull request's code there hands them (agent_token, github_token) to the pull request's author; " +
  "use the pull_request event, or set allow_pull_request_target: true if migrate runs only trusted code (not the pull request's checkout)";

/** YAML 1.2 core schema booleans, as core.getBooleanInput reads them. */
function bool(name: string, value: string, fallback: boolean): boolean {
  if (value === '') return fallback;
  if (['true', 'True', 'TRUE'].includes(value)) return true;
  if (['false', 'False', 'FALSE'].includes(value)) return false;
  throw new ActionError(`input ${name} must be true or false, not '${value}'`);
}

function oneOf<T extends string>(name: string, value: string, allowed: readonly T[]): T {
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new ActionError(`input ${name} must be one of ${allowed.join(', ')}, not '${value}'`);
}

/** `auto`, `always` or `never`; the older `true` and `false` still work. */
function showPassword(value: string): ShowPassword {
  const rule = parseShowPassword(value || 'auto');
  if (rule === null)
    throw new ActionError(`input show_password must be one of ${SHOW_PASSWORD_CHOICES}, not '${value}'`);
  return rule;
}

function name(input: string, value: string, schema: typeof DatabaseName): string {
  const r = schema.safeParse(value);
  if (!r.success) throw new ActionError(`input ${input}: ${firstIssue(r.error)} (got '${value}')`);
  return r.data;
}

/** `3d`, `12h`, ... as the agent's API takes them, or `none` (never expires); '' for the agent's default. */
function ttl(value: string): Settings['ttl'] {
  if (value === '') return null;
  if (value === 'none') return { text: value, ms: null };
  const r = Ttl.safeParse(value);
  if (!r.success) throw new ActionError(`input ttl: ${firstIssue(r.error)} (use e.g. 3d, 12h, or none)`);
  return { text: value, ms: parseTtl(value) };
}

/** Names PostgreSQL keeps for itself, or that mean something else where a role name goes. */
const RESERVED_ROLES = new Set(['public', 'none', 'current_user', 'current_role', 'session_user', 'all']);

/**
 * A role name that needs no quoting anywhere (a URI's user, psql, an ORM's config): lower-case
 * letters, digits and `_`, up to 63 characters; not `pg_*` (PostgreSQL's own).
 */
function role(value: string): string | null {
  if (value === '') return null;
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(value))
    throw new ActionError(
      `input role must be a PostgreSQL role name of lower-case letters, digits and '_' (at most 63, not starting with a digit), not '${value}'`,
    );
  if (value.startsWith('pg_') || RESERVED_ROLES.has(value))
    throw new ActionError(`input role: '${value}' is reserved by PostgreSQL`);
  return value;
}

function required(read: InputReader, input: string, event: EventInfo): string {
  const v = read(input).trim();
  if (v !== '') return v;
  // The usual reason on a fork's pull request: GitHub does not pass secrets to it.
  const why =
    event.fromFork && input === 'agent_token'
      ? ': pull requests from forks get no secrets (see the README: skip forks in the workflow)'
      : '';
  throw new ActionError(`input ${input} is required and was not supplied${why}`);
}

export function getInputs(read: InputReader, event: EventInfo): Settings {
  const agentUrl = required(read, 'agent_url', event);
  let url: URL;
  try {
    url = new URL(agentUrl);
  } catch {
    throw new ActionError(`input agent_url must be a URL like https://db.example.com:7432, not '${agentUrl}'`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new ActionError(`input agent_url must start with http:// or https://, not '${url.protocol}'`);
  const agentToken = required(read, 'agent_token', event);
  const agentCa = read('agent_ca').trim();
  if (agentCa !== '' && url.protocol !== 'https:')
    throw new ActionError(`input agent_ca is only used with an https:// agent_url, not '${url.protocol}//…'`);
  const database = name('database', required(read, 'database', event), DatabaseName);

  const closed = PR_EVENTS.has(event.name) && event.action === 'closed';
  const command = oneOf('command', read('command').trim() || (closed ? 'delete' : 'create'), COMMANDS);

  let branch = read('branch').trim();
  if (branch === '') {
    if (event.pullRequest === null)
      throw new ActionError(`input branch is required when the event (${event.name}) has no pull request`);
    branch = `pr-${event.pullRequest}`;
  }
  branch = name('branch', branch, BranchPart);
  const parent = name('parent', read('parent').trim() || 'main', BranchPart);
  if (branch === 'main')
    throw new ActionError(
      `input branch must not be 'main': the action manages preview branches, not the database's main branch`,
    );
  if (branch === parent) throw new ActionError(`input branch and parent are both '${branch}'`);

  const migrate = read('migrate').trim();
  const allowPullRequestTarget = bool('allow_pull_request_target', read('allow_pull_request_target').trim(), false);
  const runsMigrate = migrate !== '' && command !== 'delete' && command !== 'get';
  if (runsMigrate && event.name === 'pull_request_target' && !allowPullRequestTarget)
    throw new ActionError(REFUSE_TARGET);
  const schemaOnly = bool('schema_only', read('schema_only').trim(), false);
  const seedFile = read('seed_file').trim();
  if (seedFile !== '' && !schemaOnly) throw new ActionError('input seed_file needs schema_only: true');
  if (schemaOnly && bool('fast', read('fast').trim(), false))
    throw new ActionError('inputs schema_only and fast do not go together (a schema-only branch copies no data)');
  const githubToken = read('github_token').trim();
  const comment = bool('comment', read('comment').trim(), true);
  if (comment && githubToken === '' && event.pullRequest !== null)
    throw new ActionError('input github_token is empty: pass one, or set comment: false');

  return {
    agentUrl: agentUrl.replace(/\/+$/, ''),
    agentToken,
    agentCa: agentCa === '' ? null : agentCa,
    database,
    branch,
    parent,
    command,
    ttl: ttl(read('ttl').trim()),
    role: role(read('role').trim()),
    fast: bool('fast', read('fast').trim(), false),
    schemaOnly,
    seedFile: seedFile === '' ? null : seedFile,
    migrate: migrate === '' ? null : migrate,
    allowPullRequestTarget,
    workingDirectory: read('working_directory').trim() || '.',
    comment,
    githubToken,
    showPassword: showPassword(read('show_password').trim()),
    pullRequest: event.pullRequest,
    owner: event.owner,
    repo: event.repo,
  };
}

/**
 * What the action does, once the inputs are settled: get (or create, or reset) the branch, set
 * the outputs, run the migration, then tell the pull request and the job summary. Or delete.
 */
import { randomBytes } from 'node:crypto';
import * as core from '@actions/core';
import { BpgApiError, type BpgClient } from '../../agent/api/client.js';
import { schemaCountLines, schemaDiffSummary, type BranchView } from '../../agent/api/schemas.js';
import { decidePassword, renewedSpan, seconds } from '../../shared/pr-comment.js';
import { startSafetyWatch, type SafetyOutcome } from '../../shared/safety-watch.js';
import { getSchemaDiff, type SchemaDiffOutcome } from '../../shared/schema-diff.js';
import { scrubber, secretForms } from '../../shared/scrub.js';
import { statusOf } from '../../shared/sticky-comment.js';
import { agentClient, explain } from './agent.js';
import { repositoryIsPrivate, upsertComment, type Octokit } from './comment.js';
import { ActionError } from './errors.js';
import type { Settings } from './inputs.js';
import { runMigration, type MigrationResult } from './migrate.js';
import { render, type Report } from './report.js';
import { checkRole, ensureRole, roleCredentials, type RoleCredentials } from './role.js';
import { describeRemoved, migrationEnv, scrubFile } from './secrets.js';
import { readSeedFile } from './seed.js';

/** Lines of migration output in the step's error (the comment keeps more, the log has all). */
const ERROR_LINES = 15;

export interface GitHubSide {
  /** Null when no comment is wanted or possible (comment: false, or no pull request). */
  octokit: Octokit | null;
  runUrl?: string;
  /** GITHUB_EVENT_NAME: on a pull request's events the workflow runs on every push. */
  eventName?: string;
}

/** The workflow runs on every push of these (synchronize): each run renews the branch's expiry. */
const PR_EVENTS = new Set(['pull_request', 'pull_request_target']);

/** `secrets`: what the action holds (heldSecrets), already registered with the runner. */
export async function run(s: Settings, gh: GitHubSide, secrets: string[]): Promise<void> {
  const client = agentClient(s.agentUrl, s.agentToken, s.agentCa);
  if (s.command === 'delete') await deleteBranch(s, gh, client);
  else if (s.command === 'get') await getBranch(s, client, gh, secrets);
  else await readyBranch(s, gh, client, secrets);
}

/**
 * Registers the branch's password as a secret: from here on the runner masks it everywhere. The
 * router's connection and the direct one (`connection.direct`, in its uri too) carry the same
 * password; both are registered should an agent ever tell them apart.
 */
function protect(b: BranchView): void {
  for (const form of secretForms(passwordsOf(b))) core.setSecret(form);
}

function passwordsOf(b: BranchView): string[] {
  return [...new Set([b.connection.password, b.connection.direct.password])];
}

/** The role's credentials, its password registered as a secret before anything can print it. */
function roleOf(s: Settings, b: BranchView): RoleCredentials | null {
  if (s.role === null) return null;
  const creds = roleCredentials(b.connection, s.role);
  for (const form of secretForms([creds.password])) core.setSecret(form);
  return creds;
}

type Fail = (what: string) => (e: unknown) => never;

/** Starts a branch that is stopped, or `down` (recorded running, its container not: it stopped, or failed on the agent's side). */
async function started(s: Settings, client: BpgClient, b: BranchView, fail: Fail): Promise<BranchView> {
  if (b.status !== 'stopped' && b.status !== 'down') return b;
  const ref = `${s.database}/${s.branch}`;
  core.info(`Branch ${ref} is ${b.status}: starting it`);
  return client.startBranch(s.database, s.branch).catch(fail(`start branch ${ref}`));
}

function logConnection(b: BranchView): void {
  const c = b.connection;
  const via = c.via === 'router' ? `, through the router${c.sslmode ? `, sslmode ${c.sslmode}` : ''}` : '';
  core.info(
    `Connection: host ${c.host}, port ${c.port}, database ${c.database}, user ${c.user}${via} (status ${b.status})`,
  );
}

async function readyBranch(s: Settings, gh: GitHubSide, client: BpgClient, secrets: string[]): Promise<void> {
  const ref = `${s.database}/${s.branch}`;
  const fail: Fail = (what) => (e) => {
    throw explain(e, s.agentUrl, what);
  };
  core.info(
    `${s.command === 'reset' ? 'Resetting' : 'Getting or creating'} branch ${ref} from ${s.parent} on ${s.agentUrl}`,
  );

  const seed = s.seedFile === null ? undefined : await readSeedFile(s.seedFile);
  const t0 = performance.now();
  const request = { startedAt: Date.now(), answeredAt: 0 };
  const put = await client
    .putBranch(s.database, s.branch, {
      from: s.parent,
      fast: s.fast,
      ...(s.schemaOnly ? { schemaOnly: true, seed } : {}),
      ...(s.ttl ? { ttl: s.ttl.ms === null ? null : s.ttl.text } : {}),
    })
    .catch(fail(`create branch ${ref}`));
  request.answeredAt = Date.now();
  protect(put.branch);
  let branch = put.branch;
  const created = put.created;
  const reset = s.command === 'reset' && !created;
  if (reset) branch = await client.resetBranch(s.database, s.branch).catch(fail(`reset branch ${ref}`));
  // Started like a stopped one, so that migrate does not run against a dead server.
  branch = await started(s, client, branch, fail);
  const ms = Math.round(performance.now() - t0);

  const c = branch.connection;
  if (reset) core.info(`Reset ${ref} to ${s.parent} in ${seconds(ms)}`);
  else if (created) core.info(`Created ${ref} from ${s.parent} in ${seconds(ms)}`);
  else core.info(`Reusing ${ref}, created ${branch.createdAt}`);
  logConnection(branch);
  core.info(`Expires: ${branch.expiresAt ?? 'never'}${s.ttl ? ` (ttl ${s.ttl.text})` : ''}`);

  const role = roleOf(s, branch);
  const scrub = scrubber([...passwordsOf(branch), ...(role ? [role.password] : []), ...secrets]);
  if (role) {
    // Before the migration too: it may grant to the role, or own objects through it.
    await ensureRole(c, role.user);
    core.info(`Role ${role.user} ready: a login role that is not a superuser, owner of the database's objects`);
  }

  let migration: MigrationResult | null = null;
  let safety: SafetyOutcome | null = null;
  if (s.migrate !== null) {
    const command = s.migrate;
    const env = migrationEnv(process.env, secrets);
    core.info(describeRemoved(env.removed));
    // The whole command is watched by the agent: the locks it held, the tables it rewrote.
    const watch = await startSafetyWatch(client, s.database, s.branch, (m) =>
      core.warning(`no migration safety report: ${m}`),
    );
    try {
      migration = await core.group(`Migration: ${scrub(command.split('\n')[0]!)}`, async () => {
        // Its output is the pull request's text: the runner must not take a `::` line of it for a
        // workflow command (a forged error, a mask, an output). The token is not known to it.
        const resume = randomBytes(16).toString('hex');
        core.info(`::stop-commands::${resume}`);
        try {
          return await runMigration(command, s.workingDirectory, c, (line) => core.info(line), {
            env: env.env,
            secrets: [...secrets, ...(role ? [role.password] : [])],
          });
        } finally {
          core.info(`::${resume}::`);
        }
      });
    } finally {
      safety = await watch.stop();
    }
    if (migration.ok) core.info(`Migration succeeded in ${seconds(migration.ms)}`);
    logSafety(safety, scrub);
  }
  // What the migration made as the superuser is given to the role too (also after a failed one:
  // the branch is kept for debugging, with the role working).
  let roleError: unknown = null;
  if (role && s.migrate !== null) await ensureRole(c, role.user).catch((e: unknown) => (roleError = e));

  // What the branch now has that its parent has not (after the migration, even a failed one).
  const schemaDiff = await getSchemaDiff(client, s.database, s.branch, (m) =>
    core.warning(`no schema diff: ${scrub(m)}`),
  );
  if (schemaDiff === null) core.info('No schema diff: the agent has none (older than the schema diff)');
  else if ('diff' in schemaDiff)
    core.info(
      schemaDiff.diff.identical
        ? `Schema: no changes against ${schemaDiff.diff.against}`
        : `Schema changes against ${schemaDiff.diff.against}: ${schemaCountLines(schemaDiff.diff.counts).join('; ')}`,
    );

  // After the migration: the runner keeps the last value written for an output, so ours win over
  // anything the migration may have appended to GITHUB_OUTPUT behind our back.
  setOutputs(branch, s.branch, created, role);
  if (process.env.GITHUB_OUTPUT) core.setOutput('schema_diff', schemaDiffJson(schemaDiff, scrub));

  const renewed = PR_EVENTS.has(gh.eventName ?? '');
  const report: Report = {
    kind: 'ready',
    command: s.command === 'reset' ? 'reset' : 'create',
    database: s.database,
    branch,
    created,
    reset,
    ms,
    migration,
    expiry: {
      expiresAt: branch.expiresAt,
      protected: branch.protected,
      renewedMs: !renewed ? null : s.ttl ? s.ttl.ms : renewedSpan(branch.branch, branch.expiresAt, request),
    },
    role: role?.user ?? null,
    safety,
    schemaDiff,
  };
  let publishError: unknown = null;
  await publish(s, gh, report, [...secrets, ...(role ? [role.password] : [])]).catch((e) => (publishError = e));
  // The migration gets no path to the job summary, but code that goes looking can find it.
  if (migration && scrubFile(process.env.GITHUB_STEP_SUMMARY, scrub)) {
    core.warning(
      "the job summary held a secret that the migration wrote into it behind the action's back: replaced by ***",
    );
  }

  if (migration && !migration.ok) {
    if (publishError) core.warning(publishMessage(publishError));
    if (roleError) core.warning((roleError as Error).message);
    const how = migration.exitCode === null ? 'did not run to the end' : `exited with code ${migration.exitCode}`;
    const last = migration.tail.slice(-ERROR_LINES);
    throw new ActionError(
      `migration failed: it ${how}; branch ${ref} is kept for debugging. Last lines of its output:\n${last.join('\n')}`,
    );
  }
  if (roleError) {
    if (publishError) core.warning(publishMessage(publishError));
    throw roleError;
  }
  if (publishError) throw new ActionError(publishMessage(publishError));
}

/** A step output holds at most 1 MB. */
const OUTPUT_MAX_CHARS = 1_000_000;

/**
 * The schema_diff output: the agent's whole answer as JSON (the comment's summary of it when that
 * is too big for an output), secrets scrubbed (the pull request names the objects); empty without one.
 */
function schemaDiffJson(d: SchemaDiffOutcome | null, scrub: (s: string) => string): string {
  if (d === null || !('diff' in d)) return '';
  const whole = scrub(JSON.stringify(d.diff));
  return whole.length <= OUTPUT_MAX_CHARS ? whole : scrub(JSON.stringify(schemaDiffSummary(d.diff)));
}

/** The flagged locks as warnings (they are the reviewer's business), the rest as one line. */
function logSafety(safety: SafetyOutcome | null, scrub: (s: string) => string): void {
  if (safety === null) {
    core.info('No migration safety report: the agent has no migration watches (older than the report)');
    return;
  }
  if ('unavailable' in safety) return; // warned when it happened
  const r = safety.report;
  for (const f of r.flagged) core.warning(`migration safety: ${scrub(f)}`);
  core.info(
    `Migration safety: ${r.flagged.length} flagged, ${r.locks.length} table${r.locks.length === 1 ? '' : 's'} locked, ${r.rewritten.length} rewritten (${r.samples} samples)`,
  );
}

/**
 * `command: get`: the connection details of a branch that exists, nothing made or migrated (a
 * stopped branch is started: details of a server that does not answer are of no use). The job
 * summary says what was found; the pull request's comment is left as the last create wrote it.
 */
async function getBranch(s: Settings, client: BpgClient, gh: GitHubSide, secrets: string[]): Promise<void> {
  const ref = `${s.database}/${s.branch}`;
  const fail: Fail = (what) => (e) => {
    throw explain(e, s.agentUrl, what);
  };
  core.info(`Getting branch ${ref} on ${s.agentUrl}`);
  if (s.migrate !== null) core.info('command get: migrate is not run');
  if (s.ttl !== null) core.info('command get: ttl is not applied');
  const t0 = performance.now();
  let branch = await client.getBranch(s.database, s.branch).catch((e: unknown) => {
    if (e instanceof BpgApiError && e.status === 404)
      throw new ActionError(
        `branch ${ref} does not exist: command get does not create it (run the action with command create first)`,
        { cause: e },
      );
    return fail(`get branch ${ref}`)(e);
  });
  protect(branch);
  branch = await started(s, client, branch, fail);
  const ms = Math.round(performance.now() - t0);
  logConnection(branch);
  const role = roleOf(s, branch);
  if (role) {
    await checkRole(branch.connection, role.user);
    core.info(`Role ${role.user} logs in`);
  }
  setOutputs(branch, s.branch, false, role);
  const report: Report = {
    kind: 'ready',
    command: 'get',
    database: s.database,
    branch,
    created: false,
    reset: false,
    ms,
    migration: null,
    expiry: { expiresAt: branch.expiresAt, protected: branch.protected, renewedMs: null },
    role: role?.user ?? null,
    safety: null,
    schemaDiff: null,
  };
  if (process.env.GITHUB_STEP_SUMMARY)
    await core.summary
      .addRaw(
        render(report, {
          showPassword: false,
          runUrl: gh.runUrl,
          secrets: [...secrets, ...(role ? [role.password] : [])],
        }),
      )
      .write();
}

async function deleteBranch(s: Settings, gh: GitHubSide, client: BpgClient): Promise<void> {
  const ref = `${s.database}/${s.branch}`;
  core.info(`Deleting branch ${ref} on ${s.agentUrl}`);
  const r = await client.deleteBranch(s.database, s.branch).catch((e: unknown) => {
    throw explain(e, s.agentUrl, `delete branch ${ref}`);
  });
  core.info(r.deleted ? `Deleted ${r.branches.join(', ')}` : `Branch ${ref} was already gone`);
  if (process.env.GITHUB_OUTPUT) {
    core.setOutput('branch', s.branch);
    core.setOutput('created', 'false');
  }
  await publish(s, gh, { kind: 'deleted', database: s.database, branchName: s.branch, deleted: r.deleted }).catch(
    (e: unknown) => {
      throw new ActionError(publishMessage(e));
    },
  );
}

function setOutputs(b: BranchView, branch: string, created: boolean, role: RoleCredentials | null): void {
  // Without GITHUB_OUTPUT, core.setOutput falls back to printing `::set-output` with the value.
  if (!process.env.GITHUB_OUTPUT) {
    core.warning('GITHUB_OUTPUT is not set: no outputs written');
    return;
  }
  const c = b.connection;
  const outputs: Record<string, string> = {
    connection_string: c.uri,
    host: c.host,
    port: String(c.port),
    user: c.user,
    password: c.password,
    database_name: c.database,
    sslmode: c.sslmode ?? '',
    branch,
    created: String(created),
    expires_at: b.expiresAt ?? '',
    role_user: role?.user ?? '',
    role_password: role?.password ?? '',
    role_connection_string: role?.uri ?? '',
  };
  for (const [k, v] of Object.entries(outputs)) core.setOutput(k, v);
}

function publishMessage(e: unknown): string {
  const status = statusOf(e);
  return `could not write the pull request comment${status ? ` (GitHub answered ${status})` : ''}: ${(e as Error)?.message ?? String(e)}`;
}

/**
 * The job summary (never with the password: anyone who can read the run can read it) and the
 * pull request comment (with the password only when show_password allows it: auto, always, never).
 */
async function publish(s: Settings, gh: GitHubSide, report: Report, secrets: string[] = []): Promise<void> {
  if (process.env.GITHUB_STEP_SUMMARY)
    await core.summary.addRaw(render(report, { showPassword: false, runUrl: gh.runUrl, secrets })).write();
  if (!s.comment) return;
  if (s.pullRequest === null || gh.octokit === null) {
    core.info('No pull request in this event: no comment (the job summary has the details)');
    return;
  }
  const pr = { owner: s.owner, repo: s.repo, number: s.pullRequest };
  const octokit = gh.octokit;
  // A deleted branch's comment has no password to show: GitHub is not asked.
  const rule = report.kind === 'ready' ? s.showPassword : 'never';
  const { show: showPassword } = await decidePassword(rule, () =>
    repositoryIsPrivate(octokit, s.owner, s.repo).catch((e: unknown) => {
      core.warning(
        `could not read whether ${s.owner}/${s.repo} is private (${(e as Error).message}): the comment hides the password`,
      );
      return false;
    }),
  );
  if (rule === 'auto')
    core.info(
      showPassword
        ? 'Private repository: the comment shows the password'
        : 'Public repository: the comment hides the password',
    );
  const body = render(report, { showPassword, runUrl: gh.runUrl, secrets });
  const out = await upsertComment(octokit, pr, s.database, body, { createIfMissing: report.kind === 'ready' });
  if (out.result === 'denied') {
    core.warning(
      `cannot comment on pull request #${pr.number}: the token is read-only here (${out.message}); ` +
        'pull requests from forks get a read-only GITHUB_TOKEN, others need `permissions: pull-requests: write`',
    );
  } else if (out.result === 'none') {
    core.info('No earlier comment to update');
  } else {
    core.info(`Comment ${out.result}: ${out.url}`);
    if (process.env.GITHUB_OUTPUT) core.setOutput('comment_url', out.url);
  }
}

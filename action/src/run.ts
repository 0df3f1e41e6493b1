/**
 * What the action does, once the inputs are settled: get (or create, or reset) the branch, set
 * the outputs, run the migration, then tell the pull request and the job summary. Or delete.
 */
import { randomBytes } from 'node:crypto';
import * as core from '@actions/core';
import type { BpgClient } from '../../agent/api/client.js';
import type { BranchView } from '../../agent/api/schemas.js';
import { decidePassword, seconds } from '../../shared/pr-comment.js';
import { scrubber, secretForms } from '../../shared/scrub.js';
import { statusOf } from '../../shared/sticky-comment.js';
import { agentClient, explain } from './agent.js';
import { repositoryIsPrivate, upsertComment, type Octokit } from './comment.js';
import { ActionError } from './errors.js';
import type { Settings } from './inputs.js';
import { runMigration, type MigrationResult } from './migrate.js';
import { render, type Report } from './report.js';
import { describeRemoved, migrationEnv, scrubFile } from './secrets.js';

/** Lines of migration output in the step's error (the comment keeps more, the log has all). */
const ERROR_LINES = 15;

export interface GitHubSide {
  /** Null when no comment is wanted or possible (comment: false, or no pull request). */
  octokit: Octokit | null;
  runUrl?: string;
}

/** `secrets`: what the action holds (heldSecrets), already registered with the runner. */
export async function run(s: Settings, gh: GitHubSide, secrets: string[]): Promise<void> {
  const client = agentClient(s.agentUrl, s.agentToken, s.agentCa);
  if (s.command === 'delete') await deleteBranch(s, gh, client);
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

async function readyBranch(s: Settings, gh: GitHubSide, client: BpgClient, secrets: string[]): Promise<void> {
  const ref = `${s.database}/${s.branch}`;
  const fail =
    (what: string) =>
    (e: unknown): never => {
      throw explain(e, s.agentUrl, what);
    };
  core.info(
    `${s.command === 'reset' ? 'Resetting' : 'Getting or creating'} branch ${ref} from ${s.parent} on ${s.agentUrl}`,
  );

  const t0 = performance.now();
  const put = await client
    .putBranch(s.database, s.branch, { from: s.parent, fast: s.fast })
    .catch(fail(`create branch ${ref}`));
  protect(put.branch);
  let branch = put.branch;
  const created = put.created;
  const reset = s.command === 'reset' && !created;
  if (reset) branch = await client.resetBranch(s.database, s.branch).catch(fail(`reset branch ${ref}`));
  // `down`: recorded running, but its container is not (it stopped, or failed on the agent's side):
  // started like a stopped one, so that migrate does not run against a dead server.
  if (branch.status === 'stopped' || branch.status === 'down') {
    core.info(`Branch ${ref} is ${branch.status}: starting it`);
    branch = await client.startBranch(s.database, s.branch).catch(fail(`start branch ${ref}`));
  }
  const ms = Math.round(performance.now() - t0);

  const c = branch.connection;
  if (reset) core.info(`Reset ${ref} to ${s.parent} in ${seconds(ms)}`);
  else if (created) core.info(`Created ${ref} from ${s.parent} in ${seconds(ms)}`);
  else core.info(`Reusing ${ref}, created ${branch.createdAt}`);
  const via = c.via === 'router' ? `, through the router${c.sslmode ? `, sslmode ${c.sslmode}` : ''}` : '';
  core.info(
    `Connection: host ${c.host}, port ${c.port}, database ${c.database}, user ${c.user}${via} (status ${branch.status})`,
  );

  const scrub = scrubber([...passwordsOf(branch), ...secrets]);
  let migration: MigrationResult | null = null;
  if (s.migrate !== null) {
    const command = s.migrate;
    const env = migrationEnv(process.env, secrets);
    core.info(describeRemoved(env.removed));
    migration = await core.group(`Migration: ${scrub(command.split('\n')[0]!)}`, async () => {
      // Its output is the pull request's text: the runner must not take a `::` line of it for a
      // workflow command (a forged error, a mask, an output). The token is not known to it.
      const resume = randomBytes(16).toString('hex');
      core.info(`::stop-commands::${resume}`);
      try {
        return await runMigration(command, s.workingDirectory, c, (line) => core.info(line), { env: env.env, secrets });
      } finally {
        core.info(`::${resume}::`);
      }
    });
    if (migration.ok) core.info(`Migration succeeded in ${seconds(migration.ms)}`);
  }
  // After the migration: the runner keeps the last value written for an output, so ours win over
  // anything the migration may have appended to GITHUB_OUTPUT behind our back.
  setOutputs(branch, s.branch, created);

  const report: Report = {
    kind: 'ready',
    command: s.command === 'reset' ? 'reset' : 'create',
    database: s.database,
    branch,
    created,
    reset,
    ms,
    migration,
  };
  let publishError: unknown = null;
  await publish(s, gh, report).catch((e) => (publishError = e));
  // The migration gets no path to the job summary, but code that goes looking can find it.
  if (migration && scrubFile(process.env.GITHUB_STEP_SUMMARY, scrub)) {
    core.warning(
      "the job summary held a secret that the migration wrote into it behind the action's back: replaced by ***",
    );
  }

  if (migration && !migration.ok) {
    if (publishError) core.warning(publishMessage(publishError));
    const how = migration.exitCode === null ? 'did not run to the end' : `exited with code ${migration.exitCode}`;
    const last = migration.tail.slice(-ERROR_LINES);
    throw new ActionError(
      `migration failed: it ${how}; branch ${ref} is kept for debugging. Last lines of its output:\n${last.join('\n')}`,
    );
  }
  if (publishError) throw new ActionError(publishMessage(publishError));
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

function setOutputs(b: BranchView, branch: string, created: boolean): void {
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
async function publish(s: Settings, gh: GitHubSide, report: Report): Promise<void> {
  if (process.env.GITHUB_STEP_SUMMARY)
    await core.summary.addRaw(render(report, { showPassword: false, runUrl: gh.runUrl })).write();
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
  const body = render(report, { showPassword, runUrl: gh.runUrl });
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
  }
}

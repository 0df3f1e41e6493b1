/**
 * What a queued delivery does. Every step is idempotent (get-or-create PUT, migrations recorded on
 * the branch, sticky comment found by marker, delete of a gone branch counts as done), so a job that
 * was cut short by a kill or a failure can simply run again from the top.
 *
 *   open (opened, reopened) and push (synchronize):
 *     status pending -> migration files at the head commit (over a limit: refused, reported, nothing
 *     created) -> ensure branch [reset on push] -> apply them -> comment -> status
 *   close (closed): delete branch -> comment says deleted (only if there is one)
 */
import { BpgApiError, type BpgClient } from '../../agent/api/client.js';
import type { BranchView } from '../../agent/api/schemas.js';
import { describe } from '../../agent/errors.js';
import type { Logger } from '../../agent/log.js';
import { decidePassword } from '../../shared/pr-comment.js';
import { renderComment, type CommentInput, type MigrationSummary } from './comment.js';
import { branchNameFor, repoSettings, type RepoSettings, type WebhookConfig } from './config.js';
import { isTransientGitHubError, type GitHub, type RepoApi } from './github.js';
import { fetchMigrations, type MigrationFile } from './migration-files.js';
import { applyMigrations, MigrationConnectionError } from './migrations.js';
import type { Job } from './store.js';

export interface LifecycleDeps {
  cfg: WebhookConfig;
  agent: BpgClient;
  github: GitHub;
  log: Logger;
}

interface Target {
  settings: RepoSettings;
  gh: RepoApi;
  database: string;
  branch: string;
  name: string;
}

function target(d: LifecycleDeps, job: Job): Target | null {
  const settings = repoSettings(d.cfg, `${job.owner}/${job.repo}`);
  if (!settings) return null;
  const branch = branchNameFor(settings, job.number);
  return {
    settings,
    gh: d.github.forRepo({ owner: job.owner, repo: job.repo }, job.installationId),
    database: settings.database,
    branch,
    name: `${settings.database}/${branch}`,
  };
}

export async function runJob(d: LifecycleDeps, job: Job): Promise<void> {
  const t = target(d, job);
  if (!t) {
    d.log.info('repository no longer configured: delivery dropped', { delivery: job.id, pr: job.key });
    return;
  }
  if (job.kind === 'close') return closePr(d, job, t);
  return preparePr(d, job, t);
}

async function preparePr(d: LifecycleDeps, job: Job, t: Target): Promise<void> {
  const { gh, settings } = t;
  await gh.setStatus(job.headSha, 'pending', `Preparing database branch ${t.name}…`);

  // Read (and held to the limits) before the branch is touched: a refused folder changes nothing.
  const path = settings.migrations.path;
  let files: MigrationFile[] | null = null;
  if (path !== undefined) {
    const fetched = await fetchMigrations(gh, path, job.headSha, settings.migrations);
    if (fetched !== null && 'refused' in fetched) return refuseMigrations(d, job, t, fetched.refused);
    files = fetched?.files ?? null;
  }

  const t0 = performance.now();
  const put = await d.agent.putBranch(t.database, t.branch, {
    from: settings.parent,
    ...(settings.fast ? { fast: true } : {}),
  });
  const createMs = performance.now() - t0;
  let view: BranchView = put.branch;
  if (job.kind === 'push' && settings.resetOnPush && !put.created) {
    view = await d.agent.resetBranch(t.database, t.branch);
    d.log.info('branch reset to its parent', { delivery: job.id, branch: t.name });
  }
  if (view.status !== 'running') view = await d.agent.startBranch(t.database, t.branch);
  d.log.info(put.created ? 'branch created' : 'branch reused', {
    delivery: job.id,
    branch: t.name,
    ms: Math.round(createMs),
  });

  let migrations: MigrationSummary;
  if (path === undefined) {
    migrations = { path: null, applied: [], alreadyApplied: [], changed: [] };
  } else {
    const restartBranch = async () => {
      d.log.warn('a migration outlived its time limit and its backend did not end: restarting the branch', {
        delivery: job.id,
        branch: t.name,
      });
      await d.agent.restartBranch(t.database, t.branch);
    };
    migrations =
      files === null
        ? { path, applied: [], alreadyApplied: [], changed: [], missing: true }
        : await applyMigrations(view.connection, path, files, {
            commit: job.headSha,
            timeoutSeconds: settings.migrations.timeoutSeconds,
            restartBranch,
          });
    d.log.info('migrations', {
      delivery: job.id,
      branch: t.name,
      applied: migrations.applied,
      alreadyApplied: migrations.alreadyApplied.length,
      failed: migrations.failed?.name ?? null,
      timedOut: migrations.failed?.timedOut ?? false,
    });
  }

  const pw = await passwordRule(settings, gh);
  const input: CommentInput = {
    state: migrations.failed ? 'migration-failed' : 'ready',
    database: t.database,
    branch: t.branch,
    parent: settings.parent,
    branchStatus: view.status,
    connection: view.connection,
    showPassword: pw.show,
    passwordHiddenReason: pw.reason,
    created: put.created,
    createMs: put.created ? createMs : undefined,
    createdAt: view.createdAt,
    migrations,
    commit: job.headSha,
  };
  const sticky = await gh.upsertComment(job.number, t.database, renderComment(input));
  const commentUrl = sticky.action === 'skipped' ? undefined : sticky.comment.htmlUrl;

  if (migrations.failed) {
    await gh.setStatus(
      job.headSha,
      'failure',
      `Migration ${migrations.failed.name} failed: ${firstLine(migrations.failed.output)}`,
      commentUrl,
    );
  } else {
    const n = migrations.applied.length;
    await gh.setStatus(
      job.headSha,
      'success',
      `${t.name} is ready${migrations.path === null ? '' : `; ${n} migration${n === 1 ? '' : 's'} applied`}`,
      commentUrl,
    );
  }
}

/** The folder is over a migration limit: said on the PR, and nothing is created or applied. */
async function refuseMigrations(d: LifecycleDeps, job: Job, t: Target, reason: string): Promise<void> {
  d.log.warn('migrations refused', { delivery: job.id, branch: t.name, reason });
  const body = renderComment({
    state: 'refused',
    database: t.database,
    branch: t.branch,
    parent: t.settings.parent,
    showPassword: false,
    error: reason,
    commit: job.headSha,
  });
  const sticky = await t.gh.upsertComment(job.number, t.database, body);
  await t.gh.setStatus(
    job.headSha,
    'failure',
    `Migrations refused: ${reason}`,
    sticky.action === 'skipped' ? undefined : sticky.comment.htmlUrl,
  );
}

async function closePr(d: LifecycleDeps, job: Job, t: Target): Promise<void> {
  // Not forced: a child branch someone made from the PR's branch is theirs; the 409 is reported.
  const r = await d.agent.deleteBranch(t.database, t.branch);
  d.log.info(r.deleted ? 'branch deleted' : 'branch was already gone', { delivery: job.id, branch: t.name });
  const body = renderComment({
    state: 'deleted',
    database: t.database,
    branch: t.branch,
    parent: t.settings.parent,
    showPassword: false,
  });
  await t.gh.upsertComment(job.number, t.database, body, { createIfMissing: false });
}

/** The Action's rule (shared/pr-comment.ts): `auto` shows the password only in a private repository (asked now, not at delivery time). */
async function passwordRule(settings: RepoSettings, gh: RepoApi): Promise<{ show: boolean; reason?: string }> {
  const d = await decidePassword(settings.showPassword, () => gh.isPrivate());
  if (d.show) return { show: true };
  return { show: false, reason: d.why === 'never' ? 'showPassword is never' : 'this repository is public' };
}

/** After the last attempt (or a failure retrying cannot fix): say so on the PR. */
export async function reportFailure(d: LifecycleDeps, job: Job, err: unknown): Promise<void> {
  const t = target(d, job);
  if (!t) return;
  const what = job.kind === 'close' ? `Deleting ${t.name} failed` : `Preparing ${t.name} failed`;
  const why = userMessage(err);
  const tries = job.attempts > 1 ? ` (after ${job.attempts} attempts)` : '';
  if (job.kind !== 'close') await t.gh.setStatus(job.headSha, 'error', `${what}: ${why}`);
  const body = renderComment({
    state: 'error',
    database: t.database,
    branch: t.branch,
    parent: t.settings.parent,
    showPassword: false,
    error: `${what}${tries}:\n${why}`,
    commit: job.headSha,
  });
  await t.gh.upsertComment(job.number, t.database, body);
}

/** One line for a PR: which side failed and why. Never a stack trace, never a payload. */
export function userMessage(err: unknown): string {
  if (err instanceof BpgApiError) return `agent: ${err.message}${err.status ? ` (HTTP ${err.status})` : ''}`;
  const status = (err as { status?: unknown })?.status;
  if ((err as { name?: unknown })?.name === 'HttpError' && typeof status === 'number')
    return `GitHub API: HTTP ${status}: ${describe(err)}`;
  return describe(err);
}

/** Failures that the same request will hit again: no point in retrying. */
export function isPermanent(err: unknown): boolean {
  if (err instanceof BpgApiError) {
    if (err.status === 0) return false; // no answer: unreachable, timeout
    if (err.status === 409) return !/busy/i.test(err.message);
    return err.status >= 400 && err.status < 500;
  }
  if (err instanceof MigrationConnectionError) return false;
  if ((err as { name?: unknown })?.name === 'HttpError') return !isTransientGitHubError(err);
  return false;
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}

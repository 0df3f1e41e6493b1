/**
 * What a queued delivery does. Every step is idempotent (get-or-create PUT, migrations recorded on
 * the branch, sticky comment found by marker, delete of a gone branch counts as done), so a job that
 * was cut short by a kill or a failure can simply run again from the top.
 *
 *   open (opened, reopened) and push (synchronize):
 *     status pending -> migration files at the head commit, in the repository's layout (over a limit,
 *     or a layout the tool refuses: refused, reported, nothing created) -> ensure branch [reset on
 *     push] -> apply them [+ Supabase's seed on a new branch] -> comment -> status
 *   close (closed): delete branch -> comment says deleted (only if there is one)
 */
import { BpgApiError, type BpgClient } from '../../agent/api/client.js';
import type { BranchView } from '../../agent/api/schemas.js';
import { describe } from '../../agent/errors.js';
import type { Logger } from '../../agent/log.js';
import { decidePassword, renewedSpan } from '../../shared/pr-comment.js';
import { startSafetyWatch } from '../../shared/safety-watch.js';
import { getSchemaDiff } from '../../shared/schema-diff.js';
import { renderComment, type CommentInput, type MigrationSummary } from './comment.js';
import { branchNameFor, repoSettings, type RepoSettings, type WebhookConfig } from './config.js';
import { isTransientGitHubError, type GitHub, type RepoApi } from './github.js';
import { fetchMigrations, type Migrations } from './migration-files.js';
import { applyMigrations, MigrationConnectionError, withoutOwnSchema } from './migrations.js';
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
  let found: Migrations | null = null;
  if (path !== undefined) {
    const fetched = await fetchMigrations(gh, path, job.headSha, settings.migrations, settings.migrations.format);
    if (fetched !== null && 'refused' in fetched) return refuseMigrations(d, job, t, fetched);
    found = fetched;
  }

  // The seed of a schema-only branch: the PR's file at its head (it runs only inside the branch).
  const seed = settings.seed === undefined ? undefined : await fetchSeed(gh, settings.seed, job.headSha);

  const t0 = performance.now();
  const request = { startedAt: Date.now(), answeredAt: 0 };
  const put = await d.agent.putBranch(t.database, t.branch, {
    from: settings.parent,
    ...(settings.fast ? { fast: true } : {}),
    ...(settings.data === 'schema-only' ? { schemaOnly: true, ...(seed !== undefined ? { seed } : {}) } : {}),
  });
  request.answeredAt = Date.now();
  const createMs = performance.now() - t0;
  let view: BranchView = put.branch;
  let reset = false;
  if (job.kind === 'push' && settings.resetOnPush && !put.created) {
    view = await d.agent.resetBranch(t.database, t.branch);
    reset = true;
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
    // Each file is watched by the agent (the migration safety report); never a reason to fail.
    const watch = (file: string) =>
      startSafetyWatch(d.agent, t.database, t.branch, (reason) =>
        d.log.warn('no migration safety report', { delivery: job.id, branch: t.name, file, reason }),
      );
    if (found === null) {
      migrations = { path, applied: [], alreadyApplied: [], changed: [], missing: true };
    } else {
      // Supabase's seed fills a new branch once: when this job made the branch (or reset it), or on
      // the PR's opening (a retry of the job that made it); recorded like a migration, it never runs twice.
      const seeding = found.seed !== undefined && (put.created || reset || job.kind === 'open');
      const files = seeding ? [...found.files, found.seed!] : found.files;
      migrations = {
        ...(await applyMigrations(view.connection, path, files, {
          commit: job.headSha,
          timeoutSeconds: settings.migrations.timeoutSeconds,
          restartBranch,
          watch,
        })),
        format: found.format,
        ...(found.detectedFrom !== undefined ? { detectedFrom: found.detectedFrom } : {}),
      };
    }
    d.log.info('migrations', {
      delivery: job.id,
      branch: t.name,
      format: migrations.format ?? null,
      detectedFrom: migrations.detectedFrom ?? null,
      applied: migrations.applied,
      alreadyApplied: migrations.alreadyApplied.length,
      failed: migrations.failed?.name ?? null,
      timedOut: migrations.failed?.timedOut ?? false,
      flagged: (migrations.runs ?? []).reduce(
        (n, r) => n + (r.safety && 'report' in r.safety ? r.safety.report.flagged.length : 0),
        0,
      ),
    });
  }
  // What the branch now has that its parent has not (also after a failed file: what got in).
  const schemaDiff = withoutOwnSchema(
    await getSchemaDiff(d.agent, t.database, t.branch, (reason) =>
      d.log.warn('no schema diff', { delivery: job.id, branch: t.name, reason }),
    ),
  );

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
    // Every push PUTs the branch, which renews a pr-<n> branch's expiry (the agent's rule).
    expiry: {
      expiresAt: view.expiresAt,
      protected: view.protected,
      renewedMs: renewedSpan(view.branch, view.expiresAt, request),
    },
    migrations,
    schemaDiff,
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

/**
 * The folder is over a migration limit, or laid out in a way its tool refuses: said on the PR, and
 * nothing is created or applied.
 */
async function refuseMigrations(
  d: LifecycleDeps,
  job: Job,
  t: Target,
  { refused: reason, layout }: { refused: string; layout?: true },
): Promise<void> {
  d.log.warn('migrations refused', { delivery: job.id, branch: t.name, reason });
  const body = renderComment({
    state: 'refused',
    database: t.database,
    branch: t.branch,
    parent: t.settings.parent,
    showPassword: false,
    error: reason,
    ...(layout ? { refusedLayout: true } : {}),
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

/** The agent's limit for a seed (agent/engine/schema-only.ts). */
const MAX_SEED_BYTES = 1024 * 1024;

/** The seed file at the PR's head, held to the agent's size limit; a missing one is a clear error. */
async function fetchSeed(gh: Target['gh'], path: string, headSha: string): Promise<string> {
  let text: string;
  try {
    text = await gh.readFile(path, headSha);
  } catch (e) {
    const status = (e as { status?: number }).status;
    throw new Error(
      status === 404 ? `seed file ${path} is not in the pull request` : `seed file ${path}: ${(e as Error).message}`,
      { cause: e },
    );
  }
  const bytes = Buffer.byteLength(text);
  if (bytes > MAX_SEED_BYTES)
    throw new Error(`seed file ${path} is ${bytes} bytes; at most ${MAX_SEED_BYTES} are accepted`);
  return text;
}

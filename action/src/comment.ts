/**
 * The Action's GitHub REST calls: the repository's visibility (which decides whether the comment
 * may show the password) and the one sticky comment per pull request and database (found and
 * updated by shared/sticky-comment.ts).
 */
import type { getOctokit } from '@actions/github';
import { statusOf, tokenLogin, upsertStickyComment, type PullRequestRef } from '../../shared/sticky-comment.js';

export type Octokit = ReturnType<typeof getOctokit>;

export type CommentOutcome =
  | { result: 'created' | 'updated' | 'unchanged'; url: string }
  | { result: 'none' } // nothing to update (delete with no earlier comment)
  | { result: 'denied'; message: string }; // read-only token: a warning, not a failure

/**
 * Whether the repository is private (or internal). Asked every run rather than read from the
 * event: a re-run replays the old payload, and the repository may have gone public since.
 */
export async function repositoryIsPrivate(octokit: Octokit, owner: string, repo: string): Promise<boolean> {
  const { data } = await octokit.rest.repos.get({ owner, repo });
  return data.private === true;
}

/**
 * Creates the comment or updates the one found. With `createIfMissing: false` (a delete), only an
 * existing comment is updated. A 403 (the read-only GITHUB_TOKEN of a fork's pull request, or a
 * workflow without `pull-requests: write`) comes back as `denied`.
 */
export async function upsertComment(
  octokit: Octokit,
  pr: PullRequestRef,
  database: string,
  body: string,
  o: { createIfMissing: boolean },
): Promise<CommentOutcome> {
  try {
    // GITHUB_TOKEN cannot say who it is (null): it comments as github-actions[bot], so any bot's comment counts.
    const out = await upsertStickyComment(octokit, pr, database, body, {
      author: await tokenLogin(octokit),
      createIfMissing: o.createIfMissing,
    });
    return out.action === 'skipped' ? { result: 'none' } : { result: out.action, url: out.comment.htmlUrl };
  } catch (e) {
    if (statusOf(e) === 403) return { result: 'denied', message: (e as Error).message };
    throw e;
  }
}

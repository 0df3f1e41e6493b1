/**
 * Finds and creates-or-updates the sticky comment (see pr-comment.ts) through Octokit: the
 * Action's (@actions/github) and the receiver's (@octokit/rest) are the same Octokit underneath.
 *
 * Ours is the comment carrying the database's marker AND written by our own login: anyone can
 * paste the marker into a comment, and a first-page-only search would post a duplicate on a long
 * discussion, so every page (of 100) is searched. An update whose digest matches the comment's is
 * skipped: a replayed delivery or a re-run that changes nothing does not touch the pull request.
 */
import type { Octokit } from '@octokit/rest';
import { commentMarker, digestOf } from './pr-comment.js';

/** The part of an Octokit used here (a type only: @octokit/rest is not loaded by this module). */
export type CommentsOctokit = Pick<Octokit, 'paginate' | 'rest'>;

export interface PullRequestRef {
  owner: string;
  repo: string;
  number: number;
}

export interface StickyComment {
  id: number;
  body: string;
  htmlUrl: string;
}

export type StickyResult =
  { action: 'created' | 'updated' | 'unchanged'; comment: StickyComment } | { action: 'skipped' };

/** The HTTP status of an Octokit RequestError, or undefined. */
export function statusOf(e: unknown): number | undefined {
  const s = (e as { status?: unknown })?.status;
  return typeof s === 'number' ? s : undefined;
}

/**
 * The login a token writes comments as. A personal token can ask GET /user; GITHUB_TOKEN and
 * installation tokens get 403 there (they are no user): null, and then any bot's comment counts.
 */
export async function tokenLogin(octokit: CommentsOctokit): Promise<string | null> {
  try {
    return (await octokit.rest.users.getAuthenticated()).data.login;
  } catch (e) {
    const s = statusOf(e);
    if (s === 403 || s === 404) return null;
    throw e;
  }
}

/** `author`: our login, or null for "any bot" (see tokenLogin). */
export async function findStickyComment(
  octokit: CommentsOctokit,
  pr: PullRequestRef,
  database: string,
  author: string | null,
): Promise<StickyComment | null> {
  const marker = commentMarker(database);
  const pages = octokit.paginate.iterator(octokit.rest.issues.listComments, {
    owner: pr.owner,
    repo: pr.repo,
    issue_number: pr.number,
    per_page: 100,
  });
  for await (const page of pages) {
    for (const c of page.data) {
      const mine = author !== null ? c.user?.login === author : c.user?.type === 'Bot';
      if (mine && c.body?.includes(marker)) return { id: c.id, body: c.body, htmlUrl: c.html_url };
    }
  }
  return null;
}

/**
 * Creates the comment, or updates the one found unless its digest (or whole body) is the same.
 * With `createIfMissing: false` (a deleted branch), only an existing comment is updated. GitHub's
 * errors are thrown as Octokit's (with `.status`: a read-only token answers 403).
 */
export async function upsertStickyComment(
  octokit: CommentsOctokit,
  pr: PullRequestRef,
  database: string,
  body: string,
  o: { author: string | null; createIfMissing?: boolean },
): Promise<StickyResult> {
  const found = await findStickyComment(octokit, pr, database, o.author);
  if (!found) {
    if (o.createIfMissing === false) return { action: 'skipped' };
    const { data } = await octokit.rest.issues.createComment({
      owner: pr.owner,
      repo: pr.repo,
      issue_number: pr.number,
      body,
    });
    return { action: 'created', comment: { id: data.id, body: data.body ?? body, htmlUrl: data.html_url } };
  }
  const digest = digestOf(body);
  if (found.body === body || (digest !== null && digestOf(found.body) === digest))
    return { action: 'unchanged', comment: found };
  const { data } = await octokit.rest.issues.updateComment({
    owner: pr.owner,
    repo: pr.repo,
    comment_id: found.id,
    body,
  });
  return { action: 'updated', comment: { id: data.id, body: data.body ?? body, htmlUrl: data.html_url } };
}

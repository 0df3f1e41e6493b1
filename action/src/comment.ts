/**
 * The one sticky comment per pull request and database, and the repository's visibility (which
 * decides whether that comment may show the password). Every GitHub REST call of the action is here.
 */
import type { getOctokit } from '@actions/github';
import { marker } from './report.js';

export type Octokit = ReturnType<typeof getOctokit>;

export interface PullRequestRef {
  owner: string;
  repo: string;
  number: number;
}

export interface FoundComment {
  id: number;
  body: string;
  url: string;
}

export type CommentOutcome =
  | { result: 'created' | 'updated' | 'unchanged'; url: string }
  | { result: 'none' } // nothing to update (delete with no earlier comment)
  | { result: 'denied'; message: string }; // read-only token: a warning, not a failure

/** The HTTP status of an Octokit RequestError, or undefined. */
export function statusOf(e: unknown): number | undefined {
  const s = (e as { status?: unknown })?.status;
  return typeof s === 'number' ? s : undefined;
}

/**
 * Whether the repository is private (or internal). Asked every run rather than read from the
 * event: a re-run replays the old payload, and the repository may have gone public since.
 */
export async function repositoryIsPrivate(octokit: Octokit, owner: string, repo: string): Promise<boolean> {
  const { data } = await octokit.rest.repos.get({ owner, repo });
  return data.private === true;
}

/**
 * Who the token writes comments as. A personal token can ask GET /user; GITHUB_TOKEN and GitHub
 * App tokens get 403 there and comment as `<app>[bot]`, so null stands for "a bot account".
 */
async function tokenAuthor(octokit: Octokit): Promise<string | null> {
  try {
    return (await octokit.rest.users.getAuthenticated()).data.login;
  } catch (e) {
    const s = statusOf(e);
    if (s === 401 || s === 403 || s === 404) return null;
    throw e;
  }
}

/**
 * Our comment: the marker AND our author, searched through every page (a long discussion pushes
 * it past the first 100, and a first-page-only search would post a duplicate). The author check
 * keeps a human's quote of the marker from being taken over.
 */
export async function findComment(octokit: Octokit, pr: PullRequestRef, database: string): Promise<FoundComment | null> {
  const author = await tokenAuthor(octokit);
  const mark = marker(database);
  const pages = octokit.paginate.iterator(octokit.rest.issues.listComments, { owner: pr.owner, repo: pr.repo, issue_number: pr.number, per_page: 100 });
  for await (const page of pages) {
    for (const c of page.data) {
      const mine = author !== null ? c.user?.login === author : c.user?.type === 'Bot';
      if (mine && c.body?.includes(mark)) return { id: c.id, body: c.body, url: c.html_url };
    }
  }
  return null;
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
    const found = await findComment(octokit, pr, database);
    if (found && found.body === body) return { result: 'unchanged', url: found.url };
    if (found) {
      const { data } = await octokit.rest.issues.updateComment({ owner: pr.owner, repo: pr.repo, comment_id: found.id, body });
      return { result: 'updated', url: data.html_url };
    }
    if (!o.createIfMissing) return { result: 'none' };
    const { data } = await octokit.rest.issues.createComment({ owner: pr.owner, repo: pr.repo, issue_number: pr.number, body });
    return { result: 'created', url: data.html_url };
  } catch (e) {
    if (statusOf(e) === 403) return { result: 'denied', message: (e as Error).message };
    throw e;
  }
}

/**
 * Finds and upserts the sticky comment: ours is the one carrying the database's marker AND written
 * by our own login (anyone can paste the marker into a comment). An update whose digest matches
 * the comment's is skipped, so a replayed or repeated run does not touch the PR.
 */
import { commentMarker, digestOf } from './comment.js';
import type { IssueComment, RepoApi } from './github.js';

export async function findStickyComment(gh: RepoApi, number: number, database: string): Promise<IssueComment | null> {
  const [self, comments] = await Promise.all([gh.selfLogin(), gh.listComments(number)]);
  const marker = commentMarker(database);
  const mine = (c: IssueComment) => (self !== null ? c.login === self : c.userType === 'Bot');
  return comments.find((c) => mine(c) && c.body.includes(marker)) ?? null;
}

export interface UpsertResult {
  comment: IssueComment | null;
  action: 'created' | 'updated' | 'unchanged' | 'skipped';
}

/** `onlyUpdate`: do not create a comment (a closed PR whose branch never got one). */
export async function upsertStickyComment(gh: RepoApi, number: number, database: string, body: string, opts: { onlyUpdate?: boolean } = {}): Promise<UpsertResult> {
  const existing = await findStickyComment(gh, number, database);
  if (!existing) {
    if (opts.onlyUpdate) return { comment: null, action: 'skipped' };
    return { comment: await gh.createComment(number, body), action: 'created' };
  }
  const digest = digestOf(body);
  if (digest !== null && digestOf(existing.body) === digest) return { comment: existing, action: 'unchanged' };
  return { comment: await gh.updateComment(existing.id, body), action: 'updated' };
}

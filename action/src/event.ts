import type { EventInfo } from './inputs.js';

/** The part of @actions/github's `context` this action reads (a structural type: no deep import). */
export interface GitHubContext {
  eventName: string;
  payload: Record<string, unknown>;
  repo: { owner: string; repo: string };
}

interface RepoRef {
  full_name?: unknown;
}

/** Reads the pull request (if any) and the repository from the event that started the run. */
export function eventInfo(ctx: GitHubContext): EventInfo {
  const p = ctx.payload as {
    action?: unknown;
    pull_request?: { number?: unknown; head?: { repo?: RepoRef | null } };
    issue?: { number?: unknown; pull_request?: unknown };
    repository?: RepoRef;
  };
  let pullRequest: number | null = null;
  if (typeof p.pull_request?.number === 'number') pullRequest = p.pull_request.number;
  else if (p.issue?.pull_request && typeof p.issue.number === 'number') pullRequest = p.issue.number;

  // A deleted fork has head.repo null: still a fork.
  const head = p.pull_request?.head?.repo;
  const fromFork = p.pull_request !== undefined && (head == null || head.full_name !== p.repository?.full_name);

  const { owner, repo } = ctx.repo;
  return {
    name: ctx.eventName,
    action: typeof p.action === 'string' ? p.action : '',
    pullRequest,
    fromFork,
    owner,
    repo,
  };
}

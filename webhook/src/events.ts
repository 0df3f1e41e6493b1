/**
 * From a verified delivery to the job it asks for, or the reason it asks for none. Pure: the
 * payload is validated here (zod, only the fields used) and reduced to a `Job`; nothing else of it
 * is kept or logged.
 */
import { z } from 'zod';
import type { EmitterWebhookEvent } from '@octokit/webhooks';
import { repoSettings, type WebhookConfig } from './config.js';
import type { Job, JobKind } from './store.js';

/** The pull_request actions that do work; the others (labeled, edited, ...) are acknowledged. */
export const ACTIONS: Record<string, JobKind> = {
  opened: 'open',
  reopened: 'open',
  synchronize: 'push',
  closed: 'close',
};

const Repo = z.object({ full_name: z.string(), name: z.string(), owner: z.object({ login: z.string() }) });

/** The fields of GitHub's pull_request payload the receiver reads (the webhooks types say what they are). */
const PullRequestDelivery = z.object({
  action: z.string(),
  number: z.number().int().positive(),
  pull_request: z.object({
    head: z.object({
      sha: z.string().regex(/^[0-9a-f]{40,64}$/),
      repo: z.object({ full_name: z.string() }).nullable(),
    }),
  }),
  repository: Repo,
  installation: z.object({ id: z.number().int() }).nullish(),
});

// Keep the schema honest against @octokit/webhooks' own payload type.
type Payload = EmitterWebhookEvent<'pull_request'>['payload'];
const typed: (p: Payload) => z.input<typeof PullRequestDelivery> = (p) => p;
void typed;

/** The work, without what the server adds: its place in the queue and the digest of the body. */
export type Routed = { work: Omit<Job, 'seq' | 'digest'> } | { ignored: string };

export function routeDelivery(
  cfg: WebhookConfig,
  id: string,
  event: string,
  payload: unknown,
  now = new Date(),
): Routed {
  if (event !== 'pull_request') return { ignored: `event ${event}` };
  const p = PullRequestDelivery.safeParse(payload);
  if (!p.success) return { ignored: 'not a pull_request payload this receiver understands' };
  const d = p.data;
  const settings = repoSettings(cfg, d.repository.full_name);
  if (!settings) return { ignored: 'repository not configured' };
  const kind = Object.hasOwn(ACTIONS, d.action) ? ACTIONS[d.action] : undefined;
  if (!kind) return { ignored: `action ${d.action}` };
  const fromFork = d.pull_request.head.repo?.full_name.toLowerCase() !== d.repository.full_name.toLowerCase();
  // Closing is always fine (it only deletes); creating runs the fork's SQL as superuser.
  if (fromFork && !settings.forks && kind !== 'close')
    return { ignored: 'pull request from a fork (set forks: true to allow)' };
  return {
    work: {
      id,
      key: `${d.repository.full_name}#${d.number}`.toLowerCase(),
      kind,
      action: d.action,
      owner: d.repository.owner.login,
      repo: d.repository.name,
      number: d.number,
      headSha: d.pull_request.head.sha,
      installationId: d.installation?.id ?? null,
      receivedAt: now.toISOString(),
      attempts: 0,
      notBefore: 0,
      lastError: null,
      startedAt: null,
    },
  };
}

/**
 * The receiver's test fixtures that need no stack: temporary folders, real payloads from
 * @octokit/webhooks-examples rewritten to a test repository and signed as GitHub signs them, the
 * receiver's config, the journal's queued ids, and waiting for a condition. Unit tests import this;
 * the stack tests get it through helpers.ts.
 */
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseWebhookConfig, type WebhookConfig } from '../src/config.js';

const tempDirs: string[] = [];
process.on('exit', () => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

/** A temporary folder removed when the test process exits. */
export function tempDir(prefix = 'bpg-webhook-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(d);
  return d;
}

export function uniqueName(prefix: string): string {
  return `${prefix}${randomBytes(3).toString('hex')}`;
}

export const sha = (): string => randomBytes(20).toString('hex');

// ---------------------------------------------------------------- payloads

type Json = any; // the examples are plain JSON; rewritten field by field below

const require = createRequire(import.meta.url);
const examples: { name: string; examples: Json[] }[] = JSON.parse(
  readFileSync(require.resolve('@octokit/webhooks-examples'), 'utf8'),
);

/** A real example delivery of `event`/`action` from GitHub's docs (deep copy). */
export function example(event: string, action?: string): Json {
  const list = examples.find((e) => e.name === event)?.examples ?? [];
  const found = action === undefined ? list[0] : list.find((e) => e.action === action);
  if (!found) throw new Error(`no example for ${event}.${action}`);
  return structuredClone(found);
}

/** A real pull_request payload rewritten to `owner/name`, PR `number`, head commit `headSha`. */
export function prPayload(
  action: 'opened' | 'reopened' | 'synchronize' | 'closed',
  repo: string,
  number: number,
  headSha: string,
  o: { private?: boolean; fork?: string } = {},
): Json {
  const p = example('pull_request', action);
  const [owner, name] = repo.split('/') as [string, string];
  const rewriteRepo = (r: Json, full = repo) => {
    if (!r) return;
    const [o2, n2] = full.split('/');
    r.full_name = full;
    r.name = n2;
    r.owner.login = o2;
    r.private = o.private ?? false;
    r.html_url = `https://github.example/${full}`;
  };
  p.number = number;
  p.pull_request.number = number;
  p.pull_request.head.sha = headSha;
  rewriteRepo(p.pull_request.head.repo, o.fork ?? repo);
  rewriteRepo(p.pull_request.base.repo);
  rewriteRepo(p.repository);
  p.repository.owner.login = owner;
  p.repository.name = name;
  delete p.installation; // a token, not an App, signs the receiver's calls in these tests
  return p;
}

export function sign(secret: string, body: string): string {
  return 'sha256=' + createHmac('sha256', secret).update(body).digest('hex');
}

export interface Reply {
  status: number;
  body: any;
  ms: number;
}

/** POSTs a delivery as GitHub does (its headers, its signature over the exact bytes). */
export async function deliver(
  url: string,
  secret: string,
  event: string,
  payload: unknown,
  o: { id?: string; signature?: string | null; raw?: string } = {},
): Promise<Reply & { id: string }> {
  const body = o.raw ?? JSON.stringify(payload);
  const id = o.id ?? randomUUID();
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': 'GitHub-Hookshot/test',
    'x-github-event': event,
    'x-github-delivery': id,
    'x-github-hook-id': '1',
  };
  const signature = o.signature === undefined ? sign(secret, body) : o.signature;
  if (signature !== null) headers['x-hub-signature-256'] = signature;
  const t0 = performance.now();
  const res = await fetch(url, { method: 'POST', headers, body });
  const text = await res.text();
  return { id, status: res.status, body: text ? JSON.parse(text) : undefined, ms: performance.now() - t0 };
}

// ---------------------------------------------------------------- receiver config

export interface ReceiverSetup {
  secret: string;
  githubToken: string;
  stateDir: string;
  raw: Record<string, unknown>;
}

/** The receiver's config as YAML would give it (`raw`), and parsed. */
export async function receiverConfig(o: {
  githubUrl: string;
  githubToken: string;
  agentUrl: string;
  agentToken: string;
  repos: Record<string, unknown>;
  queue?: Record<string, unknown>;
  stateDir?: string;
}): Promise<{ raw: Record<string, unknown>; cfg: WebhookConfig; secret: string; stateDir: string }> {
  const secret = randomBytes(20).toString('hex');
  const stateDir = o.stateDir ?? tempDir();
  const raw = {
    listen: '127.0.0.1:0',
    secret,
    github: { token: o.githubToken, apiUrl: o.githubUrl },
    agent: { url: o.agentUrl, token: o.agentToken },
    stateDir,
    queue: { concurrency: 3, attempts: 4, backoffSeconds: 0.2, maxBackoffSeconds: 2, ...o.queue },
    repos: o.repos,
  };
  return { raw, cfg: await parseWebhookConfig(raw, 'test', {}), secret, stateDir };
}

/** Polls until `check` returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 60_000,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const MIGRATION_001 = `CREATE TABLE accounts (
  id bigserial PRIMARY KEY,
  email text NOT NULL UNIQUE
);
INSERT INTO accounts (email) VALUES ('a@example.com'), ('b@example.com');
`;
export const MIGRATION_002 = `ALTER TABLE accounts ADD COLUMN name text;
CREATE TABLE orders (id bigserial PRIMARY KEY, account_id bigint REFERENCES accounts (id));
`;
export const MIGRATION_003_BAD = `CREATE TABLE invoices (id bigserial PRIMARY KEY);
INSERT INTO invoices DEFAULT VALUES;
SELEC 1;
`;
export const MIGRATION_003 = `CREATE TABLE invoices (id bigserial PRIMARY KEY, order_id bigint REFERENCES orders (id));
`;

/** Ids the receiver's journal still holds as queued (read-only replay of <stateDir>/queue.jsonl). */
export function queuedIds(stateDir: string): string[] {
  let text: string;
  try {
    text = readFileSync(join(stateDir, 'queue.jsonl'), 'utf8');
  } catch {
    return [];
  }
  const queued = new Set<string>();
  for (const line of text.split('\n')) {
    try {
      const r = JSON.parse(line) as { job?: { id: string }; done?: string };
      if (r.job) queued.add(r.job.id);
      if (r.done) queued.delete(r.done);
    } catch {
      // torn or empty
    }
  }
  return [...queued];
}

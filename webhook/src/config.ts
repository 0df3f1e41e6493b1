/**
 * The receiver's configuration: one YAML file (`--config`, or BPG_WEBHOOK_CONFIG), validated with
 * zod once at start-up; everything else gets the parsed `WebhookConfig` and trusts it.
 * Secrets may come from the environment instead of the file, so the file can be readable by more
 * people than the secrets are.
 */
import { readFile } from 'node:fs/promises';
import YAML from 'yaml';
import { z } from 'zod';
import { parseSize } from '../../agent/config.js';
import { BranchPart, DatabaseName } from '../../agent/name-schemas.js';
import { parseShowPassword, SHOW_PASSWORD_CHOICES } from '../../shared/pr-comment.js';
import { commonBranchName } from './branch-templates.js';
import { DEFAULT_FOLDERS, MIGRATION_FORMATS } from './migration-layouts.js';

export const DEFAULT_WEBHOOK_CONFIG = '/etc/betterpg/webhook.yaml';

/** Environment variables that override (or stand in for) keys of the file. */
export const ENV = {
  config: 'BPG_WEBHOOK_CONFIG',
  secret: 'BPG_WEBHOOK_SECRET',
  githubToken: 'BPG_WEBHOOK_GITHUB_TOKEN',
  privateKey: 'BPG_WEBHOOK_PRIVATE_KEY',
  agentToken: 'BPG_WEBHOOK_AGENT_TOKEN',
} as const;

const Listen = z.string().regex(/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must look like 127.0.0.1:7433');

/** `{number}` is the pull request number; the result must be a valid branch name. */
const BranchTemplate = z
  .string()
  .refine((t) => t.includes('{number}'), 'must contain {number}, or two pull requests would share a branch')
  .refine(
    (t) => BranchPart.safeParse(t.replaceAll('{number}', '99999')).success,
    "must give a valid branch name (letters, digits, '_' and '-')",
  );

/**
 * `auto` (only in private repositories), `always` or `never`: the Action's vocabulary too
 * (shared/pr-comment.ts). The older `true`/`false`, quoted or as YAML booleans, still work.
 */
const ShowPassword = z.unknown().transform((v, ctx) => {
  const rule = parseShowPassword(v);
  if (rule !== null) return rule;
  ctx.addIssue({ code: 'custom', message: `must be one of ${SHOW_PASSWORD_CHOICES}` });
  return z.NEVER;
});

/** Bytes, or with a unit as the agent's config writes them: 512k, 1m, 16MiB. */
const Size = z.union([z.number().int().positive(), z.string()]).transform((v, ctx) => {
  try {
    const n = parseSize(v);
    if (n > 0) return n;
    ctx.addIssue({ code: 'custom', message: 'must be above 0' });
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
  }
  return z.NEVER;
});

/** GitHub's contents API serves files up to 100 MB. */
const MAX_SIZE = 100 * 1024 * 1024;

const RepoName = z.string().regex(/^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/, "must be 'owner/name'");

const RepoSettings = z
  .object({
    /** The agent database the repository's pull requests branch from. It must exist on the agent. */
    database: DatabaseName,
    /** Branch of `database` each PR branch is taken from. */
    parent: BranchPart.default('main'),
    branchName: BranchTemplate.default('pr-{number}'),
    /** Crash-consistent branches (`PUT {fast: true}`): faster, see the agent's README. */
    fast: z.boolean().default(false),
    /**
     * `schema-only`: each PR branch gets the parent's structure and none of its rows (a fresh
     * cluster, no copy of the parent's data): for public repositories. `full`: a clone of the parent.
     */
    data: z.enum(['full', 'schema-only'], { error: "must be 'full' or 'schema-only'" }).default('full'),
    /** SQL file in the repository (at the PR's head) the agent runs after the structure, on create and reset; schema-only only. */
    seed: z
      .string()
      .transform((p) => p.replace(/^\/+/, ''))
      .refine(
        (p) => p !== '' && !p.endsWith('/') && !p.split('/').some((s) => s === '..' || s === '.' || s === ''),
        'must be a file inside the repository, e.g. db/seed.sql',
      )
      .optional(),
    migrations: z
      .object({
        /**
         * The layout (migration-layouts.ts): which files of the folder run, in which order, and what of
         * each. Unset: detected from the folder at the pull request's head commit.
         */
        format: z.enum(MIGRATION_FORMATS, { error: `must be one of ${MIGRATION_FORMATS.join(', ')}` }).optional(),
        /**
         * Folder in the repository that holds the migrations. Unset: the format's own folder
         * (prisma/migrations, ...), and with no format either, no migrations.
         */
        path: z
          .string()
          .transform((p) => p.replace(/^\/+|\/+$/g, ''))
          .refine(
            (p) => p !== '' && !p.split('/').some((s) => s === '..' || s === '.' || s === ''),
            'must be a folder inside the repository, e.g. db/migrations',
          )
          .optional(),
        /**
         * Per file, measured by the receiver (not a server setting the file could change): a file still
         * running then is stopped, its backend ended, and the file rolled back.
         */
        timeoutSeconds: z.number().int().positive().max(86_400).default(600),
        /** `.sql` files in the folder; with more, none is applied. */
        maxFiles: z.number().int().min(1).max(1000).default(500),
        /** Size of one file; a bigger one, and none is applied. */
        maxFileSize: Size.refine((n) => n <= MAX_SIZE, 'must be at most 100m (GitHub serves no bigger file)').default(
          1024 * 1024,
        ),
        /** All files together; more, and none is applied. */
        maxTotalSize: Size.default(16 * 1024 * 1024),
      })
      .strict()
      .transform((m, ctx) => {
        if (m.path !== undefined || m.format === undefined) return m;
        const path = DEFAULT_FOLDERS[m.format];
        if (path !== undefined) return { ...m, path };
        ctx.addIssue({
          code: 'custom',
          path: ['path'],
          message: `required with format ${m.format} (it has no standard folder), e.g. db/migrations`,
        });
        return z.NEVER;
      })
      .prefault({}),
    /** On a push: reset the branch to its parent and apply every migration again (default: only new files). */
    resetOnPush: z.boolean().default(false),
    showPassword: ShowPassword.default('auto'),
    /** Pull requests from forks run SQL from outside the repository as the branch's superuser: off unless set. */
    forks: z.boolean().default(false),
  })
  .strict()
  .superRefine((r, ctx) => {
    if (r.seed !== undefined && r.data !== 'schema-only')
      ctx.addIssue({ code: 'custom', path: ['seed'], message: 'needs data: schema-only' });
    if (r.data === 'schema-only' && r.fast)
      ctx.addIssue({
        code: 'custom',
        path: ['fast'],
        message: 'does not go with data: schema-only (no data is copied)',
      });
  });
export type RepoSettings = z.output<typeof RepoSettings>;

export const WebhookConfigSchema = z
  .object({
    listen: Listen.default('127.0.0.1:7433'),
    path: z
      .string()
      .regex(/^\/[A-Za-z0-9/_.-]*$/, 'must be a URL path such as /webhook')
      .default('/webhook'),
    /** The GitHub App's (or repository webhook's) secret; or BPG_WEBHOOK_SECRET. */
    secret: z.string().optional(),
    github: z
      .object({
        /** A token with the App's permissions (PAT or fine-grained); or BPG_WEBHOOK_GITHUB_TOKEN. */
        token: z.string().optional(),
        appId: z
          .union([z.number().int().positive(), z.string().regex(/^\d+$/)])
          .transform(Number)
          .optional(),
        /** PEM text; or `privateKeyPath`; or BPG_WEBHOOK_PRIVATE_KEY. */
        privateKey: z.string().optional(),
        privateKeyPath: z.string().optional(),
        /** REST API root: https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server. */
        apiUrl: z.url({ protocol: /^https?$/ }).default('https://api.github.com'),
      })
      .strict()
      .prefault({}),
    agent: z
      .object({
        url: z.url({ protocol: /^https?$/ }).default('http://127.0.0.1:7432'),
        /** One of the agent's api.tokens; or BPG_WEBHOOK_AGENT_TOKEN. */
        token: z.string().optional(),
        /** PEM file of the CA that signed the agent's api.tls certificate (self-signed or private). */
        caFile: z.string().startsWith('/', 'must be an absolute path').optional(),
      })
      .strict()
      .prefault({}),
    /** Queue and seen deliveries. */
    stateDir: z.string().startsWith('/', 'must be an absolute path').default('/var/lib/betterpg-webhook'),
    queue: z
      .object({
        /** Pull requests worked on at once (one PR's deliveries always run one after another). */
        concurrency: z.number().int().min(1).max(64).default(4),
        /**
         * Tries per delivery, then the failure is reported on the PR. A try is counted on disk before it
         * starts, so one the receiver did not survive (a crash, a kill) counts too: a delivery that
         * brings the receiver down is given up after this many starts.
         */
        attempts: z.number().int().min(1).max(100).default(8),
        /** First pause before a retry, doubled each time up to `maxBackoffSeconds`. */
        backoffSeconds: z.number().positive().default(2),
        maxBackoffSeconds: z.number().positive().default(300),
      })
      .strict()
      .prefault({}),
    /** `owner/name` -> settings. Deliveries for other repositories are acknowledged and ignored. */
    repos: z.record(RepoName, RepoSettings).default({}),
  })
  .strict();

export type GitHubAuth = { kind: 'token'; token: string } | { kind: 'app'; appId: number; privateKey: string };

export interface WebhookConfig {
  listen: string;
  path: string;
  secret: string;
  github: { auth: GitHubAuth; apiUrl: string };
  /** `ca`: PEM text read from agent.caFile, trusted besides the system's CAs. */
  agent: { url: string; token: string; ca?: string };
  stateDir: string;
  queue: { concurrency: number; attempts: number; backoffMs: number; maxBackoffMs: number };
  /** Keys are lowercased `owner/name`: GitHub names are case-insensitive. */
  repos: Record<string, RepoSettings>;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** The settings for a repository, or undefined when it is not configured. */
export function repoSettings(cfg: WebhookConfig, fullName: string): RepoSettings | undefined {
  const key = fullName.toLowerCase();
  // Own keys only: a payload naming `constructor` or `__proto__` must not find Object's members.
  return Object.hasOwn(cfg.repos, key) ? cfg.repos[key] : undefined;
}

export function branchNameFor(settings: RepoSettings, number: number): string {
  return settings.branchName.replaceAll('{number}', String(number));
}

/**
 * Validates a parsed YAML document and fills secrets from `env`. `readKey` reads `privateKeyPath`
 * and `agent.caFile` (a parameter so that this stays free of I/O for its tests).
 */
export async function parseWebhookConfig(
  raw: unknown,
  where: string,
  env: NodeJS.ProcessEnv = process.env,
  readKey: (p: string) => Promise<string> = (p) => readFile(p, 'utf8'),
): Promise<WebhookConfig> {
  const r = WebhookConfigSchema.safeParse(raw ?? {});
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const key = issue.path.length ? issue.path.join('.') : '(top level)';
    // zod reports a bad record key without the key's own message.
    const message = issue.code === 'invalid_key' ? "must be 'owner/name'" : issue.message;
    throw new ConfigError(`invalid config ${where}: ${key}: ${message}`);
  }
  const c = r.data;
  const fail = (msg: string): never => {
    throw new ConfigError(`invalid config ${where}: ${msg}`);
  };

  const secret =
    env[ENV.secret] ||
    c.secret ||
    fail(`secret: missing (set it, or ${ENV.secret}); deliveries cannot be verified without it`);
  if (secret.length < 16) fail('secret: must be at least 16 characters');

  const token = env[ENV.githubToken] || c.github.token;
  let auth: GitHubAuth;
  if (c.github.appId !== undefined) {
    if (token) fail('github: give either token or appId + privateKey, not both');
    let key = env[ENV.privateKey] || c.github.privateKey;
    if (!key && c.github.privateKeyPath) {
      try {
        key = await readKey(c.github.privateKeyPath);
      } catch (e) {
        fail(`github.privateKeyPath: cannot read ${c.github.privateKeyPath}: ${(e as Error).message}`);
      }
    }
    // A PEM in one environment line usually comes with literal \n for its line breaks.
    if (key && !key.includes('\n') && key.includes('\\n')) key = key.replaceAll('\\n', '\n');
    if (!key || !key.includes('PRIVATE KEY'))
      fail(`github.privateKey: missing or not a PEM key (set privateKey, privateKeyPath or ${ENV.privateKey})`);
    auth = { kind: 'app', appId: c.github.appId, privateKey: key! };
  } else if (token) {
    auth = { kind: 'token', token };
  } else {
    return fail(`github: set token (or ${ENV.githubToken}), or appId + privateKey for a GitHub App`);
  }

  const agentToken =
    env[ENV.agentToken] ||
    c.agent.token ||
    fail(`agent.token: missing (one of the agent's api.tokens, or ${ENV.agentToken})`);
  let agentCa: string | undefined;
  if (c.agent.caFile) {
    try {
      agentCa = await readKey(c.agent.caFile);
    } catch (e) {
      fail(`agent.caFile: cannot read ${c.agent.caFile}: ${(e as Error).message}`);
    }
    if (!agentCa?.includes('-----BEGIN CERTIFICATE-----'))
      fail(`agent.caFile: ${c.agent.caFile} is not a PEM certificate`);
  }

  const repos: Record<string, RepoSettings> = {};
  const names: Record<string, string> = {};
  for (const [name, settings] of Object.entries(c.repos)) {
    const k = name.toLowerCase();
    if (repos[k]) fail(`repos: '${name}' is listed twice`);
    // Two repositories whose pull requests could get one branch would reset and delete each other's.
    for (const [otherKey, other] of Object.entries(repos)) {
      if (other.database !== settings.database) continue;
      const shared = commonBranchName(other.branchName, settings.branchName);
      if (shared !== null) {
        const how =
          other.branchName === settings.branchName
            ? `the same branchName '${settings.branchName}'`
            : `branchName '${other.branchName}' and '${settings.branchName}'`;
        fail(
          `repos: '${names[otherKey]}' and '${name}' both use database '${settings.database}' with ${how}: both would make branch '${shared}'; give one of them another branchName`,
        );
      }
    }
    repos[k] = settings;
    names[k] = name;
  }

  return {
    listen: c.listen,
    path: c.path,
    secret,
    github: { auth, apiUrl: c.github.apiUrl.replace(/\/+$/, '') },
    agent: { url: c.agent.url, token: agentToken, ...(agentCa ? { ca: agentCa } : {}) },
    stateDir: c.stateDir,
    queue: {
      concurrency: c.queue.concurrency,
      attempts: c.queue.attempts,
      backoffMs: Math.round(c.queue.backoffSeconds * 1000),
      maxBackoffMs: Math.round(c.queue.maxBackoffSeconds * 1000),
    },
    repos,
  };
}

export async function loadWebhookConfig(path: string, env: NodeJS.ProcessEnv = process.env): Promise<WebhookConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(
      code === 'ENOENT'
        ? `no config file at ${path} (use --config or ${ENV.config})`
        : `cannot read ${path}: ${(e as Error).message}`,
    );
  }
  let raw: unknown;
  try {
    raw = YAML.parse(text);
  } catch (e) {
    throw new ConfigError(`invalid config ${path}: not YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  return parseWebhookConfig(raw, path, env);
}

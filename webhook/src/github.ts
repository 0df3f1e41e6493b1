/**
 * The few GitHub REST calls the receiver makes, behind one small interface so the lifecycle does
 * not care whether a token or a GitHub App installation signs them. Octokit does the HTTP; each
 * request gets a timeout here, and failures keep Octokit's `.status` for `isTransientGitHubError`.
 */
import { createAppAuth } from '@octokit/auth-app';
import { Octokit } from '@octokit/rest';
import type { Logger } from '../../agent/log.js';
import { tokenLogin, upsertStickyComment, type StickyResult } from '../../shared/sticky-comment.js';
import type { GitHubAuth } from './config.js';

export interface RepoRef {
  owner: string;
  repo: string;
}

export type CommitState = 'pending' | 'success' | 'failure' | 'error';

export interface DirEntry {
  name: string;
  path: string;
  type: string;
  /** Bytes, for files (GitHub's listing says; 0 for folders). */
  size?: number;
}

/** What the lifecycle needs from GitHub for one repository. */
export interface RepoApi {
  /**
   * The login comments are posted as (`<app-slug>[bot]` for an App): sticky comments must be ours.
   * Null when the token cannot say who it is (an installation token passed as `token`): then any
   * bot's comment counts.
   */
  selfLogin(): Promise<string | null>;
  isPrivate(): Promise<boolean>;
  setStatus(sha: string, state: CommitState, description: string, targetUrl?: string): Promise<void>;
  /**
   * Creates or updates our sticky comment for `database` on the pull request (shared/sticky-comment.ts:
   * found by marker and our login through every page, left alone when its digest is the same).
   * `createIfMissing: false`: only an existing one is updated.
   */
  upsertComment(
    number: number,
    database: string,
    body: string,
    o?: { createIfMissing?: boolean },
  ): Promise<StickyResult>;
  /** The folder's entries at `ref`, or null when there is no such folder. */
  listDir(path: string, ref: string): Promise<DirEntry[] | null>;
  readFile(path: string, ref: string): Promise<string>;
}

/** Per request; GitHub answers in well under a second, a hung connection must not hold a PR's queue. */
const REQUEST_TIMEOUT_MS = 30_000;
/** The status API cuts descriptions at 140 characters. */
const MAX_DESCRIPTION = 140;

export class GitHub {
  private readonly byInstallation = new Map<string, Octokit>();
  private readonly logins = new Map<string, Promise<string | null>>();

  constructor(
    private readonly auth: GitHubAuth,
    private readonly apiUrl: string,
    private readonly log: Logger,
  ) {}

  /** The API for one repository; `installationId` comes from the delivery when an App is used. */
  forRepo(ref: RepoRef, installationId: number | null): RepoApi {
    const octokitP = this.octokit(ref, installationId);
    const key = this.auth.kind === 'token' ? 'token' : 'app';
    const withKit = async <T>(f: (o: Octokit) => Promise<T>): Promise<T> => f(await octokitP);
    const api: RepoApi = {
      selfLogin: () => {
        let p: Promise<string | null> | undefined = this.logins.get(key);
        if (!p) {
          p = withKit(async (o) => {
            if (this.auth.kind === 'token') return tokenLogin(o);
            // An installation token cannot call /user; @octokit/auth-app signs /app with the App's JWT.
            const app = (await o.rest.apps.getAuthenticated()).data;
            return `${app?.slug ?? ''}[bot]`;
          });
          p.catch(() => this.logins.delete(key)); // retried by the next job
          this.logins.set(key, p);
        }
        return p;
      },
      isPrivate: () => withKit(async (o) => (await o.rest.repos.get({ ...ref })).data.private),
      setStatus: (sha, state, description, targetUrl) =>
        withKit(async (o) => {
          await o.rest.repos.createCommitStatus({
            ...ref,
            sha,
            state,
            context: STATUS_CONTEXT,
            description:
              description.length > MAX_DESCRIPTION ? description.slice(0, MAX_DESCRIPTION - 1) + '…' : description,
            ...(targetUrl ? { target_url: targetUrl } : {}),
          });
        }),
      upsertComment: async (number, database, body, o = {}) => {
        const author = await api.selfLogin();
        return withKit((kit) => upsertStickyComment(kit, { ...ref, number }, database, body, { author, ...o }));
      },
      listDir: (path, reqRef) =>
        withKit(async (o) => {
          try {
            const { data } = await o.rest.repos.getContent({ ...ref, path, ref: reqRef });
            if (!Array.isArray(data)) return null; // a file where a folder was expected
            return data.map((e) => ({
              name: e.name,
              path: e.path,
              type: e.type,
              ...(typeof e.size === 'number' ? { size: e.size } : {}),
            }));
          } catch (e) {
            if ((e as { status?: number }).status === 404) return null;
            throw e;
          }
        }),
      readFile: (path, reqRef) =>
        withKit(async (o) => {
          const { data } = await o.rest.repos.getContent({ ...ref, path, ref: reqRef });
          if (Array.isArray(data) || data.type !== 'file') throw new Error(`${path} is not a file`);
          if (data.encoding === 'base64' && typeof data.content === 'string')
            return Buffer.from(data.content, 'base64').toString('utf8');
          // Over 1 MB the contents API leaves `content` empty: ask for the raw bytes instead.
          const raw = await o.request('GET /repos/{owner}/{repo}/contents/{path}', {
            ...ref,
            path,
            ref: reqRef,
            mediaType: { format: 'raw' },
          });
          return String(raw.data);
        }),
    };
    return api;
  }

  private async octokit(ref: RepoRef, installationId: number | null): Promise<Octokit> {
    const auth = this.auth;
    if (auth.kind === 'token') return this.cached('token', () => this.make({ auth: auth.token }));
    const { appId, privateKey } = auth;
    let id = installationId;
    if (id === null) {
      // Deliveries to an App carry their installation; look it up only if one did not.
      const app = this.cached('app', () => this.make({ authStrategy: createAppAuth, auth: { appId, privateKey } }));
      id = (await app.rest.apps.getRepoInstallation({ ...ref })).data.id;
    }
    // Installation tokens last an hour; auth-app caches and renews them.
    return this.cached(`installation-${id}`, () =>
      this.make({ authStrategy: createAppAuth, auth: { appId, privateKey, installationId: id } }),
    );
  }

  private cached(key: string, make: () => Octokit): Octokit {
    let o = this.byInstallation.get(key);
    if (!o) {
      o = make();
      this.byInstallation.set(key, o);
    }
    return o;
  }

  private make(opts: ConstructorParameters<typeof Octokit>[0]): Octokit {
    const log = this.log;
    return new Octokit({
      ...opts,
      baseUrl: this.apiUrl,
      userAgent: 'betterpg-webhook',
      log: {
        debug: () => {},
        info: () => {},
        warn: (m: string) => log.warn(`github: ${m}`),
        error: (m: string) => log.warn(`github: ${m}`),
      },
      request: {
        fetch: (url: string | URL, init?: RequestInit) =>
          globalThis.fetch(url, { ...init, signal: init?.signal ?? AbortSignal.timeout(REQUEST_TIMEOUT_MS) }),
      },
    });
  }
}

export const STATUS_CONTEXT = 'betterpg/database';

/**
 * Worth retrying: no answer, 5xx, 429, and 403 for rate limits. Other 4xx (404 gone, 422 unknown
 * commit, 403 "Resource not accessible by integration") will not change by waiting.
 */
export function isTransientGitHubError(err: unknown): boolean {
  const e = err as { status?: unknown; response?: { headers?: Record<string, string | undefined> }; message?: string };
  if (typeof e?.status !== 'number') return true; // network error or timeout
  if (e.status >= 500 || e.status === 429 || e.status === 408) return true;
  if (e.status === 403) {
    const h = e.response?.headers ?? {};
    return h['x-ratelimit-remaining'] === '0' || h['retry-after'] !== undefined || /rate limit/i.test(e.message ?? '');
  }
  return false;
}

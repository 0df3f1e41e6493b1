/**
 * One local fake of the GitHub REST endpoints the Action and the receiver call, for every test that
 * needs GitHub: an in-process HTTP server answering with GitHub's status codes, error bodies and
 * `Link` pagination (next links name the repository by id, /repositories/{id}/..., as GitHub's do).
 *
 *   GET  /user                                the token's user; 403 for GITHUB_TOKEN and installation tokens
 *   GET  /repos/{o}/{r}                       `private`
 *   GET  /repos/{o}/{r}/issues/{n}/comments   paginated (per_page up to 100)
 *   POST /repos/{o}/{r}/issues/{n}/comments   written as the token's user
 *   PATCH /repos/{o}/{r}/issues/comments/{id} only the author may edit
 *   POST /repos/{o}/{r}/statuses/{sha}
 *   GET  /repos/{o}/{r}/contents/{path}?ref=  folders (the root too) and base64 files at a commit (raw on request)
 *   GitHub App routes (/app, installation tokens, /repos/{o}/{r}/installation) with a real JWT check
 *
 * Every answered request is recorded; faults (a status, or a held request) can be injected per route;
 * `readOnly` makes every write answer 403 "Resource not accessible by integration", as a fork's
 * pull request's GITHUB_TOKEN does.
 */
import { createVerify } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface User {
  login: string;
  id: number;
  type: 'User' | 'Bot';
}

/** What GITHUB_TOKEN writes as (its GET /user answers 403). */
export const ACTIONS_BOT: User = { login: 'github-actions[bot]', id: 41898282, type: 'Bot' };
/** A GitHub App's bot, or a token that can say who it is (the receiver's tests). */
export const APP_BOT: User = { login: 'betterpg-test[bot]', id: 1, type: 'Bot' };
export const BOT_LOGIN = APP_BOT.login;

export interface FakeComment {
  id: number;
  node_id: string;
  url: string;
  html_url: string;
  issue_url: string;
  user: User & { node_id: string; url: string; html_url: string; site_admin: boolean };
  created_at: string;
  updated_at: string;
  author_association: string;
  body: string;
}

export interface FakeStatus {
  sha: string;
  state: string;
  description: string;
  context: string;
  target_url: string | null;
  /** When it was received (ms since the epoch). */
  at: number;
}

export interface FakeRepo {
  id: number;
  private: boolean;
  /** commit sha -> path -> file text */
  trees: Map<string, Map<string, string>>;
  /** issue number -> comments, oldest first */
  comments: Map<number, FakeComment[]>;
  statuses: FakeStatus[];
}

export interface Recorded {
  method: string;
  /** Decoded path, without the query. */
  path: string;
  /** `?per_page=100&page=2`, or ''. */
  query: string;
  status: number;
}

interface Fault {
  method: string;
  path: RegExp;
  /** Answer this status this many times, or hold the request until `release` is called. */
  status?: number;
  times: number;
  hold?: { arrived: () => void; released: Promise<void> };
}

/** A GitHub App the fake knows: JWTs signed with its key get installation tokens. */
export interface FakeApp {
  id: number;
  slug: string;
  publicKey: string;
  installationId: number;
  installationToken: string;
}

export interface FakeGitHubOptions {
  /** Who the token writes comments as. Default APP_BOT. */
  as?: User;
  /** GET /user answers 403, as it does for GITHUB_TOKEN and installation tokens. */
  userForbidden?: boolean;
}

export class FakeGitHub {
  url = '';
  /** Who the token writes as (comments created through the API are this user's). */
  readonly as: User;
  /** GET /user answers 403, as it does for an installation token. */
  userForbidden: boolean;
  /** Writes answer 403, as for a fork's pull request. */
  readOnly = false;
  /** Set to accept a GitHub App's JWT on /app routes and its installation token elsewhere. */
  app: FakeApp | null = null;
  readonly issuedTokens: string[] = [];
  /** Keys are lowercased owner/name. */
  readonly repos = new Map<string, FakeRepo>();
  /** Every answered request, in order. */
  readonly requests: Recorded[] = [];
  private faults: Fault[] = [];
  private nextId = 1_000_000;
  private server: Server | null = null;

  constructor(
    readonly token: string,
    o: FakeGitHubOptions = {},
  ) {
    this.as = o.as ?? APP_BOT;
    this.userForbidden = o.userForbidden ?? false;
  }

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((e: unknown) => send(res, 500, { message: String(e) }));
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  /** The repository, created (public unless said) on first use. */
  repo(fullName: string, opts: { private?: boolean } = {}): FakeRepo {
    let r = this.repos.get(fullName.toLowerCase());
    if (!r) {
      r = {
        id: 1296269 + this.repos.size,
        private: opts.private ?? false,
        trees: new Map(),
        comments: new Map(),
        statuses: [],
      };
      this.repos.set(fullName.toLowerCase(), r);
    }
    return r;
  }

  /** Sets the files of a commit. */
  commit(fullName: string, sha: string, files: Record<string, string>): void {
    this.repo(fullName).trees.set(sha, new Map(Object.entries(files)));
  }

  /** Adds a comment by someone (a login, or a user), e.g. to test pagination and the author check. */
  addComment(fullName: string, number: number, body: string, by: string | User = 'someone'): FakeComment {
    const user: User =
      typeof by === 'string' ? { login: by, id: loginId(by), type: by.endsWith('[bot]') ? 'Bot' : 'User' } : by;
    const c = this.makeComment(fullName, number, body, user);
    this.commentsOf(fullName, number).push(c);
    return c;
  }

  /** Every comment of the issue, oldest first. */
  commentsOf(fullName: string, number: number): FakeComment[] {
    const r = this.repo(fullName);
    let list = r.comments.get(number);
    if (!list) r.comments.set(number, (list = []));
    return list;
  }

  /** Comments written through the API (by `as`). */
  botComments(fullName: string, number: number): FakeComment[] {
    return this.commentsOf(fullName, number).filter((c) => c.user.login === this.as.login);
  }

  statusesOf(fullName: string, sha?: string): FakeStatus[] {
    return this.repo(fullName).statuses.filter((s) => sha === undefined || s.sha === sha);
  }

  /** The next `times` requests matching answer `status` (GitHub's error body). */
  fail(method: string, path: RegExp, status: number, times = 1): void {
    this.faults.push({ method, path, status, times });
  }

  /** The next matching request hangs until `release()`; `arrived` resolves when it comes in. */
  hold(method: string, path: RegExp): { arrived: Promise<void>; release: () => void } {
    let arrived!: () => void;
    let release!: () => void;
    const arrivedP = new Promise<void>((r) => (arrived = r));
    const released = new Promise<void>((r) => (release = r));
    this.faults.push({ method, path, times: 1, hold: { arrived, released } });
    return { arrived: arrivedP, release };
  }

  count(method: string, path: RegExp): number {
    return this.requests.filter((r) => r.method === method && path.test(r.path)).length;
  }

  private jwtValid(jwt: string): boolean {
    const [h, p, sig] = jwt.split('.');
    if (!h || !p || !sig || !this.app) return false;
    const ok = createVerify('RSA-SHA256').update(`${h}.${p}`).verify(this.app.publicKey, Buffer.from(sig, 'base64url'));
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as { iss?: unknown; exp?: number };
    return ok && String(claims.iss) === String(this.app.id) && (claims.exp ?? 0) * 1000 > Date.now();
  }

  private makeComment(fullName: string, issue: number, body: string, user: User): FakeComment {
    const id = this.nextId++;
    const at = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    return {
      id,
      node_id: `IC_${id}`,
      url: `${this.url}/repos/${fullName}/issues/comments/${id}`,
      html_url: `https://github.com/${fullName}/pull/${issue}#issuecomment-${id}`,
      issue_url: `${this.url}/repos/${fullName}/issues/${issue}`,
      user: {
        ...user,
        node_id: `U_${user.id}`,
        url: `${this.url}/users/${user.login}`,
        html_url: `https://github.com/${user.login}`,
        site_admin: false,
      },
      created_at: at,
      updated_at: at,
      author_association: user.type === 'Bot' ? 'NONE' : 'MEMBER',
      body,
    };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', this.url);
    const path = decodeURIComponent(u.pathname);
    const method = req.method ?? 'GET';
    let body = '';
    for await (const c of req) body += c;
    const answer = (status: number, data: unknown, headers: Record<string, string> = {}) => {
      this.requests.push({ method, path, query: u.search, status });
      send(res, status, data, headers);
    };
    const notFound = (doc = 'rest') =>
      answer(404, { message: 'Not Found', documentation_url: `https://docs.github.com/rest/${doc}`, status: '404' });
    const notAccessible = (doc: string) =>
      answer(403, {
        message: 'Resource not accessible by integration',
        documentation_url: `https://docs.github.com/rest/${doc}`,
        status: '403',
      });
    const badCredentials = () =>
      answer(401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest', status: '401' });

    const auth = req.headers.authorization ?? '';
    if (path.startsWith('/app') || (this.app && path.endsWith('/installation'))) {
      // App routes take the App's JWT (RS256, iss = app id), as GitHub checks it.
      const jwt = /^bearer (.+)$/i.exec(auth)?.[1];
      if (!this.app || !jwt || !this.jwtValid(jwt)) return badCredentials();
      if (method === 'GET' && path === '/app')
        return answer(200, { id: this.app.id, slug: this.app.slug, name: 'BetterPG test' });
      if (method === 'POST' && path === `/app/installations/${this.app.installationId}/access_tokens`) {
        this.issuedTokens.push(this.app.installationToken);
        return answer(201, {
          token: this.app.installationToken,
          expires_at: new Date(Date.now() + 3600_000).toISOString(),
          permissions: {},
          repository_selection: 'all',
        });
      }
      if (method === 'GET' && /^\/repos\/[^/]+\/[^/]+\/installation$/.test(path))
        return answer(200, { id: this.app.installationId });
      return notFound();
    }
    const accepted = [`token ${this.token}`, `bearer ${this.token}`, `Bearer ${this.token}`];
    if (this.app) accepted.push(`token ${this.app.installationToken}`);
    if (!accepted.includes(auth)) return badCredentials();

    const fault = this.faults.find((f) => f.method === method && f.path.test(path) && f.times > 0);
    if (fault) {
      fault.times--;
      if (fault.hold) {
        fault.hold.arrived();
        await fault.hold.released;
      } else {
        return answer(fault.status!, {
          message: fault.status! >= 500 ? 'Server Error' : 'Fault',
          status: String(fault.status),
        });
      }
    }

    if (method === 'GET' && path === '/user') {
      // What GITHUB_TOKEN and an installation token get: they are no user.
      if (this.userForbidden) return notAccessible('users/users#get-the-authenticated-user');
      return answer(200, { login: this.as.login, id: this.as.id, type: this.as.type });
    }

    // /repos/{owner}/{name}/..., or /repositories/{id}/... as GitHub's pagination links say.
    let full: string;
    let repo: FakeRepo | undefined;
    let rest: string;
    let m: RegExpExecArray | null;
    if ((m = /^\/repos\/([^/]+)\/([^/]+)(\/.*)?$/.exec(path))) {
      full = `${m[1]}/${m[2]}`;
      repo = this.repos.get(full.toLowerCase());
      rest = m[3] ?? '';
    } else if ((m = /^\/repositories\/(\d+)(\/.*)?$/.exec(path))) {
      const id = Number(m[1]);
      const entry = [...this.repos].find(([, r]) => r.id === id);
      full = entry?.[0] ?? '';
      repo = entry?.[1];
      rest = m[2] ?? '';
    } else {
      return notFound();
    }
    if (!repo) return notFound('repos/repos#get-a-repository');

    if (method === 'GET' && rest === '') {
      const [owner, name] = full.split('/') as [string, string];
      return answer(200, {
        id: repo.id,
        node_id: `R_${repo.id}`,
        name,
        full_name: full,
        private: repo.private,
        visibility: repo.private ? 'private' : 'public',
        owner: { login: owner, id: 1, type: 'Organization' },
        html_url: `https://github.com/${full}`,
        default_branch: 'main',
      });
    }

    let n: RegExpExecArray | null;
    if ((n = /^\/issues\/(\d+)\/comments$/.exec(rest))) {
      const number = Number(n[1]);
      const list = this.commentsOf(full, number);
      if (method === 'GET') {
        const perPage = Math.min(100, Math.max(1, Number(u.searchParams.get('per_page') ?? 30) || 30));
        const page = Math.max(1, Number(u.searchParams.get('page') ?? 1) || 1);
        const last = Math.max(1, Math.ceil(list.length / perPage));
        const link = (p: number, rel: string) =>
          `<${this.url}/repositories/${repo.id}/issues/${number}/comments?per_page=${perPage}&page=${p}>; rel="${rel}"`;
        const links: string[] = [];
        if (page > 1) links.push(link(page - 1, 'prev'));
        if (page < last) links.push(link(page + 1, 'next'), link(last, 'last'));
        if (page > 1) links.push(link(1, 'first'));
        return answer(
          200,
          list.slice((page - 1) * perPage, page * perPage),
          links.length ? { link: links.join(', ') } : {},
        );
      }
      if (method === 'POST') {
        if (this.readOnly) return notAccessible('issues/comments#create-an-issue-comment');
        const text = parse(body).body;
        if (typeof text !== 'string')
          return answer(422, { message: 'Invalid request.\n\n"body" wasn\'t supplied.', status: '422' });
        const c = this.makeComment(full, number, text, this.as);
        list.push(c);
        return answer(201, c);
      }
    }
    if ((n = /^\/issues\/comments\/(\d+)$/.exec(rest)) && method === 'PATCH') {
      const c = [...repo.comments.values()].flat().find((x) => x.id === Number(n![1]));
      if (!c) return notFound('issues/comments#update-an-issue-comment');
      if (this.readOnly) return notAccessible('issues/comments#update-an-issue-comment');
      // Only the author (or a maintainer, which the bot is not) may edit.
      if (c.user.login !== this.as.login) return notAccessible('issues/comments#update-an-issue-comment');
      const text = parse(body).body;
      if (typeof text !== 'string') return answer(422, { message: 'Invalid request.', status: '422' });
      c.body = text;
      c.updated_at = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
      return answer(200, c);
    }
    if ((n = /^\/statuses\/([0-9a-f]{40})$/.exec(rest)) && method === 'POST') {
      if (this.readOnly) return notAccessible('commits/statuses#create-a-commit-status');
      const b = parse(body) as { state?: unknown; description?: unknown; context?: unknown; target_url?: unknown };
      if (typeof b.state !== 'string' || !['pending', 'success', 'failure', 'error'].includes(b.state))
        return answer(422, { message: 'Validation Failed', status: '422' });
      const s: FakeStatus = {
        sha: n[1]!,
        state: b.state,
        description: typeof b.description === 'string' ? b.description : '',
        context: typeof b.context === 'string' ? b.context : 'default',
        target_url: typeof b.target_url === 'string' ? b.target_url : null,
        at: Date.now(),
      };
      repo.statuses.push(s);
      return answer(201, { id: repo.statuses.length, ...s });
    }
    if ((n = /^\/contents(?:\/(.*))?$/.exec(rest)) && method === 'GET') {
      const ref = u.searchParams.get('ref') ?? '';
      const tree = repo.trees.get(ref);
      if (!tree) return answer(404, { message: `No commit found for the ref ${ref}`, status: '404' });
      const p = (n[1] ?? '').replace(/\/+$/, '');
      const file = tree.get(p);
      if (file !== undefined) {
        const sha = Buffer.from(p).toString('hex').slice(0, 40).padEnd(40, '0');
        if ((req.headers.accept ?? '').includes('application/vnd.github.raw')) {
          this.requests.push({ method, path, query: u.search, status: 200 });
          res.writeHead(200, { 'content-type': 'application/vnd.github.raw' });
          return void res.end(file);
        }
        const big = Buffer.byteLength(file) > 1024 * 1024;
        // GitHub wraps base64 at 60 characters with newlines.
        const content = big
          ? ''
          : (
              Buffer.from(file)
                .toString('base64')
                .match(/.{1,60}/g) ?? []
            ).join('\n') + '\n';
        return answer(200, {
          type: 'file',
          encoding: big ? 'none' : 'base64',
          size: Buffer.byteLength(file),
          name: p.split('/').pop(),
          path: p,
          content,
          sha,
        });
      }
      const prefix = p === '' ? '' : p + '/'; // '' is the repository's root
      const children = new Map<string, 'file' | 'dir'>();
      for (const k of tree.keys()) {
        if (!k.startsWith(prefix)) continue;
        const [first, ...more] = k.slice(prefix.length).split('/');
        children.set(first!, more.length ? 'dir' : 'file');
      }
      if (!children.size) return notFound('repos/contents#get-repository-content');
      return answer(
        200,
        [...children].map(([name, type]) => ({
          type,
          name,
          path: `${prefix}${name}`,
          sha: '0'.repeat(40),
          size: type === 'file' ? Buffer.byteLength(tree.get(`${prefix}${name}`)!) : 0,
        })),
      );
    }
    return notFound();
  }
}

/** A stable id for a login (people added by name). */
function loginId(login: string): number {
  let h = 7;
  for (const ch of login) h = (h * 31 + ch.charCodeAt(0)) % 1_000_000_007;
  return h;
}

function parse(body: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(body || '{}');
    return v && typeof v === 'object' ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'x-github-media-type': 'github.v3; format=json',
    'x-ratelimit-limit': '5000',
    'x-ratelimit-remaining': '4999',
    ...headers,
  });
  res.end(text);
}

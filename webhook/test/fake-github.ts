/**
 * A local fake of the GitHub REST endpoints the receiver calls, answering with GitHub's status codes,
 * bodies and pagination links: /user, /repos/{o}/{r} (`private`), issue comments (list with Link
 * pagination, create, update), commit statuses, and the contents API (folders and base64 files at a
 * commit). Everything it is asked is recorded, and faults can be injected per route.
 */
import { createVerify } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeComment {
  id: number;
  body: string;
  user: { login: string; type: string };
  html_url: string;
  created_at: string;
  updated_at: string;
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
  private: boolean;
  /** commit sha -> path -> file text */
  trees: Map<string, Map<string, string>>;
  /** issue number -> comments */
  comments: Map<number, FakeComment[]>;
  statuses: FakeStatus[];
}

export interface Recorded {
  method: string;
  path: string;
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

export const BOT_LOGIN = 'betterpg-test[bot]';

/** A GitHub App the fake knows: JWTs signed with its key get installation tokens. */
export interface FakeApp {
  id: number;
  slug: string;
  publicKey: string;
  installationId: number;
  installationToken: string;
}

export class FakeGitHub {
  /** Set to accept a GitHub App's JWT on /app routes and its installation token elsewhere. */
  app: FakeApp | null = null;
  readonly issuedTokens: string[] = [];
  /** GET /user answers 403, as it does for an installation token. */
  userForbidden = false;
  readonly repos = new Map<string, FakeRepo>();
  readonly requests: Recorded[] = [];
  private faults: Fault[] = [];
  private nextId = 1000;
  private server: Server | null = null;
  url = '';

  constructor(readonly token: string) {}

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((e) => {
        res.statusCode = 500;
        res.end(JSON.stringify({ message: String(e) }));
      });
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  repo(fullName: string, opts: { private?: boolean } = {}): FakeRepo {
    let r = this.repos.get(fullName.toLowerCase());
    if (!r) {
      r = { private: opts.private ?? false, trees: new Map(), comments: new Map(), statuses: [] };
      this.repos.set(fullName.toLowerCase(), r);
    }
    return r;
  }

  /** Sets the files of a commit. */
  commit(fullName: string, sha: string, files: Record<string, string>): void {
    this.repo(fullName).trees.set(sha, new Map(Object.entries(files)));
  }

  /** Adds a comment by someone (to test pagination and the author check). */
  addComment(fullName: string, number: number, body: string, login = 'someone'): FakeComment {
    const list = this.commentsOf(fullName, number);
    const c = this.makeComment(fullName, number, body, login);
    list.push(c);
    return c;
  }

  commentsOf(fullName: string, number: number): FakeComment[] {
    const r = this.repo(fullName);
    let list = r.comments.get(number);
    if (!list) r.comments.set(number, (list = []));
    return list;
  }

  /** Comments written by the receiver. */
  botComments(fullName: string, number: number): FakeComment[] {
    return this.commentsOf(fullName, number).filter((c) => c.user.login === BOT_LOGIN);
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

  private makeComment(fullName: string, number: number, body: string, login: string): FakeComment {
    const id = this.nextId++;
    const now = new Date().toISOString();
    return { id, body, user: { login, type: login.endsWith('[bot]') ? 'Bot' : 'User' }, html_url: `https://github.example/${fullName}/pull/${number}#issuecomment-${id}`, created_at: now, updated_at: now };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', this.url);
    const path = decodeURIComponent(u.pathname);
    const method = req.method ?? 'GET';
    let body = '';
    for await (const c of req) body += c;
    const send = (status: number, data: unknown, headers: Record<string, string> = {}) => {
      this.requests.push({ method, path, query: u.search, status });
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
      res.end(typeof data === 'string' ? data : JSON.stringify(data));
    };
    const notFound = () => send(404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest', status: '404' });

    const auth = req.headers.authorization ?? '';
    const badCredentials = () => send(401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest', status: '401' });
    if (path.startsWith('/app') || (this.app && path.endsWith('/installation'))) {
      // App routes take the App's JWT (RS256, iss = app id), as GitHub checks it.
      const jwt = /^bearer (.+)$/i.exec(auth)?.[1];
      if (!this.app || !jwt || !this.jwtValid(jwt)) return badCredentials();
      if (method === 'GET' && path === '/app') return send(200, { id: this.app.id, slug: this.app.slug, name: 'BetterPG test' });
      if (method === 'POST' && path === `/app/installations/${this.app.installationId}/access_tokens`) {
        this.issuedTokens.push(this.app.installationToken);
        return send(201, { token: this.app.installationToken, expires_at: new Date(Date.now() + 3600_000).toISOString(), permissions: {}, repository_selection: 'all' });
      }
      if (method === 'GET' && /^\/repos\/[^/]+\/[^/]+\/installation$/.test(path)) return send(200, { id: this.app.installationId });
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
        return send(fault.status!, { message: fault.status! >= 500 ? 'Server Error' : 'Fault', status: String(fault.status) });
      }
    }

    let m: RegExpExecArray | null;
    if (method === 'GET' && path === '/user') {
      // GitHub's answer for an installation token: it is no user.
      if (this.userForbidden) return send(403, { message: 'Resource not accessible by integration', status: '403' });
      return send(200, { login: BOT_LOGIN, id: 1, type: 'Bot' });
    }

    if ((m = /^\/repos\/([^/]+)\/([^/]+)(\/.*)?$/.exec(path))) {
      const full = `${m[1]}/${m[2]}`;
      const repo = this.repos.get(full.toLowerCase());
      if (!repo) return notFound();
      const rest = m[3] ?? '';
      if (method === 'GET' && rest === '') return send(200, { id: 1, name: m[2], full_name: full, private: repo.private, owner: { login: m[1] } });

      let n: RegExpExecArray | null;
      if ((n = /^\/issues\/(\d+)\/comments$/.exec(rest))) {
        const number = Number(n[1]);
        const list = this.commentsOf(full, number);
        if (method === 'GET') {
          const perPage = Math.min(100, Number(u.searchParams.get('per_page') ?? 30));
          const page = Math.max(1, Number(u.searchParams.get('page') ?? 1));
          const last = Math.max(1, Math.ceil(list.length / perPage));
          const link = (p: number, rel: string) => `<${this.url}/repos/${full}/issues/${number}/comments?per_page=${perPage}&page=${p}>; rel="${rel}"`;
          const links: string[] = [];
          if (page < last) links.push(link(page + 1, 'next'), link(last, 'last'));
          if (page > 1) links.push(link(1, 'first'), link(page - 1, 'prev'));
          return send(200, list.slice((page - 1) * perPage, page * perPage), links.length ? { link: links.join(', ') } : {});
        }
        if (method === 'POST') {
          const c = this.makeComment(full, number, JSON.parse(body).body, BOT_LOGIN);
          list.push(c);
          return send(201, c);
        }
      }
      if ((n = /^\/issues\/comments\/(\d+)$/.exec(rest)) && method === 'PATCH') {
        for (const list of repo.comments.values()) {
          const c = list.find((x) => x.id === Number(n![1]));
          if (c) {
            if (c.user.login !== BOT_LOGIN) return send(403, { message: 'Resource not accessible by integration' });
            c.body = JSON.parse(body).body;
            c.updated_at = new Date().toISOString();
            return send(200, c);
          }
        }
        return notFound();
      }
      if ((n = /^\/statuses\/([0-9a-f]{40})$/.exec(rest)) && method === 'POST') {
        const b = JSON.parse(body);
        if (!['pending', 'success', 'failure', 'error'].includes(b.state)) return send(422, { message: 'Validation Failed' });
        const s: FakeStatus = { sha: n[1]!, state: b.state, description: b.description ?? '', context: b.context ?? 'default', target_url: b.target_url ?? null, at: Date.now() };
        repo.statuses.push(s);
        return send(201, { id: repo.statuses.length, ...s });
      }
      if ((n = /^\/contents\/(.*)$/.exec(rest)) && method === 'GET') {
        const ref = u.searchParams.get('ref') ?? '';
        const tree = repo.trees.get(ref);
        if (!tree) return send(404, { message: `No commit found for the ref ${ref}` });
        const p = n[1]!.replace(/\/+$/, '');
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
          const content = big ? '' : (Buffer.from(file).toString('base64').match(/.{1,60}/g) ?? []).join('\n') + '\n';
          return send(200, { type: 'file', encoding: big ? 'none' : 'base64', size: Buffer.byteLength(file), name: p.split('/').pop(), path: p, content, sha });
        }
        const prefix = p + '/';
        const children = new Map<string, 'file' | 'dir'>();
        for (const k of tree.keys()) {
          if (!k.startsWith(prefix)) continue;
          const [first, ...more] = k.slice(prefix.length).split('/');
          children.set(first!, more.length ? 'dir' : 'file');
        }
        if (!children.size) return notFound();
        return send(
          200,
          [...children].map(([name, type]) => ({ type, name, path: `${p}/${name}`, sha: '0'.repeat(40), size: type === 'file' ? Buffer.byteLength(tree.get(`${p}/${name}`)!) : 0 })),
        );
      }
    }
    return notFound();
  }
}

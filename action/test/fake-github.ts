/**
 * A local stand-in for the few GitHub REST endpoints the action calls, answering as GitHub does:
 * status codes, error bodies, `Link` pagination (with GitHub's /repositories/{id}/... next links),
 * and the 403 "Resource not accessible by integration" of a read-only GITHUB_TOKEN.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface User {
  login: string;
  id: number;
  type: 'User' | 'Bot';
}

export const ACTIONS_BOT: User = { login: 'github-actions[bot]', id: 41898282, type: 'Bot' };

export interface Comment {
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

interface Repo {
  id: number;
  owner: string;
  name: string;
  private: boolean;
  /** issue number -> comments, oldest first */
  comments: Map<number, Comment[]>;
}

export interface Request {
  method: string;
  path: string;
}

export class FakeGitHub {
  url = '';
  /** Every request, in order. */
  readonly requests: Request[] = [];
  /** Writes answer 403, as for a fork's pull request. */
  readOnly = false;
  private server: Server | null = null;
  private readonly repos = new Map<string, Repo>();
  private nextId = 1_000_000;

  constructor(readonly token: string) {}

  addRepo(owner: string, name: string, o: { private: boolean }): void {
    this.repos.set(`${owner}/${name}`, { id: 1296269 + this.repos.size, owner, name, private: o.private, comments: new Map() });
  }

  setPrivate(fullName: string, value: boolean): void {
    this.repo(fullName).private = value;
  }

  addComment(fullName: string, issue: number, user: User, body: string): Comment {
    const r = this.repo(fullName);
    const list = r.comments.get(issue) ?? [];
    r.comments.set(issue, list);
    const id = this.nextId++;
    const at = new Date(Date.UTC(2026, 0, 1) + id).toISOString().replace(/\.\d+Z$/, 'Z');
    const c: Comment = {
      id,
      node_id: `IC_${id}`,
      url: `${this.url}/repos/${fullName}/issues/comments/${id}`,
      html_url: `https://github.com/${fullName}/pull/${issue}#issuecomment-${id}`,
      issue_url: `${this.url}/repos/${fullName}/issues/${issue}`,
      user: { ...user, node_id: `U_${user.id}`, url: `${this.url}/users/${user.login}`, html_url: `https://github.com/${user.login}`, site_admin: false },
      created_at: at,
      updated_at: at,
      author_association: user.type === 'Bot' ? 'NONE' : 'MEMBER',
      body,
    };
    list.push(c);
    return c;
  }

  comments(fullName: string, issue: number): Comment[] {
    return this.repo(fullName).comments.get(issue) ?? [];
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((e: unknown) => send(res, 500, { message: String(e) }));
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  private repo(fullName: string): Repo {
    const r = this.repos.get(fullName);
    if (!r) throw new Error(`no repo ${fullName}`);
    return r;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', this.url);
    const method = req.method ?? 'GET';
    this.requests.push({ method, path: u.pathname + u.search });
    const body = await readBody(req);
    const auth = req.headers.authorization ?? '';
    if (auth !== `token ${this.token}` && auth !== `Bearer ${this.token}`) {
      return send(res, 401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest', status: '401' });
    }
    let m: RegExpExecArray | null;
    if (method === 'GET' && u.pathname === '/user') {
      // What GITHUB_TOKEN (an installation token) gets.
      return notAccessible(res, 'users/users#get-the-authenticated-user');
    }
    if (method === 'GET' && (m = /^\/repos\/([^/]+)\/([^/]+)$/.exec(u.pathname))) {
      const r = this.repos.get(`${m[1]}/${m[2]}`);
      if (!r) return notFound(res, 'repos/repos#get-a-repository');
      const full = `${r.owner}/${r.name}`;
      return send(res, 200, {
        id: r.id,
        node_id: `R_${r.id}`,
        name: r.name,
        full_name: full,
        private: r.private,
        visibility: r.private ? 'private' : 'public',
        owner: { login: r.owner, id: 1, type: 'Organization' },
        html_url: `https://github.com/${full}`,
        default_branch: 'main',
      });
    }
    if (method === 'GET' && (m = /^\/(?:repos\/([^/]+)\/([^/]+)|repositories\/(\d+))\/issues\/(\d+)\/comments$/.exec(u.pathname))) {
      const r = m[3] ? [...this.repos.values()].find((x) => x.id === Number(m![3])) : this.repos.get(`${m[1]}/${m[2]}`);
      if (!r) return notFound(res, 'issues/comments#list-issue-comments');
      const all = r.comments.get(Number(m[4])) ?? [];
      const perPage = Math.min(100, Math.max(1, Number(u.searchParams.get('per_page') ?? 30) || 30));
      const page = Math.max(1, Number(u.searchParams.get('page') ?? 1) || 1);
      const last = Math.max(1, Math.ceil(all.length / perPage));
      // GitHub's links name the repository by id, not by owner/name.
      const link = (p: number) => `<${this.url}/repositories/${r.id}/issues/${m![4]}/comments?per_page=${perPage}&page=${p}>`;
      const links: string[] = [];
      if (page > 1) links.push(`${link(page - 1)}; rel="prev"`);
      if (page < last) links.push(`${link(page + 1)}; rel="next"`, `${link(last)}; rel="last"`);
      if (page > 1) links.push(`${link(1)}; rel="first"`);
      return send(res, 200, all.slice((page - 1) * perPage, page * perPage), links.length ? { link: links.join(', ') } : {});
    }
    if (method === 'POST' && (m = /^\/repos\/([^/]+)\/([^/]+)\/issues\/(\d+)\/comments$/.exec(u.pathname))) {
      const full = `${m[1]}/${m[2]}`;
      if (!this.repos.has(full)) return notFound(res, 'issues/comments#create-an-issue-comment');
      if (this.readOnly) return notAccessible(res, 'issues/comments#create-an-issue-comment');
      const text = (JSON.parse(body || '{}') as { body?: unknown }).body;
      if (typeof text !== 'string') return send(res, 422, { message: 'Invalid request.\n\n"body" wasn\'t supplied.', status: '422' });
      return send(res, 201, this.addComment(full, Number(m[3]), ACTIONS_BOT, text));
    }
    if (method === 'PATCH' && (m = /^\/repos\/([^/]+)\/([^/]+)\/issues\/comments\/(\d+)$/.exec(u.pathname))) {
      const r = this.repos.get(`${m[1]}/${m[2]}`);
      const c = r && [...r.comments.values()].flat().find((x) => x.id === Number(m![3]));
      if (!c) return notFound(res, 'issues/comments#update-an-issue-comment');
      if (this.readOnly) return notAccessible(res, 'issues/comments#update-an-issue-comment');
      // Only the author (or a maintainer, which the bot is not) may edit.
      if (c.user.login !== ACTIONS_BOT.login) return notAccessible(res, 'issues/comments#update-an-issue-comment');
      const text = (JSON.parse(body || '{}') as { body?: unknown }).body;
      if (typeof text !== 'string') return send(res, 422, { message: 'Invalid request.', status: '422' });
      c.body = text;
      c.updated_at = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
      return send(res, 200, c);
    }
    return notFound(res, 'rest');
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let s = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (s += d));
    req.on('end', () => resolve(s));
    req.on('error', reject);
  });
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

function notFound(res: ServerResponse, doc: string): void {
  send(res, 404, { message: 'Not Found', documentation_url: `https://docs.github.com/rest/${doc}`, status: '404' });
}

function notAccessible(res: ServerResponse, doc: string): void {
  send(res, 403, { message: 'Resource not accessible by integration', documentation_url: `https://docs.github.com/rest/${doc}`, status: '403' });
}

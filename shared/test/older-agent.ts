/**
 * An agent from before issue 15 (no migration watches, no schema diff), for the faces' tests: the
 * real agent behind a small HTTP proxy that answers those routes as an agent answers any route it
 * does not have (agent/api/server.ts: 404 `not_found`, "no route …") and passes everything else on.
 */
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

const NEWER_ROUTES = /\/(watches|schema-diff)(\/|\?|$)/;

export interface OlderAgent {
  url: string;
  /** `METHOD path` of every request, in order. */
  seen: string[];
  close(): Promise<void>;
}

export async function olderAgent(target: string): Promise<OlderAgent> {
  const upstream = new URL(target);
  const seen: string[] = [];
  const server: Server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    if (NEWER_ROUTES.test(req.url ?? '')) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'not_found', message: `no route ${req.method} ${req.url}` } }));
      return;
    }
    const fwd = request(
      { host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    fwd.on('error', () => res.destroy());
    req.pipe(fwd);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

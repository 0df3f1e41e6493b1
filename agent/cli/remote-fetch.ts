/**
 * The CLI's transport for BpgClient: just what the client uses of `fetch` (method, headers, body,
 * signal; status, headers.get, text), over node:http / node:https. It reaches `bpg serve`'s unix
 * socket (which Node's fetch cannot), trusts an extra CA without undici, and keeps a remote
 * command's start-up short: Node 20 spends ~0.1 s loading its fetch and Response on first use.
 */
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';

export interface RemoteFetchOptions {
  /** Send every request to this unix socket (the URL's host is ignored, its path kept). */
  socketPath?: string;
  /** PEM of a CA to trust besides the system's (https URLs). */
  ca?: string;
}

type Init = { method?: string; headers?: Record<string, string>; body?: string; signal?: AbortSignal };

/** The part of a Response that BpgClient reads. */
function answer(res: IncomingMessage, body: string) {
  const status = res.statusCode ?? 0;
  return {
    ok: status >= 200 && status < 300,
    status,
    headers: {
      get: (name: string): string | null => {
        const v = res.headers[name.toLowerCase()];
        return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
      },
    },
    text: async () => body,
  };
}

/** A `fetch` for BpgClient over node:http(s); connection errors are TypeErrors with the cause, as fetch's are. */
export function remoteFetch(o: RemoteFetchOptions = {}): typeof fetch {
  // node:https and node:tls only when a URL needs them: the socket path skips their ~20-40 ms.
  let tls: Promise<{ request: typeof httpRequest; ca?: string[] }> | null = null;
  const loadTls = () =>
    (tls ??= Promise.all([import('node:https'), import('node:tls')]).then(([https, t]) => ({
      request: https.request as unknown as typeof httpRequest,
      ca: o.ca === undefined ? undefined : [...t.rootCertificates, o.ca],
    })));
  const call = async (input: string | URL, init: Init = {}) => {
    const url = new URL(String(input));
    const https = o.socketPath === undefined && url.protocol === 'https:';
    const { request, ca } = https ? await loadTls() : { request: httpRequest, ca: undefined };
    return new Promise<ReturnType<typeof answer>>((resolve, reject) => {
      const options: RequestOptions & { ca?: string[] } = {
        method: init.method ?? 'GET',
        headers: {
          ...init.headers,
          ...(init.body === undefined ? {} : { 'content-length': Buffer.byteLength(init.body) }),
        },
        path: url.pathname + url.search,
        signal: init.signal,
        agent: false, // one connection per call, closed after it: nothing keeps the CLI alive
      };
      if (o.socketPath !== undefined) options.socketPath = o.socketPath;
      else {
        options.host = url.hostname.replace(/^\[|\]$/g, '');
        options.port = url.port || (https ? 443 : 80);
        if (https && ca) options.ca = ca;
      }
      const req = request(options, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve(answer(res, Buffer.concat(chunks).toString('utf8'))));
        res.on('error', (e) => reject(new TypeError('fetch failed', { cause: e })));
      });
      req.on('error', (e) => reject(new TypeError('fetch failed', { cause: e })));
      req.end(init.body);
    });
  };
  return call as unknown as typeof fetch;
}

/**
 * How the API is reached: plain HTTP on the loopback interface, HTTPS (api.tls) anywhere, and plain
 * HTTP elsewhere only when the user says so (api.allowPlaintext or `bpg serve --allow-plaintext`,
 * for a TLS proxy on the same host or a private network they trust). Bearer tokens and the
 * passwords in every branch view cross this connection.
 */
import { readFile, stat } from 'node:fs/promises';
import { createServer as createHttpServer, type RequestListener, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { isIP } from 'node:net';
import { createSecureContext } from 'node:tls';
import { BpgError, invalid } from '../errors.js';
import type { Logger } from '../log.js';

/** 127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) and `localhost`: only this host can connect. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) {
    // The URL parser writes IPv6 addresses in their one short form: [::1], [::ffff:7f00:1].
    const canonical = new URL(`http://[${h}]/`).hostname;
    return canonical === '[::1]' || /^\[::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}\]$/.test(canonical);
  }
  return false;
}

/** Refuses a plain-HTTP listen address that other hosts can reach, unless allowed explicitly. */
export function checkPlaintext(host: string, listen: string, o: { tls: boolean; allowPlaintext: boolean }): void {
  if (o.tls || o.allowPlaintext || isLoopback(host)) return;
  throw invalid(
    `refusing to serve the API in plain HTTP on ${listen}: tokens and branch passwords would cross the network unencrypted; ` +
      `set api.tls {cert, key}, or listen on 127.0.0.1 behind a TLS proxy, or set api.allowPlaintext: true (bpg serve --allow-plaintext) to accept that`,
  );
}

async function readPem(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    throw new BpgError(
      'unavailable',
      `cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
}

/** Warns when a file holding secrets can be read by other users of the host. */
export async function warnIfShared(path: string, what: string, log: Logger): Promise<void> {
  const st = await stat(path).catch(() => null);
  if (st && (st.mode & 0o077) !== 0) {
    log.warn(`${what} ${path} can be read by other users (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it`);
  }
}

export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
}

/** Reads and checks the PEM files of api.tls, or of another key (`proxy.tls`), before anything listens; null without TLS. */
export async function loadTls(
  tls: { cert: string; key: string } | null,
  log: Logger,
  key_ = 'api.tls',
): Promise<TlsFiles | null> {
  if (!tls) return null;
  const [cert, key] = await Promise.all([readPem(tls.cert, `${key_}.cert`), readPem(tls.key, `${key_}.key`)]);
  try {
    createSecureContext({ cert, key }); // a mismatched or broken pair fails here, in one line
  } catch (e) {
    throw invalid(`${key_}: ${tls.cert} and ${tls.key} are not a usable certificate and key: ${(e as Error).message}`);
  }
  await warnIfShared(tls.key, 'TLS key', log);
  return { cert, key };
}

/** HTTPS with the loaded files, else HTTP. */
export function createApiServer(app: RequestListener, tls: TlsFiles | null): HttpServer {
  return tls ? createHttpsServer({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' }, app) : createHttpServer(app);
}

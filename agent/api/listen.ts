/**
 * Listening on a `host:port`: shared by the agent's API (serve.ts) and the webhook receiver. Light
 * on purpose: it loads only node:net, node:tls and the error helpers, so a face that imports it
 * does not pull in the engine, dockerode or pg.
 */
import type { AddressInfo, Server } from 'node:net';
import { Server as TlsServer } from 'node:tls';
import { invalid } from '../errors.js';

/** `127.0.0.1:7432`, `[::1]:7432`, `0.0.0.0:0` */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(listen);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw invalid(`listen address '${listen}' must look like 127.0.0.1:7432`);
  return { host: (m[1] ?? m[2])!, port };
}

/** Starts listening on `host:port` (port 0: any free one); answers the URL (https for a TLS server) and port it got. */
export async function listenOn(server: Server, listen: string): Promise<{ url: string; port: number }> {
  const { host, port } = parseListen(listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const scheme = server instanceof TlsServer ? 'https' : 'http';
  return {
    url: `${scheme}://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`,
    port: addr.port,
  };
}

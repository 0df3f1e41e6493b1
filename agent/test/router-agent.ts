/**
 * A config with the router on, for the faces' tests (the Action's and the receiver's runs through
 * the router): a state of its own (ownStateConfig) with proxy.enabled, proxy.tls from a throw-away
 * certificate, TLS required, and proxy.listen on the first port of another slot. And the router's
 * counters, read from the agent's GET /metrics as Prometheus would.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ownStateConfig, slotPort } from './helpers.js';
import { selfSignedCert } from './tls-helpers.js';

export interface RouterConfig {
  /** The config file (its own state folder, dataset base and ports). */
  path: string;
  routerPort: number;
  tls: ReturnType<typeof selfSignedCert>;
}

/**
 * Branches on `branchSlot`'s ports, the router on 127.0.0.1:<first port of `routerSlot`> with a
 * self-signed certificate and `requireTls: true` (loopback would default to false): a client that
 * does not encrypt is refused, so a migration that ran through it ran with TLS.
 */
export function routerConfig(
  name: string,
  branchSlot: number,
  routerSlot: number,
  change: (raw: Record<string, any>) => void = () => {},
): RouterConfig {
  const routerPort = slotPort(routerSlot);
  const tls = selfSignedCert(mkdtempSync(join(tmpdir(), `bpg-${name}-tls-`)));
  const path = ownStateConfig(name, branchSlot, (raw) => {
    raw.proxy = {
      enabled: true,
      listen: `127.0.0.1:${routerPort}`,
      requireTls: true,
      tls: { cert: tls.cert, key: tls.key },
    };
    change(raw);
  });
  return { path, routerPort, tls };
}

/** The sum of the samples of GET /metrics that carry `labels` (0 when none), e.g. the router's connections to a branch. */
export async function metricValue(
  agentUrl: string,
  token: string,
  name: string,
  labels: Record<string, string>,
): Promise<number> {
  const res = await fetch(`${agentUrl}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  if (!res.ok) throw new Error(`GET /metrics answered ${res.status}`);
  const text = await res.text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) sum += Number(m[3]);
  }
  return sum;
}

import { createServer } from 'node:net';
import { conflict } from '../errors.js';
import type { State } from '../state/schema.js';

/** True when nothing on this host listens on host:port. */
export function portIsFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/**
 * Picks a port of the range that no branch holds: the lowest of `spares` (ports whose port slot is
 * started and waiting: port-slots.ts), else the lowest that nothing on the host listens on.
 * Called under the state lock, so two creates never pick the same port.
 */
export async function reservePort(
  state: State,
  range: readonly [number, number],
  host: string,
  spares: readonly number[] = [],
): Promise<number> {
  const taken = new Set(Object.values(state.branches).map((b) => b.port));
  const spare = spares.find((p) => !taken.has(p) && p >= range[0] && p <= range[1]);
  if (spare !== undefined) return spare;
  for (let p = range[0]; p <= range[1]; p++) {
    if (taken.has(p)) continue;
    if (await portIsFree(host, p)) return p;
  }
  throw conflict(`no free port left in postgres.portRange ${range[0]}-${range[1]}`);
}

import { shown } from './quote.js';

/** Durations as people write them in config files and flags: 30s, 15m, 1h, 7d, 2w (or seconds). */
const UNIT_MS = { s: 1e3, m: 6e4, h: 36e5, d: 864e5, w: 6048e5 } as const;

export function parseDuration(v: string | number): number {
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v <= 0)
      throw new Error(`'${shown(String(v))}' is not a duration (use e.g. 30m, 12h, 7d)`);
    return Math.round(v * 1000);
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$/i.exec(v);
  if (!m || Number(m[1]) <= 0) throw new Error(`'${shown(String(v))}' is not a duration (use e.g. 30m, 12h, 7d)`);
  const ms = Math.round(Number(m[1]) * UNIT_MS[m[2]!.toLowerCase() as keyof typeof UNIT_MS]);
  if (ms > 100 * 365 * 864e5) throw new Error(`'${shown(String(v))}' is longer than 100 years`);
  return ms;
}

/** The largest whole unit: 604800000 -> '7d', 90000 -> '90s'. */
export function formatDuration(ms: number): string {
  for (const [u, f] of [
    ['w', 6048e5],
    ['d', 864e5],
    ['h', 36e5],
    ['m', 6e4],
  ] as const) {
    if (ms >= f && ms % f === 0) return `${ms / f}${u}`;
  }
  return `${Math.round(ms / 1000)}s`;
}

/** The longest TTL a branch may be given. */
export const MAX_TTL_MS = 365 * 864e5;

/**
 * A branch's time to live (`--ttl`, the API's `ttl`): a duration from a second to 365 days.
 * The one parser the CLI, the HTTP API's schema and the config share, so they accept the same text.
 */
export function parseTtl(v: string): number {
  const ms = parseDuration(v);
  if (ms < 1000) throw new Error(`'${shown(String(v))}' is shorter than a second`);
  if (ms > MAX_TTL_MS) throw new Error(`'${shown(String(v))}' is longer than 365d`);
  return ms;
}

// Kept apart from config.ts (zod, yaml) so that the CLI's --memory/--disk need not load them.

/** Sizes as bytes or with a unit: 512m, 1g, 128MiB, 64MB. */
export function parseSize(v: string | number): number {
  if (typeof v === 'number') return v;
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(v.trim());
  if (!m) throw new Error(`'${v}' is not a size (use e.g. 512m, 1g or a number of bytes)`);
  const pow = { '': 0, k: 1, m: 2, g: 3, t: 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.round(Number(m[1]) * 1024 ** pow);
}

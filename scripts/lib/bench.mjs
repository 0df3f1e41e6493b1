/** What the benchmark scripts share: running commands, summary statistics, PostgreSQL connections. */
import { spawn } from 'node:child_process';
import pg from 'pg';

export const MiB = 1024 ** 2;
export const GiB = 1024 ** 3;

/** Runs a command (argument array, never a shell string); `quiet: false` echoes its stderr. */
export function run(cmd, args, { env, input, quiet = true } = {}) {
  return new Promise((resolveP, reject) => {
    const child = spawn(cmd, args, {
      env: { ...process.env, ...env },
      stdio: [input == null ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => {
      stderr += d;
      if (!quiet) process.stderr.write(d);
    });
    child.on('error', reject);
    child.on('close', (code) => resolveP({ code, stdout, stderr }));
    if (input != null) {
      child.stdin.on('error', () => {}); // a command that exits without reading its input
      child.stdin.end(input);
    }
  });
}

/** `run`, failing with the command's last lines of stderr unless it exits 0. */
export async function must(cmd, args, o) {
  const r = await run(cmd, args, o);
  if (r.code !== 0)
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' / ')}`);
  return r;
}

/**
 * `zfs destroy -r ds` with zfs-fuse's busy retries (it answers "dataset is busy" at random): every
 * filesystem under ds unmounted first, deepest first. True once ds is gone.
 */
export async function zfsDestroy(ds, tries = 6) {
  for (let i = 0; i < tries; i++) {
    const l = await run('zfs', ['list', '-H', '-r', '-t', 'filesystem', '-o', 'name', ds]);
    if (l.code !== 0) return true;
    for (const fs of l.stdout.trim().split('\n').filter(Boolean).reverse()) await run('zfs', ['umount', fs]);
    if ((await run('zfs', ['destroy', '-r', ds])).code === 0) return true;
    await new Promise((r) => setTimeout(r, 500 * 2 ** i));
  }
  return false;
}

/** n, mean, p50 (median), p95 (nearest rank), min, max; rounded. */
export function stats(xs) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return {
    n: s.length,
    mean: Math.round(s.reduce((a, b) => a + b, 0) / s.length),
    p50: Math.round(s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2),
    p95: Math.round(s[Math.ceil(0.95 * s.length) - 1]),
    min: Math.round(s[0]),
    max: Math.round(s[s.length - 1]),
  };
}

export const fmtBytes = (b) =>
  b == null
    ? 'n/a'
    : Math.abs(b) >= GiB
      ? `${(b / GiB).toFixed(2)} GiB`
      : Math.abs(b) >= MiB
        ? `${(b / MiB).toFixed(1)} MiB`
        : `${(b / 1024).toFixed(0)} KiB`;

/** pg connection settings from a branch's `connection` (the agent's JSON). */
export const target = (conn, database = conn.database) => ({
  host: conn.host,
  port: conn.port,
  user: conn.user,
  password: conn.password,
  database,
});

export async function withPg(t, fn) {
  const c = new pg.Client({ ...t, connectionTimeoutMillis: 30_000 });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => {});
  }
}

export const qi = (s) => `"${s.replace(/"/g, '""')}"`;

/** `+1.2 MiB` / `-300 KiB` */
export const signed = (b) => (b == null ? 'n/a' : `${b >= 0 ? '+' : '-'}${fmtBytes(Math.abs(b))}`);

/** after - before for every key of after (null where either is missing). */
export const deltaOf = (before, after) =>
  Object.fromEntries(
    Object.keys(after).map((k) => [k, after[k] == null || before[k] == null ? null : after[k] - before[k]]),
  );

/** Runs fn over items, at most `limit` at once; stops starting new ones when `stop()` says so. */
export async function mapLimit(items, limit, fn, stop = () => false) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length && !stop()) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

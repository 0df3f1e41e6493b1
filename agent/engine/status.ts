import type { EngineContext } from './context.js';
import { liveInfo, viewOf } from './reads.js';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config.js';
import { refName } from '../names.js';

/**
 * What `bpg status` and `GET /metrics` show: pool usage, counts, and each branch's size and WAL.
 * Cheap enough to run on every scrape: one state read, one Docker list, two `zfs get` (one of them
 * recursive over the dataset base) and a directory listing per WAL folder. Nothing connects to
 * PostgreSQL.
 */

export interface PoolUsage {
  pool: string;
  /** What datasets can hold: used + available of the pool's top dataset (zpool's raw size also counts parity and the slop reserve). */
  sizeBytes: number;
  freeBytes: number;
  allocatedBytes: number;
  usedPercent: number;
}

export interface DatasetBaseUsage {
  dataset: string;
  usedBytes: number;
  /** What can still be written below it: the pool's free space, or less under a quota. */
  availableBytes: number;
  /** null: no quota. */
  quotaBytes: number | null;
}

export interface BranchUsage {
  name: string;
  database: string;
  branch: string;
  status: string;
  port: number;
  usedBytes: number | null;
  /** Bytes in the branch's WAL archive folder. */
  walBytes: number;
  diskQuotaBytes: number | null;
  diskFull: boolean;
  walQuotaBytes: number | null;
  walFull: boolean;
  expiresAt: string | null;
  protected: boolean;
  memoryBytes: number;
  cpus: number;
}

export interface SystemStatus {
  pool: PoolUsage | null;
  datasetBase: DatasetBaseUsage | null;
  docker: { reachable: boolean };
  counts: { databases: number; branches: number; byStatus: Record<string, number> };
  limits: Config['limits'];
  branches: BranchUsage[];
}

/** Sum of the file sizes in one folder (a WAL archive is flat); 0 when it is missing. */
export async function folderBytes(dir: string): Promise<number> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const sizes = await Promise.all(
    names.map((n) =>
      lstat(join(dir, n)).then(
        (s) => (s.isFile() ? s.size : 0),
        () => 0,
      ),
    ),
  );
  return sizes.reduce((a, b) => a + b, 0);
}

async function numbers(ctx: EngineContext, dataset: string, props: string[]): Promise<Record<string, number> | null> {
  try {
    const raw = await ctx.zfs.get(dataset, props);
    return Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, Number(v)]));
  } catch {
    return null;
  }
}

export async function systemStatus(ctx: EngineContext): Promise<SystemStatus> {
  const cfg = ctx.cfg;
  const [state, live, reachable, pool, base] = await Promise.all([
    ctx.store.read(),
    liveInfo(ctx),
    ctx.docker.ping().then(
      () => true,
      () => false,
    ),
    numbers(ctx, cfg.zfs.pool, ['used', 'available']),
    numbers(ctx, ctx.layout.root, ['used', 'available', 'quota']),
  ]);
  const records = Object.values(state.branches).sort((a, b) => refName(a).localeCompare(refName(b)));
  const branches = await Promise.all(
    records.map(async (b): Promise<BranchUsage> => {
      const v = viewOf(ctx, state, b, live);
      return {
        name: v.name,
        database: v.database,
        branch: v.branch,
        status: v.status,
        port: v.port,
        usedBytes: v.usedBytes,
        walBytes: v.walBytes ?? (await folderBytes(ctx.layout.walDir(b.id))),
        diskQuotaBytes: v.diskQuotaBytes,
        diskFull: v.diskFull,
        walQuotaBytes: v.walQuotaBytes,
        walFull: v.walFull,
        expiresAt: v.expiresAt,
        protected: v.protected,
        memoryBytes: v.memoryBytes,
        cpus: v.cpus,
      };
    }),
  );
  const byStatus: Record<string, number> = {};
  for (const b of branches) byStatus[b.status] = (byStatus[b.status] ?? 0) + 1;
  const size = pool ? pool.used! + pool.available! : 0;
  return {
    pool: pool
      ? {
          pool: cfg.zfs.pool,
          sizeBytes: size,
          freeBytes: pool.available!,
          allocatedBytes: pool.used!,
          usedPercent: size ? Math.round((pool.used! / size) * 1000) / 10 : 0,
        }
      : null,
    datasetBase: base
      ? {
          dataset: ctx.layout.root,
          usedBytes: base.used!,
          availableBytes: base.available!,
          quotaBytes: base.quota ? base.quota : null,
        }
      : null,
    docker: { reachable },
    counts: { databases: Object.keys(state.databases).length, branches: branches.length, byStatus },
    limits: cfg.limits,
    branches,
  };
}

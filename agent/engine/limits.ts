import os from 'node:os';
import type { Config } from '../config.js';
import { conflict, invalid } from '../errors.js';
import { CommandError } from '../drivers/exec.js';
import type { ContainerRuntime, DatasetStore } from '../drivers/interfaces.js';
import type { State } from '../state/schema.js';

/**
 * Limits a create must stay within (config `limits`). Every refusal is a `conflict` (HTTP 409) whose
 * message names the config key, so whoever hits it knows what to raise.
 *
 * Branch counts include `main` (each branch, main too, is one container, one dataset and one port)
 * and every branch in the state, also ones being created or deleted: they hold those until done.
 * The counts are checked while the state lock is held, so concurrent creates cannot overshoot.
 */

const MiB = 1024 ** 2;
/** 1.5 GiB, 300 MiB, 12 KiB: precise enough to compare with a configured limit. */
function fmt(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Math.round(v * 10) / 10} ${units[i]}`;
}

/** Smallest memory a branch may be given: PostgreSQL with the default settings does not start in less. */
export const MIN_BRANCH_MEMORY = 64 * MiB;

/** Under the state lock, with the new branch not yet in `s`: one more must fit. */
export function checkBranchCount(cfg: Config, s: State, database: string): void {
  const all = Object.values(s.branches);
  // The narrower limit first: it says more about what to do.
  const per = cfg.limits.branchesPerDatabase;
  const mine = all.filter((b) => b.database === database).length;
  if (per !== null && mine >= per) {
    throw conflict(
      `limit limits.branchesPerDatabase (${per}) reached for database '${database}': it has ${mine} branches (main included)`,
    );
  }
  const total = cfg.limits.branchesTotal;
  if (total !== null && all.length >= total) {
    throw conflict(
      `limit limits.branchesTotal (${total}) reached: ${all.length} branches exist (main branches included); delete some or raise the limit`,
    );
  }
}

/** Smallest disk quota: PostgreSQL needs a few WAL segments and its catalog. */
export const MIN_BRANCH_DISK = 64 * MiB;

/** Memory, CPUs and disk asked for one branch (undefined: the postgres.memory / cpus / diskQuota defaults). */
export function checkResources(cfg: Config, r: { memory?: number; cpus?: number; disk?: number }): void {
  if (r.disk !== undefined) {
    if (!Number.isSafeInteger(r.disk) || r.disk < MIN_BRANCH_DISK)
      throw invalid(`disk must be at least ${fmt(MIN_BRANCH_DISK)} (e.g. 5g, 100g)`);
    const max = cfg.limits.maxDisk;
    if (max !== null && r.disk > max)
      throw conflict(`disk ${fmt(r.disk)} is above the limit limits.maxDisk (${fmt(max)})`);
  }
  if (r.memory !== undefined) {
    if (!Number.isSafeInteger(r.memory) || r.memory < MIN_BRANCH_MEMORY)
      throw invalid(`memory must be at least ${fmt(MIN_BRANCH_MEMORY)} (e.g. 256m, 1g)`);
    const max = cfg.limits.maxMemory;
    if (max !== null && r.memory > max)
      throw conflict(`memory ${fmt(r.memory)} is above the limit limits.maxMemory (${fmt(max)})`);
    // A limit above the host's memory limits nothing: it is almost always a typo (100g for 100m).
    if (r.memory > os.totalmem())
      throw conflict(`memory ${fmt(r.memory)} is more than this host's ${fmt(os.totalmem())}`);
  }
  if (r.cpus !== undefined) {
    if (!Number.isFinite(r.cpus) || r.cpus < 0.01)
      throw invalid('cpus must be a number of CPUs, at least 0.01 (e.g. 0.5, 2)');
    const max = cfg.limits.maxCpus;
    if (max !== null && r.cpus > max) throw conflict(`cpus ${r.cpus} is above the limit limits.maxCpus (${max})`);
    // Docker refuses more than the host has, but only when the container is created: say it now.
    const host = os.availableParallelism();
    if (r.cpus > host) throw conflict(`cpus ${r.cpus} is more than this host's ${host} CPUs`);
  }
}

/** Where new datasets go: the dataset base if it exists yet, else the pool's top dataset. */
export async function freeBytes(zfs: DatasetStore, cfg: Config): Promise<{ dataset: string; available: number }> {
  const root = `${cfg.zfs.pool}/${cfg.zfs.datasetBase}`;
  for (const dataset of [root, cfg.zfs.pool]) {
    try {
      return { dataset, available: Number((await zfs.get(dataset, ['available'])).available) };
    } catch (e) {
      if (!(e instanceof CommandError && /does not exist/i.test(e.stderr))) throw e;
    }
  }
  return { dataset: root, available: 0 };
}

/** Before a create: refuse while less than `limits.minFreeBytes` can be written (a quota counts). */
export async function checkFreeSpace(zfs: DatasetStore, cfg: Config): Promise<void> {
  const { dataset, available } = await freeBytes(zfs, cfg);
  if (available < cfg.limits.minFreeBytes) {
    throw conflict(
      `pool ${cfg.zfs.pool} has ${fmt(available)} free for ${dataset}, below limits.minFreeBytes (${fmt(cfg.limits.minFreeBytes)}); ` +
        'free space (delete branches or snapshots, raise the quota, grow the pool) before creating more',
    );
  }
}

/** Linux's EDQUOT, which Node has no name for ("Unknown system error -122"). */
const EDQUOT_ERRNO = -122;
const NO_SPACE =
  /no space left on device|out of space|disk quota exceeded|quota exceeded|\bENOSPC\b|\bEDQUOT\b|could not extend file|disk full/i;

/**
 * Whether an error (or anything in its cause chain) comes from running out of space: Node's
 * ENOSPC/EDQUOT, PostgreSQL's disk_full (53100), zfs "out of space", or such text in a command's
 * output or a container's log.
 */
export function isOutOfSpace(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const x = e as { code?: unknown; errno?: unknown; message?: unknown; stderr?: unknown };
    if (x.code === 'ENOSPC' || x.code === 'EDQUOT' || x.code === '53100') return true;
    if (x.errno === -28 || x.errno === EDQUOT_ERRNO) return true;
    if (typeof x.message === 'string' && NO_SPACE.test(x.message)) return true;
    if (typeof x.stderr === 'string' && NO_SPACE.test(x.stderr)) return true;
  }
  return false;
}

/**
 * Whether a failed create ran out of space. Its error may not say so: PostgreSQL answers a
 * checkpoint that could not write with just "checkpoint request failed", and logs the reason. So:
 * the error chain, then what the containers it used logged since it began, then whether less than
 * limits.minFreeBytes is left. Call it before the undo, which frees space.
 */
export async function ranOutOfSpace(
  e: { zfs: DatasetStore; docker: ContainerRuntime; cfg: Config },
  err: unknown,
  o: { containers?: string[]; sinceMs?: number } = {},
): Promise<boolean> {
  if (isOutOfSpace(err)) return true;
  for (const c of o.containers ?? []) {
    const log = await e.docker.logsTail(c, 50, o.sinceMs === undefined ? undefined : o.sinceMs / 1000 - 1);
    if (NO_SPACE.test(log)) return true;
  }
  const free = await freeBytes(e.zfs, e.cfg).catch(() => null);
  return free !== null && free.available < e.cfg.limits.minFreeBytes;
}

/** The one line a create that ran out of space mid-way ends with (`what`: the failed step's error). */
export function outOfSpaceMessage(cfg: Config, what: string): string {
  const clear = what.replace(
    /Unknown system error -122(: Unknown system error -122)?/g,
    'disk quota exceeded (EDQUOT)',
  );
  return `out of space: pool ${cfg.zfs.pool} or a quota on ${cfg.zfs.pool}/${cfg.zfs.datasetBase} is full (${clear})`;
}

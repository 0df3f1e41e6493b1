import { createHash } from 'node:crypto';
import type pg from 'pg';
import { lstat, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { describe } from '../errors.js';
import {
  LABEL_BRANCH,
  LABEL_DATABASE,
  LABEL_ID,
  LABEL_ROOT,
  LABEL_SPEC,
  type ContainerSpec,
} from '../drivers/docker.js';
import { hardening } from '../drivers/hardening.js';
import type { PgTarget } from '../drivers/postgres.js';
import type { BranchRecord, DatabaseRecord } from '../state/schema.js';
import type { EngineContext } from './context.js';
import { PG_HBA, pgMajor, serverArgs, writeUserConf } from './datadir.js';
import { Layout, ZFS_PROP } from './layout.js';
import { ensureSlot, slotName } from './port-slots.js';
import { requireDatabase } from './rules.js';

/**
 * The steps every operation shares around a branch's container: its labels and dataset
 * properties, its spec, starting it (made again when the spec changed), and waiting until it answers.
 */

export const ownerOf = (ctx: EngineContext) => ({ uid: ctx.cfg.postgres.uid, gid: ctx.cfg.postgres.gid });

/** How the agent reaches a branch's PostgreSQL as its superuser. */
export function target(
  ctx: EngineContext,
  b: BranchRecord,
  db: DatabaseRecord,
  password = b.password,
  database = db.pgDatabase,
): PgTarget {
  return { host: ctx.cfg.postgres.bindAddress, port: b.port, user: ctx.cfg.postgres.superuser, password, database };
}

export function labels(
  ctx: EngineContext,
  b: Pick<BranchRecord, 'id' | 'database' | 'branch'>,
): Record<string, string> {
  return { [LABEL_ROOT]: ctx.layout.root, [LABEL_DATABASE]: b.database, [LABEL_BRANCH]: b.branch, [LABEL_ID]: b.id };
}

/** The properties a branch's dataset carries (our marks, and its quota). */
export function branchProps(b: BranchRecord): Record<string, string> {
  return {
    [ZFS_PROP.managed]: 'true',
    [ZFS_PROP.database]: b.database,
    [ZFS_PROP.branch]: b.branch,
    [ZFS_PROP.id]: b.id,
    // quota, not refquota: a clone references all of its origin's data from the start, so a
    // refquota below the parent's size would refuse the clone itself (measured: "out of space").
    ...(b.disk !== null ? { quota: String(b.disk) } : {}),
  };
}

/** The pg_hba.conf every container mounts read-only; written when missing or different. */
export async function ensureHbaFile(ctx: EngineContext): Promise<void> {
  const path = ctx.layout.hbaFile();
  const current = await readFile(path, 'utf8').catch(() => null);
  if (current === PG_HBA && (await lstat(path)).isFile()) return;
  await mkdir(ctx.cfg.stateDir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, PG_HBA, { mode: 0o644 });
  await rename(tmp, path);
}

/** What a branch's container is made from (a pure function of the branch and the config). */
export function containerSpec(
  ctx: EngineContext,
  b: BranchRecord,
  pgMajor: number,
  pgdata: string,
  dataDir: string,
  extra: { binds?: string[]; conf?: Record<string, string> } = {},
): ContainerSpec {
  const p = ctx.cfg.postgres;
  const spec: ContainerSpec = {
    name: b.container,
    image: b.image,
    user: `${p.uid}:${p.gid}`,
    entrypoint: ['postgres'],
    cmd: serverArgs(pgMajor, pgdata, extra.conf),
    binds: [
      `${dataDir}:${pgdata}`,
      `${ctx.layout.walDir(b.id)}:${Layout.containerArchive}`,
      `${ctx.layout.hbaFile()}:${Layout.containerHba}:ro`,
      ...(extra.binds ?? []),
    ],
    labels: labels(ctx, b),
    memoryBytes: b.memory ?? p.memory,
    nanoCpus: Math.round((b.cpus ?? p.cpus) * 1e9),
    shmSizeBytes: p.shmSize,
    stopTimeoutSeconds: p.stopTimeoutSeconds,
    restartPolicy: 'unless-stopped',
    ...hardening(ctx.cfg),
    // Its port slot publishes the port and is on the branch network (port-slots.ts).
    network: { container: slotName(ctx, b.port) },
  };
  // The container's configuration is fixed when it is made: one made from another spec (an older
  // version of the agent, a changed config) is made again, unless it runs (then at its next start).
  spec.labels[LABEL_SPEC] = createHash('sha256').update(JSON.stringify(spec)).digest('hex').slice(0, 16);
  return spec;
}

/** Creates the branch's container if it is missing or made from another spec, then starts it in its port slot. */
export async function startContainer(
  ctx: EngineContext,
  b: BranchRecord,
  pgdata: string,
  dataDir: string,
  extra: { binds?: string[]; conf?: Record<string, string> } = {},
): Promise<void> {
  // betterpg.conf (postgres.settings) is rewritten through an untrusted-directory handle; the
  // settings the agent depends on go on the command line, where SQL cannot change them.
  // Four independent things at once, awaited in order once all have settled: the first failing one
  // in this order is the error, whichever failed first.
  const conf = writeUserConf(dataDir, ctx.cfg);
  const wal = ctx.wal.mount(b.id);
  const hba = ensureHbaFile(ctx);
  const state = ctx.docker.state(b.container);
  await Promise.allSettled([conf, wal, hba, state]);
  const major = await conf;
  await wal;
  await hba;
  const existing = await state;
  const spec = containerSpec(ctx, b, major, pgdata, dataDir, extra);
  // A running one is left as it is (made before port slots, it may publish the port itself).
  if (!existing?.running) await ensureSlot(ctx, b.port, b.image);
  const stale = existing !== null && !existing.running && existing.labels[LABEL_SPEC] !== spec.labels[LABEL_SPEC];
  if (stale) await ctx.docker.remove(b.container);
  if (!existing || stale) await ctx.docker.create(spec);
  await ctx.docker.start(b.container);
}

/**
 * A new branch's container made ahead of its clone (not started): from the parent's PostgreSQL
 * version and where the clone will be mounted (under its parent dataset's mount point, as ZFS
 * mounts a child). Nothing when either is unknown; start makes it again if the guess was wrong.
 */
export async function createEarly(
  ctx: EngineContext,
  b: BranchRecord,
  parent: BranchRecord,
  pgdata: string,
): Promise<void> {
  const mounts = await ctx.zfs.mountsNow();
  const cut = b.dataset.lastIndexOf('/');
  const under = mounts.get(b.dataset.slice(0, cut));
  const parentAt = mounts.get(parent.dataset);
  if (under === undefined || parentAt === undefined) return;
  const major = await pgMajor(Layout.dataDir(parentAt));
  const dataDir = Layout.dataDir(`${under}/${b.dataset.slice(cut + 1)}`);
  const id = await ctx.docker.create(containerSpec(ctx, b, major, pgdata, dataDir));
  ctx.log.debug('container made ahead of its clone', { container: b.container, id });
}

/** Waits until the branch answers a query and accepts writes; the container's last log line on failure. */
export async function waitBranchReady(
  ctx: EngineContext,
  b: BranchRecord,
  db: DatabaseRecord,
  database = db.pgDatabase,
): Promise<void> {
  await (await openBranchWhenReady(ctx, b, db, database)).end().catch(() => {});
}

/** waitBranchReady, keeping the session that found the branch ready (the caller ends it). */
export async function openBranchWhenReady(
  ctx: EngineContext,
  b: BranchRecord,
  db: DatabaseRecord,
  database = db.pgDatabase,
): Promise<pg.Client> {
  try {
    return await ctx.pg.openWhenReady(
      target(ctx, b, db, b.password, database),
      ctx.cfg.postgres.readyTimeoutSeconds * 1000,
      async () => {
        const st = await ctx.docker.state(b.container);
        return st?.running === true && st.restarts === 0 && st.status === 'running';
      },
    );
  } catch (e) {
    const tail = (await ctx.docker.logsTail(b.container, 5)).trim().split('\n').pop();
    throw new Error(`${describe(e)}${tail ? ` (container log: ${tail})` : ''}`, { cause: e });
  }
}

/** Mounts a branch's dataset and (re)creates and starts its container, then waits until it answers. */
export async function startBranchContainer(ctx: EngineContext, b: BranchRecord): Promise<void> {
  const st = await ctx.store.read();
  const db = requireDatabase(st, b.database);
  const { pgdata } = await ctx.docker.ensureImage(b.image);
  await startContainer(ctx, b, pgdata, Layout.dataDir(await ctx.zfs.mountedFolder(b.dataset)));
  await waitBranchReady(ctx, b, db);
}

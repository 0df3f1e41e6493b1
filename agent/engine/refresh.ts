import { randomBytes } from 'node:crypto';
import { conflict, invalid } from '../errors.js';
import { sleep } from '../drivers/exec.js';
import { newOperation, operationAlive } from '../state/operation.js';
import type { BranchRecord, DatabaseRecord, State } from '../state/schema.js';
import { begin } from './begin.js';
import { branchProps, ownerOf, startContainer, waitBranchReady } from './containers.js';
import type { EngineContext } from './context.js';
import { mkdirOwned } from './datadir.js';
import { undoAndFail } from './failure.js';
import { buildFromSource, type ImportProgress } from './import-build.js';
import { checkSourceInput, resolvePassword, sourceOf, type ImportSource } from './import-source.js';
import { Layout } from './layout.js';
import { checkFreeSpace } from './limits.js';
import { checkMasking, hasMasking, maskCluster, type MaskingSpec } from './masking.js';
import { freshView } from './reads.js';
import { commitRefresh, finishRefresh, refreshPlan } from './refresh-steps.js';
import { assertIdle, now, requireDatabase } from './rules.js';
import { Steps } from './steps.js';
import type { BranchView } from './view.js';

/**
 * `bpg db refresh`: a new main built beside the old one from the source, masked, then swapped in.
 *
 * 1. Reserve under the lock: the database's journal entry (`refresh`, phase `build`) with the names
 *    of everything the refresh makes. Branches can still be made from the old main meanwhile.
 * 2. Build: a new dataset `<db>/main.g<N>-<tag>`, the import (buildFromSource), the masking and
 *    its clean-up (masking.ts). A failure here leaves the old main untouched.
 * 3. Swap (phase `swap`, main's own marker set once nothing is being made from it): main's
 *    container stops (a fast shutdown: clients are disconnected), main's WAL archive is set aside
 *    for a fresh one, and main's container starts on the new dataset (`<db>/main.g<N>-<tag>`) with
 *    the same port and password. The old dataset keeps its name: branches cloned from it keep
 *    working, untouched (zfs-fuse would refuse to rename it while clones of it exist).
 * 4. Commit (one state change): main's dataset and generation, main's kept snapshots dropped
 *    (they stay with the old dataset), the old dataset recorded as retired. After it, the old WAL
 *    archive is dropped, and the old main too if nothing was cloned from it.
 *
 * A process killed anywhere is finished (after the commit) or undone (before) by recovery
 * (refresh-steps.ts). Clients of main are cut off from step 3's stop to its `wait ready`: that
 * interruption is measured and returned.
 */

export interface RefreshOptions {
  /** postgres://user[:password]@host:port/db; default: the source recorded for the database. */
  fromUrl?: string;
  /** With `fromUrl`: where the agent finds its password (an environment variable or a file of the agent's host). */
  passwordEnv?: string;
  passwordFile?: string;
  method?: 'dump' | 'basebackup';
  jobs?: number;
  /** A masking SQL file; default: the config's `databases.<db>.masking`, else the masking recorded at import. */
  maskingSql?: string;
  progress?: (p: ImportProgress) => void;
}

export interface RefreshResult {
  branch: BranchView;
  generation: number;
  /** How long main did not answer (ms): from its stop to its new server accepting queries. */
  interruptionMs: number;
  masked: boolean;
  /** Old mains destroyed because nothing was cloned from them. */
  timings: Record<string, number>;
  totalMs: number;
}

/** How long the swap waits for branch creations and other work on main to end. */
const SWAP_WAIT_MS = 10 * 60 * 1000;

/** The masking that applies: the flag, else the config's, else the one recorded for the database. */
export async function maskingFor(
  ctx: EngineContext,
  db: DatabaseRecord,
  flag: string | undefined,
): Promise<MaskingSpec | null> {
  if (flag !== undefined) return checkMasking({ sql: flag, command: null });
  const own = ctx.cfg.databases[db.name]?.masking;
  if (own) return checkMasking({ sql: own.sql ?? null, command: own.command ?? null });
  if (hasMasking(db.masking)) return checkMasking(db.masking);
  return null;
}

/**
 * The source a refresh imports from: `--from-url` (its password, if any, in memory for this run
 * only), else `databases.<db>.refresh.from` with its password reference, else the source recorded
 * at import (import-source.ts); `--method`/`--jobs` override what is recorded.
 */
async function sourceFor(ctx: EngineContext, db: DatabaseRecord, o: RefreshOptions): Promise<ImportSource> {
  const sched = ctx.cfg.databases[db.name]?.refresh;
  const given = o.fromUrl ?? sched?.from;
  if (given !== undefined) {
    const c = checkSourceInput({
      url: given,
      method: o.method ?? sched?.method,
      jobs: o.jobs ?? sched?.jobs,
      passwordEnv: o.fromUrl === undefined ? sched?.passwordEnv : o.passwordEnv,
      passwordFile: o.fromUrl === undefined ? sched?.passwordFile : o.passwordFile,
    });
    const password = c.ref.kind === 'url' ? (c.parsed.password ?? undefined) : await resolvePassword(ctx.cfg, c.ref);
    return { url: c.parsed.url, password, method: c.method, jobs: c.jobs, roles: c.roles };
  }
  if (!db.source) throw invalid(`database '${db.name}' has no recorded source: name one with --from-url`);
  const src = await sourceOf(ctx.cfg, db.source);
  return { ...src, method: o.method ?? src.method, jobs: o.jobs ?? src.jobs };
}

/** Nothing is being made from main (a branch create or reset in flight snapshots it) and main itself is idle. */
function mainBusy(s: State, name: string): string | null {
  const main = s.branches[`${name}/main`]!;
  if (main.operation && operationAlive(main.operation)) return `main: '${main.operation.kind}'`;
  const key = `${name}/main`;
  const b = Object.values(s.branches).find(
    (x) =>
      x.parent === key && x.operation && operationAlive(x.operation) && ['create', 'reset'].includes(x.operation.kind),
  );
  return b ? `${b.database}/${b.branch}: '${b.operation!.kind}'` : null;
}

export async function refreshDatabase(
  ctx: EngineContext,
  name: string,
  o: RefreshOptions = {},
): Promise<RefreshResult> {
  const t0 = performance.now();
  await begin(ctx);
  await checkFreeSpace(ctx.zfs, ctx.cfg);
  const tag = randomBytes(4).toString('hex');
  const before = await ctx.store.read();
  const db0 = requireDatabase(before, name);
  const masking = await maskingFor(ctx, db0, o.maskingSql);
  const source = await sourceFor(ctx, db0, o);
  const { main, db, plan } = await ctx.store.update((s) => {
    const db = requireDatabase(s, name);
    assertIdle(`database '${name}'`, db.operation);
    const main = s.branches[`${name}/main`];
    if (!main) throw conflict(`database '${name}' has no main branch`);
    if (main.status !== 'running' && main.status !== 'stopped') throw conflict(`main of '${name}' is ${main.status}`);
    assertIdle(`branch '${name}/main'`, main.operation);
    const plan = refreshPlan(ctx, main, db.generation, tag);
    db.operation = newOperation('refresh', { ...plan, phase: 'build' });
    return { main: { ...main }, db: { ...db }, plan };
  });
  const log = ctx.log;
  const steps = new Steps('db refresh', log);
  let interruptionMs = 0;
  try {
    const { pgdata } = await steps.step('check image', () => ctx.docker.ensureImage(main.image));
    await steps.step(
      'zfs create',
      async () => {
        if (await ctx.zfs.exists(plan.fresh)) throw conflict(`dataset ${plan.fresh} already exists`);
        await ctx.zfs.create(plan.fresh, branchProps(main));
      },
      () => ctx.zfs.destroy(plan.fresh, { recursive: true }),
      { partial: true },
    );
    const dataDir = Layout.dataDir(await ctx.zfs.mountpoint(plan.fresh));
    await steps.step('prepare folders', () => mkdirOwned(dataDir, ownerOf(ctx)));
    await steps.step('import', () =>
      buildFromSource(ctx, {
        record: main,
        dataset: plan.fresh,
        image: main.image,
        pgDatabase: db.pgDatabase,
        source,
        progress: o.progress,
      }),
    );
    if (masking)
      await steps.step('mask', () =>
        maskCluster(ctx, { record: main, image: main.image, pgdata, dataDir, pgDatabase: db.pgDatabase, tag }, masking),
      );
    await steps.step('wait for main', () => claimMain(ctx, name, plan));
    const stopAt = performance.now();
    await steps.step(
      'stop main',
      async () => {
        await ctx.docker.stop(main.container, ctx.cfg.postgres.stopTimeoutSeconds);
        await ctx.docker.remove(main.container);
      },
      async () => {
        if (main.status !== 'running') return;
        await startContainer(ctx, main, pgdata, Layout.dataDir(await ctx.zfs.mountedFolder(main.dataset)));
        await waitBranchReady(ctx, main, db);
      },
    );
    await steps.step(
      'clear WAL folder',
      async () => {
        await ctx.wal.rename(ctx.layout.walDataset(main.id), plan.oldWal);
        await ctx.wal.create(main.id);
      },
      async () => {
        await ctx.wal.destroy(main.id);
        await ctx.wal.rename(plan.oldWal, ctx.layout.walDataset(main.id));
      },
    );
    const next: BranchRecord = { ...main, dataset: plan.fresh, generation: db.generation + 1 };
    await steps.step(
      'start container',
      () => startContainer(ctx, next, pgdata, dataDir),
      () => ctx.docker.remove(main.container),
      { partial: true },
    );
    await steps.step('wait ready', () => waitBranchReady(ctx, next, db));
    interruptionMs = Math.round(performance.now() - stopAt);
    await steps.step('commit', () =>
      ctx.store.update((s) => {
        if (masking) s.databases[name]!.masking = { sql: masking.sql, command: masking.command };
        commitRefresh(s, name, plan, now());
      }),
    );
  } catch (err) {
    await undoAndFail(ctx, steps, err, (s) => {
      const d = s.databases[name];
      if (d) d.operation = null;
      const m = s.branches[`${name}/main`];
      if (m?.operation?.kind === 'refresh') m.operation = null;
    });
  }
  await finishRefresh(ctx, name, plan, steps);
  const st = await ctx.store.read();
  log.info(
    `refreshed ${name}: main is generation ${st.databases[name]!.generation}; clients waited ${interruptionMs} ms`,
  );
  return {
    branch: await freshView(ctx, { database: name, branch: 'main' }),
    generation: st.databases[name]!.generation,
    interruptionMs,
    masked: masking !== null,
    timings: steps.timings,
    totalMs: Math.round(performance.now() - t0),
  };
}

/** Phase `swap`: waits until nothing is made from main, then marks main as being refreshed. */
async function claimMain(ctx: EngineContext, name: string, plan: Record<string, string>): Promise<void> {
  const deadline = Date.now() + SWAP_WAIT_MS;
  for (;;) {
    const busy = await ctx.store.update((s) => {
      const why = mainBusy(s, name);
      if (why) return why;
      s.databases[name]!.operation = { ...s.databases[name]!.operation!, data: { ...plan, phase: 'swap' } };
      s.branches[`${name}/main`]!.operation = newOperation('refresh');
      return null;
    });
    if (!busy) return;
    if (Date.now() > deadline) throw conflict(`main of '${name}' stayed busy (${busy}); the refresh gave up`);
    await sleep(500);
  }
}

import type pg from 'pg';
import { conflict, invalid, notFound } from '../errors.js';
import { newPassword, type BackupLabel } from '../drivers/postgres.js';
import { refName, type BranchRef } from '../names.js';
import { newOperation } from '../state/operation.js';
import type { BranchRecord, SnapshotRecord } from '../state/schema.js';
import { dropWal, freshClone, setPassword, snapshotParent } from './clone.js';
import { createEarly, openBranchWhenReady, startContainer, waitBranchReady } from './containers.js';
import type { EngineContext } from './context.js';
import type { CreateResult } from './create-database.js';
import { prepareBackupClone, prepareCrashClone } from './datadir.js';
import { undoAndFail } from './failure.js';
import { Layout } from './layout.js';
import { checkBranchCount, checkFreeSpace, checkResources } from './limits.js';
import { planPitr } from './pitr.js';
import { buildSchemaOnly, seedInfo } from './schema-only.js';
import { dropSlot, ensureSlot, sparePorts } from './port-slots.js';
import { reservePort } from './ports.js';
import { freshView, spaceNow } from './reads.js';
import { begin } from './begin.js';
import { assertIdle, expiryFor, freshBranchFields, newId, now, requireDatabase } from './rules.js';
import { Steps } from './steps.js';
import type { Space } from './view.js';

export interface CreateBranchOptions {
  from?: BranchRef;
  fast?: boolean;
  /** Clone a kept snapshot (`bpg snapshot create`) instead of taking a fresh one. */
  fromSnapshot?: string;
  /** Point-in-time recovery of `from` (default main) to this moment. */
  pitr?: Date;
  /** Delete the branch this long after creation (ms); null: never; undefined: the config's default. */
  ttlMs?: number | null;
  /** Never expired nor stopped when idle. */
  protect?: boolean;
  /** Container limits (bytes, CPUs); default postgres.memory / postgres.cpus. */
  memory?: number;
  cpus?: number;
  /** ZFS quota of the branch's dataset (bytes); default postgres.diskQuota. */
  disk?: number;
  /** The parent's structure without its rows (a fresh cluster: schema-only.ts). */
  schemaOnly?: boolean;
  /** SQL run after the structure (schema-only branches only). */
  seed?: string;
}

/**
 * A branch: reserve its name and port under the state lock, snapshot the parent (backup mode, or
 * CHECKPOINT with `fast`, or a kept snapshot, or point-in-time recovery from one), clone, prepare
 * the clone, start it, give it its own password. Every step undoes itself when a later one fails.
 */
export async function createBranch(
  ctx: EngineContext,
  ref: BranchRef,
  opts: CreateBranchOptions = {},
): Promise<CreateResult> {
  const t0 = performance.now();
  const spareList = sparePorts(ctx); // (a hint: the reservation below checks again under the lock)
  spareList.catch(() => {});
  // The free-space check runs beside begin(), whose errors (no pool, no Docker) win; made again
  // after it when recovery or the WAL migration changed anything (they free or use space).
  const freeSpace = settled(checkFreeSpace(ctx.zfs, ctx.cfg));
  const changed = await begin(ctx);
  const key = refName(ref);
  if (ref.branch === 'main') throw conflict(`'main' is created with its database (bpg db create ${ref.database})`);
  if (opts.fromSnapshot && opts.pitr) throw invalid('use either --from-snapshot or --pitr, not both');
  if (opts.fromSnapshot && opts.from) throw invalid('--from-snapshot already names the source branch; drop --from');
  if ((opts.fromSnapshot || opts.pitr) && opts.fast) throw invalid('--fast applies to fresh snapshots only');
  if (opts.seed !== undefined && !opts.schemaOnly)
    throw invalid('a seed applies to schema-only branches only (--schema-only; schemaOnly: true over HTTP)');
  if (opts.schemaOnly && (opts.fromSnapshot || opts.pitr || opts.fast))
    throw invalid("--schema-only takes the parent's current structure: drop --from-snapshot, --pitr and --fast");
  const seed = opts.seed === undefined ? null : seedInfo(opts.seed);
  checkResources(ctx.cfg, opts);
  const noSpace = changed ? await settled(checkFreeSpace(ctx.zfs, ctx.cfg)) : await freeSpace;
  if (noSpace) throw noSpace;
  const startedAt = Date.now();
  const fromRef = opts.from ?? { database: ref.database, branch: 'main' };
  if (fromRef.database !== ref.database)
    throw invalid(`--from must be a branch of database '${ref.database}', not '${refName(fromRef)}'`);
  const log = ctx.log;

  // Point-in-time recovery needs the source's WAL up to the target in its archive.
  let pitr: { target: Date; snapshot: SnapshotRecord } | null = null;
  if (opts.pitr) pitr = await planPitr(ctx, fromRef, opts.pitr);
  const spares = await spareList.catch(() => []);

  const { record, parent, db, kept } = await ctx.store.update(async (s) => {
    const db = requireDatabase(s, ref.database);
    // A refresh building its new main beside the old one does not stop branches from the old one.
    const building = db.operation?.kind === 'refresh' && db.operation.data?.phase === 'build';
    assertIdle(`database '${ref.database}'`, building ? null : db.operation);
    if (s.branches[key]) throw conflict(`branch '${key}' already exists`);
    checkBranchCount(ctx.cfg, s, ref.database);
    let parent: BranchRecord | undefined;
    let kept: SnapshotRecord | null = null;
    if (opts.fromSnapshot || pitr) {
      kept = pitr ? pitr.snapshot : (s.snapshots[opts.fromSnapshot!] ?? null);
      if (!kept || !s.snapshots[kept.id])
        throw notFound(`snapshot '${opts.fromSnapshot ?? pitr!.snapshot.id}' does not exist`);
      parent = Object.values(s.branches).find((b) => b.id === kept!.branchId);
      if (parent && parent.database !== ref.database)
        throw invalid(`snapshot '${kept.id}' belongs to database '${parent.database}', not '${ref.database}'`);
    } else {
      parent = s.branches[refName(fromRef)];
    }
    if (!parent) throw notFound(`branch '${refName(fromRef)}' does not exist`);
    if (!kept && parent.status !== 'running' && parent.status !== 'stopped') {
      throw conflict(`branch '${refName(parent)}' is ${parent.status}; it cannot be branched now`);
    }
    assertIdle(`branch '${refName(parent)}'`, parent.operation?.kind === 'delete' ? parent.operation : null);
    const port = await reservePort(s, ctx.cfg.postgres.portRange, ctx.cfg.postgres.bindAddress, spares);
    const id = newId();
    const record: BranchRecord = {
      id,
      database: ref.database,
      branch: ref.branch,
      parent: refName(parent),
      status: 'creating',
      port,
      password: newPassword(),
      image: parent.image,
      dataset: ctx.layout.branchDataset(ref.database, ref.branch),
      container: ctx.layout.container(ref.database, ref.branch),
      origin: opts.schemaOnly
        ? null // a clone of the empty template, never of the parent: nothing to keep
        : kept
          ? { snapshot: `${parent.dataset}@${kept.name}`, consistency: kept.consistency }
          : { snapshot: `${parent.dataset}@bpg-${id}`, consistency: opts.fast ? 'crash' : 'application' },
      createdAt: now(),
      operation: newOperation('create'),
      // A protected branch gets no pr-<n> default TTL (it would never be enforced); an explicit one is kept.
      ...freshBranchFields({
        expiresAt: opts.protect && opts.ttlMs === undefined ? null : expiryFor(ctx.cfg, ref.branch, opts.ttlMs),
        protect: opts.protect,
        memory: opts.memory,
        cpus: opts.cpus,
        disk: opts.disk ?? ctx.cfg.postgres.diskQuota,
        generation: parent.generation,
      }),
      schemaOnly: !!opts.schemaOnly,
      seed,
    };
    s.branches[key] = record;
    return { record, parent: { ...parent }, db: { ...db }, kept };
  });

  const steps = new Steps('branch create', log);
  if (opts.schemaOnly) {
    try {
      const { pgdata } = await steps.step('check image', () => ctx.docker.ensureImage(record.image));
      const initial = await buildSchemaOnly(ctx, steps, {
        record,
        parent,
        db,
        into: record.dataset,
        pgdata,
        seed: opts.seed ?? null,
      });
      await steps.step(
        'prepare data',
        () => ctx.wal.create(record.id),
        () => ctx.wal.destroy(record.id),
        { partial: true },
      );
      const dataDir = Layout.dataDir(await ctx.zfs.mountpoint(record.dataset));
      await steps.step(
        'start container',
        () => startContainer(ctx, record, pgdata, dataDir),
        () => dropSlot(ctx, record),
        { partial: true },
      );
      await steps.step('wait ready', () => waitBranchReady(ctx, { ...record, password: initial }, db));
      await steps.step('set password', () => setPassword(ctx, record, db, initial, record.password));
    } catch (e) {
      await undoAndFail(
        ctx,
        steps,
        e,
        (s) => {
          delete s.branches[key];
        },
        { containers: [record.container], sinceMs: startedAt },
      );
    }
    await ctx.store.update((s) => {
      s.branches[key]!.status = 'running';
      s.branches[key]!.operation = null;
    });
    ctx.spares?.poke();
    return { branch: await freshView(ctx, ref), timings: steps.timings, totalMs: Math.round(performance.now() - t0) };
  }
  const ready: { session: pg.Client | null } = { session: null };
  let viewSpace: Promise<Space | null> | undefined;
  try {
    const snap = record.origin!.snapshot;
    const { pgdata } = await steps.step('check image', () => ctx.docker.ensureImage(record.image));
    // The port slot starts while the snapshot and clone are made (taken at once when it is a spare),
    // and the branch's container is made in it meanwhile (not started), for where the clone will be
    // mounted: 'start container' makes it again if it is mounted elsewhere (the spec's hash differs).
    let slot: Promise<unknown> = Promise.resolve(null);
    let early: Promise<unknown> = Promise.resolve(null);
    await steps.step(
      'port slot',
      async () => {
        slot = settled(ensureSlot(ctx, record.port, record.image));
        if (!pitr) early = slot.then((failed) => (failed ? null : settled(createEarly(ctx, record, parent, pgdata))));
      },
      async () => {
        await early;
        await dropSlot(ctx, record, slot);
      },
    );
    // The WAL archive's dataset needs nothing the steps below make: it is made while the parent is
    // checkpointed (or in backup mode), snapshotted and cloned, and awaited once the data is prepared.
    let wal: Promise<unknown> = Promise.resolve(null);
    await steps.step(
      'wal archive',
      async () => {
        wal = settled(ctx.wal.create(record.id));
      },
      () => dropWal(ctx, record, wal),
    );
    let label: BackupLabel | null = kept?.backup ?? null;
    if (!kept)
      label = await snapshotParent(ctx, steps, parent, db, snap, {
        fast: !!opts.fast,
        label: `betterpg ${key}`,
        by: record,
      });
    const clone = freshClone(ctx, snap, record);
    await steps.step('zfs clone', clone.run, () => clone.undo(), { partial: true });
    const dataDir = Layout.dataDir(await ctx.zfs.mountedFolder(record.dataset));
    await steps.step('prepare data', async () => {
      if (pitr) {
        await prepareBackupClone(dataDir, ctx.cfg, label!, []);
      } else if (label) {
        const parentData = Layout.dataDir(await ctx.zfs.mountpoint(parent.dataset));
        await prepareBackupClone(dataDir, ctx.cfg, label, [
          { dir: ctx.layout.walDir(parent.id) },
          ...(kept ? [] : [{ dir: parentData, sub: 'pg_wal' }]),
        ]);
      } else {
        await prepareCrashClone(dataDir);
      }
      const failed = await wal;
      if (failed) throw failed;
    });
    if (pitr) {
      // Replay the source's archive (mounted read-only for this start only) up to the target.
      const restore = '/var/lib/postgresql/restore-archive';
      const conf = {
        restore_command: `cp ${restore}/%f %p`,
        // numeric offset: zone abbreviations such as 'Z' are not loaded yet when this is parsed
        recovery_target_time: pitr.target.toISOString().replace('T', ' ').replace('Z', '+00'),
        recovery_target_action: 'promote',
        recovery_target_timeline: 'latest',
      };
      await steps.step(
        'start recovery',
        async () => {
          await ctx.wal.mount(parent.id);
          await startContainer(ctx, record, pgdata, dataDir, {
            binds: [`${ctx.layout.walDir(parent.id)}:${restore}:ro`],
            conf,
          });
        },
        () => dropSlot(ctx, record),
        { partial: true },
      );
      await steps.step('recover to target', () => waitBranchReady(ctx, { ...record, password: parent.password }, db));
      // From now on the branch archives into and recovers from its own folder only.
      await steps.step('detach source archive', async () => {
        await ctx.docker.stop(record.container, ctx.cfg.postgres.stopTimeoutSeconds);
        await ctx.docker.remove(record.container);
      });
    }
    await steps.step(
      'start container',
      async () => {
        const failed = await slot;
        if (failed) throw failed;
        await early; // made or not: startContainer makes what is missing or different
        await startContainer(ctx, record, pgdata, dataDir);
      },
      () => ctx.docker.remove(record.container),
      { partial: true },
    );
    // The view's `zfs get` runs while PostgreSQL starts (a fresh clone's numbers are the same then).
    viewSpace = spaceNow(ctx, record.dataset);
    // The clone still has its parent's password: the session that finds it ready gives it its own.
    await steps.step('wait ready', async () => {
      ready.session = await openBranchWhenReady(ctx, { ...record, password: parent.password }, db);
    });
    await steps.step('set password', () =>
      setPassword(ctx, record, db, parent.password, record.password, ready.session),
    );
    await ready.session?.end().catch(() => {});
  } catch (e) {
    await ready.session?.end().catch(() => {});
    await undoAndFail(
      ctx,
      steps,
      e,
      (s) => {
        delete s.branches[key];
      },
      { containers: [parent.container, record.container], sinceMs: startedAt },
    );
  }
  await ctx.store.update((s) => {
    s.branches[key]!.status = 'running';
    s.branches[key]!.operation = null;
  });
  ctx.spares?.poke();
  if (opts.fast)
    log.warn(`branch ${key} is crash-consistent (--fast): the parent was checkpointed, not put in backup mode`);
  return {
    branch: await freshView(ctx, ref, { space: viewSpace }),
    timings: steps.timings,
    totalMs: Math.round(performance.now() - t0),
  };
}

/** A task run beside others: resolves to its error, or null (never rejects, so it is never left unhandled). */
function settled(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => null,
    (e: unknown) => e,
  );
}

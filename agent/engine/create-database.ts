import { conflict, invalid } from '../errors.js';
import { newPassword, quoteIdent } from '../drivers/postgres.js';
import { refName } from '../names.js';
import { newOperation } from '../state/operation.js';
import type { BranchRecord } from '../state/schema.js';
import { branchProps, ownerOf, startContainer, target, waitBranchReady } from './containers.js';
import type { EngineContext } from './context.js';
import { configureNewCluster, mkdirOwned } from './datadir.js';
import { undoAndFail } from './failure.js';
import { checkImage } from './images.js';
import { checkMasking, maskCluster } from './masking.js';
import { Layout, ZFS_PROP } from './layout.js';
import { checkBranchCount, checkFreeSpace, checkResources } from './limits.js';
import { dropSlot, sparePorts } from './port-slots.js';
import { reservePort } from './ports.js';
import { freshView } from './reads.js';
import { begin } from './begin.js';
import { freshBranchFields, freshDatabaseFields, newId, now } from './rules.js';
import { Steps } from './steps.js';
import { buildFromSource, probeSource, type ImportProgress } from './import-build.js';
import {
  checkSourceInput,
  removeSecret,
  resolvePassword,
  writeSecret,
  type ImportSource,
  type PasswordRef,
  type SourceInput,
} from './import-source.js';
import { initdb } from './initdb.js';
import type { BranchView } from './view.js';

export interface CreateResult {
  branch: BranchView;
  timings: Record<string, number>;
  totalMs: number;
}

export interface CreateDatabaseOptions {
  image?: string;
  memory?: number;
  cpus?: number;
  /** ZFS quota of main's dataset (default: none). */
  disk?: number;
  /** Import main's data from a live PostgreSQL instead of starting empty (`--from-url`). */
  from?: SourceInput;
  /** Import progress (bytes, tables, rate), besides the log lines. */
  progress?: (p: ImportProgress) => void;
  /** With `from`: a masking SQL file run on the copy before main starts (masking.ts); recorded for refreshes. */
  maskingSql?: string;
}

/**
 * A new database: its main branch's dataset, an initdb in a one-shot container (or, with `from`, an
 * import from a live PostgreSQL: import-build.ts), the container, the database inside. A failed
 * import leaves nothing behind: no dataset, container, state or secrets file.
 */
export async function createDatabase(
  ctx: EngineContext,
  name: string,
  opts: CreateDatabaseOptions = {},
): Promise<CreateResult> {
  const t0 = performance.now();
  checkResources(ctx.cfg, opts);
  const image = opts.image ?? ctx.cfg.postgres.image;
  checkImage(ctx.cfg, image);
  // The source is checked at the edge: a bad URL or a missing password reference creates nothing.
  const from = opts.from ? checkSourceInput(opts.from) : null;
  let source: ImportSource | null = null;
  // Masking: the flag, else the config's; checked (file readable) before anything is made.
  const own = ctx.cfg.databases[name]?.masking;
  const masking = !opts.from
    ? null
    : opts.maskingSql !== undefined
      ? await checkMasking({ sql: opts.maskingSql, command: null })
      : own
        ? await checkMasking({ sql: own.sql ?? null, command: own.command ?? null })
        : null;
  if (opts.maskingSql !== undefined && !opts.from) throw invalid('--masking-sql goes with --from-url');
  if (from) {
    const password =
      from.ref.kind === 'url' ? (from.parsed.password ?? undefined) : await resolvePassword(ctx.cfg, from.ref);
    source = { url: from.parsed.url, password, method: from.method, jobs: from.jobs, roles: from.roles };
  }
  await begin(ctx);
  await checkFreeSpace(ctx.zfs, ctx.cfg);
  const startedAt = Date.now();
  const log = ctx.log;
  const ref = { database: name, branch: 'main' };
  const spares = await sparePorts(ctx);
  const key = refName(ref);

  const record = await ctx.store.update(async (s) => {
    if (s.databases[name]) throw conflict(`database '${name}' already exists`);
    checkBranchCount(ctx.cfg, s, name);
    const port = await reservePort(s, ctx.cfg.postgres.portRange, ctx.cfg.postgres.bindAddress, spares);
    // A base backup copies the whole cluster: connection strings name the source's database.
    const pgDatabase = from?.method === 'basebackup' ? from.parsed.database : name;
    s.databases[name] = {
      name,
      image,
      createdAt: now(),
      pgDatabase,
      operation: newOperation('create-database'),
      ...freshDatabaseFields(),
      masking: opts.maskingSql !== undefined && masking ? { sql: masking.sql, command: null } : null,
    };
    const b: BranchRecord = {
      id: newId(),
      database: name,
      branch: 'main',
      parent: null,
      status: 'creating',
      port,
      password: newPassword(),
      image,
      dataset: ctx.layout.branchDataset(name, 'main'),
      container: ctx.layout.container(name, 'main'),
      origin: null,
      createdAt: now(),
      operation: newOperation('create'),
      ...freshBranchFields({ protect: true, memory: opts.memory, cpus: opts.cpus, disk: opts.disk }),
    };
    s.branches[key] = b;
    return b;
  });

  const steps = new Steps('db create', log);
  try {
    // Pulled only now, once the name, the limits and duplicates are checked and the name reserved.
    const { pgdata } = await steps.step('check image', () => ctx.docker.ensureImage(image));
    log.info(`creating database ${name} (image ${image})`);
    if (from && source) {
      const src = source;
      // Before anything is made: the source answers with these credentials, in a version the method can take.
      await steps.step('check source', () => probeSource(ctx, { record, image, source: src }));
      await steps.step(
        'keep the source',
        async () => {
          const ref: PasswordRef = from.ref.kind === 'url' ? await writeSecret(ctx.cfg, src.password ?? '') : from.ref;
          await ctx.store.update((s) => {
            s.databases[name]!.source = {
              url: src.url,
              method: src.method,
              jobs: src.jobs,
              roles: src.roles,
              password: ref,
              importedAt: now(),
            };
          });
          return ref;
        },
        async (ref) => removeSecret(ctx.cfg, ref),
      );
    }
    await steps.step(
      'zfs create',
      async () => {
        const dbDs = ctx.layout.databaseDataset(name);
        if (await ctx.zfs.exists(dbDs))
          throw conflict(
            `dataset ${dbDs} already exists (left over? run 'zfs destroy -r ${dbDs}' if it is not needed)`,
          );
        // compression=on (lz4 on OpenZFS, lzjb on zfs-fuse): WAL files and fresh pages are mostly zeros.
        await ctx.zfs.create(
          dbDs,
          { compression: 'on', atime: 'off', [ZFS_PROP.managed]: 'true', [ZFS_PROP.database]: name },
          true,
        );
        try {
          await ctx.zfs.create(record.dataset, branchProps(record));
        } catch (e) {
          await ctx.zfs.destroy(dbDs, { recursive: true }).catch(() => {});
          throw e;
        }
      },
      async () => ctx.zfs.destroy(ctx.layout.databaseDataset(name), { recursive: true }),
    );
    const dataDir = Layout.dataDir(await ctx.zfs.mountpoint(record.dataset));
    await steps.step(
      'prepare folders',
      async () => {
        await mkdirOwned(dataDir, ownerOf(ctx));
        await ctx.wal.create(record.id);
      },
      async () => ctx.wal.destroy(record.id),
      { partial: true },
    );
    if (source) {
      const src = source;
      await steps.step('import', () =>
        buildFromSource(ctx, { record, dataset: record.dataset, image, source: src, progress: opts.progress }),
      );
      if (masking) {
        const m = masking;
        const pgDatabase = (await ctx.store.read()).databases[name]!.pgDatabase;
        await steps.step('mask', () =>
          maskCluster(ctx, { record, image, pgdata, dataDir, pgDatabase, tag: record.id.slice(0, 8) }, m),
        );
      }
    } else {
      await steps.step('initdb', () => initdb(ctx, record, image, dataDir, pgdata));
      await steps.step('configure', () => configureNewCluster(dataDir, ctx.cfg));
    }
    await steps.step(
      'start container',
      () => startContainer(ctx, record, pgdata, dataDir),
      () => dropSlot(ctx, record),
      { partial: true },
    );
    const db = (await ctx.store.read()).databases[name]!;
    await steps.step('wait ready', () => waitBranchReady(ctx, record, db, 'postgres'));
    if (name !== 'postgres' && !source) {
      await steps.step('create database', () =>
        ctx.pg.withClient(target(ctx, record, db, record.password, 'postgres'), (c) =>
          c.query(`CREATE DATABASE ${quoteIdent(name)}`),
        ),
      );
    }
  } catch (e) {
    await undoAndFail(
      ctx,
      steps,
      e,
      (s) => {
        delete s.branches[key];
        delete s.databases[name];
      },
      { containers: [record.container], sinceMs: startedAt },
    );
  }
  await ctx.store.update((s) => {
    s.databases[name]!.operation = null;
    s.branches[key]!.status = 'running';
    s.branches[key]!.operation = null;
  });
  ctx.spares?.poke();
  return { branch: await freshView(ctx, ref), timings: steps.timings, totalMs: Math.round(performance.now() - t0) };
}

import { chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { conflict } from '../errors.js';
import type { ContainerSpec } from '../drivers/docker.js';
import { hardening } from '../drivers/hardening.js';
import { newPassword, quoteIdent } from '../drivers/postgres.js';
import { refName } from '../names.js';
import { newOperation } from '../state/operation.js';
import type { BranchRecord } from '../state/schema.js';
import { branchProps, labels, ownerOf, startContainer, target, waitBranchReady } from './containers.js';
import type { EngineContext } from './context.js';
import { configureNewCluster, mkdirOwned } from './datadir.js';
import { undoAndFail } from './failure.js';
import { checkImage } from './images.js';
import { Layout, ZFS_PROP } from './layout.js';
import { checkBranchCount, checkFreeSpace, checkResources, isOutOfSpace } from './limits.js';
import { reservePort } from './ports.js';
import { freshView } from './reads.js';
import { begin } from './begin.js';
import { freshBranchFields, freshDatabaseFields, newId, now } from './rules.js';
import { Steps } from './steps.js';
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
}

/** A new database: its main branch's dataset, an initdb in a one-shot container, the container, the database inside. */
export async function createDatabase(
  ctx: EngineContext,
  name: string,
  opts: CreateDatabaseOptions = {},
): Promise<CreateResult> {
  const t0 = performance.now();
  checkResources(ctx.cfg, opts);
  const image = opts.image ?? ctx.cfg.postgres.image;
  checkImage(ctx.cfg, image);
  await begin(ctx);
  await checkFreeSpace(ctx.zfs, ctx.cfg);
  const startedAt = Date.now();
  const log = ctx.log;
  const ref = { database: name, branch: 'main' };
  const key = refName(ref);

  const record = await ctx.store.update(async (s) => {
    if (s.databases[name]) throw conflict(`database '${name}' already exists`);
    checkBranchCount(ctx.cfg, s, name);
    const port = await reservePort(s, ctx.cfg.postgres.portRange, ctx.cfg.postgres.bindAddress);
    s.databases[name] = {
      name,
      image,
      createdAt: now(),
      pgDatabase: name,
      operation: newOperation('create-database'),
      ...freshDatabaseFields(),
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
    await steps.step('initdb', () => initdb(ctx, record, image, dataDir, pgdata));
    await steps.step('configure', () => configureNewCluster(dataDir, ctx.cfg));
    await steps.step(
      'start container',
      () => startContainer(ctx, record, pgdata, dataDir),
      () => ctx.docker.remove(record.container),
      { partial: true },
    );
    const db = (await ctx.store.read()).databases[name]!;
    await steps.step('wait ready', () => waitBranchReady(ctx, record, db, 'postgres'));
    if (name !== 'postgres') {
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
  return { branch: await freshView(ctx, ref), timings: steps.timings, totalMs: Math.round(performance.now() - t0) };
}

/** initdb in a one-shot container of the image, so files belong to the image's postgres user. */
export async function initdb(
  ctx: EngineContext,
  b: BranchRecord,
  image: string,
  dataDir: string,
  pgdata: string,
): Promise<void> {
  const tmp = ctx.layout.tmpDir();
  await mkdir(tmp, { recursive: true, mode: 0o700 });
  const pwfile = join(tmp, `pw-${b.id}`);
  await writeFile(pwfile, b.password + '\n', { mode: 0o600 });
  await chown(pwfile, ctx.cfg.postgres.uid, ctx.cfg.postgres.gid);
  try {
    const spec: ContainerSpec = {
      name: `bpg-initdb-${b.id}`,
      image,
      user: `${ctx.cfg.postgres.uid}:${ctx.cfg.postgres.gid}`,
      entrypoint: ['initdb'],
      cmd: [
        '-D',
        pgdata,
        '-U',
        ctx.cfg.postgres.superuser,
        '--pwfile=/run/bpg-pwfile',
        '--auth-local=trust',
        '--auth-host=scram-sha-256',
        '-E',
        'UTF8',
        '--locale=C',
      ],
      binds: [`${dataDir}:${pgdata}`, `${pwfile}:/run/bpg-pwfile:ro`],
      labels: labels(ctx, b),
      ...hardening(ctx.cfg, { oneShot: true }),
    };
    const res = await ctx.docker.runOnce(spec);
    if (res.exitCode !== 0) {
      const lines = res.output.trim().split('\n');
      // A full disk is reported early in the output, then buried under clean-up lines.
      const last = lines.find((l) => isOutOfSpace(new Error(l))) ?? lines.slice(-3).join(' / ');
      throw new Error(`initdb exited with ${res.exitCode}: ${last}`);
    }
  } finally {
    await rm(pwfile, { force: true });
  }
}

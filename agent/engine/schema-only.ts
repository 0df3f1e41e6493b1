import { createHash } from 'node:crypto';
import { chown, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { conflict, describe, invalid } from '../errors.js';
import { UntrustedDir } from '../drivers/untrusted-fs.js';
import type { ContainerSpec } from '../drivers/interfaces.js';
import { hardening } from '../drivers/hardening.js';
import { refName } from '../names.js';
import type { BranchRecord, DatabaseRecord } from '../state/schema.js';
import { freshClone } from './clone.js';
import { containerSpec, ensureHbaFile, labels, ownerOf } from './containers.js';
import type { EngineContext } from './context.js';
import { mkdirOwned, writeUserConf } from './datadir.js';
import { Layout } from './layout.js';
import type { Steps } from './steps.js';
import { dropTemplateSecret, ensureTemplate } from './template.js';

/**
 * A schema-only branch: the parent's structure with none of its rows, then an optional seed.
 *
 * Built as a FRESH cluster, not as a clone of the parent: a clone emptied with TRUNCATE would still
 * carry the parent's rows in WAL segments (full-page images), pg_statistic's most-common values,
 * dead tuples and free space in pages, large objects and sequences. Here no page of the parent ever
 * reaches the branch's dataset: it is a clone of an empty template cluster (template.ts), into which
 * `pg_dump --schema-only` of the parent is restored (roles without passwords first), then the seed.
 * The work runs in a temporary "builder" server on the new dataset (not published, no archiving);
 * pg_dump and psql run in one-shot containers of the database's image (client and server versions
 * match) that join the network namespace of the server they talk to (127.0.0.1 there), with the
 * password in a passfile, never in an argument. The dump is written inside the new dataset (under
 * its quota), beside the data directory, and removed once restored.
 */

/** The largest seed accepted (bytes of SQL). */
export const MAX_SEED_BYTES = 1024 * 1024;
/** The largest schema dump of a parent read back (its structure only: far below this in practice). */
const MAX_SCHEMA_BYTES = 64 * 1024 * 1024;
/** Beside the data directory, in the dataset's root (never inside a container but for the restore): reset runs it again. */
const SEED_FILE = 'seed.sql';
const WORK_DIR = 'schema-only';

export interface SeedInfo {
  bytes: number;
  sha256: string;
}

export function seedInfo(sql: string): SeedInfo {
  const bytes = Buffer.byteLength(sql);
  if (bytes > MAX_SEED_BYTES) throw invalid(`the seed is ${bytes} bytes; at most ${MAX_SEED_BYTES} are accepted`);
  if (sql.includes('\0')) throw invalid('the seed must be SQL text (it holds a NUL byte)');
  return { bytes, sha256: createHash('sha256').update(sql).digest('hex') };
}

export interface SchemaOnlyBuild {
  /** The branch being made or reset: its id, image, labels and quota are used (not its password). */
  record: BranchRecord;
  parent: BranchRecord;
  db: DatabaseRecord;
  /** The dataset to make (must not exist yet). */
  into: string;
  pgdata: string;
  /** Seed SQL (run after the structure), or null. */
  seed: string | null;
}

/**
 * Makes `into`: the template's clone holding the parent's current structure and the seed, shut down
 * cleanly. Returns the superuser's password in it (the template's: the caller sets the branch's own
 * once its real container runs, as after any clone). Each step undoes itself.
 */
export async function buildSchemaOnly(ctx: EngineContext, steps: Steps, o: SchemaOnlyBuild): Promise<string> {
  const { record, parent, db, into, pgdata } = o;
  const parentState = await ctx.docker.state(parent.container);
  if (!parentState?.running)
    throw conflict(
      `branch '${refName(parent)}' is not running: its schema is read with pg_dump (start it first: bpg branch start ${refName(parent)})`,
    );
  const tpl = await steps.step('template', () => ensureTemplate(ctx, record.image, pgdata));
  const clone = freshClone(ctx, tpl.snapshot, record, into);
  await steps.step('zfs clone', clone.run, () => clone.undo({ recursive: true }), { partial: true });
  const mp = await ctx.zfs.mountedFolder(into);
  await dropTemplateSecret(mp);
  const work = join(mp, WORK_DIR);
  const seedPath = join(mp, SEED_FILE);
  if (o.seed !== null) {
    await writeFile(seedPath, o.seed, { mode: 0o640 });
    await chown(seedPath, 0, ctx.cfg.postgres.gid);
  }
  await mkdirOwned(work, ownerOf(ctx));
  const tmp = ctx.layout.tmpDir();
  await mkdirOwned(tmp, { uid: 0, gid: 0 });
  const pass = {
    parent: join(tmp, `pgpass-${record.id}-parent`),
    builder: join(tmp, `pgpass-${record.id}-builder`),
  };
  const builder = builderName(record.id);
  try {
    await writePassfile(ctx, pass.parent, parent.password);
    await writePassfile(ctx, pass.builder, tpl.password);
    const su = ctx.cfg.postgres.superuser;
    await steps.step('dump schema', async () => {
      // The whole cluster's structure: roles (without passwords), then each database's objects.
      await runClient(ctx, record, 'dump', parent.container, pass.parent, work, [
        'pg_dumpall',
        '--schema-only',
        '--no-role-passwords',
        // A subscription's connection string may hold a password and would connect out; tablespaces do not exist here.
        '--no-subscriptions',
        '--no-tablespaces',
        '--file=/work/schema.sql',
        `--dbname=${conninfo(su, 'postgres')}`,
      ]);
      await dropSuperuserCreate(ctx, work, su);
    });
    await steps.step(
      'start builder',
      async () => {
        const dataDir = Layout.dataDir(mp);
        const major = await writeUserConf(dataDir, ctx.cfg);
        await ensureHbaFile(ctx);
        const spec = containerSpec(ctx, record, major, pgdata, dataDir, {
          conf: { archive_mode: 'off', fsync: 'off' },
        });
        // Not published, no WAL archive: only the one-shots below (in its network namespace) reach it.
        spec.name = builder;
        spec.binds = spec.binds.filter((b) => !b.includes(Layout.containerArchive));
        delete spec.publish;
        spec.network = hardening(ctx.cfg).network; // its own namespace on the branch network, not the branch's port slot
        spec.restartPolicy = 'no';
        await ctx.docker.create(spec);
        await ctx.docker.start(builder);
        await waitBuilder(ctx, builder, tpl.password);
      },
      () => ctx.docker.remove(builder),
      { partial: true },
    );
    await steps.step('restore schema', () =>
      runClient(ctx, record, 'restore', builder, pass.builder, work, [
        'psql',
        '-X',
        '-q',
        '-v',
        'ON_ERROR_STOP=1',
        `--dbname=${conninfo(su, 'postgres')}`,
        '--file=/work/schema.sql',
      ]),
    );
    if (o.seed !== null) {
      await steps.step('seed', () =>
        runClient(
          ctx,
          record,
          'seed',
          builder,
          pass.builder,
          work,
          ['psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', `--dbname=${conninfo(su, db.pgDatabase)}`, '--file=/seed.sql'],
          [`${seedPath}:/seed.sql:ro`],
          'the seed failed',
        ),
      );
    }
    await steps.step('stop builder', async () => {
      await ctx.docker.stop(builder, ctx.cfg.postgres.stopTimeoutSeconds);
      await ctx.docker.remove(builder);
    });
  } finally {
    await rm(pass.parent, { force: true });
    await rm(pass.builder, { force: true });
    await rm(work, { recursive: true, force: true });
  }
  return tpl.password;
}

/** The temporary server a build runs (recovery and delete remove it with the branch's own container). */
export const builderName = (id: string) => `bpg-schema-${id}`;

/** The seed kept in a schema-only branch's dataset (for reset), or null. */
export async function readSeed(ctx: EngineContext, dataset: string): Promise<string | null> {
  return readFile(join(await ctx.zfs.mountpoint(dataset), SEED_FILE), 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return null;
    throw e;
  });
}

/**
 * pg_dumpall creates every role, the superuser too, which the fresh cluster already has: that one
 * line goes (its ALTER ROLE stays), so the restore can stop at the first real error.
 */
async function dropSuperuserCreate(ctx: EngineContext, work: string, superuser: string): Promise<void> {
  const ident = /^[a-z_][a-z0-9_$]*$/.test(superuser) ? superuser : `"${superuser.replace(/"/g, '""')}"`;
  // Written by a program (as the branch's uid) that read the parent: opened without following links, bounded.
  await UntrustedDir.with(work, async (d) => {
    const text = await d.readText('schema.sql', MAX_SCHEMA_BYTES).catch((e: unknown) => {
      throw new Error(
        `the parent's schema dump could not be read (at most ${MAX_SCHEMA_BYTES >> 20} MiB): ${describe(e)}`,
      );
    });
    const kept = text.replace(new RegExp(`^CREATE ROLE ${escapeRe(ident)};\\n`, 'm'), '');
    await d.writeFile('schema.sql', kept, ownerOf(ctx));
  });
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** libpq connection string for the server in the joined network namespace; the password comes from the passfile. */
function conninfo(user: string, database: string): string {
  const q = (v: string) => `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  return `host=127.0.0.1 port=5432 user=${q(user)} dbname=${q(database)} passfile=/run/bpg-pgpass connect_timeout=10`;
}

async function writePassfile(ctx: EngineContext, path: string, password: string): Promise<void> {
  const esc = (v: string) => v.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
  await writeFile(path, `*:*:*:*:${esc(password)}\n`, { mode: 0o600 });
  await chown(path, ctx.cfg.postgres.uid, ctx.cfg.postgres.gid);
}

/** pg_dump, pg_dumpall or psql in a one-shot container of the image, inside `peer`'s network namespace. */
async function runClient(
  ctx: EngineContext,
  record: BranchRecord,
  what: string,
  peer: string,
  passfile: string,
  work: string,
  argv: string[],
  extraBinds: string[] = [],
  failure = `${argv[0]} failed`,
): Promise<void> {
  const spec: ContainerSpec = {
    name: `bpg-schema-${what}-${record.id}`,
    image: record.image,
    user: `${ctx.cfg.postgres.uid}:${ctx.cfg.postgres.gid}`,
    entrypoint: [argv[0]!],
    cmd: argv.slice(1),
    binds: [`${work}:/work`, `${passfile}:/run/bpg-pgpass:ro`, ...extraBinds],
    labels: labels(ctx, record),
    ...hardening(ctx.cfg, { oneShot: true }),
    network: { container: peer },
  };
  const res = await ctx.docker.runOnce(spec, ctx.cfg.postgres.readyTimeoutSeconds * 1000 + 600_000);
  if (res.exitCode !== 0) {
    const lines = res.output.trim().split('\n');
    const err = lines.find((l) => /\b(ERROR|FATAL|error):/.test(l)) ?? lines.slice(-2).join(' / ');
    throw new Error(`${failure} (exit ${res.exitCode}): ${err.trim().slice(0, 500)}`);
  }
}

/** The builder answers once a session as its superuser works (reached at its address on its network). */
async function waitBuilder(ctx: EngineContext, name: string, password: string): Promise<void> {
  const deadline = Date.now() + ctx.cfg.postgres.readyTimeoutSeconds * 1000;
  let addr = await ctx.docker.address(name);
  while (!addr && Date.now() < deadline) {
    const st = await ctx.docker.state(name);
    if (st && !st.running && st.status !== 'created') break;
    await new Promise((r) => setTimeout(r, 100));
    addr = await ctx.docker.address(name);
  }
  if (!addr) {
    const tail = (await ctx.docker.logsTail(name, 5)).trim().split('\n').pop();
    throw new Error(`the schema builder did not start${tail ? ` (container log: ${tail})` : ''}`);
  }
  await ctx.pg.waitReady(
    { host: addr.ip, port: 5432, user: ctx.cfg.postgres.superuser, password, database: 'postgres' },
    Math.max(1000, deadline - Date.now()),
    async () => (await ctx.docker.state(name))?.running === true,
  );
}

import { chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { hardening } from '../drivers/hardening.js';
import { quoteIdent } from '../drivers/postgres.js';
import type { BranchRecord } from '../state/schema.js';
import { labels, ownerOf } from './containers.js';
import type { EngineContext } from './context.js';
import { initdb } from './create-database.js';
import { configureNewCluster, mkdirOwned } from './datadir.js';
import { Layout } from './layout.js';
import { withTempServer } from './temp-server.js';

/**
 * INTERIM (refresh16): a dump-only stand-in for import16's builder, with its contract, so refresh
 * could be developed before import16 landed. Replaced by import16's module on merge.
 */
export interface ImportSource {
  /** postgres://user@host:port/db, without a password. */
  url: string;
  password?: string;
  method: 'dump' | 'basebackup';
  jobs: number;
  roles: boolean;
}

export async function buildFromSource(
  ctx: EngineContext,
  o: {
    record: BranchRecord;
    dataset: string;
    image: string;
    pgDatabase: string;
    source: ImportSource;
    progress?: (line: string) => void;
  },
): Promise<void> {
  const { pgdata } = await ctx.docker.ensureImage(o.image);
  const dataDir = Layout.dataDir(await ctx.zfs.mountpoint(o.dataset));
  await mkdirOwned(dataDir, ownerOf(ctx));
  await initdb(ctx, o.record, o.image, dataDir, pgdata);
  await configureNewCluster(dataDir, ctx.cfg);
  const tag = o.record.id.slice(0, 8);
  const work = join(ctx.layout.tmpDir(), `import-${o.record.id}`);
  await rm(work, { recursive: true, force: true });
  await mkdirOwned(work, ownerOf(ctx));
  const passfile = join(work, 'passfile');
  const u = new URL(o.source.url);
  const esc = (s: string) => s.replace(/\\/g, '\\\\').replace(/:/g, '\\:');
  await writeFile(passfile, `*:*:*:*:${esc(o.source.password ?? '')}\n`, { mode: 0o600 });
  await chown(passfile, ctx.cfg.postgres.uid, ctx.cfg.postgres.gid);
  await mkdir(join(work, 'dump'), { mode: 0o700 }).then(() =>
    chown(join(work, 'dump'), ctx.cfg.postgres.uid, ctx.cfg.postgres.gid),
  );
  const p = ctx.cfg.postgres;
  const conn = `postgresql://${u.username ? `${u.username}@` : ''}${u.host}${u.pathname}?passfile=/work/passfile`;
  try {
    o.progress?.(`dumping ${u.host}${u.pathname}`);
    const dump = await ctx.docker.runOnce({
      name: `bpg-dump-${o.record.id}`,
      image: o.image,
      user: `${p.uid}:${p.gid}`,
      entrypoint: ['pg_dump'],
      cmd: ['-Fd', '-j', String(o.source.jobs), '-f', '/work/dump/d', '-d', conn],
      binds: [`${work}:/work`],
      labels: labels(ctx, o.record),
      ...hardening(ctx.cfg, { oneShot: true }),
      network: undefined,
    });
    if (dump.exitCode !== 0) throw new Error(`pg_dump exited with ${dump.exitCode}: ${dump.output.trim().split('\n').pop()}`);
    await withTempServer(ctx, { record: o.record, image: o.image, pgdata, dataDir, tag }, async (server) => {
      if (o.pgDatabase !== 'postgres')
        await ctx.pg.withClient(server.target('postgres'), (c) => c.query(`CREATE DATABASE ${quoteIdent(o.pgDatabase)}`));
      const res = await ctx.docker.runOnce({
        name: `bpg-restore-${o.record.id}`,
        image: o.image,
        user: `${p.uid}:${p.gid}`,
        entrypoint: ['pg_restore'],
        cmd: ['-h', '/run/bpg-sock', '-p', '5432', '-U', p.superuser, '-d', o.pgDatabase, '--no-owner', '--no-privileges', '-j', String(o.source.jobs), '/work/dump/d'],
        binds: [`${work}:/work:ro`, `${server.sockDir}:/run/bpg-sock`],
        labels: labels(ctx, o.record),
        ...hardening(ctx.cfg, { oneShot: true }),
      });
      if (res.exitCode !== 0) throw new Error(`pg_restore exited with ${res.exitCode}: ${res.output.trim().split('\n').pop()}`);
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

import { randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { newPassword } from '../drivers/postgres.js';
import type { EngineContext } from './context.js';
import { initdb } from './initdb.js';
import { configureNewCluster, mkdirOwned } from './datadir.js';
import { Layout, ZFS_PROP } from './layout.js';
import { ownerOf } from './containers.js';

/**
 * The empty cluster a schema-only branch starts from: one initdb per image (~2.3 s), kept as the
 * dataset `<root>/_template/<tag>` with the snapshot `@empty`, then cloned (~30 ms) for every
 * schema-only branch. It never held a row of anyone's data, so nothing of a parent can be found in
 * a clone of it. Its superuser's password sits in `template.json` beside (not inside) the data
 * directory, root-only; each clone drops that file at once and gets the branch's own password.
 */

export const TEMPLATE_SNAPSHOT = 'empty';
/** Beside the data directory, in the dataset's root: never inside a container. */
const SECRET_FILE = 'template.json';
const Secret = z.object({ image: z.string(), password: z.string().min(1) });

export interface Template {
  /** `<dataset>@empty` */
  snapshot: string;
  /** The superuser's password in every fresh clone, until the branch's own is set. */
  password: string;
}

/**
 * The template of `image`, made first if there is none. Two agents making it at once each build
 * under a name of their own and rename it into place: the loser drops its copy and uses the winner's.
 */
export async function ensureTemplate(ctx: EngineContext, image: string, pgdata: string): Promise<Template> {
  const ds = ctx.layout.templateDataset(image);
  const snapshot = `${ds}@${TEMPLATE_SNAPSHOT}`;
  if (await ctx.zfs.exists(snapshot)) return { snapshot, password: await readSecret(ctx, ds) };
  ctx.log.info(`making the empty template cluster for image ${image} (once per image)`);
  await ctx.zfs.create(ctx.layout.templateRoot, { [ZFS_PROP.managed]: 'true' }, true);
  const build = `${ds}.build-${randomBytes(4).toString('hex')}`;
  const password = newPassword();
  const id = randomBytes(8).toString('hex');
  await ctx.zfs.create(build, { [ZFS_PROP.managed]: 'true', compression: 'on', atime: 'off' });
  try {
    const mp = await ctx.zfs.mountpoint(build);
    const dataDir = Layout.dataDir(mp);
    await mkdirOwned(dataDir, ownerOf(ctx));
    await initdb(ctx, { id, password, database: '_template', branch: 'empty' }, image, dataDir, pgdata);
    await configureNewCluster(dataDir, ctx.cfg);
    await writeFile(join(mp, SECRET_FILE), JSON.stringify({ image, password }), { mode: 0o600 });
    await ctx.zfs.snapshot(`${build}@${TEMPLATE_SNAPSHOT}`, { [ZFS_PROP.managed]: 'true' });
    await ctx.zfs.rename(build, ds);
  } catch (e) {
    await ctx.zfs.destroy(build, { recursive: true }).catch(() => {});
    // Another agent's template won the race: use it.
    if (await ctx.zfs.exists(snapshot)) return { snapshot, password: await readSecret(ctx, ds) };
    throw e;
  }
  return { snapshot, password };
}

async function readSecret(ctx: EngineContext, ds: string): Promise<string> {
  const text = await readFile(join(await ctx.zfs.mountedFolder(ds), SECRET_FILE), 'utf8');
  return Secret.parse(JSON.parse(text)).password;
}

/** A fresh clone of the template keeps no copy of the template's password. */
export async function dropTemplateSecret(mountpoint: string): Promise<void> {
  await rm(join(mountpoint, SECRET_FILE), { force: true });
}

import { startBranchContainer } from './containers.js';
import type { EngineContext } from './context.js';
import { lstat, mkdir, readdir, rename, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { describe } from '../errors.js';
import { refName } from '../names.js';
import { UntrustedDir } from '../drivers/untrusted-fs.js';

/** What a WAL archive holds: segments, timeline history files, backup history files, partial segments. */
const ARCHIVE_FILE = /^([0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$/;
const MAX_FILE_BYTES = 1024 ** 3;

/**
 * Installs from before WAL datasets keep each branch's archive in a folder on the host's root
 * filesystem (`<stateDir>/wal/<id>`), where one branch could fill the host's disk. This moves them
 * onto datasets (`<root>/_wal/<id>`, mounted at the same paths) the first time a new agent changes
 * anything (`bpg serve` does it when it starts). Per branch: its dataset is made, its container
 * stopped if it runs, the files copied (as untrusted files: the branch wrote them), the container
 * made again on the dataset and started. Every step can be repeated, so a migration killed anywhere
 * is finished by the next one; a branch left stopped is started by reconcile. Branch datasets get
 * their quota (postgres.diskQuota) where they have none and use less.
 */
export async function migrateLegacyWal(ctx: EngineContext): Promise<string[]> {
  if ((await ctx.store.read()).walOnZfs) return [];
  await mkdir(ctx.cfg.stateDir, { recursive: true, mode: 0o700 });
  // Locked by a name of its own: proper-lockfile keeps one lock per name in a process, and the
  // state store locks the state folder itself, often, while this runs.
  const name = join(ctx.cfg.stateDir, 'wal-migration');
  const release = await lockfile.lock(name, {
    lockfilePath: `${name}.lock`,
    realpath: false,
    stale: 60_000,
    update: 10_000,
    retries: { retries: 1200, minTimeout: 50, maxTimeout: 500, factor: 1.2 },
  });
  try {
    const st = await ctx.store.read();
    if (st.walOnZfs) return []; // another process finished it while this one waited
    const branches = Object.values(st.branches);
    const wal = ctx.layout.walMount();
    const legacy = ctx.layout.legacyWalDir();
    const walHere = await lstat(wal).catch(() => null);
    const rootExists = await ctx.zfs.exists(ctx.layout.walRoot);
    if (walHere?.isDirectory() && !(rootExists && (await ctx.zfs.isMounted(ctx.layout.walRoot)))) {
      // Set the folders aside in one rename (running containers keep writing into them: a bind
      // mount follows the folder, not its name); the datasets are mounted where they were.
      if (!(await lstat(legacy).catch(() => null))) {
        await rename(wal, legacy);
      } else {
        for (const name of await readdir(wal)) await rename(join(wal, name), join(legacy, name));
        await rmdir(wal).catch(() => {});
      }
    }
    const moved: string[] = [];
    if (branches.length || (await lstat(legacy).catch(() => null))) {
      ctx.log.info(
        `moving the WAL archives of ${branches.length} branch(es) onto ZFS datasets (${ctx.layout.walRoot}); running branches restart once`,
      );
    }
    for (const b of branches) {
      if (b.status !== 'running' && b.status !== 'stopped') continue; // being created or deleted: reconcile decides
      const t0 = performance.now();
      if (!(await ctx.wal.exists(b.id))) await ctx.wal.create(b.id);
      else await ctx.wal.mount(b.id);
      const running = (await ctx.docker.state(b.container))?.running === true;
      if (running) await ctx.docker.stop(b.container, ctx.cfg.postgres.stopTimeoutSeconds);
      const from = join(legacy, b.id);
      let files = 0;
      if (await lstat(from).catch(() => null)) {
        await UntrustedDir.with(from, (src) =>
          UntrustedDir.with(ctx.layout.walDir(b.id), async (dst) => {
            for (const name of (await src.list()).filter((n) => ARCHIVE_FILE.test(n))) {
              if ((await src.kind(name)) !== 'file') {
                ctx.log.warn(`WAL migration: ${join(from, name)} is not a regular file; not copied`);
                continue;
              }
              await dst.copyFrom(src, name, { uid: ctx.cfg.postgres.uid, gid: ctx.cfg.postgres.gid }, MAX_FILE_BYTES);
              files++;
            }
          }),
        );
        await rm(from, { recursive: true, force: true });
      }
      if (running) {
        // Made again from the new spec: the archive bind now is the dataset.
        await ctx.docker.remove(b.container);
        try {
          await startBranchContainer(ctx, b);
        } catch (err) {
          ctx.log.warn(`WAL migration: ${refName(b)} did not start again: ${describe(err)} (reconcile retries)`);
        }
      }
      await setQuota(ctx, b.id);
      moved.push(refName(b));
      ctx.log.info(
        `WAL archive of ${refName(b)} is on ${ctx.layout.walDataset(b.id)} (${files} files, ${Math.round(performance.now() - t0)} ms)`,
      );
    }
    await rm(legacy, { recursive: true, force: true });
    await ctx.store.update((s) => {
      s.walOnZfs = true;
    });
    return moved;
  } finally {
    await release().catch(() => {});
  }
}

/** A branch (not main) without a quota gets postgres.diskQuota, unless it already uses more. */
async function setQuota(ctx: EngineContext, id: string): Promise<void> {
  const quota = ctx.cfg.postgres.diskQuota;
  if (quota === null) return;
  const b = Object.values((await ctx.store.read()).branches).find((x) => x.id === id);
  if (!b || b.branch === 'main' || b.disk !== null) return;
  const used = Number((await ctx.zfs.get(b.dataset, ['used'])).used);
  if (!(used < quota)) {
    ctx.log.warn(`${refName(b)} uses ${used} bytes, more than postgres.diskQuota: no quota set on ${b.dataset}`);
    return;
  }
  await ctx.zfs.set(b.dataset, { quota: String(quota) });
  await ctx.store.update((s) => {
    const cur = Object.values(s.branches).find((x) => x.id === id);
    if (cur) cur.disk = quota;
  });
}

import { chmod, lstat, rm, rmdir } from 'node:fs/promises';
import type { Config } from '../config.js';
import { CommandError } from '../drivers/exec.js';
import type { DatasetStore } from '../drivers/interfaces.js';
import { mkdirOwned } from './datadir.js';
import { Layout, ZFS_PROP } from './layout.js';

/**
 * Each branch's WAL archive is a ZFS dataset of its own (`<root>/_wal/<id>`) with a quota
 * (postgres.walQuota), mounted at `<stateDir>/wal/<id>` and bind-mounted into the branch's
 * container. A branch that archives without end fills its own quota, never the host's root
 * filesystem or the pool.
 */
export class WalArchives {
  private rootReady = false;

  constructor(
    private readonly cfg: Config,
    private readonly layout: Layout,
    private readonly zfs: DatasetStore,
  ) {}

  /** The `_wal` dataset, mounted at `<stateDir>/wal`; made on first use. */
  async ensureRoot(): Promise<void> {
    if (this.rootReady) return;
    const root = this.layout.walRoot;
    if ((await this.zfs.mountedNow()).has(root)) {
      this.rootReady = true;
      return;
    }
    if (!(await this.zfs.exists(root))) {
      try {
        // compression: a switched segment is mostly zeros after its last record.
        const props = {
          mountpoint: this.layout.walMount(),
          compression: 'on',
          atime: 'off',
          [ZFS_PROP.managed]: 'true',
          [ZFS_PROP.wal]: 'root',
        };
        await this.zfs.create(root, props, true);
      } catch (e) {
        if (!(await this.zfs.exists(root))) throw this.explain(e);
      }
    }
    try {
      await this.zfs.mount(root);
    } catch (e) {
      throw this.explain(e);
    }
    // Only root looks into it; each branch's folder below is its postgres user's.
    await chmod(this.layout.walMount(), 0o700);
    this.rootReady = true;
  }

  private explain(e: unknown): Error {
    if (e instanceof CommandError && /not empty/i.test(e.stderr)) {
      return new Error(
        `cannot mount the WAL datasets on ${this.layout.walMount()}: the folder is not empty (WAL folders of an older install? 'bpg serve' or 'bpg doctor --fix' migrates them)`,
      );
    }
    return e instanceof Error ? e : new Error(String(e));
  }

  /** A new, empty archive for a branch, owned by the image's postgres user. */
  async create(id: string, name = this.layout.walDataset(id)): Promise<void> {
    await this.ensureRoot();
    const quota = this.cfg.postgres.walQuota;
    await this.zfs.create(name, {
      [ZFS_PROP.managed]: 'true',
      [ZFS_PROP.wal]: id,
      ...(quota !== null ? { quota: String(quota) } : {}),
    });
    // `zfs create` mounts it, at the root's mount point + its name (inherited): no more commands.
    if (!(await this.zfs.mountedNow()).has(name)) await this.zfs.mount(name);
    await mkdirOwned(name === this.layout.walDataset(id) ? this.layout.walDir(id) : await this.zfs.mountpoint(name), {
      uid: this.cfg.postgres.uid,
      gid: this.cfg.postgres.gid,
    });
  }

  /**
   * Mounted before a container binds it (after a reboot zfs-fuse mounts nothing by itself). A branch
   * of an install not migrated yet keeps its WAL folder on the host until `bpg serve` migrates it.
   */
  async mount(id: string): Promise<void> {
    if ((await this.zfs.mountedNow()).has(this.layout.walDataset(id))) return;
    try {
      await this.zfs.mount(this.layout.walDataset(id));
      return;
    } catch (e) {
      if (!(e instanceof CommandError && /does not exist/i.test(e.stderr))) throw e;
    }
    const legacy = await lstat(this.layout.walDir(id)).catch(() => null);
    if (legacy?.isDirectory() && !(await this.zfs.exists(this.layout.walRoot))) return;
    throw new Error(`the WAL archive dataset ${this.layout.walDataset(id)} does not exist (run 'bpg doctor --fix')`);
  }

  async exists(id: string): Promise<boolean> {
    return this.zfs.exists(this.layout.walDataset(id));
  }

  /** A branch's archive; gone already counts as done (a not yet migrated WAL folder goes too). */
  async destroy(id: string): Promise<void> {
    await this.destroyDataset(this.layout.walDataset(id));
    // Once the dataset is gone this is its empty mount point, or a WAL folder from before datasets.
    await rm(this.layout.walDir(id), { recursive: true, force: true });
  }

  /** Destroys an archive dataset by name (reset's set-aside one) and its empty mount point folder. */
  async destroyDataset(name: string): Promise<void> {
    const mountpoint = await this.zfs.mountpoint(name).catch(() => null);
    await this.zfs.destroy(name, { recursive: true });
    if (mountpoint && mountpoint.startsWith('/')) await rmdir(mountpoint).catch(() => {});
  }

  /** Renames an archive dataset (reset keeps the old one aside until it commits). */
  async rename(from: string, to: string): Promise<void> {
    const oldMount = await this.zfs.mountpoint(from).catch(() => null);
    await this.zfs.rename(from, to);
    if (oldMount && oldMount.startsWith('/')) await rmdir(oldMount).catch(() => {});
  }

  /** Bytes used and free under the quota, by branch id (one `zfs get` for all). */
  async usage(): Promise<Map<string, { used: number; available: number; quota: number | null }>> {
    const out = new Map<string, { used: number; available: number; quota: number | null }>();
    let rows: Map<string, Record<string, string>>;
    try {
      rows = await this.zfs.getTree(this.layout.walRoot, ['used', 'available', 'quota'], 1);
    } catch {
      return out;
    }
    rows.delete(this.layout.walRoot);
    for (const [name, p] of rows) {
      const id = name.slice(this.layout.walRoot.length + 1);
      const quota = Number(p.quota);
      out.set(id, { used: Number(p.used), available: Number(p.available), quota: quota > 0 ? quota : null });
    }
    return out;
  }
}

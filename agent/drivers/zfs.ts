import { mkdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { CommandError, run, sleep } from './exec.js';
import type { DatasetStore, ZfsEntry, ZfsProps } from './interfaces.js';
export type { ZfsEntry, ZfsProps } from './interfaces.js';

/** Subcommands that change datasets or the mount table; they run one at a time on a host. */
const MUTATING = new Set([
  'create',
  'snapshot',
  'clone',
  'destroy',
  'rename',
  'mount',
  'umount',
  'set',
  'promote',
  'rollback',
]);
const HOST_LOCK_DIR = process.env.BPG_ZFS_LOCK_DIR ?? '/run/betterpg';
const HOST_LOCK_FILE = `${HOST_LOCK_DIR}/zfs.flock`;
/** How long a change waits for the others, and flock's exit code when that runs out. */
const LOCK_WAIT_S = 150;
const LOCK_TIMED_OUT = 75;

const BUSY = /busy/i;

/**
 * Thin wrapper over the `zfs` command. Written for both kernel OpenZFS and zfs-fuse 0.7: no
 * `list -p` (numbers come from `get -Hp`), umount before destroy/rename, bounded retries on "busy".
 */
export class ZfsDriver implements DatasetStore {
  constructor(private readonly bin = 'zfs') {}

  /**
   * zfs-fuse was seen to hang `umount` for good when several processes changed datasets at once
   * under heavy I/O; one change at a time per host (a lock file shared by every agent process)
   * avoids that, and costs nothing measurable: each change takes 10-100 ms. The lock is the
   * kernel's (`flock(1)` runs zfs holding it): it goes with the zfs process, so an agent killed
   * while a change runs (a create's WAL dataset is made beside its other steps) never leaves it held.
   */
  private async zfs(args: string[]): Promise<string> {
    if (!MUTATING.has(args[0]!)) return run(this.bin, args);
    mkdirSync(HOST_LOCK_DIR, { recursive: true, mode: 0o700 });
    try {
      return await run(
        'flock',
        ['-w', String(LOCK_WAIT_S), '-E', String(LOCK_TIMED_OUT), HOST_LOCK_FILE, this.bin, ...args],
        {
          timeoutMs: (LOCK_WAIT_S + 120) * 1000,
        },
      );
    } catch (e) {
      if (!(e instanceof CommandError)) throw e;
      const stderr =
        e.exitCode === LOCK_TIMED_OUT
          ? `waited ${LOCK_WAIT_S} s for the host's ZFS lock (${HOST_LOCK_FILE}): another zfs change does not end`
          : e.stderr;
      throw new CommandError(this.bin, args, e.exitCode, stderr);
    }
  }

  async poolExists(pool: string): Promise<boolean> {
    try {
      await run('zpool', ['list', '-H', '-o', 'name', pool]);
      return true;
    } catch {
      return false;
    }
  }

  async exists(name: string): Promise<boolean> {
    try {
      await this.zfs(['get', '-H', '-o', 'value', 'name', name]);
      return true;
    } catch (e) {
      if (e instanceof CommandError && /does not exist|dataset does not exist/i.test(e.stderr)) return false;
      throw e;
    }
  }

  /** Creates a filesystem (and missing parents with -p). */
  async create(name: string, props: ZfsProps = {}, parents = false): Promise<void> {
    await this.zfs(['create', ...(parents ? ['-p'] : []), ...propArgs(props), name]);
  }

  async snapshot(snap: string, props: ZfsProps = {}): Promise<void> {
    await this.zfs(['snapshot', ...propArgs(props), snap]);
  }

  async clone(snap: string, target: string, props: ZfsProps = {}): Promise<void> {
    await this.zfs(['clone', ...propArgs(props), snap, target]);
  }

  async set(name: string, props: ZfsProps): Promise<void> {
    for (const [k, v] of Object.entries(props)) await this.zfs(['set', `${k}=${v}`, name]);
  }

  async mountpoint(name: string): Promise<string> {
    return (await this.get(name, ['mountpoint'])).mountpoint!;
  }

  async mount(name: string): Promise<void> {
    try {
      await this.zfs(['mount', name]);
    } catch (e) {
      if (e instanceof CommandError && /already mounted/i.test(e.stderr)) return;
      throw e;
    }
  }

  /**
   * Datasets mounted on this host now, from the kernel's mount table (no `zfs` call): a quick
   * check before `zfs mount`, which costs a command and the host lock even when there is nothing to do.
   */
  async mountedNow(): Promise<Set<string>> {
    return new Set((await mountTable()).map((m) => m.dataset));
  }

  /**
   * Where each dataset is mounted now (dataset name -> folder), from the same table: a fresh clone's
   * folder without `zfs mount` and `zfs get`. A dataset mounted whole at two places (a bind of its
   * mount point) is left out, as is a bind of a folder inside one: the caller asks ZFS then.
   */
  async mountsNow(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const twice = new Set<string>();
    for (const m of await mountTable()) {
      if (m.root !== '/') continue;
      if (out.has(m.dataset)) twice.add(m.dataset);
      out.set(m.dataset, m.at);
    }
    for (const d of twice) out.delete(d);
    return out;
  }

  /**
   * The folder a dataset is mounted on, mounted first when it is not: one read of the mount table
   * when it is (a fresh clone is mounted by `zfs clone`), instead of a `zfs mount` and a `zfs get`.
   */
  async mountedFolder(name: string): Promise<string> {
    const at = (await this.mountsNow()).get(name);
    if (at !== undefined) return at;
    await this.mount(name);
    return this.mountpoint(name);
  }

  async isMounted(name: string): Promise<boolean> {
    return (await this.get(name, ['mounted'])).mounted === 'yes';
  }

  async umount(name: string): Promise<void> {
    await retryBusy(async () => {
      try {
        await this.zfs(['umount', name]);
      } catch (e) {
        if (e instanceof CommandError && /not currently mounted|not mounted/i.test(e.stderr)) return;
        throw e;
      }
    });
  }

  /** Destroys a filesystem or snapshot; gone already counts as done. */
  async destroy(name: string, opts: { recursive?: boolean } = {}): Promise<void> {
    if (!(await this.exists(name))) return;
    if (!name.includes('@')) await this.umount(name).catch(() => {});
    await retryBusy(async () => {
      try {
        await this.zfs(['destroy', ...(opts.recursive ? ['-r'] : []), name]);
      } catch (e) {
        if (e instanceof CommandError && /does not exist/i.test(e.stderr)) return;
        if (e instanceof CommandError && BUSY.test(e.stderr) && !name.includes('@')) {
          await this.zfs(['umount', '-f', name]).catch(() => {});
        }
        throw e;
      }
    });
  }

  /** Renames a filesystem: zfs-fuse refuses while mounted, so unmount, rename, mount. */
  async rename(from: string, to: string): Promise<void> {
    const mounted = await this.isMounted(from);
    if (mounted) await this.umount(from);
    await retryBusy(() => this.zfs(['rename', from, to]).then(() => {}));
    if (mounted) await this.mount(to);
  }

  /** Numeric and string properties of one dataset (`get -Hp` works on both implementations). */
  async get(name: string, props: string[]): Promise<Record<string, string>> {
    const out = await this.zfs(['get', '-Hp', '-o', 'property,value', props.join(','), name]);
    const res: Record<string, string> = {};
    for (const line of out.split('\n')) {
      if (!line) continue;
      const [p, v] = line.split('\t');
      if (p) res[p] = v ?? '';
    }
    return res;
  }

  /** Properties of a dataset and its descendants (down to `depth` levels), by dataset name. */
  async getTree(name: string, props: string[], depth?: number): Promise<Map<string, Record<string, string>>> {
    const out = await this.zfs([
      'get',
      '-Hp',
      '-r',
      ...(depth !== undefined ? ['-d', String(depth)] : []),
      '-o',
      'name,property,value',
      props.join(','),
      name,
    ]);
    const rows = new Map<string, Record<string, string>>();
    for (const line of out.split('\n')) {
      const [n, p, v] = line.split('\t');
      if (n && p) rows.set(n, { ...rows.get(n), [p]: v ?? '' });
    }
    return rows;
  }

  /** Names of the snapshots of one dataset. */
  async snapshots(dataset: string): Promise<string[]> {
    const out = await this.zfs(['list', '-H', '-t', 'snapshot', '-o', 'name', '-r', '-d', '1', dataset]).catch((e) => {
      if (e instanceof CommandError && /does not exist/i.test(e.stderr)) return '';
      throw e;
    });
    return out.split('\n').filter((l) => l.startsWith(`${dataset}@`));
  }

  /** Every filesystem and snapshot under `root`, with one property, for reconcile and tests. */
  async listAll(root: string): Promise<string[]> {
    const out = await this.zfs(['list', '-H', '-t', 'filesystem,snapshot', '-o', 'name', '-r', root]).catch((e) => {
      if (e instanceof CommandError && /does not exist/i.test(e.stderr)) return '';
      throw e;
    });
    return out.split('\n').filter(Boolean);
  }

  /**
   * Every filesystem and snapshot under `root` with what reconcile needs. Our properties count only
   * where they were set (source local): user properties are inherited, so a dataset someone made
   * inside ours would otherwise look like ours.
   */
  async inventory(root: string): Promise<ZfsEntry[]> {
    const missing = (e: unknown) => {
      if (e instanceof CommandError && /does not exist/i.test(e.stderr)) return '';
      throw e;
    };
    const [list, props] = await Promise.all([
      this.zfs(['list', '-H', '-t', 'filesystem,snapshot', '-o', 'name,type,mounted,origin', '-r', root]).catch(
        missing,
      ),
      this.zfs([
        'get',
        '-H',
        '-r',
        '-s',
        'local',
        '-o',
        'name,property,value',
        'betterpg:managed,betterpg:id,betterpg:wal',
        root,
      ]).catch(missing),
    ]);
    const local = new Map<string, Record<string, string>>();
    for (const line of props.split('\n')) {
      const [name, prop, value] = line.split('\t');
      if (!name || !prop) continue;
      local.set(name, { ...local.get(name), [prop]: value ?? '' });
    }
    return list
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [name, type, mounted, origin] = line.split('\t') as [string, string, string, string];
        const own = local.get(name) ?? {};
        return {
          name,
          type: type === 'snapshot' ? 'snapshot' : 'filesystem',
          managed: own['betterpg:managed'] === 'true',
          id: own['betterpg:id'] || null,
          wal: own['betterpg:wal'] || null,
          mounted: mounted === 'yes',
          origin: origin && origin !== '-' ? origin : null,
        } satisfies ZfsEntry;
      });
  }
}

function propArgs(props: ZfsProps): string[] {
  return Object.entries(props).flatMap(([k, v]) => ['-o', `${k}=${v}`]);
}

async function retryBusy<T>(fn: () => Promise<T>, attempts = 12): Promise<T> {
  let delay = 50;
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= attempts || !(e instanceof CommandError) || !BUSY.test(e.stderr)) throw e;
      await sleep(delay);
      delay = Math.min(delay * 2, 1000);
    }
  }
}

/** The ZFS mounts in this process's mount table. */
async function mountTable(): Promise<ZfsMount[]> {
  return parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8').catch(() => ''));
}

export interface ZfsMount {
  dataset: string;
  /** The folder of the dataset that is mounted: `/` for the dataset itself, another for a bind of a folder in it. */
  root: string;
  /** Where it is mounted. */
  at: string;
}

/** The ZFS lines of a mountinfo text (proc(5): root and mount point are fields 4 and 5, the source follows ' - '). */
export function parseMountInfo(text: string): ZfsMount[] {
  const out: ZfsMount[] = [];
  for (const line of text.split('\n')) {
    const [before, after] = line.split(' - ');
    if (!before || !after) continue;
    const [fstype, source] = after.split(' ');
    const [, , , root, at] = before.split(' ');
    if (source && root && at && (fstype === 'zfs' || fstype === 'fuse.zfs'))
      out.push({ dataset: unescapeMount(source), root: unescapeMount(root), at: unescapeMount(at) });
  }
  return out;
}

/** The kernel writes a space, tab, newline or backslash in a mount table field as octal (\040). */
function unescapeMount(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

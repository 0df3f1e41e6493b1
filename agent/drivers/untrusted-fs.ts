import { randomBytes } from 'node:crypto';
import { constants as C } from 'node:fs';
import { lstat, open, readdir, rename, rmdir, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Files inside a tree that a branch's superuser can change: its data directory and its WAL archive.
 * That user runs shell commands in the container (`COPY ... TO PROGRAM`) and can put a symbolic
 * link, a FIFO or a hard link at any name there. The agent runs as root on the host, so it never
 * opens such a name by path:
 *  - a directory is opened once with O_DIRECTORY|O_NOFOLLOW, and every name in it is reached
 *    through that handle (`/proc/self/fd/<fd>/<name>`, Linux's openat), so no link on the way is
 *    followed, including a linked `pg_wal`;
 *  - a file is opened with O_NOFOLLOW|O_NONBLOCK (a FIFO cannot stall the open) and checked to be a
 *    regular file on the handle, never by a separate stat of the path;
 *  - a file is written under a fresh temporary name (O_CREAT|O_EXCL), chowned through
 *    its handle, then renamed over the name: rename replaces a name, it never follows one.
 * Anything else at a name the agent needs fails the operation with one line naming the file.
 */

export class UnsafeFileError extends Error {
  constructor(
    readonly path: string,
    why: string,
  ) {
    super(`${path} ${why}: refusing to use it (something inside the branch put it there)`);
    this.name = 'UnsafeFileError';
  }
}

export interface Owner {
  uid: number;
  gid: number;
}

const DIR = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;
const READ = C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK;
const CREATE = C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW | C.O_NONBLOCK;
const APPEND = C.O_WRONLY | C.O_APPEND | C.O_NOFOLLOW | C.O_NONBLOCK;

type Kind = 'missing' | 'file' | 'directory' | 'symbolic link' | 'FIFO' | 'socket' | 'device';

function kindOf(st: {
  isFile(): boolean;
  isDirectory(): boolean;
  isSymbolicLink(): boolean;
  isFIFO(): boolean;
  isSocket(): boolean;
}): Kind {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symbolic link';
  if (st.isFIFO()) return 'FIFO';
  if (st.isSocket()) return 'socket';
  return 'device';
}

const article = (k: Kind) => (k === 'FIFO' ? 'a FIFO' : `a ${k}`);

/** Why an open failed, in words, for the errors O_NOFOLLOW and O_DIRECTORY produce. */
function explain(e: unknown, path: string, wanted: 'file' | 'directory'): Error {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ELOOP') return new UnsafeFileError(path, `is a symbolic link, not a ${wanted}`);
  if (code === 'ENOTDIR' && wanted === 'directory') return new UnsafeFileError(path, 'is not a directory');
  if (code === 'ENXIO') return new UnsafeFileError(path, `is a socket or a FIFO, not a ${wanted}`);
  if (code === 'EISDIR') return new UnsafeFileError(path, 'is a directory, not a regular file');
  if (code === 'ENOENT') return Object.assign(new Error(`${path} does not exist`), { code });
  return e instanceof Error ? e : new Error(String(e));
}

/** O_DIRECTORY|O_NOFOLLOW answers ENOTDIR for a link too: say what is there instead. */
async function explainDir(e: unknown, path: string, look: () => Promise<Parameters<typeof kindOf>[0]>): Promise<Error> {
  if ((e as NodeJS.ErrnoException).code === 'ENOTDIR' || (e as NodeJS.ErrnoException).code === 'ELOOP') {
    const k = await look().then(kindOf, () => null);
    if (k && k !== 'directory') return new UnsafeFileError(path, `is ${article(k)}, not a directory`);
  }
  return explain(e, path, 'directory');
}

/** A directory in an untrusted tree, held open; see the module comment. Close it when done. */
export class UntrustedDir {
  private constructor(
    private readonly fh: FileHandle,
    /** The host path, for messages only: never opened again by this path. */
    readonly path: string,
  ) {}

  /** Opens a directory whose last component must not be a link (the path up to it is trusted). */
  static async open(path: string): Promise<UntrustedDir> {
    try {
      return new UntrustedDir(await open(path, DIR), path);
    } catch (e) {
      throw await explainDir(e, path, () => lstat(path));
    }
  }

  /** Runs `fn` with the directory open and closes it afterwards. */
  static async with<T>(path: string, fn: (d: UntrustedDir) => Promise<T>): Promise<T> {
    const d = await UntrustedDir.open(path);
    try {
      return await fn(d);
    } finally {
      await d.close();
    }
  }

  private at(name: string): string {
    if (!name || name === '.' || name === '..' || name.includes('/') || name.includes('\0'))
      throw new Error(`invalid file name '${name}'`);
    return `/proc/self/fd/${this.fh.fd}/${name}`;
  }

  private shown(name: string): string {
    return join(this.path, name);
  }

  /** What is at a name, without following it. */
  async kind(name: string): Promise<Kind> {
    try {
      return kindOf(await lstat(this.at(name)));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
      throw e;
    }
  }

  /** A subdirectory, opened without following a link at its name. */
  async dir(name: string): Promise<UntrustedDir> {
    try {
      return new UntrustedDir(await open(this.at(name), DIR), this.shown(name));
    } catch (e) {
      throw await explainDir(e, this.shown(name), () => lstat(this.at(name)));
    }
  }

  async list(): Promise<string[]> {
    return readdir(`/proc/self/fd/${this.fh.fd}`);
  }

  /** Opens a regular file for reading; anything else (link, FIFO, socket, directory) is refused. */
  private async openFile(name: string, maxBytes: number): Promise<{ fh: FileHandle; size: number }> {
    let fh: FileHandle;
    try {
      fh = await open(this.at(name), READ);
    } catch (e) {
      throw explain(e, this.shown(name), 'file');
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new UnsafeFileError(this.shown(name), `is ${article(kindOf(st))}, not a regular file`);
      if (st.size > maxBytes)
        throw new UnsafeFileError(this.shown(name), `is ${st.size} bytes, more than the ${maxBytes} expected`);
      return { fh, size: st.size };
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  async readText(name: string, maxBytes = 1024 * 1024): Promise<string> {
    const { fh } = await this.openFile(name, maxBytes);
    try {
      return await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  }

  /** Refuses unless the name is free or holds a regular file with no other hard link. */
  private async assertReplaceable(name: string): Promise<void> {
    let st;
    try {
      st = await lstat(this.at(name));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw e;
    }
    const k = kindOf(st);
    if (k !== 'file') throw new UnsafeFileError(this.shown(name), `is ${article(k)}, not a regular file`);
    if (st.nlink > 1) throw new UnsafeFileError(this.shown(name), `has ${st.nlink - 1} other hard link(s)`);
  }

  /**
   * Writes a whole file: a new temporary file, chowned through its handle, then renamed
   * over the name. Whatever else sat at the name (a link, a FIFO) is refused first.
   */
  async writeFile(name: string, data: string | Buffer, owner: Owner, mode = 0o600): Promise<void> {
    await this.assertReplaceable(name);
    await this.createAndRename(name, owner, mode, async (fh) => {
      await fh.writeFile(data);
    });
  }

  /** Copies a regular file of another untrusted directory here (same checks on both sides). */
  async copyFrom(src: UntrustedDir, name: string, owner: Owner, maxBytes: number): Promise<void> {
    const { fh: from } = await src.openFile(name, maxBytes);
    try {
      await this.assertReplaceable(name);
      await this.createAndRename(name, owner, 0o600, async (to) => {
        const buf = Buffer.allocUnsafe(1024 * 1024);
        for (let pos = 0; ;) {
          const { bytesRead } = await from.read(buf, 0, buf.length, pos);
          if (bytesRead === 0) break;
          await to.write(buf, 0, bytesRead);
          pos += bytesRead;
        }
      });
    } finally {
      await from.close();
    }
  }

  private async createAndRename(
    name: string,
    owner: Owner,
    mode: number,
    fill: (fh: FileHandle) => Promise<void>,
  ): Promise<void> {
    const tmp = `.bpg-tmp-${randomBytes(6).toString('hex')}`;
    const fh = await open(this.at(tmp), CREATE, mode);
    try {
      await fh.chown(owner.uid, owner.gid);
      await fill(fh);
      // No fsync: these trees are ZFS datasets, where a write and the rename after it land in the
      // same or an earlier transaction group, so a crash never leaves the name with partial data.
      await fh.close();
      await rename(this.at(tmp), this.at(name));
    } catch (e) {
      await fh.close().catch(() => {});
      await unlink(this.at(tmp)).catch(() => {});
      throw e;
    }
  }

  /** Appends to an existing regular file (opened without following a link, checked on the handle). */
  async append(name: string, text: string): Promise<void> {
    let fh: FileHandle;
    try {
      fh = await open(this.at(name), APPEND);
    } catch (e) {
      throw explain(e, this.shown(name), 'file');
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new UnsafeFileError(this.shown(name), `is ${article(kindOf(st))}, not a regular file`);
      await fh.write(text);
    } finally {
      await fh.close();
    }
  }

  /** Removes a name (a link is removed itself, never what it points at); gone already is fine. */
  async remove(name: string): Promise<void> {
    const k = await this.kind(name);
    if (k === 'missing') return;
    if (k === 'directory') throw new UnsafeFileError(this.shown(name), 'is a directory, not a regular file');
    try {
      await unlink(this.at(name));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }

  /**
   * Removes a name and, for a directory, everything under it: each directory is opened without
   * following a link and emptied through its handle, so a link inside is removed, never followed.
   */
  async removeTree(name: string, depth = 0): Promise<void> {
    const k = await this.kind(name);
    if (k === 'missing') return;
    if (k !== 'directory') return this.remove(name);
    if (depth > 64) throw new UnsafeFileError(this.shown(name), 'is nested more than 64 directories deep');
    const sub = await this.dir(name);
    try {
      for (const n of await sub.list()) await sub.removeTree(n, depth + 1);
    } finally {
      await sub.close();
    }
    try {
      await rmdir(this.at(name));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => {});
  }
}

import { mkdir, open, readFile, rename, unlink, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { BpgError } from '../errors.js';
import { State, emptyState } from './schema.js';

/**
 * The registry file. Reads are lock-free (writes are atomic renames); every read-change-write runs
 * under an inter-process lock, so the daemon and any number of CLI processes never lose an update.
 * Keep the work inside `update` short: reserve there, do slow ZFS/Docker work outside, record after.
 */
export class StateStore {
  readonly file: string;

  constructor(readonly dir: string) {
    this.file = join(dir, 'state.json');
  }

  async read(): Promise<State> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return withoutPrototypes(emptyState());
      throw e;
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      throw new BpgError('failed', `state file ${this.file} is not valid JSON`);
    }
    const r = State.safeParse(raw);
    if (!r.success) {
      const i = r.error.issues[0]!;
      throw new BpgError('failed', `state file ${this.file} is invalid: ${i.path.join('.') || '(top)'}: ${i.message}`);
    }
    return withoutPrototypes(r.data);
  }

  /** Runs `fn` on the current state under the lock and writes the result if `fn` returns normally. */
  async update<T>(fn: (s: State) => T | Promise<T>): Promise<T> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const release = await lockfile.lock(this.dir, {
      lockfilePath: join(this.dir, 'state.lock'),
      realpath: false,
      stale: 15_000,
      retries: { retries: 600, minTimeout: 10, maxTimeout: 100, factor: 1.3 },
    });
    try {
      const state = await this.read();
      const before = JSON.stringify(state);
      const result = await fn(state);
      const after = JSON.stringify(state, null, 2);
      if (JSON.stringify(state) !== before) {
        const checked = State.safeParse(state);
        if (!checked.success) {
          const i = checked.error.issues[0]!;
          throw new BpgError('failed', `refusing to write invalid state: ${i.path.join('.')}: ${i.message}`);
        }
        await this.write(after);
      }
      return result;
    } finally {
      await release();
    }
  }

  private async write(text: string): Promise<void> {
    const tmp = `${this.file}.tmp-${process.pid}`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(text + '\n');
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await chmod(tmp, 0o600);
      await rename(tmp, this.file);
    } catch (e) {
      await unlink(tmp).catch(() => {});
      throw e;
    }
    const dirFh = await open(this.dir, 'r');
    try {
      await dirFh.sync();
    } finally {
      await dirFh.close();
    }
  }
}

/**
 * The records are keyed by names people choose, and `constructor`, `toString` or `valueOf` are
 * valid database names: on a plain object `databases['constructor']` is Object's constructor, so
 * a database that does not exist would be found (and one could never be created). Objects without
 * a prototype have only their own keys.
 */
function withoutPrototypes(s: State): State {
  const own = <T>(r: Record<string, T>): Record<string, T> =>
    Object.assign(Object.create(null) as Record<string, T>, r);
  s.databases = own(s.databases);
  s.branches = own(s.branches);
  s.snapshots = own(s.snapshots);
  return s;
}

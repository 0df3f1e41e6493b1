/**
 * In-process ordering of operations, by key: `db` for a database, `db/branch` for a branch.
 * The engine refuses (409 busy) an operation that ANOTHER process holds; inside the daemon we wait
 * instead, so a second PUT for the same branch runs after the first and finds the branch.
 *
 * Readers/writer per key: a branch operation holds its database shared and its branch exclusive,
 * so branches of one database run in parallel while deleting the database waits for them (and
 * they wait for it). Requests are granted in arrival order, so a writer is not starved.
 */

export type LockMode = 'shared' | 'exclusive';

interface Waiter {
  mode: LockMode;
  grant: () => void;
}

class RwLock {
  private readers = 0;
  private writer = false;
  private readonly queue: Waiter[] = [];

  get idle(): boolean {
    return this.readers === 0 && !this.writer && this.queue.length === 0;
  }

  acquire(mode: LockMode): Promise<void> {
    return new Promise((grant) => {
      this.queue.push({ mode, grant });
      this.pump();
    });
  }

  release(mode: LockMode): void {
    if (mode === 'exclusive') this.writer = false;
    else this.readers--;
    this.pump();
  }

  private pump(): void {
    for (;;) {
      const next = this.queue[0];
      if (!next || this.writer) return;
      if (next.mode === 'exclusive' && this.readers > 0) return;
      this.queue.shift();
      if (next.mode === 'exclusive') this.writer = true;
      else this.readers++;
      next.grant();
    }
  }
}

export class KeyedLocks {
  private readonly locks = new Map<string, RwLock>();

  /**
   * Runs `fn` holding every key in its mode. Keys are taken in sorted order, so two callers
   * that need overlapping keys cannot deadlock; a key asked for twice is taken once, exclusive wins.
   */
  async with<T>(wanted: Record<string, LockMode>, fn: () => Promise<T>): Promise<T> {
    const keys = Object.keys(wanted).sort();
    const held: Array<[string, LockMode]> = [];
    try {
      for (const key of keys) {
        const mode = wanted[key]!;
        let lock = this.locks.get(key);
        if (!lock) this.locks.set(key, (lock = new RwLock()));
        await lock.acquire(mode);
        held.push([key, mode]);
      }
      return await fn();
    } finally {
      for (const [key, mode] of held.reverse()) {
        const lock = this.locks.get(key)!;
        lock.release(mode);
        if (lock.idle) this.locks.delete(key);
      }
    }
  }

  /** Number of keys with a holder or a waiter (tests and shutdown logs). */
  get size(): number {
    return this.locks.size;
  }
}

/** Merges lock requests; exclusive wins over shared for the same key. */
export function lockSet(...entries: Array<[string, LockMode]>): Record<string, LockMode> {
  const out: Record<string, LockMode> = {};
  for (const [key, mode] of entries) {
    if (out[key] !== 'exclusive') out[key] = mode;
  }
  return out;
}

import type { Logger } from '../log.js';
import { refName, type BranchRef } from '../names.js';
import type { BranchRecord, State } from '../state/schema.js';
import { proxyMetrics as M } from './metrics.js';

/** What waking needs from the daemon: the engine's start, under the lock its API requests take. */
export interface WakeDeps {
  start(ref: BranchRef): Promise<unknown>;
  withBranchLock<T>(ref: BranchRef, fn: () => Promise<T>): Promise<T>;
}

/**
 * Wake on connect: a branch the idle stop stopped is started for the client that asks for it.
 * Under the branch's lock (an idle stop or an API operation in flight finishes first); clients that
 * arrive together share one start.
 */
export class Waker {
  private readonly inflight = new Map<string, Promise<void>>();

  constructor(
    private readonly d: WakeDeps,
    private readonly log: Logger,
  ) {}

  /** Resolves when the branch is no longer idle-stopped by this wake, or nothing was to be done; the caller looks again. */
  wake(b: BranchRecord, read: () => Promise<State>): Promise<void> {
    const key = refName(b);
    let p = this.inflight.get(key);
    if (!p) {
      p = this.run(b, read).finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  private async run(b: BranchRecord, read: () => Promise<State>): Promise<void> {
    const ref = { database: b.database, branch: b.branch };
    const key = refName(b);
    const t0 = performance.now();
    let started = false;
    try {
      await this.d.withBranchLock(ref, async () => {
        const cur = (await read()).branches[key];
        if (!cur || cur.status !== 'stopped' || cur.stoppedBy !== 'idle' || cur.operation) return;
        this.log.info('router: starting an idle-stopped branch for a client', { branch: key });
        await this.d.start(ref);
        started = true;
      });
    } catch (e) {
      M.wakes.inc({ result: 'failed' });
      throw e;
    }
    if (started) {
      const seconds = (performance.now() - t0) / 1000;
      M.wakes.inc({ result: 'ok' });
      M.wakeSeconds.observe(seconds);
      this.log.info('router: branch started', { branch: key, ms: Math.round(seconds * 1000) });
    }
  }
}

import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { BpgError } from '../errors.js';
import { formatDuration } from '../duration.js';

/**
 * Turns for creates in the daemon: at most `limit` database and branch creates run at once (each
 * is a snapshot, a clone, a container and a PostgreSQL start-up on a host of a few cores). The rest
 * wait in arrival order; a turn passes straight to the first in line, so a newcomer never jumps
 * the queue. The line is bounded in length and in time: past either, the request gets a 503 with
 * Retry-After and has made nothing (a create only reserves its name once it has its turn).
 */

/** Answered with 503 and a Retry-After header: try again later, nothing was made. */
export class Overloaded extends BpgError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super('unavailable', message);
  }
}

export interface AdmissionOptions {
  /** limits.concurrentCreates */
  limit: number;
  /** limits.createQueueLength */
  maxWaiting: number;
  /** limits.createQueueTimeout (ms) */
  timeoutMs: number;
  /** Where the queue's metrics go (the API's own registry). */
  registry: Registry;
}

interface Waiter {
  enqueuedAt: number;
  admit: () => void;
  refuse: (e: Overloaded) => void;
  timer: NodeJS.Timeout;
}

export class CreateAdmission {
  private running = 0;
  private readonly queue: Waiter[] = [];
  private closed = false;
  /** Moving average of how long a create holds its turn, for Retry-After. */
  private holdMs = 5000;
  private readonly rejected: Counter<'reason'>;
  private readonly waited: Histogram<string>;

  constructor(private readonly o: AdmissionOptions) {
    // prom-client calls collect() with the gauge as `this`: read ours through arrows.
    const running = () => this.running;
    const waiting = () => this.queue.length;
    const registers = [o.registry];
    new Gauge({
      name: 'bpg_creates_running',
      help: 'Creates (database and branch) running in this daemon now; at most limits.concurrentCreates',
      registers,
      collect() {
        this.set(running());
      },
    });
    new Gauge({
      name: 'bpg_creates_waiting',
      help: 'Creates waiting for their turn now; at most limits.createQueueLength',
      registers,
      collect() {
        this.set(waiting());
      },
    });
    this.rejected = new Counter({
      name: 'bpg_creates_rejected_total',
      help: 'Creates answered 503 without running: queue_full (limits.createQueueLength), timeout (limits.createQueueTimeout), shutdown',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of ['queue_full', 'timeout', 'shutdown']) this.rejected.inc({ reason }, 0);
    this.waited = new Histogram({
      name: 'bpg_create_wait_seconds',
      help: 'How long creates that got their turn waited for it',
      buckets: [0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300],
      registers,
    });
  }

  /** Runs `fn` in a turn of its own, waiting for one first if all are taken. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire();
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      this.holdMs = 0.8 * this.holdMs + 0.2 * (performance.now() - t0);
      this.release();
    }
  }

  /** From now on: waiting creates and new ones get 503 (the daemon is shutting down). */
  close(): void {
    this.closed = true;
    for (const w of this.queue.splice(0)) {
      clearTimeout(w.timer);
      this.rejected.inc({ reason: 'shutdown' });
      w.refuse(new Overloaded('the agent is shutting down', 5));
    }
  }

  private acquire(): Promise<void> {
    if (this.closed) return Promise.reject(new Overloaded('the agent is shutting down', 5));
    if (this.running < this.o.limit && this.queue.length === 0) {
      this.running++;
      this.waited.observe(0);
      return Promise.resolve();
    }
    if (this.queue.length >= this.o.maxWaiting) {
      this.rejected.inc({ reason: 'queue_full' });
      return Promise.reject(
        new Overloaded(
          `too many creates: ${this.running} running and ${this.queue.length} waiting (limits.concurrentCreates ${this.o.limit}, limits.createQueueLength ${this.o.maxWaiting}); nothing was made, retry later`,
          this.retryAfter(),
        ),
      );
    }
    return new Promise<void>((admit, refuse) => {
      const w: Waiter = {
        enqueuedAt: performance.now(),
        admit,
        refuse,
        timer: setTimeout(() => {
          const i = this.queue.indexOf(w);
          if (i < 0) return;
          this.queue.splice(i, 1);
          this.rejected.inc({ reason: 'timeout' });
          refuse(
            new Overloaded(
              `waited ${formatDuration(this.o.timeoutMs)} for a turn to create (limits.createQueueTimeout; ${this.running} running, limits.concurrentCreates ${this.o.limit}); nothing was made, retry later`,
              this.retryAfter(),
            ),
          );
        }, this.o.timeoutMs),
      };
      this.queue.push(w);
    });
  }

  /** Hands the turn to the first in line, or frees it. */
  private release(): void {
    const next = this.queue.shift();
    if (!next) {
      this.running--;
      return;
    }
    clearTimeout(next.timer);
    this.waited.observe((performance.now() - next.enqueuedAt) / 1000);
    next.admit();
  }

  /** Seconds until a turn is likely free for one more: the line ahead of it, at the recent pace. */
  private retryAfter(): number {
    const rounds = Math.ceil((this.queue.length + 1) / this.o.limit);
    return Math.min(3600, Math.max(1, Math.ceil((rounds * this.holdMs) / 1000)));
  }
}

/**
 * Runs queued jobs: one pull request's jobs strictly in arrival order (a job waiting for its retry
 * holds back the later ones of its PR), different pull requests in parallel up to `concurrency`.
 * A failed job is retried with exponential backoff; after the last attempt, or at once for a
 * failure that retrying cannot fix, `giveUp` reports it and the job is dropped.
 */
import type { Logger } from '../../agent/log.js';
import { describe } from '../../agent/errors.js';
import type { Job, JobStore } from './store.js';

export interface QueueOptions {
  store: JobStore;
  log: Logger;
  concurrency: number;
  attempts: number;
  backoffMs: number;
  maxBackoffMs: number;
  /** Does the work; throws to ask for a retry (unless `isPermanent` says it is pointless). */
  run: (job: Job) => Promise<void>;
  isPermanent: (err: unknown) => boolean;
  /** Reports a job that will not be tried again (best effort: its own failure is only logged). */
  giveUp: (job: Job, err: unknown) => Promise<void>;
}

export class JobQueue {
  private readonly jobs = new Map<string, Job>();
  private readonly runningKeys = new Set<string>();
  private readonly running = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | null = null;
  private lastSeq = 0;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly o: QueueOptions) {}

  /** Takes over the jobs a previous run left on disk and starts working. */
  resume(jobs: Job[]): void {
    for (const j of jobs) {
      this.jobs.set(j.id, j);
      this.lastSeq = Math.max(this.lastSeq, j.seq);
    }
    if (jobs.length) this.o.log.info('resuming queued deliveries', { count: jobs.length });
    this.pump();
  }

  /** A sequence number above every job's, also across restarts (jobs on disk keep theirs). */
  nextSeq(): number {
    this.lastSeq = Math.max(this.lastSeq + 1, Date.now() * 1000);
    return this.lastSeq;
  }

  /** Persists the job, then schedules it; false when its delivery id was seen before. */
  async add(job: Job): Promise<boolean> {
    if (!(await this.o.store.accept(job))) return false;
    this.jobs.set(job.id, job);
    this.pump();
    return true;
  }

  get size(): number {
    return this.jobs.size;
  }

  /** Resolves when nothing is queued or running (for tests and shutdown). */
  idle(): Promise<void> {
    if (this.jobs.size === 0 && this.running.size === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Starts nothing new; waits up to `graceMs` for running jobs. Queued jobs stay on disk. */
  async stop(graceMs: number): Promise<boolean> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    const all = Promise.allSettled([...this.running]).then(() => true);
    return Promise.race([all, new Promise<boolean>((r) => setTimeout(() => r(false), graceMs).unref())]);
  }

  private pump(): void {
    if (this.stopped) return;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const now = Date.now();
    const headSeen = new Set<string>();
    let wakeAt = Infinity;
    for (const job of [...this.jobs.values()].sort((a, b) => a.seq - b.seq)) {
      if (headSeen.has(job.key)) continue; // only the oldest job of a PR may run
      headSeen.add(job.key);
      if (this.runningKeys.has(job.key)) continue;
      if (job.notBefore > now) {
        wakeAt = Math.min(wakeAt, job.notBefore);
        continue;
      }
      if (this.running.size >= this.o.concurrency) break;
      this.start(job);
    }
    if (wakeAt !== Infinity) this.timer = setTimeout(() => this.pump(), Math.max(10, wakeAt - now));
    if (this.jobs.size === 0 && this.running.size === 0) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const r of w) r();
    }
  }

  private start(job: Job): void {
    this.runningKeys.add(job.key);
    const p = this.attempt(job).finally(() => {
      this.runningKeys.delete(job.key);
      this.running.delete(p);
      this.pump();
    });
    this.running.add(p);
  }

  private async attempt(job: Job): Promise<void> {
    const t0 = performance.now();
    const fields = { delivery: job.id, pr: job.key, action: job.action, attempt: job.attempts + 1 };
    try {
      await this.o.run(job);
      this.o.log.info('delivery done', { ...fields, ms: Math.round(performance.now() - t0) });
      await this.finish(job);
      return;
    } catch (err) {
      if (this.stopped) return; // shutting down: the job stays on disk and runs after the restart
      const attempts = job.attempts + 1;
      const permanent = this.o.isPermanent(err);
      if (permanent || attempts >= this.o.attempts) {
        this.o.log.warn('delivery failed, giving up', { ...fields, permanent, error: describe(err) });
        try {
          await this.o.giveUp({ ...job, attempts }, err);
        } catch (e) {
          this.o.log.warn('could not report the failure on the pull request', { ...fields, error: describe(e) });
        }
        await this.finish(job);
        return;
      }
      const delay = Math.min(this.o.maxBackoffMs, this.o.backoffMs * 2 ** (attempts - 1)) * (0.8 + Math.random() * 0.4);
      const next: Job = { ...job, attempts, notBefore: Date.now() + Math.round(delay), lastError: describe(err) };
      this.o.log.warn('delivery failed, will retry', { ...fields, inMs: Math.round(delay), error: describe(err) });
      await this.o.store.save(next).catch((e) => this.o.log.warn('could not record the retry', { ...fields, error: describe(e) }));
      this.jobs.set(job.id, next);
    }
  }

  private async finish(job: Job): Promise<void> {
    try {
      await this.o.store.remove(job);
    } catch (e) {
      // Left on disk, it would run again after a restart: harmless, every step is idempotent.
      this.o.log.warn('could not remove a finished job file', { delivery: job.id, error: describe(e) });
    }
    this.jobs.delete(job.id);
  }
}

/**
 * Runs queued jobs: one pull request's jobs strictly in arrival order (a job waiting for its retry
 * holds back the later ones of its PR), different pull requests in parallel up to `concurrency`.
 * A failed job is retried with exponential backoff; after the last attempt, or at once for a
 * failure that retrying cannot fix, `giveUp` reports it and the job is dropped.
 *
 * Each try is counted on disk before it starts. A try that the receiver did not survive (a job
 * that crashes it, a kill, a power cut) has no other record, so it counts as well: the job is not
 * run more than `attempts` times in all, however often it takes the receiver down, and is then
 * reported. A clean stop (SIGTERM) gives back the tries it cut short.
 */
import type { Logger } from '../../agent/log.js';
import { describe } from '../../agent/errors.js';
import type { Accepted, Job, JobStore } from './store.js';

/** The receiver stopped during a job's last allowed try: it is not run again. */
export class InterruptedError extends Error {
  override name = 'InterruptedError';
  constructor(attempt: number) {
    super(`the receiver stopped during attempt ${attempt} of this job (a crash or a kill): not trying again`);
  }
}

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
  /** Jobs whose try is running, as counted on disk (for giving the try back on a clean stop). */
  private readonly inFlight = new Map<string, Job>();
  /** Jobs whose last try was cut short by the receiver's end (found at start-up). */
  private readonly interrupted = new Set<string>();
  private readonly runningKeys = new Set<string>();
  private readonly running = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | null = null;
  private lastSeq = 0;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly o: QueueOptions) {}

  /** Takes over the jobs a previous run left on disk and starts working. */
  resume(jobs: Job[]): void {
    for (let j of jobs) {
      if (j.startedAt !== null) {
        // Started and never heard of again: the receiver died during it. That try stays counted.
        this.o.log.warn('a delivery was cut short by a crash or a kill; counted as a try', {
          delivery: j.id,
          pr: j.key,
          attempt: j.attempts,
          of: this.o.attempts,
        });
        j = { ...j, startedAt: null, lastError: new InterruptedError(j.attempts).message };
        this.interrupted.add(j.id);
      }
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

  /** Persists the job, then schedules it; not when its delivery id or its body was seen before. */
  async add(job: Job): Promise<Accepted> {
    const r = await this.o.store.accept(job);
    if (!r.accepted) return r;
    this.jobs.set(job.id, job);
    this.pump();
    return r;
  }

  get size(): number {
    return this.jobs.size;
  }

  /** Resolves when nothing is queued or running (for tests and shutdown). */
  idle(): Promise<void> {
    if (this.jobs.size === 0 && this.running.size === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /**
   * Starts nothing new; waits up to `graceMs` for running jobs. Queued jobs stay on disk; the tries
   * still running then are given back (not the job's fault), so they do not count after the restart.
   */
  async stop(graceMs: number): Promise<boolean> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    const all = Promise.allSettled([...this.running]).then(() => true);
    const finished = await Promise.race([
      all,
      new Promise<boolean>((r) => setTimeout(() => r(false), graceMs).unref()),
    ]);
    if (!finished) {
      for (const job of this.inFlight.values()) {
        await this.o.store
          .save({ ...job, attempts: job.attempts - 1, startedAt: null })
          .catch((e) =>
            this.o.log.warn('could not give back an interrupted try', { delivery: job.id, error: describe(e) }),
          );
      }
    }
    return finished;
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

  private async attempt(queued: Job): Promise<void> {
    if (queued.attempts >= this.o.attempts) {
      // Every try was used: the last one never came back (the receiver died during it), or
      // `attempts` was lowered since.
      const err = this.interrupted.has(queued.id)
        ? new InterruptedError(queued.attempts)
        : new Error(queued.lastError ?? `tried ${queued.attempts} times`);
      return this.abandon(queued, err, {
        delivery: queued.id,
        pr: queued.key,
        action: queued.action,
        attempts: queued.attempts,
      });
    }
    this.interrupted.delete(queued.id);
    const job: Job = { ...queued, attempts: queued.attempts + 1, startedAt: Date.now() };
    const fields = { delivery: job.id, pr: job.key, action: job.action, attempt: job.attempts };
    try {
      // Counted before it runs: if this try takes the process down, the next start knows.
      await this.o.store.save(job);
    } catch (e) {
      // Not counted, so not run: a try that crashed us would then be tried without end.
      this.o.log.warn('could not record the start of a try; trying again later', { ...fields, error: describe(e) });
      this.jobs.set(job.id, { ...queued, notBefore: Date.now() + this.o.backoffMs });
      return;
    }
    this.jobs.set(job.id, job);
    this.inFlight.set(job.id, job);
    const t0 = performance.now();
    try {
      await this.o.run(job);
      this.o.log.info('delivery done', { ...fields, ms: Math.round(performance.now() - t0) });
      await this.finish(job);
      return;
    } catch (err) {
      if (this.stopped) return; // shutting down: the job stays on disk and runs after the restart
      const permanent = this.o.isPermanent(err);
      if (permanent || job.attempts >= this.o.attempts) return this.abandon(job, err, { ...fields, permanent });
      const delay =
        Math.min(this.o.maxBackoffMs, this.o.backoffMs * 2 ** (job.attempts - 1)) * (0.8 + Math.random() * 0.4);
      const next: Job = {
        ...job,
        startedAt: null,
        notBefore: Date.now() + Math.round(delay),
        lastError: describe(err),
      };
      this.o.log.warn('delivery failed, will retry', { ...fields, inMs: Math.round(delay), error: describe(err) });
      await this.o.store
        .save(next)
        .catch((e) => this.o.log.warn('could not record the retry', { ...fields, error: describe(e) }));
      this.jobs.set(job.id, next);
    } finally {
      this.inFlight.delete(job.id);
    }
  }

  /** Reports the job as given up (its `attempts`: the tries it had) and drops it. */
  private async abandon(job: Job, err: unknown, fields: Record<string, unknown>): Promise<void> {
    this.o.log.warn('delivery failed, giving up', { ...fields, error: describe(err) });
    try {
      await this.o.giveUp(job, err);
    } catch (e) {
      this.o.log.warn('could not report the failure on the pull request', { ...fields, error: describe(e) });
    }
    await this.finish(job);
  }

  private async finish(job: Job): Promise<void> {
    try {
      await this.o.store.remove(job);
    } catch (e) {
      // Left on disk, it would run again after a restart: harmless, every step is idempotent.
      this.o.log.warn('could not remove a finished job file', { delivery: job.id, error: describe(e) });
    }
    this.jobs.delete(job.id);
    this.interrupted.delete(job.id);
  }
}

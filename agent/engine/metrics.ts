import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { BpgError } from '../errors.js';
import type { SystemStatus } from './status.js';

/**
 * Prometheus metrics of the agent daemon (`GET /metrics`), on registries of our own (never
 * prom-client's global one).
 *
 * Operation counts and durations are process-wide: the API's route runner records every request it
 * runs, and the housekeeping loop records its own work with `recordOperation` / `timeOperation`.
 * Everything else is read from the engine at scrape time (see status.ts for its cost).
 */

/** Process-wide metrics (operations, housekeeping, the router): one registry for the whole daemon. */
export const processRegistry = new Registry();
collectDefaultMetrics({ register: processRegistry });

const LABELS = ['operation', 'result'] as const;
const operations = new Counter({
  name: 'bpg_operations_total',
  help: 'Operations run by this agent process, by operation and result (ok or an error code: invalid, not_found, conflict, unavailable, failed, ...)',
  labelNames: LABELS,
  registers: [processRegistry],
});
const durations = new Histogram({
  name: 'bpg_operation_duration_seconds',
  help: 'How long operations took, by operation and result',
  labelNames: LABELS,
  // From a read (ms) to a large point-in-time recovery (minutes).
  buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300],
  registers: [processRegistry],
});

const housekeepingActions = new Counter({
  name: 'bpg_housekeeping_actions_total',
  help: 'What housekeeping passes did: expired branches deleted, idle branches stopped, scheduled snapshots taken and pruned, WAL segments removed, items that failed',
  labelNames: ['action'] as const,
  registers: [processRegistry],
});

/** Counts what one housekeeping pass did (the pass itself is an operation named 'housekeeping'). */
export function recordHousekeeping(r: {
  deleted: unknown[];
  stopped: unknown[];
  snapshots: unknown[];
  pruned: unknown[];
  wal: Array<{ removed: number }>;
  errors: unknown[];
}): void {
  housekeepingActions.inc({ action: 'expired' }, r.deleted.length);
  housekeepingActions.inc({ action: 'idle_stopped' }, r.stopped.length);
  housekeepingActions.inc({ action: 'snapshot_taken' }, r.snapshots.length);
  housekeepingActions.inc({ action: 'snapshot_pruned' }, r.pruned.length);
  housekeepingActions.inc(
    { action: 'wal_segment_removed' },
    r.wal.reduce((n, w) => n + w.removed, 0),
  );
  housekeepingActions.inc({ action: 'failed' }, r.errors.length);
}

/** Records one finished operation. `result`: 'ok' or an error code (see `resultOf`). */
export function recordOperation(operation: string, result: string, seconds: number): void {
  operations.inc({ operation, result });
  durations.observe({ operation, result }, seconds);
}

/** The result label for a thrown value: the engine's error code, or 'failed'. */
export function resultOf(err: unknown): string {
  return err instanceof BpgError ? err.code : 'failed';
}

/** Runs `fn` and records it as `operation` with its outcome; rethrows what it throws. */
export async function timeOperation<T>(operation: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    const r = await fn();
    recordOperation(operation, 'ok', (performance.now() - t0) / 1000);
    return r;
  } catch (e) {
    recordOperation(operation, resultOf(e), (performance.now() - t0) / 1000);
    throw e;
  }
}

/** The state-derived series, filled from one `systemStatus` per scrape. */
export class EngineMetrics {
  private readonly registry = new Registry();
  private readonly g = {
    docker: this.gauge('bpg_docker_up', 'Whether the Docker engine answers (1) or not (0)'),
    databases: this.gauge('bpg_databases', 'Databases'),
    branches: this.gauge(
      'bpg_branches',
      'Branches by database and status (running, stopped, creating, deleting, down, missing, restarting, interrupted)',
      ['database', 'status'],
    ),
    used: this.gauge(
      'bpg_branch_used_bytes',
      "Bytes a branch's dataset uses (ZFS used: its own blocks, not the ones it shares with its origin)",
      ['database', 'branch'],
    ),
    wal: this.gauge('bpg_branch_wal_bytes', "Bytes in a branch's WAL archive folder", ['database', 'branch']),
    expires: this.gauge(
      'bpg_branch_expiry_timestamp_seconds',
      'When housekeeping deletes the branch (only branches with an expiry)',
      ['database', 'branch'],
    ),
    poolSize: this.gauge(
      'bpg_pool_size_bytes',
      'What the pool can hold for datasets (used + available of its top dataset)',
      ['pool'],
    ),
    poolFree: this.gauge('bpg_pool_free_bytes', 'Bytes still writable in the pool', ['pool']),
    poolAllocated: this.gauge('bpg_pool_allocated_bytes', 'Bytes used in the pool', ['pool']),
    baseUsed: this.gauge(
      'bpg_dataset_base_used_bytes',
      'Bytes used under the dataset base (every database, branch and snapshot)',
      ['dataset'],
    ),
    baseAvailable: this.gauge(
      'bpg_dataset_base_available_bytes',
      'Bytes still writable under the dataset base (less than the pool has under a quota)',
      ['dataset'],
    ),
    limit: this.gauge('bpg_limit', 'Configured limits (config key under limits.; unset ones are absent)', ['limit']),
  };
  private queue: Promise<unknown> = Promise.resolve();

  /** `status`: what `bpg status` shows (Engine.status), read on every scrape. */
  constructor(private readonly status: () => Promise<SystemStatus>) {}

  get contentType(): string {
    return this.registry.contentType;
  }

  private gauge(name: string, help: string, labelNames: string[] = []): Gauge<string> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }

  /** The exposition text. Scrapes run one at a time, so one cannot see another's half-filled gauges. */
  render(): Promise<string> {
    const next = this.queue.then(() => this.scrape());
    this.queue = next.catch(() => {});
    return next;
  }

  private async scrape(): Promise<string> {
    const s = await this.status();
    for (const g of Object.values(this.g)) g.reset();
    const { g } = this;
    g.docker.set(s.docker.reachable ? 1 : 0);
    g.databases.set(s.counts.databases);
    for (const b of s.branches) {
      const l = { database: b.database, branch: b.branch };
      g.branches.inc({ database: b.database, status: b.status });
      if (b.usedBytes !== null) g.used.set(l, b.usedBytes);
      g.wal.set(l, b.walBytes);
      if (b.expiresAt) g.expires.set(l, Date.parse(b.expiresAt) / 1000);
    }
    if (s.pool) {
      const l = { pool: s.pool.pool };
      g.poolSize.set(l, s.pool.sizeBytes);
      g.poolFree.set(l, s.pool.freeBytes);
      g.poolAllocated.set(l, s.pool.allocatedBytes);
    }
    if (s.datasetBase) {
      g.baseUsed.set({ dataset: s.datasetBase.dataset }, s.datasetBase.usedBytes);
      g.baseAvailable.set({ dataset: s.datasetBase.dataset }, s.datasetBase.availableBytes);
    }
    for (const [k, v] of Object.entries(s.limits)) if (typeof v === 'number') g.limit.set({ limit: k }, v);
    return Registry.merge([processRegistry, this.registry]).metrics();
  }
}

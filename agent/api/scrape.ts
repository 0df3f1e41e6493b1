import { Counter, Registry } from 'prom-client';
import type { Engine } from '../engine/engine.js';
import { EngineMetrics } from '../engine/metrics.js';

/**
 * GET /metrics. A collection reads the state, lists Docker containers and runs `zfs get`: a
 * token holder's scrape gets a fresh one (one at a time, in order). A scrape without a token
 * (`api.metricsWithoutToken`) never starts a collection of its own while one is running or one
 * younger than `api.metricsMaxAge` exists: it shares that one, so a flood of them costs one
 * collection per max-age, however many arrive. The API's own series (the create queue, these
 * counters) are always rendered fresh; they cost nothing.
 */

export type Served = 'fresh' | 'collected' | 'shared' | 'cached';

export class MetricsEndpoint {
  /** The API's own series, rendered after the engine's on every scrape. */
  readonly registry = new Registry();
  private readonly engineMetrics: EngineMetrics;
  private readonly collections: Counter<string>;
  private readonly scrapes: Counter<'served'>;
  private inflight: Promise<string> | null = null;
  private last: { startedAt: number; text: string } | null = null;

  constructor(
    engine: Engine,
    private readonly maxAgeMs: number,
  ) {
    this.engineMetrics = new EngineMetrics(() => engine.status());
    const registers = [this.registry];
    this.collections = new Counter({
      name: 'bpg_metrics_collections_total',
      help: 'Collections of the state-derived series (a state read, a Docker list, zfs get) this daemon ran for GET /metrics',
      registers,
    });
    this.scrapes = new Counter({
      name: 'bpg_metrics_scrapes_total',
      help: 'GET /metrics answered: fresh (token holder, own collection), collected (no token, started one), shared (no token, joined a running one), cached (no token, within api.metricsMaxAge)',
      labelNames: ['served'],
      registers,
    });
    for (const served of ['fresh', 'collected', 'shared', 'cached']) this.scrapes.inc({ served }, 0);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text: a fresh collection for token holders, a shared or recent one otherwise. */
  async render(o: { fresh: boolean }): Promise<string> {
    let served: Served;
    let text: Promise<string>;
    if (o.fresh) {
      served = 'fresh';
      text = this.collect();
    } else if (this.last && performance.now() - this.last.startedAt <= this.maxAgeMs) {
      served = 'cached';
      text = Promise.resolve(this.last.text);
    } else if (this.inflight) {
      served = 'shared';
      text = this.inflight;
    } else {
      served = 'collected';
      const p = this.collect();
      this.inflight = p;
      const clear = () => {
        if (this.inflight === p) this.inflight = null;
      };
      p.then(clear, clear);
      text = p;
    }
    const engineText = await text;
    this.scrapes.inc({ served });
    const own = await this.registry.metrics();
    return engineText.endsWith('\n') ? engineText + own : `${engineText}\n${own}`;
  }

  /** One collection (EngineMetrics runs them one at a time); the newest result is kept for sharing. */
  private collect(): Promise<string> {
    const startedAt = performance.now();
    this.collections.inc();
    return this.engineMetrics.render().then((text) => {
      if (!this.last || this.last.startedAt < startedAt) this.last = { startedAt, text };
      return text;
    });
  }
}

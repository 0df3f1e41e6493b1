import type { Engine } from '../engine/engine.js';
import type { HousekeepingOptions, HousekeepingReport } from '../engine/housekeeping.js';
import { describe } from '../errors.js';
import { recordHousekeeping, timeOperation } from '../engine/metrics.js';
import type { Logger } from '../log.js';

/**
 * The daemon's housekeeping loop: a pass right after start, then one every `interval` (measured
 * from the start of the previous pass; a pass that runs longer delays the next, so two never
 * overlap). `stop()` asks the running pass to finish its current item and waits for it.
 */
export interface Housekeeper {
  stop(): Promise<void>;
  /** Passes finished so far (tests and logs). */
  readonly passes: number;
}

export function startHousekeeper(
  engine: Engine,
  o: {
    interval: number;
    log: Logger;
    around?: HousekeepingOptions['around'];
    activity?: HousekeepingOptions['activity'];
  },
): Housekeeper {
  let stopping = false;
  let timer: NodeJS.Timeout | null = null;
  let current: Promise<void> | null = null;
  let passes = 0;

  const pass = async () => {
    timer = null;
    const t0 = Date.now();
    try {
      const r = await timeOperation('housekeeping', () =>
        engine.housekeep({ around: o.around, activity: o.activity, shouldStop: () => stopping }),
      );
      recordHousekeeping(r);
      logReport(o.log, r);
    } catch (e) {
      o.log.warn(`housekeeping pass failed: ${describe(e)}`);
    }
    passes++;
    current = null;
    if (!stopping) schedule(Math.max(0, t0 + o.interval - Date.now()));
  };
  const schedule = (ms: number) => {
    timer = setTimeout(() => {
      current = pass();
    }, ms);
  };
  schedule(0);

  return {
    get passes() {
      return passes;
    },
    async stop() {
      stopping = true;
      if (timer) clearTimeout(timer);
      timer = null;
      await current;
    },
  };
}

/** One line per pass that did or failed something (names and times only: never a password). */
function logReport(log: Logger, r: HousekeepingReport): void {
  for (const x of r.errors) log.warn(`housekeeping: ${x.action} ${x.target} failed: ${x.error}`);
  const did =
    r.deleted.length +
    r.stopped.length +
    r.snapshots.length +
    r.pruned.length +
    r.wal.length +
    r.refreshed.length +
    r.retired.length;
  const fields = {
    deleted: r.deleted.map((d) => d.branch),
    stopped: r.stopped.map((d) => d.branch),
    snapshots: r.snapshots.map((d) => `${d.branch} ${d.id}`),
    pruned: r.pruned.map((d) => d.id),
    wal: r.wal.map((w) => `${w.branch}: ${w.removed} segment(s), ${w.removedBytes} bytes`),
    refreshed: r.refreshed.map((x) => `${x.database} ${x.generation}`),
    retired: r.retired,
    skipped: r.skipped.map((x) => `${x.action} ${x.target}: ${x.reason}`),
    errors: r.errors.length,
    ms: r.ms,
  };
  if (did || r.errors.length) log.info('housekeeping', fields);
  else log.debug('housekeeping', fields);
}

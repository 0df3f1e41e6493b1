import { ownerAlive, selfStamp } from './owner.js';
import type { Operation } from './schema.js';

/** A journal entry for an operation this process starts now. */
export function newOperation(kind: string, data?: Record<string, string>): Operation {
  return { kind, ...selfStamp(), startedAt: new Date().toISOString(), ...(data ? { data } : {}) };
}

/** The operation's process still runs (same boot, same process: not a reused PID). */
export function operationAlive(o: Operation): boolean {
  return ownerAlive(o);
}

/** An operation whose process is gone: to be finished or undone by recovery. */
export function operationDead(o: Operation | null | undefined): o is Operation {
  return !!o && !ownerAlive(o);
}

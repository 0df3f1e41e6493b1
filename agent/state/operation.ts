import { ownerAlive, selfStamp } from './owner.js';
import type { Operation } from './schema.js';

/**
 * The kinds of operation the journal records. Recovery (engine/recovery.ts) switches over them, so
 * the compiler checks that every kind has its way to be finished or undone.
 */
export const BRANCH_OPERATIONS = [
  'create',
  'delete',
  'start',
  'stop',
  'restart',
  'reset',
  'rename',
  'snapshot',
  'refresh',
] as const;
export const DATABASE_OPERATIONS = ['create-database', 'delete-database', 'rename', 'refresh'] as const;
export type BranchOperationKind = (typeof BRANCH_OPERATIONS)[number];
export type DatabaseOperationKind = (typeof DATABASE_OPERATIONS)[number];
/** `recover`: the clean-up of a branch that is being destroyed; `recover-<kind>`: recovery of that operation under way. */
export type OperationKind =
  BranchOperationKind | DatabaseOperationKind | 'recover' | `recover-${BranchOperationKind | DatabaseOperationKind}`;

/** A journal entry for an operation this process starts now. */
export function newOperation(kind: OperationKind, data?: Record<string, string>): Operation {
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

/**
 * What a recorded kind was before recovery began (`recover-reset` is a reset), or null for a kind
 * this version does not know (recorded by a newer one): recovery then only drops the marker.
 */
export function branchKindOf(recorded: string): BranchOperationKind | 'recover' | null {
  const base = recorded.replace(/^recover-/, '');
  if (recorded === 'recover') return 'recover';
  return (BRANCH_OPERATIONS as readonly string[]).includes(base) ? (base as BranchOperationKind) : null;
}

export function databaseKindOf(recorded: string): DatabaseOperationKind | null {
  const base = recorded.replace(/^recover-/, '');
  return (DATABASE_OPERATIONS as readonly string[]).includes(base) ? (base as DatabaseOperationKind) : null;
}

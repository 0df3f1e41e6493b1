import { randomBytes } from 'node:crypto';
import type { Config } from '../config.js';
import { conflict, notFound } from '../errors.js';
import { refName, type BranchRef } from '../names.js';
import { operationAlive } from '../state/operation.js';
import type { BranchRecord, DatabaseRecord, Operation, State } from '../state/schema.js';

/**
 * The rules that read and change the state alone: no ZFS, no Docker, no PostgreSQL. Pure
 * functions, tested in the unit tier (agent/test/rules.unit.test.ts).
 */

export const now = () => new Date().toISOString();
export const newId = () => randomBytes(8).toString('hex');

/** The fields a new branch record starts with besides its identity. */
export function freshBranchFields(
  o: {
    expiresAt?: string | null;
    protect?: boolean;
    memory?: number;
    cpus?: number;
    disk?: number | null;
    generation?: number;
  } = {},
) {
  return {
    expiresAt: o.expiresAt ?? null,
    protected: o.protect ?? false,
    lastActiveAt: new Date().toISOString(),
    stoppedBy: null,
    memory: o.memory ?? null,
    cpus: o.cpus ?? null,
    disk: o.disk ?? null,
    schemaOnly: false,
    seed: null,
    generation: o.generation ?? 0,
  } as const;
}

/** When a new branch expires: its own TTL, else the PR default for `pr-<n>` names (ms from `from`). */
export function expiryFor(
  cfg: Config,
  branch: string,
  ttlMs: number | null | undefined,
  from = Date.now(),
): string | null {
  const ms = ttlMs === undefined ? (/^pr-\d+$/.test(branch) ? cfg.expiry.prBranchTtl : null) : ttlMs;
  return ms === null ? null : new Date(from + ms).toISOString();
}

/** Fails when another live process holds an operation on this record. */
export function assertIdle(what: string, current: Operation | null): void {
  if (current && operationAlive(current)) {
    throw conflict(`${what} is busy: '${current.kind}' in progress (pid ${current.pid}, since ${current.startedAt})`);
  }
}

export function assertBranchIdle(b: BranchRecord): void {
  assertIdle(`branch '${refName(b)}'`, b.operation);
}

export function requireDatabase(state: State, name: string): DatabaseRecord {
  const db = state.databases[name];
  if (!db) throw notFound(`database '${name}' does not exist`);
  return db;
}

export function requireBranch(state: State, ref: BranchRef): BranchRecord {
  requireDatabase(state, ref.database);
  const b = state.branches[refName(ref)];
  if (!b) throw notFound(`branch '${refName(ref)}' does not exist`);
  return b;
}

/** A ZFS snapshot some branch was cloned from, or a kept snapshot (`bpg snapshot create`). */
export function snapshotInUse(s: State, full: string): boolean {
  if (Object.values(s.branches).some((b) => b.origin?.snapshot === full)) return true;
  const [ds, name] = full.split('@');
  return Object.values(s.snapshots).some(
    (k) => k.name === name && Object.values(s.branches).some((b) => b.id === k.branchId && b.dataset === ds),
  );
}

/** A new database record's fields besides its identity and operation. */
export const freshDatabaseFields = () => ({ generation: 0, refreshedAt: null, retired: [], masking: null });

/** Every branch made from `key`, its children's children too. */
export function descendantsOf(s: State, key: string): BranchRecord[] {
  const out: BranchRecord[] = [];
  const walk = (k: string) => {
    for (const b of Object.values(s.branches)) {
      if (b.parent === k) {
        out.push(b);
        walk(refName(b));
      }
    }
  };
  walk(key);
  return out;
}

/** Children before parents: a ZFS clone must go before the snapshot it came from. Copies. */
export function deletionOrder(branches: BranchRecord[]): BranchRecord[] {
  const keys = new Set(branches.map(refName));
  const byKey = new Map(branches.map((x) => [refName(x), x]));
  const depth = (b: BranchRecord): number => {
    let d = 0;
    let p = b.parent;
    while (p && keys.has(p)) {
      d++;
      p = byKey.get(p)!.parent;
    }
    return d;
  };
  return [...branches].sort((a, b) => depth(b) - depth(a)).map((b) => ({ ...b }));
}

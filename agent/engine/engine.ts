import type { Config } from '../config.js';
import { conflict } from '../errors.js';
import { refName, type BranchRef } from '../names.js';
import type { BranchRecord } from '../state/schema.js';
import type { StateStore } from '../state/store.js';
import type { ContainerRuntime, DatasetStore } from '../drivers/interfaces.js';
import type { Logger } from '../log.js';
import { begin } from './begin.js';
import { preflight } from './preflight.js';
import { createContext, type EngineContext, type EngineDeps } from './context.js';
import { createBranch, type CreateBranchOptions } from './create-branch.js';
import { createDatabase, type CreateDatabaseOptions, type CreateResult } from './create-database.js';
import { deleteBranch, deleteDatabase } from './delete.js';
import { doctor, type DoctorReport } from './doctor.js';
import { renewOnPut, setBranchSettings, type BranchSettings } from './expiry.js';
import { housekeep, type HousekeepingOptions, type HousekeepingReport } from './housekeeping.js';
import type { Layout } from './layout.js';
import { restart, start, stop } from './lifecycle.js';
import { branchRecorded, getBranch, getDatabase, listBranches, listDatabases } from './reads.js';
import { recoverInterrupted } from './recovery.js';
import { renameBranch, renameDatabase } from './rename.js';
import { refreshDatabase, type RefreshOptions, type RefreshResult } from './refresh.js';
import { resetBranch } from './reset.js';
import { schemaDiff, type SchemaDiff } from './schema-diff.js';
import { createSnapshot, deleteSnapshot, listSnapshots, type SnapshotView } from './snapshots.js';
import { systemStatus, type SystemStatus } from './status.js';
import type { BranchView, DatabaseView } from './view.js';
import { walCleanup, walInfo, type WalCleanup, type WalInfo } from './wal.js';

import { startWatch, type Watch, type WatchOptions } from './migration-watch.js';
export type { CreateBranchOptions } from './create-branch.js';
export type { CreateResult } from './create-database.js';
export type { RefreshOptions, RefreshResult } from './refresh.js';
export type { EngineDeps } from './context.js';
export type { SchemaDiff } from './schema-diff.js';

/** A PUT of a branch: get it (renewing its expiry) or create it. */
export interface PutBranchOptions extends CreateBranchOptions, BranchSettings {}

export interface PutBranchResult {
  created: boolean;
  branch: BranchView;
  /** An existing branch's expiry or protection changed. */
  renewed: boolean;
  /** Create timings (created only). */
  totalMs?: number;
}

/**
 * The engine's one door: every face (the CLI, the HTTP API, the daemon's loops) calls these methods
 * and nothing else. Each is a thin call into the module of its operation (create-branch.ts,
 * delete.ts, lifecycle.ts, reset.ts, rename.ts, snapshots.ts, wal.ts, pitr.ts, doctor.ts,
 * housekeeping.ts, schema-diff.ts, ...), which takes the explicit context (context.ts).
 */
export class Engine {
  readonly ctx: EngineContext;

  constructor(cfg: Config, deps: EngineDeps) {
    this.ctx = createContext(cfg, deps);
  }

  get cfg(): Config {
    return this.ctx.cfg;
  }
  get layout(): Layout {
    return this.ctx.layout;
  }
  get store(): StateStore {
    return this.ctx.store;
  }
  get zfs(): DatasetStore {
    return this.ctx.zfs;
  }
  get docker(): ContainerRuntime {
    return this.ctx.docker;
  }
  get log(): Logger {
    return this.ctx.log;
  }

  // -------------------------------------------------------------- checks and recovery

  /** ZFS pool and Docker engine are there. */
  preflight(): Promise<void> {
    return preflight(this.ctx);
  }
  /** Before a change: the preflight, interrupted work finished or undone, an older install migrated. */
  async begin(): Promise<void> {
    await begin(this.ctx);
  }
  recoverInterrupted(): Promise<string[]> {
    return recoverInterrupted(this.ctx);
  }
  doctor(o: { fix?: boolean } = {}): Promise<DoctorReport> {
    return doctor(this.ctx, o);
  }
  housekeep(o: HousekeepingOptions = {}): Promise<HousekeepingReport> {
    return housekeep(this.ctx, o);
  }
  status(): Promise<SystemStatus> {
    return systemStatus(this.ctx);
  }

  // -------------------------------------------------------------- reads

  listDatabases(): Promise<DatabaseView[]> {
    return listDatabases(this.ctx);
  }
  getDatabase(name: string): Promise<DatabaseView> {
    return getDatabase(this.ctx, name);
  }
  listBranches(database?: string): Promise<BranchView[]> {
    return listBranches(this.ctx, database);
  }
  getBranch(ref: BranchRef): Promise<BranchView> {
    return getBranch(this.ctx, ref);
  }
  /** Whether the state records `ref`, without live look-ups; a missing database is a not-found. */
  branchRecorded(ref: BranchRef): Promise<boolean> {
    return branchRecorded(this.ctx, ref);
  }
  /** What `ref` changed in the schema compared with its parent, or `against` (a branch of the same database). */
  schemaDiff(ref: BranchRef, o: { against?: BranchRef } = {}): Promise<SchemaDiff> {
    return schemaDiff(this.ctx, ref, o);
  }

  // -------------------------------------------------------------- databases and branches

  createDatabase(name: string, opts: CreateDatabaseOptions = {}): Promise<CreateResult> {
    return createDatabase(this.ctx, name, opts);
  }
  deleteDatabase(name: string, opts: { force?: boolean } = {}): Promise<void> {
    return deleteDatabase(this.ctx, name, opts);
  }
  renameDatabase(from: string, to: string): Promise<DatabaseView> {
    return renameDatabase(this.ctx, from, to);
  }
  createBranch(ref: BranchRef, opts: CreateBranchOptions = {}): Promise<CreateResult> {
    return createBranch(this.ctx, ref, opts);
  }
  /** `onlyIf` runs under the lock on the branch and every descendant: throw to refuse (housekeeping's re-check). */
  deleteBranch(ref: BranchRef, opts: { force?: boolean; onlyIf?: (b: BranchRecord) => void } = {}): Promise<string[]> {
    return deleteBranch(this.ctx, ref, opts);
  }
  renameBranch(from: BranchRef, to: BranchRef): Promise<BranchView> {
    return renameBranch(this.ctx, from, to);
  }
  /** A new main from the source, masked, swapped in (refresh.ts). */
  refreshDatabase(name: string, o: RefreshOptions = {}): Promise<RefreshResult> {
    return refreshDatabase(this.ctx, name, o);
  }

  resetBranch(ref: BranchRef, o: { force?: boolean; fast?: boolean } = {}): Promise<BranchView> {
    return resetBranch(this.ctx, ref, o);
  }
  /** `bpg branch set`, PATCH: TTL (from now) and protection. */
  setBranchSettings(ref: BranchRef, s: BranchSettings): Promise<BranchView> {
    return setBranchSettings(this.ctx, ref, s);
  }

  /**
   * Get-or-create, what the Action and the receiver do on every push: an existing branch must have
   * the parent asked for, is renewed (an explicit TTL from now, else a pr-<n> branch's default
   * extended) and counts as activity; a missing one is created. `admit` wraps the create only (the
   * daemon's create line).
   */
  async putBranch(
    ref: BranchRef,
    opts: PutBranchOptions,
    o: { parentKey: string; admit?: <T>(create: () => Promise<T>) => Promise<T> },
  ): Promise<PutBranchResult> {
    const key = refName(ref);
    const find = async () =>
      (await getDatabase(this.ctx, ref.database)).branches.find((x) => x.branch === ref.branch) ?? null; // a missing database is a 404
    let existing = await find();
    if (existing?.status === 'interrupted') {
      // Left behind by a process that died: clean it up, then it is simply missing (or there again).
      await recoverInterrupted(this.ctx);
      existing = await find();
    }
    if (existing) {
      if (ref.branch === 'main') {
        if (opts.from !== undefined)
          throw conflict(`branch '${key}' exists and has no parent (main is created with its database)`);
      } else if (existing.parent !== o.parentKey) {
        throw conflict(`branch '${key}' exists with parent '${existing.parent}', not '${o.parentKey}'`);
      }
      if (opts.schemaOnly !== undefined && existing.schemaOnly !== opts.schemaOnly)
        throw conflict(
          `branch '${key}' exists as a ${existing.schemaOnly ? 'schema-only' : 'full'} branch, not a ${opts.schemaOnly ? 'schema-only' : 'full'} one (delete it first)`,
        );
      if (existing.status === 'creating' || existing.status === 'deleting') {
        throw conflict(`branch '${key}' is busy: ${existing.status} by another process`);
      }
      // Every push PUTs again: that renews the expiry (ttl, or the pr-<n> default) and counts as activity.
      const { changed, ...renewed } = await renewOnPut(this.ctx, ref, { ttlMs: opts.ttlMs, protect: opts.protect });
      return { created: false, renewed: changed, branch: { ...existing, ...renewed } };
    }
    const create = () => createBranch(this.ctx, ref, opts);
    const r = await (o.admit ? o.admit(create) : create());
    return { created: true, renewed: false, branch: r.branch, totalMs: r.totalMs };
  }

  // -------------------------------------------------------------- lifecycle

  /** Starts watching a migration on a running branch (the PR review's safety report). */
  watchMigration(ref: BranchRef, o: WatchOptions = {}): Promise<Watch> {
    return startWatch(this.ctx, ref, o);
  }

  start(ref: BranchRef): Promise<BranchView> {
    return start(this.ctx, ref);
  }
  /** Stops the container; port, password and data stay. `by: 'idle'` when the idle stop does it. */
  stop(ref: BranchRef, by: 'user' | 'idle' = 'user'): Promise<BranchView> {
    return stop(this.ctx, ref, by);
  }
  restart(ref: BranchRef): Promise<BranchView> {
    return restart(this.ctx, ref);
  }

  // -------------------------------------------------------------- history

  createSnapshot(ref: BranchRef, o: { label?: string; scheduled?: boolean } = {}): Promise<SnapshotView> {
    return createSnapshot(this.ctx, ref, o);
  }
  listSnapshots(ref?: BranchRef): Promise<SnapshotView[]> {
    return listSnapshots(this.ctx, ref);
  }
  deleteSnapshot(id: string): Promise<void> {
    return deleteSnapshot(this.ctx, id);
  }
  walInfo(ref?: BranchRef): Promise<WalInfo[]> {
    return walInfo(this.ctx, ref);
  }
  walCleanup(ref: BranchRef, days: number, dryRun: boolean): Promise<WalCleanup> {
    return walCleanup(this.ctx, ref, days, dryRun);
  }
}

/**
 * What the CLI's commands ask of an agent: `CliEngine`, which the in-process `Engine` (on the box,
 * `--local`) and `RemoteEngine` (remote.ts: an agent's HTTP API, or `bpg serve`'s local socket) both
 * implement, so a command prints the same output whichever answers. No other module of agent/cli
 * loads agent/engine at run time (the others import its types only).
 *
 * Loaded on demand: dockerode and pg cost ~0.3 s of start-up that --help, bad input and the remote
 * path need not pay.
 */
import type { Config } from '../config.js';
import type { CreateBranchOptions } from '../engine/create-branch.js';
import type { CreateDatabaseOptions } from '../engine/create-database.js';
import type { SourceInput } from '../engine/import-source.js';
import type { DoctorReport } from '../engine/doctor.js';
import type { Engine, RefreshOptions } from '../engine/engine.js';
import type { SchemaDiff } from '../engine/schema-diff.js';
import type { SnapshotView } from '../engine/snapshots.js';
import type { SystemStatus } from '../engine/status.js';
import type { BranchView, DatabaseView } from '../engine/view.js';
import type { WalCleanup, WalInfo } from '../engine/wal.js';
import type { BranchSettings } from '../engine/expiry.js';
import type { Logger } from '../log.js';
import type { BranchRef } from '../names.js';

/** A create's answer as the CLI prints it: the new branch (main of a new database) and the time it took. */
export interface Created {
  branch: BranchView;
  totalMs: number;
}

/**
 * A refresh's answer as the CLI prints it. An agent's operation answers the database, so through an
 * agent `masked` and `interruptionMs` (the engine's own measure of main's gap) are not known.
 */
export interface Refreshed {
  branch: BranchView;
  generation: number;
  masked?: boolean;
  interruptionMs?: number;
  totalMs: number;
}

/**
 * Exactly the operations the CLI's commands run. Errors are the engine's (BpgError) in process, and
 * the API's (BpgApiError, with the same message) remotely; exit-codes.ts maps both.
 */
export interface CliEngine {
  status(): Promise<SystemStatus>;
  doctor(o: { fix?: boolean }): Promise<DoctorReport>;

  listDatabases(): Promise<DatabaseView[]>;
  getDatabase(name: string): Promise<DatabaseView>;
  createDatabase(name: string, opts: CreateDatabaseOptions): Promise<Created>;
  deleteDatabase(name: string, opts: { force?: boolean }): Promise<void>;
  renameDatabase(from: string, to: string): Promise<DatabaseView>;
  refreshDatabase(name: string, o: RefreshOptions): Promise<Refreshed>;

  listBranches(database?: string): Promise<BranchView[]>;
  getBranch(ref: BranchRef): Promise<BranchView>;
  createBranch(ref: BranchRef, opts: CreateBranchOptions): Promise<Created>;
  /** The names deleted, children first. */
  deleteBranch(ref: BranchRef, opts: { force?: boolean }): Promise<string[]>;
  renameBranch(from: BranchRef, to: BranchRef): Promise<BranchView>;
  resetBranch(ref: BranchRef, o: { force?: boolean; fast?: boolean }): Promise<BranchView>;
  setBranchSettings(ref: BranchRef, s: BranchSettings): Promise<BranchView>;
  schemaDiff(ref: BranchRef, o: { against?: BranchRef }): Promise<SchemaDiff>;
  start(ref: BranchRef): Promise<BranchView>;
  stop(ref: BranchRef): Promise<BranchView>;
  restart(ref: BranchRef): Promise<BranchView>;

  createSnapshot(ref: BranchRef, o: { label?: string }): Promise<SnapshotView>;
  listSnapshots(ref?: BranchRef): Promise<SnapshotView[]>;
  deleteSnapshot(id: string): Promise<void>;
  walInfo(ref?: BranchRef): Promise<WalInfo[]>;
  walCleanup(ref: BranchRef, days: number, dryRun: boolean): Promise<WalCleanup>;
}

// The in-process engine is a CliEngine as it is: fail the build if the two drift apart.
const engineFits = (e: Engine): CliEngine => e;
void engineFits;

/** Opens the in-process engine on `cfg` (default: the config file, BPG_CONFIG). */
export async function openEngine(log: Logger, cfg?: Config): Promise<Engine> {
  const [{ Engine }, config] = await Promise.all([
    import('../engine/engine.js'),
    cfg ?? import('../config.js').then((c) => c.loadConfig()),
  ]);
  return new Engine(config, { log });
}

/** `db create --from-url ...`: one clear line about the source before anything is looked at. */
export async function checkImportSource(from: SourceInput): Promise<void> {
  (await import('../engine/import-source.js')).checkSourceInput(from);
}

/** `--pitr` and `--now`: ISO 8601 with a zone, or e.g. '2 hours ago' (checked before the engine opens). */
export async function parseTime(text: string): Promise<Date> {
  return (await import('../engine/pitr.js')).parseTime(text);
}

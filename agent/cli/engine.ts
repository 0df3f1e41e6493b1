/**
 * The CLI's one door into agent/engine: every operation a command runs is a method of the object
 * openEngine() returns, and no other module of agent/cli loads agent/engine at run time (the others
 * import its types only). Today some operations are functions that take the Engine as their first
 * argument; when the Engine facade has them all, openEngine() returns `new Engine(cfg, { log })`.
 *
 * Loaded on demand: dockerode and pg cost ~0.3 s of start-up that --help and bad input need not pay.
 */
import { loadConfig } from '../config.js';
import type { Engine } from '../engine/engine.js';
import type * as doctorOps from '../engine/doctor.js';
import type * as expiryOps from '../engine/expiry.js';
import type * as historyOps from '../engine/history.js';
import type * as housekeepingOps from '../engine/housekeeping.js';
import type * as renameOps from '../engine/rename.js';
import type * as resetOps from '../engine/reset.js';
import type * as statusOps from '../engine/status.js';
import type { Logger } from '../log.js';

/** `op(engine, ...args)` as a method: `(...args)`. */
type Op<F> = F extends (e: Engine, ...args: infer A) => infer R ? (...args: A) => R : never;

type EngineMethods = 'createDatabase' | 'listDatabases' | 'getDatabase' | 'deleteDatabase' | 'createBranch' | 'listBranches' | 'getBranch' | 'deleteBranch' | 'start' | 'stop' | 'restart';

/** Everything the CLI asks of the engine. */
export interface CliEngine extends Pick<Engine, EngineMethods> {
  resetBranch: Op<typeof resetOps.resetBranch>;
  renameBranch: Op<typeof renameOps.renameBranch>;
  renameDatabase: Op<typeof renameOps.renameDatabase>;
  setBranchSettings: Op<typeof expiryOps.setBranchSettings>;
  createSnapshot: Op<typeof historyOps.createSnapshot>;
  listSnapshots: Op<typeof historyOps.listSnapshots>;
  deleteSnapshot: Op<typeof historyOps.deleteSnapshot>;
  walInfo: Op<typeof historyOps.walInfo>;
  walCleanup: Op<typeof historyOps.walCleanup>;
  housekeep: Op<typeof housekeepingOps.housekeep>;
  doctor: Op<typeof doctorOps.doctor>;
  systemStatus: Op<typeof statusOps.systemStatus>;
}

/** Reads the config (BPG_CONFIG) and opens the engine on it. */
export async function openEngine(log: Logger): Promise<CliEngine> {
  const [{ Engine }, cfg] = await Promise.all([import('../engine/engine.js'), loadConfig()]);
  const e = new Engine(cfg, { log });
  return {
    createDatabase: (...a) => e.createDatabase(...a),
    listDatabases: () => e.listDatabases(),
    getDatabase: (...a) => e.getDatabase(...a),
    deleteDatabase: (...a) => e.deleteDatabase(...a),
    createBranch: (...a) => e.createBranch(...a),
    listBranches: (...a) => e.listBranches(...a),
    getBranch: (...a) => e.getBranch(...a),
    deleteBranch: (...a) => e.deleteBranch(...a),
    start: (...a) => e.start(...a),
    stop: (...a) => e.stop(...a),
    restart: (...a) => e.restart(...a),
    resetBranch: async (...a) => (await import('../engine/reset.js')).resetBranch(e, ...a),
    renameBranch: async (...a) => (await import('../engine/rename.js')).renameBranch(e, ...a),
    renameDatabase: async (...a) => (await import('../engine/rename.js')).renameDatabase(e, ...a),
    setBranchSettings: async (...a) => (await import('../engine/expiry.js')).setBranchSettings(e, ...a),
    createSnapshot: async (...a) => (await import('../engine/history.js')).createSnapshot(e, ...a),
    listSnapshots: async (...a) => (await import('../engine/history.js')).listSnapshots(e, ...a),
    deleteSnapshot: async (...a) => (await import('../engine/history.js')).deleteSnapshot(e, ...a),
    walInfo: async (...a) => (await import('../engine/history.js')).walInfo(e, ...a),
    walCleanup: async (...a) => (await import('../engine/history.js')).walCleanup(e, ...a),
    housekeep: async (...a) => (await import('../engine/housekeeping.js')).housekeep(e, ...a),
    doctor: async (...a) => (await import('../engine/doctor.js')).doctor(e, ...a),
    systemStatus: async () => (await import('../engine/status.js')).systemStatus(e),
  };
}

/** `--pitr` and `--now`: ISO 8601 with a zone, or e.g. '2 hours ago' (checked before the engine opens). */
export async function parseTime(text: string): Promise<Date> {
  return (await import('../engine/history.js')).parseTime(text);
}

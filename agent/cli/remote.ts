/**
 * The CLI's remote backend: `CliEngine` over the agent's HTTP API (BpgClient), for `--agent`, a
 * saved context, or `bpg serve`'s local socket. The API answers the engine's own views and error
 * messages (a compile-time check in server.ts), so a command prints the same output here as with
 * the in-process engine. Loads no engine, dockerode, pg or express: only the typed client.
 */
import { BpgClient } from '../api/client.js';
import { formatDuration } from '../duration.js';
import { invalid, notFound } from '../errors.js';
import { refName, type BranchRef } from '../names.js';
import type { CliEngine, Created } from './engine.js';
import { remoteFetch } from './remote-fetch.js';
import type { RemoteTarget } from './remote-target.js';

/** `ttlMs` as the API's `ttl` text: '7d', '90s'; null: never. */
const ttlText = (ms: number | null | undefined) =>
  ms === undefined ? undefined : ms === null ? null : formatDuration(ms);

export class RemoteEngine implements CliEngine {
  constructor(readonly client: BpgClient) {}

  status: CliEngine['status'] = () => this.client.status();

  /** The report either way (200 with healthy: false); the command decides its exit code. */
  doctor: CliEngine['doctor'] = (o) => (o.fix ? this.client.doctorFix() : this.client.doctor());

  // -------------------------------------------------------------- databases

  listDatabases: CliEngine['listDatabases'] = () => this.client.listDatabases();

  getDatabase: CliEngine['getDatabase'] = (name) => this.client.getDatabase(name);

  createDatabase: CliEngine['createDatabase'] = async (name, o) => {
    // The import reads a source and a password on the agent's host: not offered by the API.
    if (o.from !== undefined)
      throw invalid(
        "'bpg db create --from-url' runs on the agent's host only: run it there (with --local if bpg serve runs)",
      );
    const t0 = performance.now();
    const d = await this.client.createDatabase({ name, image: o.image, memory: o.memory, cpus: o.cpus, disk: o.disk });
    const branch = d.branches.find((b) => b.branch === 'main') ?? (await this.client.getBranch(name, 'main'));
    return { branch, totalMs: Math.round(performance.now() - t0) };
  };

  deleteDatabase: CliEngine['deleteDatabase'] = async (name, o) => {
    const r = await this.client.deleteDatabase(name, { force: o.force });
    if (!r.deleted) throw notFound(`database '${name}' does not exist`);
  };

  renameDatabase: CliEngine['renameDatabase'] = (from, to) => this.client.renameDatabase(from, to);

  // -------------------------------------------------------------- branches

  listBranches: CliEngine['listBranches'] = (database) => this.client.listBranches(database);

  getBranch: CliEngine['getBranch'] = (ref) => this.client.getBranch(ref.database, ref.branch);

  createBranch: CliEngine['createBranch'] = async (ref, o): Promise<Created> => {
    const t0 = performance.now();
    // POST: a branch that exists already is a 409, as `createBranch` in process refuses it.
    const branch = await this.client.createBranch(ref.database, ref.branch, {
      from: o.from === undefined ? undefined : refName(o.from),
      fast: o.fast,
      fromSnapshot: o.fromSnapshot,
      pitr: o.pitr?.toISOString(),
      ttl: ttlText(o.ttlMs),
      protected: o.protect,
      memory: o.memory,
      cpus: o.cpus,
      disk: o.disk,
    });
    return { branch, totalMs: Math.round(performance.now() - t0) };
  };

  deleteBranch: CliEngine['deleteBranch'] = async (ref, o) => {
    const r = await this.client.deleteBranch(ref.database, ref.branch, { force: o.force });
    if (!r.deleted) throw notFound(`branch '${refName(ref)}' does not exist`);
    return r.branches;
  };

  renameBranch: CliEngine['renameBranch'] = (from, to) =>
    this.client.renameBranch(from.database, from.branch, refName(to));

  resetBranch: CliEngine['resetBranch'] = (ref, o) =>
    this.client.resetBranch(ref.database, ref.branch, { force: o.force, fast: o.fast });

  setBranchSettings: CliEngine['setBranchSettings'] = (ref, s) =>
    this.client.setBranch(ref.database, ref.branch, { ttl: ttlText(s.ttlMs), protected: s.protect });

  schemaDiff: CliEngine['schemaDiff'] = (ref, o) =>
    this.client.schemaDiff(ref.database, ref.branch, { against: o.against && refName(o.against) });

  start: CliEngine['start'] = (ref) => this.client.startBranch(ref.database, ref.branch);
  stop: CliEngine['stop'] = (ref) => this.client.stopBranch(ref.database, ref.branch);
  restart: CliEngine['restart'] = (ref) => this.client.restartBranch(ref.database, ref.branch);

  // -------------------------------------------------------------- history

  createSnapshot: CliEngine['createSnapshot'] = (ref, o) =>
    this.client.createSnapshot(ref.database, ref.branch, { label: o.label });

  listSnapshots: CliEngine['listSnapshots'] = (ref?: BranchRef) =>
    this.client.listSnapshots(ref?.database, ref?.branch);

  deleteSnapshot: CliEngine['deleteSnapshot'] = async (id) => {
    const r = await this.client.deleteSnapshot(id);
    if (!r.deleted) throw notFound(`snapshot '${id}' does not exist`);
  };

  walInfo: CliEngine['walInfo'] = async (ref) =>
    ref === undefined ? this.client.listWal() : [await this.client.walInfo(ref.database, ref.branch)];

  walCleanup: CliEngine['walCleanup'] = (ref, days, dryRun) =>
    this.client.walCleanup(ref.database, ref.branch, { days, dryRun });
}

/** A client for a remote agent (`--agent`, BPG_AGENT_URL, a context). */
export function remoteEngine(t: RemoteTarget): RemoteEngine {
  return new RemoteEngine(
    new BpgClient({ baseUrl: t.url, token: t.token, fetch: remoteFetch({ ca: t.caPem }), retries: 2 }),
  );
}

/** A client for `bpg serve` on this host, through its local socket (no token: file permissions are the check). */
export function socketEngine(socketPath: string): RemoteEngine {
  return new RemoteEngine(
    new BpgClient({
      baseUrl: 'http://localhost',
      token: 'local-socket',
      fetch: remoteFetch({ socketPath }),
      retries: 0,
    }),
  );
}

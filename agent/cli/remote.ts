/**
 * The CLI's remote backend: `CliEngine` over the agent's HTTP API (BpgClient), for `--agent`, a
 * saved context, or `bpg serve`'s local socket. The API answers the engine's own views and error
 * messages (a compile-time check in server.ts), so a command prints the same output here as with
 * the in-process engine. Loads no engine, dockerode, pg or express: only the typed client.
 */
import { BpgClient } from '../api/client.js';
import { formatDuration } from '../duration.js';
import { BpgError, notFound } from '../errors.js';
import { refName, type BranchRef } from '../names.js';
import type { CliEngine, Created } from './engine.js';
import { remoteFetch } from './remote-fetch.js';
import type { RemoteTarget } from './remote-target.js';

/** `ttlMs` as the API's `ttl` text: '7d', '90s'; null: never. */
const ttlText = (ms: number | null | undefined) =>
  ms === undefined ? undefined : ms === null ? null : formatDuration(ms);

const notYet = (what: string) =>
  new BpgError('failed', `${what} is not available through the agent's API yet: run it on the agent's host`);

export class RemoteEngine implements CliEngine {
  constructor(readonly client: BpgClient) {}

  status: CliEngine['status'] = async () => {
    throw notYet('bpg status');
  };

  doctor: CliEngine['doctor'] = async () => {
    throw notYet('bpg doctor');
  };

  // -------------------------------------------------------------- databases

  listDatabases: CliEngine['listDatabases'] = () => this.client.listDatabases();

  getDatabase: CliEngine['getDatabase'] = (name) => this.client.getDatabase(name);

  createDatabase: CliEngine['createDatabase'] = async (name, o) => {
    const t0 = performance.now();
    const d = await this.client.createDatabase({ name, image: o.image, memory: o.memory, cpus: o.cpus, disk: o.disk });
    const branch = d.branches.find((b) => b.branch === 'main') ?? (await this.client.getBranch(name, 'main'));
    return { branch, totalMs: Math.round(performance.now() - t0) };
  };

  deleteDatabase: CliEngine['deleteDatabase'] = async (name, o) => {
    const r = await this.client.deleteDatabase(name, { force: o.force });
    if (!r.deleted) throw notFound(`database '${name}' does not exist`);
  };

  renameDatabase: CliEngine['renameDatabase'] = async () => {
    throw notYet('bpg db rename');
  };

  // -------------------------------------------------------------- branches

  listBranches: CliEngine['listBranches'] = async (database) => {
    if (database !== undefined) return this.client.listBranches(database);
    // Every database's branches, in the engine's order (by <db>/<branch>).
    const all = (await this.client.listDatabases()).flatMap((d) => d.branches);
    return all.sort((a, b) => a.name.localeCompare(b.name));
  };

  getBranch: CliEngine['getBranch'] = (ref) => this.client.getBranch(ref.database, ref.branch);

  createBranch: CliEngine['createBranch'] = async (ref, o): Promise<Created> => {
    const t0 = performance.now();
    const r = await this.client.putBranch(ref.database, ref.branch, {
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
    if (!r.created) throw new BpgError('conflict', `branch '${refName(ref)}' already exists`);
    return { branch: r.branch, totalMs: Math.round(performance.now() - t0) };
  };

  deleteBranch: CliEngine['deleteBranch'] = async (ref, o) => {
    const r = await this.client.deleteBranch(ref.database, ref.branch, { force: o.force });
    if (!r.deleted) throw notFound(`branch '${refName(ref)}' does not exist`);
    return r.branches;
  };

  renameBranch: CliEngine['renameBranch'] = async () => {
    throw notYet('bpg branch rename');
  };

  resetBranch: CliEngine['resetBranch'] = async (ref, o) => {
    if (o.force || o.fast) throw notYet('bpg branch reset --force/--fast');
    return this.client.resetBranch(ref.database, ref.branch);
  };

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

  walInfo: CliEngine['walInfo'] = async (ref) => {
    if (ref === undefined) throw notYet('bpg wal info of every branch');
    return [await this.client.walInfo(ref.database, ref.branch)];
  };

  walCleanup: CliEngine['walCleanup'] = async () => {
    throw notYet('bpg wal cleanup');
  };
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

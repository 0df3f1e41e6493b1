/**
 * The CLI's remote backend: `CliEngine` over the agent's HTTP API (BpgClient), for `--agent`, a
 * saved context, or `bpg serve`'s local socket. The API answers the engine's own views and error
 * messages (a compile-time check in server.ts), so a command prints the same output here as with
 * the in-process engine. Loads no engine, dockerode, pg or express: only the typed client.
 */
import { readFile } from 'node:fs/promises';
import { resolve as resolvePath } from 'node:path';
import { BpgClient } from '../api/client.js';
import type { OperationView } from '../api/schemas.js';
import { progressLine } from '../import-progress.js';
import type { Logger } from '../log.js';
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
  constructor(
    readonly client: BpgClient,
    private readonly log?: Logger,
  ) {}

  status: CliEngine['status'] = () => this.client.status();

  /** The report either way (200 with healthy: false); the command decides its exit code. */
  doctor: CliEngine['doctor'] = (o) => (o.fix ? this.client.doctorFix() : this.client.doctor());

  // -------------------------------------------------------------- databases

  listDatabases: CliEngine['listDatabases'] = () => this.client.listDatabases();

  getDatabase: CliEngine['getDatabase'] = (name) => this.client.getDatabase(name);

  createDatabase: CliEngine['createDatabase'] = async (name, o) => {
    const t0 = performance.now();
    const body = { name, image: o.image, memory: o.memory, cpus: o.cpus, disk: o.disk };
    const d =
      o.from === undefined
        ? await this.client.createDatabase(body)
        : // An import: the agent answers 202 with an operation, polled here with its progress on stderr.
          await this.client.createDatabase(
            {
              ...body,
              from: {
                url: await urlWithPassword(o.from),
                method: o.from.method,
                jobs: o.from.jobs,
                roles: o.from.roles,
              },
              maskingSql: o.maskingSql === undefined ? undefined : resolvePath(o.maskingSql),
            },
            { onProgress: this.progress },
          );
    const branch = d.branches.find((b) => b.branch === 'main') ?? (await this.client.getBranch(name, 'main'));
    return { branch, totalMs: Math.round(performance.now() - t0) };
  };

  refreshDatabase: CliEngine['refreshDatabase'] = async (name, o) => {
    const t0 = performance.now();
    const d = await this.client.refreshDatabase(
      name,
      {
        from:
          o.fromUrl === undefined
            ? undefined
            : await urlWithPassword({ url: o.fromUrl, passwordEnv: o.passwordEnv, passwordFile: o.passwordFile }),
        method: o.method,
        jobs: o.jobs,
        maskingSql: o.maskingSql === undefined ? undefined : resolvePath(o.maskingSql),
      },
      { onProgress: this.progress },
    );
    const branch = d.branches.find((b) => b.branch === 'main') ?? (await this.client.getBranch(name, 'main'));
    return { branch, generation: branch.refresh?.generation ?? 0, totalMs: Math.round(performance.now() - t0) };
  };

  /** An import's progress as the in-process engine prints it, once per change. */
  private readonly progress = (op: OperationView): void => {
    if (!op.progress) return;
    const line = progressLine(op.progress);
    if (line !== this.lastProgress) this.log?.info(line);
    this.lastProgress = line;
  };
  private lastProgress = '';

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
      schemaOnly: o.schemaOnly,
      seed: o.seed,
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

/**
 * The source URL an import through an agent sends: with `--password-env`/`--password-file`, bpg reads
 * the password here (its own environment or file: the agent may be another host, and `bpg serve`
 * has an environment of its own) and puts it in the URL, which goes only in the request body over
 * TLS or the 0600 socket; the agent keeps it in its secrets file, never in its state or answers.
 */
export async function urlWithPassword(from: {
  url: string;
  passwordEnv?: string;
  passwordFile?: string;
}): Promise<string> {
  let password: string | undefined;
  if (from.passwordEnv !== undefined) {
    password = process.env[from.passwordEnv];
    if (password === undefined || password === '')
      throw invalid(`--password-env ${from.passwordEnv}: the variable is not set in bpg's environment`);
  } else if (from.passwordFile !== undefined) {
    try {
      password = (await readFile(from.passwordFile, 'utf8')).split('\n')[0]!.replace(/\r$/, '');
    } catch (e) {
      throw invalid(
        `--password-file ${from.passwordFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      );
    }
    if (password === '') throw invalid(`--password-file ${from.passwordFile}: the first line is empty`);
  }
  if (password === undefined) return from.url;
  let u: URL;
  try {
    u = new URL(from.url);
  } catch {
    throw invalid('--from-url is not a URL (postgres://user@host:port/database)');
  }
  if (u.password !== '') throw invalid('--from-url already holds a password: give it one way only');
  // Encoded whole: the setter leaves `%` as it is, and the agent decodes the userinfo.
  u.password = encodeURIComponent(password);
  return u.toString();
}

/** A client for a remote agent (`--agent`, BPG_AGENT_URL, a context). */
export function remoteEngine(t: RemoteTarget, log?: Logger): RemoteEngine {
  return new RemoteEngine(
    new BpgClient({ baseUrl: t.url, token: t.token, fetch: remoteFetch({ ca: t.caPem }), retries: 2 }),
    log,
  );
}

/** A client for `bpg serve` on this host, through its local socket (no token: file permissions are the check). */
export function socketEngine(socketPath: string, log?: Logger): RemoteEngine {
  return new RemoteEngine(
    new BpgClient({
      baseUrl: 'http://localhost',
      token: 'local-socket',
      fetch: remoteFetch({ socketPath }),
      retries: 0,
    }),
    log,
  );
}

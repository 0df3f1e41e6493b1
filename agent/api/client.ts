/**
 * Typed client for the agent's HTTP API (Node 20's global fetch, no other dependency than zod).
 * The GitHub Action and the webhook receiver use it; responses are parsed with the same schemas the
 * server is written against. Keep it free of server-only imports.
 */
import type { z } from 'zod';
import type * as S from './schemas.js';
import { fetchTrusting } from './trust.js';

type Schemas = typeof S;
/** The name of a response schema in schemas.ts. */
type SchemaName = { [K in keyof Schemas]: Schemas[K] extends z.ZodType ? K : never }[keyof Schemas];
type Parsed<K extends SchemaName> = z.infer<Schemas[K]>;

let loading: Promise<Schemas> | null = null;
/**
 * The schemas (zod) load on the first call, after its request is on its way: for a CLI command
 * they are most of the start-up, and the agent's answer takes longer than loading them.
 */
const schemas = (): Promise<Schemas> => (loading ??= import('./schemas.js'));

export interface ClientOptions {
  /** Where `bpg serve` listens, e.g. http://10.0.0.5:7432 (a path prefix is kept). */
  baseUrl: string;
  /** A bearer token from api.tokens or BPG_API_TOKEN on the agent. */
  token: string;
  /**
   * Per attempt, in ms. Default 180 s: creating a branch takes seconds, but calls for one branch
   * wait their turn on the agent, and a big database's first start can take longer.
   */
  timeoutMs?: number;
  /** Further attempts after a connection error; only for GET, PUT, PATCH and DELETE (safe to repeat). Default 4. */
  retries?: number;
  /** First pause before a retry, doubled each time (with jitter, at most 5 s). Default 250 ms. */
  retryDelayMs?: number;
  /**
   * How long, in all, a call waits when the agent answers 503 with Retry-After (its create line is
   * full, or a create waited too long): idempotent calls are tried again after the time it names.
   * Default 10 minutes; 0 turns it off.
   */
  busyWaitMs?: number;
  /** For tests or proxies; default the global fetch. */
  fetch?: typeof fetch;
  /** PEM of a CA to trust besides the system's, for an agent with a self-signed or private certificate (api.tls). */
  ca?: string;
}

export interface CallOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

/**
 * Any failed call. `status` is the HTTP status, or 0 when no answer came: then `code` is
 * `unreachable` (connection refused or reset, after the retries), `timeout` or `aborted`.
 * `bad_response` means an answer that is not the API's (a proxy's page, an unexpected shape).
 */
export class BpgApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly requestId?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'BpgApiError';
  }
}

export interface DeleteBranchResult {
  /** False when the branch was already gone (the agent answered 404). */
  deleted: boolean;
  /** What this call removed, children first. */
  branches: string[];
}

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

const seg = encodeURIComponent;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** fetch rejects with a TypeError whose cause is the socket error when no answer came at all. */
function isConnectionError(e: unknown): boolean {
  return e instanceof TypeError && (e as { cause?: unknown }).cause !== undefined;
}

/** The connection worked but the certificate was refused: retrying will not help. */
function isCertificateError(e: unknown): boolean {
  const code = (e as { cause?: { code?: unknown } }).cause?.code;
  return typeof code === 'string' && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL/.test(code);
}

export class BpgClient {
  private readonly base: string;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly retryDelayMs: number;
  private readonly fetchImpl: typeof fetch;
  private readonly busyWaitMs: number;

  constructor(private readonly opts: ClientOptions) {
    this.busyWaitMs = opts.busyWaitMs ?? 600_000;
    this.base = opts.baseUrl.replace(/\/+$/, '');
    this.timeoutMs = opts.timeoutMs ?? 180_000;
    this.retries = opts.retries ?? 4;
    this.retryDelayMs = opts.retryDelayMs ?? 250;
    this.fetchImpl = opts.fetch ?? (opts.ca ? fetchTrusting(opts.ca) : globalThis.fetch);
  }

  // ---------------------------------------------------------------- routes

  health(o?: CallOptions): Promise<S.Health> {
    return this.json('GET', '/v1/health', 'Health', o);
  }

  async openapi(o?: CallOptions): Promise<Record<string, unknown>> {
    return (await this.call('GET', '/v1/openapi.json', undefined, o)).body as Record<string, unknown>;
  }

  listDatabases(o?: CallOptions): Promise<S.DatabaseView[]> {
    return this.json('GET', '/v1/databases', 'DatabaseList', o);
  }

  getDatabase(db: string, o?: CallOptions): Promise<S.DatabaseView> {
    return this.json('GET', `/v1/databases/${seg(db)}`, 'DatabaseView', o);
  }

  /**
   * Not retried (POST): an existing name is a 409. With `from` (an import), the agent answers 202
   * and this waits for the operation (waitOperation) and returns the database, or throws its error.
   */
  async createDatabase(
    body: S.CreateDatabaseBody,
    o?: CallOptions & { pollMs?: number; onProgress?: (op: S.OperationView) => void },
  ): Promise<S.DatabaseView> {
    if (!body.from) return this.json('POST', '/v1/databases', 'DatabaseView', o, body);
    const op = await this.startCreateDatabase(body, o);
    const done = await this.waitOperation(op.id, o);
    return done.result!;
  }

  /** An import (`from` set): the operation the agent answered 202 with, to poll with getOperation/waitOperation. */
  async startCreateDatabase(body: S.CreateDatabaseBody, o?: CallOptions): Promise<S.OperationView> {
    return (await this.json('POST', '/v1/databases', 'OperationResponse', o, body)).operation;
  }

  /**
   * Refreshes main from its source (POST /v1/databases/{db}/refresh) and waits for the operation;
   * returns the database with its new main. startRefreshDatabase only starts it.
   */
  async refreshDatabase(
    db: string,
    body: S.RefreshBody = {},
    o?: CallOptions & { pollMs?: number; onProgress?: (op: S.OperationView) => void },
  ): Promise<S.DatabaseView> {
    const op = await this.startRefreshDatabase(db, body, o);
    return (await this.waitOperation(op.id, o)).result!;
  }

  /** A refresh: the operation the agent answered 202 with, to poll with getOperation/waitOperation. */
  async startRefreshDatabase(db: string, body: S.RefreshBody = {}, o?: CallOptions): Promise<S.OperationView> {
    return (await this.json('POST', `/v1/databases/${seg(db)}/refresh`, 'OperationResponse', o, body)).operation;
  }

  getOperation(id: string, o?: CallOptions): Promise<S.OperationView> {
    return this.json('GET', `/v1/operations/${seg(id)}`, 'OperationResponse', o).then((r) => r.operation);
  }

  /**
   * Polls an operation until it ends (`pollMs`, default 1 s; `timeoutMs` bounds each call, `signal`
   * the whole wait). A failed operation throws its error as a BpgApiError (status 0, its code).
   */
  async waitOperation(
    id: string,
    o: CallOptions & { pollMs?: number; onProgress?: (op: S.OperationView) => void } = {},
  ): Promise<S.OperationView> {
    for (;;) {
      const op = await this.getOperation(id, o);
      if (op.status === 'succeeded' && op.result) return op;
      if (op.status === 'failed') throw new BpgApiError(0, op.error?.code ?? 'failed', op.error?.message ?? 'failed');
      o.onProgress?.(op);
      if (o.signal?.aborted) throw new BpgApiError(0, 'aborted', `waiting for ${id}: aborted`);
      await sleep(o.pollMs ?? 1000);
    }
  }

  /** Deletes a database (with every branch if `force`); `{ deleted: false }` if it was already gone. */
  async deleteDatabase(db: string, opts: { force?: boolean } = {}, o?: CallOptions): Promise<{ deleted: boolean }> {
    const r = await this.call(
      'DELETE',
      `/v1/databases/${seg(db)}${opts.force ? '?force=true' : ''}`,
      undefined,
      o,
      [404],
    );
    if (r.status === 404) return { deleted: false };
    await this.parse('DeleteDatabaseResponse', r.body, r.requestId);
    return { deleted: true };
  }

  /** The branches of one database, or of every database when `db` is undefined. */
  listBranches(db?: string, o?: CallOptions): Promise<S.BranchView[]> {
    const path = db === undefined ? '/v1/branches' : `/v1/databases/${seg(db)}/branches`;
    return this.json('GET', path, 'BranchList', o);
  }

  /** Creates a branch; an existing one is a 409 (BpgApiError code `conflict`). Not retried (POST). */
  createBranch(db: string, branch: string, body: S.PutBranchBody = {}, o?: CallOptions): Promise<S.BranchView> {
    return this.json('POST', `/v1/databases/${seg(db)}/branches`, 'BranchView', o, { ...body, name: branch });
  }

  /** Renames a database with all its branches. Not retried (POST). */
  renameDatabase(db: string, name: string, o?: CallOptions): Promise<S.DatabaseView> {
    return this.json('POST', `/v1/databases/${seg(db)}/rename`, 'DatabaseView', o, { name });
  }

  /** Renames a branch within its database (`name`: `<branch>` or `<db>/<branch>`). Not retried (POST). */
  renameBranch(db: string, branch: string, name: string, o?: CallOptions): Promise<S.BranchView> {
    return this.json('POST', `${this.branchPath(db, branch)}/rename`, 'BranchView', o, { name });
  }

  getBranch(db: string, branch: string, o?: CallOptions): Promise<S.BranchView> {
    return this.json('GET', this.branchPath(db, branch), 'BranchView', o);
  }

  /** Get-or-create: `created` says which. Safe to repeat, so retried on connection errors. */
  putBranch(db: string, branch: string, body: S.PutBranchBody = {}, o?: CallOptions): Promise<S.PutBranchResponse> {
    return this.json('PUT', this.branchPath(db, branch), 'PutBranchResponse', o, body);
  }

  /** Sets a branch's expiry (`ttl` from now, null: never) and/or protection. Absolute values: safe to repeat. */
  setBranch(db: string, branch: string, body: S.PatchBranchBody, o?: CallOptions): Promise<S.BranchView> {
    return this.json('PATCH', this.branchPath(db, branch), 'BranchView', o, body);
  }

  /** Deletes a branch (and its children if `force`); a branch already gone counts as done. */
  async deleteBranch(
    db: string,
    branch: string,
    opts: { force?: boolean } = {},
    o?: CallOptions,
  ): Promise<DeleteBranchResult> {
    const r = await this.call(
      'DELETE',
      `${this.branchPath(db, branch)}${opts.force ? '?force=true' : ''}`,
      undefined,
      o,
      [404],
    );
    if (r.status === 404) return { deleted: false, branches: [] };
    return { deleted: true, branches: (await this.parse('DeleteBranchResponse', r.body, r.requestId)).deleted };
  }

  startBranch(db: string, branch: string, o?: CallOptions): Promise<S.BranchView> {
    return this.action(db, branch, 'start', o);
  }

  stopBranch(db: string, branch: string, o?: CallOptions): Promise<S.BranchView> {
    return this.action(db, branch, 'stop', o);
  }

  restartBranch(db: string, branch: string, o?: CallOptions): Promise<S.BranchView> {
    return this.action(db, branch, 'restart', o);
  }

  /**
   * Back to its parent's current state (port and password stay); `force` also deletes children and
   * kept snapshots, `fast` takes a crash-consistent snapshot of the parent. Not retried (POST).
   */
  resetBranch(
    db: string,
    branch: string,
    opts: { force?: boolean; fast?: boolean } = {},
    o?: CallOptions,
  ): Promise<S.BranchView> {
    const q = [opts.force ? 'force=true' : '', opts.fast ? 'fast=true' : ''].filter(Boolean).join('&');
    return this.json('POST', `${this.branchPath(db, branch)}/reset${q ? `?${q}` : ''}`, 'BranchView', o);
  }

  /** Starts watching a migration on a running branch (its locks are sampled until `stopWatch`). Not retried (POST). */
  startWatch(db: string, branch: string, body: S.StartWatchBody = {}, o?: CallOptions): Promise<S.WatchView> {
    return this.json('POST', `${this.branchPath(db, branch)}/watches`, 'WatchView', o, body);
  }

  /** Stops a watch and answers the migration's safety report. */
  stopWatch(db: string, branch: string, id: string, o?: CallOptions): Promise<S.SafetyReport> {
    return this.json('POST', `${this.branchPath(db, branch)}/watches/${seg(id)}/stop`, 'SafetyReport', o);
  }

  listSnapshots(db?: string, branch?: string, o?: CallOptions): Promise<S.SnapshotView[]> {
    const path =
      db !== undefined && branch !== undefined ? `${this.branchPath(db, branch)}/snapshots` : '/v1/snapshots';
    return this.json('GET', path, 'SnapshotList', o);
  }

  /** An application-consistent snapshot of a branch, kept. Not retried (POST). */
  createSnapshot(
    db: string,
    branch: string,
    body: S.CreateSnapshotBody = {},
    o?: CallOptions,
  ): Promise<S.SnapshotView> {
    return this.json('POST', `${this.branchPath(db, branch)}/snapshots`, 'SnapshotView', o, body);
  }

  /** `{ deleted: false }` if it was already gone; a snapshot branches were cloned from is a 409. */
  async deleteSnapshot(id: string, o?: CallOptions): Promise<{ deleted: boolean }> {
    const r = await this.call('DELETE', `/v1/snapshots/${seg(id)}`, undefined, o, [404]);
    if (r.status === 404) return { deleted: false };
    await this.parse('DeleteSnapshotResponse', r.body, r.requestId);
    return { deleted: true };
  }

  /**
   * What a branch changed in the schema compared with its parent, or `against` (`<branch>` or
   * `<db>/<branch>` of the same database). Both must be running (409 otherwise).
   */
  schemaDiff(db: string, branch: string, opts: { against?: string } = {}, o?: CallOptions): Promise<S.SchemaDiff> {
    const q = opts.against === undefined ? '' : `?against=${seg(opts.against)}`;
    return this.json('GET', `${this.branchPath(db, branch)}/schema-diff${q}`, 'SchemaDiff', o);
  }

  walInfo(db: string, branch: string, o?: CallOptions): Promise<S.WalInfo> {
    return this.json('GET', `${this.branchPath(db, branch)}/wal`, 'WalInfo', o);
  }

  /** Every branch's WAL archive, as `bpg wal info` without a branch. */
  listWal(o?: CallOptions): Promise<S.WalInfo[]> {
    return this.json('GET', '/v1/wal', 'WalInfoList', o);
  }

  /** Removes archived WAL older than `days` (kept snapshots' WAL stays); `dryRun` only says what would go. Not retried (POST). */
  walCleanup(db: string, branch: string, body: S.WalCleanupBody, o?: CallOptions): Promise<S.WalCleanup> {
    return this.json('POST', `${this.branchPath(db, branch)}/wal/cleanup`, 'WalCleanup', o, body);
  }

  /** Pool usage, counts, limits and every branch (`bpg status`). */
  status(o?: CallOptions): Promise<S.SystemStatus> {
    return this.json('GET', '/v1/status', 'SystemStatus', o);
  }

  /** The doctor's report; changes nothing. `healthy` says whether something needs attention. */
  doctor(o?: CallOptions): Promise<S.DoctorReport> {
    return this.json('GET', '/v1/doctor', 'DoctorReport', o);
  }

  /** `bpg doctor --fix` on the agent: repairs what is safe, answers the report after. Not retried (POST). */
  doctorFix(o?: CallOptions): Promise<S.DoctorReport> {
    return this.json('POST', '/v1/doctor/fix', 'DoctorReport', o);
  }

  // ---------------------------------------------------------------- plumbing

  private branchPath(db: string, branch: string): string {
    return `/v1/databases/${seg(db)}/branches/${seg(branch)}`;
  }

  private action(db: string, branch: string, verb: S.BranchAction, o?: CallOptions): Promise<S.BranchView> {
    return this.json('POST', `${this.branchPath(db, branch)}/${verb}`, 'BranchView', o);
  }

  private async json<K extends SchemaName>(
    method: Method,
    path: string,
    schema: K,
    o?: CallOptions,
    body?: unknown,
  ): Promise<Parsed<K>> {
    const answer = this.call(method, path, body, o);
    schemas().catch(() => {}); // (the request is on its way; parse reports a failed load)
    const r = await answer;
    return this.parse(schema, r.body, r.requestId);
  }

  private async parse<K extends SchemaName>(name: K, body: unknown, requestId?: string): Promise<Parsed<K>> {
    const S = await schemas();
    const r = (S[name] as z.ZodType).safeParse(body);
    if (!r.success)
      throw new BpgApiError(
        0,
        'bad_response',
        `unexpected response from the agent: ${S.firstIssue(r.error)}`,
        requestId,
      );
    return r.data as Parsed<K>;
  }

  /** One call with retries; answers with a 2xx (or an `accept`ed status), otherwise throws. */
  private async call(
    method: Method,
    path: string,
    body: unknown,
    o: CallOptions = {},
    accept: number[] = [],
  ): Promise<{ status: number; body: unknown; requestId?: string }> {
    const idempotent = method !== 'POST';
    let waited = 0;
    for (let attempt = 0; ; attempt++) {
      const timeout = AbortSignal.timeout(o.timeoutMs ?? this.timeoutMs);
      const signal = o.signal ? AbortSignal.any([o.signal, timeout]) : timeout;
      let res: globalThis.Response;
      let text: string;
      try {
        res = await this.fetchImpl(this.base + path, {
          method,
          signal,
          headers: {
            authorization: `Bearer ${this.opts.token}`,
            accept: 'application/json',
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        // Inside the try: a connection reset while the body arrives is a connection error too.
        text = await res.text();
      } catch (e) {
        if (timeout.aborted)
          throw new BpgApiError(
            0,
            'timeout',
            `${method} ${path}: no answer within ${o.timeoutMs ?? this.timeoutMs} ms`,
            undefined,
            { cause: e },
          );
        if (o.signal?.aborted)
          throw new BpgApiError(0, 'aborted', `${method} ${path}: aborted`, undefined, { cause: e });
        const tlsProblem = isCertificateError(e);
        if (isConnectionError(e) && !tlsProblem && idempotent && attempt < this.retries) {
          const pause = Math.min(5000, this.retryDelayMs * 2 ** attempt) * (0.75 + Math.random() * 0.5);
          await sleep(pause);
          continue;
        }
        const why = (e as { cause?: { code?: string; message?: string } }).cause;
        const hint = tlsProblem
          ? " (the agent's TLS certificate is not trusted: give its CA, or fix the certificate)"
          : '';
        throw new BpgApiError(
          0,
          'unreachable',
          `${method} ${path}: cannot reach the agent at ${this.base}: ${why?.code ?? why?.message ?? (e as Error).message}${hint}`,
          undefined,
          { cause: e },
        );
      }
      const requestId = res.headers.get('x-request-id') ?? undefined;
      let parsed: unknown;
      try {
        parsed = text === '' ? undefined : JSON.parse(text);
      } catch {
        throw new BpgApiError(
          res.status,
          'bad_response',
          `${method} ${path}: HTTP ${res.status} with a body that is not JSON: ${text.slice(0, 120)}`,
          requestId,
        );
      }
      if (res.ok || accept.includes(res.status)) return { status: res.status, body: parsed, requestId };
      // The agent is busy (its create line): it made nothing and says when to come back.
      const retryAfter = Number(res.headers.get('retry-after'));
      if (
        res.status === 503 &&
        idempotent &&
        Number.isFinite(retryAfter) &&
        retryAfter > 0 &&
        waited < this.busyWaitMs
      ) {
        const pause = Math.min(retryAfter * 1000, 30_000, this.busyWaitMs - waited);
        waited += pause;
        await sleep(pause);
        continue;
      }
      const err = (await schemas()).ErrorBody.safeParse(parsed);
      if (err.success) throw new BpgApiError(res.status, err.data.error.code, err.data.error.message, requestId);
      throw new BpgApiError(res.status, 'bad_response', `${method} ${path}: HTTP ${res.status}`, requestId);
    }
  }
}

import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import express, { type NextFunction, type Request, type Response } from 'express';
import { Counter } from 'prom-client';
import type { z } from 'zod';
import type { Engine } from '../engine/engine.js';
import { recordOperation } from '../engine/metrics.js';
import { checkImage } from '../engine/images.js';
import { parseSize } from '../config.js';
import type { BranchView as EngineBranchView, DatabaseView as EngineDatabaseView } from '../engine/view.js';
import type { SchemaDiff as EngineSchemaDiff } from '../engine/schema-diff.js';
import { BpgError, conflict, describe, invalid, notFound, type ErrorCode } from '../errors.js';
import { checkImportInput } from '../engine/import-source.js';
import { checkMasking } from '../engine/masking.js';
import type { ImportProgress as EngineImportProgress } from '../engine/import-build.js';
import { Operations } from './operations.js';
import type { Logger } from '../log.js';
import { parseBranchPart, parseBranchRef, parseDatabaseName, refName, type BranchRef } from '../names.js';
import { CreateAdmission, Overloaded } from './admission.js';
import { TokenChecker, type ApiToken } from './auth.js';
import { LOCAL_PRINCIPAL, WHOLE_HOST_ROUTES, allows, routeRole, type Principal } from './roles.js';
import { KeyedLocks, lockSet } from './locks.js';
import { openapi } from './openapi.js';
import { MetricsEndpoint } from './scrape.js';
import { parseTime } from '../engine/pitr.js';
import { parseTtl } from '../duration.js';
import type { Watch } from '../engine/migration-watch.js';
import type { SafetyReport as EngineSafetyReport } from '../engine/lock-report.js';
import type { SystemStatus as EngineSystemStatus } from '../engine/status.js';
import type { DoctorReport as EngineDoctorReport } from '../engine/doctor.js';
import type { WalCleanup as EngineWalCleanup, WalInfo as EngineWalInfo } from '../engine/wal.js';
import type { CreateBranchOptions } from '../engine/create-branch.js';
import {
  CreateBranchBody,
  CreateDatabaseBody,
  RefreshBody,
  CreateSnapshotBody,
  OperationId,
  ForceQuery,
  RenameBranchBody,
  RenameDatabaseBody,
  ResetQuery,
  WalCleanupBody,
  StartWatchBody,
  PatchBranchBody,
  PutBranchBody,
  SchemaDiffQuery,
  SnapshotId,
  firstIssue,
  type ApiErrorCode,
  type BranchView,
  type DatabaseView,
  type DoctorReport,
  type ErrorBody,
  type ImportProgress,
  type PutBranchBody as PutBranchBodyType,
  type SafetyReport,
  type SchemaDiff,
  type SystemStatus,
  type WalCleanup,
  type WalInfo,
} from './schemas.js';

// The API must answer the very objects the CLI prints: fail the build if the two drift apart.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const viewsMatch: Same<EngineBranchView, BranchView> &
  Same<EngineDatabaseView, DatabaseView> &
  Same<EngineSchemaDiff, SchemaDiff> &
  Same<EngineSafetyReport, SafetyReport> &
  Same<EngineImportProgress, ImportProgress> &
  Same<EngineSystemStatus, SystemStatus> &
  Same<EngineDoctorReport, DoctorReport> &
  Same<EngineWalInfo, WalInfo> &
  Same<EngineWalCleanup, WalCleanup> = true;
void viewsMatch;

export interface ApiOptions {
  engine: Engine;
  tokens: readonly ApiToken[];
  log: Logger;
  /** Bytes; larger bodies get 413. */
  bodyLimit: number;
  /** Long operations (imports, refreshes) answered 202; one is made when not given. */
  operations?: Operations;
  /** GET /metrics without a token; default api.metricsWithoutToken of the engine's config. */
  metricsWithoutToken?: boolean;
  /**
   * True for a request that arrived on the agent's own unix socket (file permissions are its
   * check): it needs no token and counts as admin, named `local`. A TCP client cannot be one.
   */
  isLocal?: (req: IncomingMessage) => boolean;
}

export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** OpenAPI style: /v1/databases/{db} */
  path: string;
}

export interface Api {
  app: express.Express;
  /** Every route registered, for openapi.json and its test. */
  routes: Route[];
  /** The per-database/branch locks requests take; the daemon's housekeeping takes them too. */
  locks: KeyedLocks;
  /** Long operations answered 202 (GET /v1/operations/{id}). */
  operations: Operations;
  /** From now on: new requests get 503, connections close after their response. */
  beginShutdown(): void;
  /** Resolves once no operation is running (including ones whose client went away). */
  drained(): Promise<void>;
}

const STATUS: Record<ErrorCode, number> = {
  invalid: 400,
  not_found: 404,
  conflict: 409,
  unavailable: 503,
  failed: 500,
};

/** An error answered with a status the engine has no code for (401, 413, ...). */
class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: ApiErrorCode,
    message: string,
  ) {
    super(message);
  }
}

interface Locals {
  id: string;
  /** The token's name (logged), null before authentication. */
  token: string | null;
  who: Principal | null;
}
const locals = (res: Response) => res.locals as Locals;

function parse<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw invalid(`invalid ${what}: ${firstIssue(r.error)}`);
  return r.data;
}

const param = (req: Request, name: string): string => {
  const v = req.params[name];
  return typeof v === 'string' ? v : '';
};
const dbOf = (req: Request) => parseDatabaseName(param(req, 'db'));
const refOf = (req: Request): BranchRef => ({ database: dbOf(req), branch: parseBranchPart(param(req, 'branch')) });
const forceOf = (req: Request) => parse(ForceQuery, req.query, 'query').force === 'true';
/** The database of `<db>/<branch>`. */
const databaseOf = (refText: string) => refText.slice(0, refText.indexOf('/'));

/** May this request use database `db`? (A token's databases list; everyone else: yes.) */
const sees = (res: Response, db: string): boolean => {
  const dbs = locals(res).who?.databases;
  return !dbs || dbs.has(db);
};

/** 403 unless the request may use database `db`: before anything is read or changed. */
function allowDb(res: Response, db: string): void {
  if (sees(res, db)) return;
  const who = locals(res).who!;
  throw new HttpError(
    403,
    'forbidden',
    `token '${who.name}' may only use database(s) ${[...who.databases!].join(', ')} (api.tokens[].databases), not '${db}'`,
  );
}

/**
 * Imports (and refreshes from a URL) need role admin whatever the route's own role: they make the
 * agent connect to a URL of the caller's choosing and read a password from its own environment or
 * files (`passwordEnv`, `passwordFile`).
 */
function requireAdmin(res: Response, what: string): void {
  const who = locals(res).who!;
  if (who.role !== 'admin')
    throw new HttpError(403, 'forbidden', `token '${who.name}' has role ${who.role}: ${what} needs role admin`);
}

/** Migration watches running at once, and the longest one lives unstopped. */
const MAX_WATCHES = 64;
const WATCH_MAX_AGE_MS = 60 * 60 * 1000;

export function createApi(opts: ApiOptions): Api {
  const { engine, log } = opts;
  const auth = new TokenChecker(opts.tokens);
  /** The one place a request's principal is decided: the local socket, else its bearer token. */
  const who = (req: Request): Principal | null =>
    opts.isLocal?.(req) ? LOCAL_PRINCIPAL : auth.check(req.get('authorization'));
  const locks = new KeyedLocks();
  const operations = opts.operations ?? new Operations();
  const running = new Set<Promise<unknown>>();
  const routes: Route[] = [];
  let closing = false;
  const limits = engine.cfg.limits;
  const scrape = new MetricsEndpoint(engine, engine.cfg.api.metricsMaxAge);
  // Database and branch creates take turns: limits.concurrentCreates at once, the rest in line.
  const admission = new CreateAdmission({
    limit: limits.concurrentCreates,
    maxWaiting: limits.createQueueLength,
    timeoutMs: limits.createQueueTimeout,
    registry: scrape.registry,
  });
  // Requests without a valid token, counted; those that wait (GET /metrics) are bounded in number.
  const unauthenticated = new Counter({
    name: 'bpg_unauthenticated_requests_total',
    help: 'Requests without a valid token: health, metrics (served), refused (401), overloaded (503: api.maxUnauthenticatedInFlight waiting already)',
    labelNames: ['outcome'],
    registers: [scrape.registry],
  });
  for (const outcome of ['health', 'metrics', 'refused', 'overloaded']) unauthenticated.inc({ outcome }, 0);
  let unauthenticatedInFlight = 0;

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  const send = (res: Response, status: number, body: unknown) => {
    if (closing) res.setHeader('Connection', 'close');
    res.status(status).json(body);
  };

  /** Runs an operation so that shutdown can wait for it even if its client has gone. */
  const track = <T>(p: Promise<T>): Promise<T> => {
    running.add(p);
    const done = () => running.delete(p);
    p.then(done, done);
    return p;
  };

  /** Logs one line per operation with who asked (the token's name, never the token). */
  const opLog = (res: Response, msg: string, fields: Record<string, unknown> = {}) =>
    log.info(msg, { token: locals(res).token, requestId: locals(res).id, ...fields });

  // ---------------------------------------------------------------- every request

  app.use((req, res, next) => {
    const t0 = performance.now();
    const l = locals(res);
    l.id = randomUUID();
    l.token = null;
    l.who = null;
    res.setHeader('X-Request-Id', l.id);
    res.on('close', () => {
      const fields = {
        requestId: l.id,
        method: req.method,
        path: req.originalUrl.split('?')[0],
        status: res.writableFinished ? res.statusCode : 499,
        ms: Math.round(performance.now() - t0),
        token: l.token,
      };
      if (res.statusCode >= 500 || !res.writableFinished) log.warn('request', fields);
      else log.info('request', fields);
    });
    if (closing) {
      send(res, 503, errorBody('unavailable', 'the agent is shutting down'));
      return;
    }
    next();
  });

  app.get('/v1/health', (req, res) => {
    if (who(req) === null) unauthenticated.inc({ outcome: 'health' });
    send(res, 200, { status: 'ok' });
  });

  // Prometheus text format. Not an operation (a scrape every few seconds would drown them).
  const metricsOpen = opts.metricsWithoutToken ?? engine.cfg.api.metricsWithoutToken;
  const serveMetrics = (fresh: boolean, res: Response, next: NextFunction) => {
    scrape.render({ fresh }).then((text) => {
      res.setHeader('Content-Type', scrape.contentType);
      res.status(200).send(text);
    }, next);
  };
  if (metricsOpen) {
    // Open to anyone: a token holder still gets a fresh collection; the rest share one (scrape.ts).
    app.get('/metrics', (req, res, next) => {
      const principal = who(req);
      if (principal !== null) {
        locals(res).token = principal.name;
        locals(res).who = principal;
        serveMetrics(true, res, next);
        return;
      }
      if (unauthenticatedInFlight >= engine.cfg.api.maxUnauthenticatedInFlight) {
        unauthenticated.inc({ outcome: 'overloaded' });
        res.setHeader('Retry-After', String(Math.max(1, Math.ceil(engine.cfg.api.metricsMaxAge / 1000))));
        send(
          res,
          503,
          errorBody(
            'unavailable',
            'too many requests without a token at once (api.maxUnauthenticatedInFlight); retry later',
          ),
        );
        return;
      }
      unauthenticated.inc({ outcome: 'metrics' });
      unauthenticatedInFlight++;
      let done = false;
      const leave = () => {
        if (!done) unauthenticatedInFlight--;
        done = true;
      };
      res.on('close', leave);
      serveMetrics(false, res, (e?: unknown) => {
        leave();
        next(e);
      });
    });
  }

  // Everything below needs a token. A refusal names no resource: not even whether the route exists.
  app.use((req, res, next) => {
    const principal = who(req);
    if (principal === null) {
      unauthenticated.inc({ outcome: 'refused' });
      res.setHeader('WWW-Authenticate', 'Bearer realm="betterpg"');
      send(res, 401, errorBody('unauthorized', 'missing or invalid bearer token'));
      return;
    }
    locals(res).token = principal.name;
    locals(res).who = principal;
    next();
  });

  // Any content type is read as JSON, so `curl -d '{...}'` works without -H.
  app.use(express.json({ limit: opts.bodyLimit, strict: true, type: () => true }));

  if (!metricsOpen) app.get('/metrics', (_req, res, next) => serveMetrics(true, res, next));
  routes.push({ method: 'GET', path: '/metrics' });
  const operationIds = operationNames();

  const route = (method: Route['method'], path: string, handler: (req: Request, res: Response) => Promise<void>) => {
    const documented = path.replace(/:(\w+)/g, '{$1}');
    routes.push({ method, path: documented });
    const m = method.toLowerCase() as 'get' | 'post' | 'put' | 'patch' | 'delete';
    const operation = operationIds.get(`${method} ${documented}`) ?? `${method} ${path}`;
    const needs = routeRole(method, documented);
    const wholeHost = WHOLE_HOST_ROUTES.has(`${method} ${documented}`);
    /** Role, then databases: a refusal comes before the body is used or anything is read. */
    const permit = async (req: Request, res: Response): Promise<void> => {
      const p = locals(res).who!;
      if (needs !== 'none' && !allows(p.role, needs))
        throw new HttpError(
          403,
          'forbidden',
          `token '${p.name}' has role ${p.role}: ${method} ${documented} needs role ${needs}`,
        );
      if (wholeHost && p.databases)
        throw new HttpError(
          403,
          'forbidden',
          `token '${p.name}' is limited to some databases: ${method} ${documented} concerns the whole host`,
        );
      if (typeof req.params.db === 'string') allowDb(res, req.params.db);
    };
    app[m](path, (req, res, next) => {
      // Every operation of the daemon passes here: one place counts and times them all.
      const t0 = performance.now();
      permit(req, res)
        .then(() => handler(req, res))
        .then(
          () => recordOperation(operation, 'ok', (performance.now() - t0) / 1000),
          (e) => {
            recordOperation(operation, toHttp(e).code, (performance.now() - t0) / 1000);
            next(e);
          },
        );
    });
  };

  // ---------------------------------------------------------------- routes

  route('GET', '/v1/openapi.json', async (_req, res) => send(res, 200, openapi()));

  route('GET', '/v1/databases', async (_req, res) =>
    send(
      res,
      200,
      (await engine.listDatabases()).filter((d) => sees(res, d.name)),
    ),
  );

  route('POST', '/v1/databases', async (req, res) => {
    const body = parse(CreateDatabaseBody, req.body ?? {}, 'body');
    allowDb(res, body.name);
    // A refused image is answered now, not after a wait in the create queue (the engine checks again).
    if (body.image !== undefined) checkImage(engine.cfg, body.image);
    if (body.maskingSql !== undefined && !body.from) throw invalid('maskingSql goes with from (an import)');
    if (body.from) {
      requireAdmin(res, 'an import (from)');
      // An import is long: checked now (400/409 before anything runs), answered 202, polled.
      const from = body.from;
      await checkImportInput(engine.cfg, from);
      if (body.maskingSql !== undefined) await checkMasking({ sql: body.maskingSql, command: null });
      if ((await engine.listDatabases()).some((d) => d.name === body.name) || operations.runningOn(body.name).length)
        throw conflict(`database '${body.name}' already exists`);
      const { view, done } = operations.start('create-database', body.name, ({ progress }) =>
        locks.with(lockSet([body.name, 'exclusive']), async () => {
          const r = await admission.run(() =>
            engine.createDatabase(body.name, {
              image: body.image,
              ...resources(body),
              from,
              maskingSql: body.maskingSql,
              progress,
            }),
          );
          opLog(res, 'database imported', { database: body.name, method: from.method ?? 'dump', ms: r.totalMs });
          return engine.getDatabase(body.name);
        }),
      );
      void track(done);
      res.setHeader('Location', `/v1/operations/${view.id}`);
      send(res, 202, { operation: view });
      return;
    }
    const view = await locks.with(lockSet([body.name, 'exclusive']), () =>
      track(
        (async () => {
          const r = await admission.run(() =>
            engine.createDatabase(body.name, { image: body.image, ...resources(body) }),
          );
          opLog(res, 'database created', { database: body.name, ms: r.totalMs });
          return engine.getDatabase(body.name);
        })(),
      ),
    );
    res.setHeader('Location', `/v1/databases/${encodeURIComponent(view.name)}`);
    send(res, 201, view);
  });

  route('POST', '/v1/databases/:db/refresh', async (req, res) => {
    const name = dbOf(req);
    const body = parse(RefreshBody, req.body ?? {}, 'body');
    const own = ['from', 'passwordEnv', 'passwordFile', 'maskingSql'].filter(
      (k) => body[k as keyof RefreshBody] !== undefined,
    );
    if (own.length) requireAdmin(res, `a refresh with ${own.join(', ')}`);
    if ((body.passwordEnv !== undefined || body.passwordFile !== undefined) && body.from === undefined)
      throw invalid('passwordEnv and passwordFile go with from');
    // Checked now (404, 400, 409 before anything runs), answered 202, polled.
    await engine.getDatabase(name);
    if (body.from !== undefined)
      await checkImportInput(engine.cfg, {
        url: body.from,
        method: body.method,
        jobs: body.jobs,
        passwordEnv: body.passwordEnv,
        passwordFile: body.passwordFile,
      });
    if (body.maskingSql !== undefined) await checkMasking({ sql: body.maskingSql, command: null });
    if (operations.runningOn(name).length) throw conflict(`database '${name}' has an import or refresh running`);
    const { view, done } = operations.start('refresh-database', name, async ({ progress }) => {
      const r = await engine.refreshDatabase(name, {
        fromUrl: body.from,
        passwordEnv: body.passwordEnv,
        passwordFile: body.passwordFile,
        method: body.method,
        jobs: body.jobs,
        maskingSql: body.maskingSql,
        progress,
      });
      opLog(res, 'database refreshed', {
        database: name,
        generation: r.generation,
        ms: r.totalMs,
        interruptionMs: r.interruptionMs,
      });
      return engine.getDatabase(name);
    });
    void track(done);
    res.setHeader('Location', `/v1/operations/${view.id}`);
    send(res, 202, { operation: view });
  });

  route('GET', '/v1/operations/:id', async (req, res) => {
    const id = parse(OperationId, param(req, 'id'), 'operation id');
    const op = operations.get(id);
    if (!op)
      throw notFound(`no operation ${id} (operations are kept for an hour after they end, and not across restarts)`);
    send(res, 200, { operation: op });
  });

  route('GET', '/v1/databases/:db', async (req, res) => send(res, 200, await engine.getDatabase(dbOf(req))));

  route('DELETE', '/v1/databases/:db', async (req, res) => {
    const name = dbOf(req);
    const force = forceOf(req);
    await locks.with(lockSet([name, 'exclusive']), () => track(engine.deleteDatabase(name, { force })));
    opLog(res, 'database deleted', { database: name, force });
    send(res, 200, { deleted: name });
  });

  route('GET', '/v1/databases/:db/branches', async (req, res) => send(res, 200, await engine.listBranches(dbOf(req))));

  route('GET', '/v1/databases/:db/branches/:branch', async (req, res) =>
    send(res, 200, await engine.getBranch(refOf(req))),
  );

  /** A create's options from a PUT or POST body, and its parent's lock key (`<db>/<branch>`). */
  const creation = async (
    res: Response,
    ref: BranchRef,
    body: PutBranchBodyType,
  ): Promise<{ opts: CreateBranchOptions; parentKey: string }> => {
    const from = body.from === undefined ? undefined : parseBranchRef(body.from, ref.database);
    if (from) allowDb(res, from.database);
    const pitr = body.pitr === undefined ? undefined : parseTime(body.pitr);
    const ttlMs = body.ttl === undefined ? undefined : body.ttl === null ? null : parseTtl(body.ttl);
    // A kept snapshot names its own branch as the parent.
    const snap =
      body.fromSnapshot === undefined
        ? undefined
        : (await engine.listSnapshots()).find((x) => x.id === body.fromSnapshot);
    if (body.fromSnapshot !== undefined && !snap)
      throw new HttpError(404, 'not_found', `snapshot '${body.fromSnapshot}' does not exist`);
    if (snap) allowDb(res, databaseOf(snap.branch));
    const parentKey = snap ? snap.branch : refName(from ?? { database: ref.database, branch: 'main' });
    const opts: CreateBranchOptions = {
      from,
      fast: body.fast,
      fromSnapshot: body.fromSnapshot,
      pitr,
      ttlMs,
      protect: body.protected,
      schemaOnly: body.schemaOnly,
      seed: body.seed,
      ...resources(body),
    };
    return { opts, parentKey };
  };

  route('POST', '/v1/databases/:db/branches', async (req, res) => {
    const db = dbOf(req);
    const { name, ...rest } = parse(CreateBranchBody, req.body ?? {}, 'body');
    const ref: BranchRef = { database: db, branch: name };
    const key = refName(ref);
    const { opts, parentKey } = await creation(res, ref, rest);
    // As PUT: the parent held shared while it is snapshotted, the new name exclusive.
    const wanted = lockSet([ref.database, 'shared'], [parentKey, 'shared'], [key, 'exclusive']);
    const r = await locks.with(wanted, () =>
      track(
        (async () => {
          // Refused before waiting for a create turn (the engine checks again under its state lock).
          if (await engine.branchRecorded(ref)) throw new BpgError('conflict', `branch '${key}' already exists`);
          return admission.run(() => engine.createBranch(ref, opts));
        })(),
      ),
    );
    opLog(res, 'branch created', { branch: key, parent: parentKey, fast: rest.fast === true, ms: r.totalMs });
    res.setHeader('Location', `/v1/databases/${encodeURIComponent(db)}/branches/${encodeURIComponent(name)}`);
    send(res, 201, r.branch);
  });

  route('PUT', '/v1/databases/:db/branches/:branch', async (req, res) => {
    const ref = refOf(req);
    const body = parse(PutBranchBody, req.body ?? {}, 'body');
    const key = refName(ref);
    const { opts, parentKey } = await creation(res, ref, body);
    // The parent is held shared: it cannot be deleted or stopped halfway through the snapshot.
    const wanted = lockSet([ref.database, 'shared'], [parentKey, 'shared'], [key, 'exclusive']);
    const put = await locks.with(wanted, () =>
      track(engine.putBranch(ref, opts, { parentKey, admit: (create) => admission.run(create) })),
    );
    if (put.created)
      opLog(res, 'branch created', { branch: key, parent: parentKey, fast: body.fast === true, ms: put.totalMs });
    else if (put.renewed)
      opLog(res, 'branch renewed', { branch: key, expiresAt: put.branch.expiresAt, protected: put.branch.protected });
    const result = { created: put.created, branch: put.branch };
    if (result.created) {
      res.setHeader(
        'Location',
        `/v1/databases/${encodeURIComponent(ref.database)}/branches/${encodeURIComponent(ref.branch)}`,
      );
    }
    send(res, result.created ? 201 : 200, result);
  });

  route('PATCH', '/v1/databases/:db/branches/:branch', async (req, res) => {
    const ref = refOf(req);
    const body = parse(PatchBranchBody, req.body ?? {}, 'body');
    const ttlMs = body.ttl === undefined ? undefined : body.ttl === null ? null : parseTtl(body.ttl);
    const view = await locks.with(lockSet([ref.database, 'shared'], [refName(ref), 'exclusive']), () =>
      track(engine.setBranchSettings(ref, { ttlMs, protect: body.protected })),
    );
    opLog(res, 'branch settings', { branch: refName(ref), expiresAt: view.expiresAt, protected: view.protected });
    send(res, 200, view);
  });

  route('DELETE', '/v1/databases/:db/branches/:branch', async (req, res) => {
    const ref = refOf(req);
    const force = forceOf(req);
    const deleted = await locks.with(lockSet([ref.database, 'shared'], [refName(ref), 'exclusive']), () =>
      track(engine.deleteBranch(ref, { force })),
    );
    opLog(res, 'branch deleted', { branch: refName(ref), deleted });
    send(res, 200, { deleted });
  });

  route('POST', '/v1/databases/:db/branches/:branch/reset', async (req, res) => {
    const ref = refOf(req);
    const q = parse(ResetQuery, req.query, 'query');
    const force = q.force === 'true';
    const fast = q.fast === 'true';
    // Like PUT, the parent is held shared while it is snapshotted. `force` also deletes children.
    const parentKey = (await engine.getBranch(ref)).parent ?? refName(ref);
    const wanted = lockSet([ref.database, 'shared'], [parentKey, 'shared'], [refName(ref), 'exclusive']);
    const view = await locks.with(wanted, () => track(engine.resetBranch(ref, { force, fast })));
    opLog(res, 'branch reset', { branch: refName(ref), force, fast });
    send(res, 200, view);
  });

  route('POST', '/v1/databases/:db/branches/:branch/rename', async (req, res) => {
    const ref = refOf(req);
    const body = parse(RenameBranchBody, req.body ?? {}, 'body');
    const to = parseBranchRef(body.name, ref.database);
    allowDb(res, to.database);
    // Both names exclusive: nothing runs on the old name, nothing is created under the new one meanwhile.
    const wanted = lockSet([ref.database, 'shared'], [refName(ref), 'exclusive'], [refName(to), 'exclusive']);
    const view = await locks.with(wanted, () => track(engine.renameBranch(ref, to)));
    opLog(res, 'branch renamed', { branch: refName(ref), to: view.name });
    send(res, 200, view);
  });

  route('POST', '/v1/databases/:db/rename', async (req, res) => {
    const from = dbOf(req);
    const body = parse(RenameDatabaseBody, req.body ?? {}, 'body');
    allowDb(res, body.name);
    // Both databases exclusive: every branch operation holds its database shared, so none runs meanwhile.
    const view = await locks.with(lockSet([from, 'exclusive'], [body.name, 'exclusive']), () =>
      track(engine.renameDatabase(from, body.name)),
    );
    opLog(res, 'database renamed', { database: from, to: view.name });
    send(res, 200, view);
  });

  route('GET', '/v1/branches', async (_req, res) =>
    send(
      res,
      200,
      (await engine.listBranches()).filter((b) => sees(res, b.database)),
    ),
  );

  route('GET', '/v1/status', async (_req, res) => {
    const st = await engine.status();
    if (!locals(res).who?.databases) return send(res, 200, st);
    // A limited token: its databases' branches, counted again; the pool and limits are everyone's.
    const branches = st.branches.filter((b) => sees(res, b.database));
    const byStatus: Record<string, number> = {};
    for (const b of branches) byStatus[b.status] = (byStatus[b.status] ?? 0) + 1;
    const databases = new Set(branches.map((b) => b.database)).size;
    send(res, 200, { ...st, counts: { databases, branches: branches.length, byStatus }, branches });
  });

  route('GET', '/v1/doctor', async (_req, res) => send(res, 200, await engine.doctor({ fix: false })));

  route('POST', '/v1/doctor/fix', async (_req, res) => {
    // One repair at a time. Operations in flight are left alone by the engine's own rules (as for
    // `bpg doctor --fix` beside a running daemon): it touches nothing of a branch with an operation.
    const report = await locks.with(lockSet(['doctor', 'exclusive']), () => track(engine.doctor({ fix: true })));
    opLog(res, 'doctor fix', {
      healthy: report.healthy,
      fixed: report.findings.filter((f) => f.status === 'fixed').length,
      failed: report.findings.filter((f) => f.status === 'failed').length,
    });
    send(res, 200, report);
  });

  route('GET', '/v1/snapshots', async (_req, res) =>
    send(
      res,
      200,
      (await engine.listSnapshots()).filter((x) => sees(res, databaseOf(x.branch))),
    ),
  );

  route('GET', '/v1/databases/:db/branches/:branch/snapshots', async (req, res) =>
    send(res, 200, await engine.listSnapshots(refOf(req))),
  );

  route('POST', '/v1/databases/:db/branches/:branch/snapshots', async (req, res) => {
    const ref = refOf(req);
    const body = parse(CreateSnapshotBody, req.body ?? {}, 'body');
    const snap = await locks.with(lockSet([ref.database, 'shared'], [refName(ref), 'exclusive']), () =>
      track(engine.createSnapshot(ref, { label: body.label })),
    );
    opLog(res, 'snapshot created', { branch: refName(ref), snapshot: snap.id });
    send(res, 201, snap);
  });

  route('DELETE', '/v1/snapshots/:id', async (req, res) => {
    const id = parse(SnapshotId, param(req, 'id'), 'id');
    if (locals(res).who?.databases) {
      const snap = (await engine.listSnapshots()).find((x) => x.id === id);
      if (snap) allowDb(res, databaseOf(snap.branch));
    }
    await locks.with(lockSet([`snapshot:${id}`, 'exclusive']), () => track(engine.deleteSnapshot(id)));
    opLog(res, 'snapshot deleted', { snapshot: id });
    send(res, 200, { deleted: id });
  });

  route('GET', '/v1/databases/:db/branches/:branch/schema-diff', async (req, res) => {
    const ref = refOf(req);
    const q = parse(SchemaDiffQuery, req.query, 'query');
    const against = q.against === undefined ? undefined : parseBranchRef(q.against, ref.database);
    if (against) allowDb(res, against.database);
    // Both branches held shared: neither is deleted, reset or stopped while its catalog is read.
    const otherKey = against ? refName(against) : ((await engine.getBranch(ref)).parent ?? refName(ref));
    const wanted = lockSet([ref.database, 'shared'], [refName(ref), 'shared'], [otherKey, 'shared']);
    send(res, 200, await locks.with(wanted, () => track(engine.schemaDiff(ref, { against }))));
  });

  route('GET', '/v1/databases/:db/branches/:branch/wal', async (req, res) => {
    const [info] = await engine.walInfo(refOf(req));
    send(res, 200, info);
  });

  route('GET', '/v1/wal', async (_req, res) =>
    send(
      res,
      200,
      (await engine.walInfo()).filter((w) => sees(res, databaseOf(w.branch))),
    ),
  );

  route('POST', '/v1/databases/:db/branches/:branch/wal/cleanup', async (req, res) => {
    const ref = refOf(req);
    const body = parse(WalCleanupBody, req.body ?? {}, 'body');
    const dryRun = body.dryRun === true;
    const r = await locks.with(lockSet([ref.database, 'shared'], [refName(ref), 'exclusive']), () =>
      track(engine.walCleanup(ref, body.days, dryRun)),
    );
    if (!dryRun) opLog(res, 'wal cleanup', { branch: r.branch, removed: r.removed.length, bytes: r.removedBytes });
    send(res, 200, r);
  });

  for (const verb of ['start', 'stop', 'restart'] as const) {
    route('POST', `/v1/databases/:db/branches/:branch/${verb}`, async (req, res) => {
      const ref = refOf(req);
      const view = await locks.with(lockSet([ref.database, 'shared'], [refName(ref), 'exclusive']), () =>
        track(engine[verb](ref)),
      );
      opLog(res, `branch ${verb}`, { branch: refName(ref), status: view.status });
      send(res, 200, view);
    });
  }

  // Migration watches (the safety report of a PR's migrations): a sampling session each, so they
  // are bounded in number and in age (a watch nobody stops ends by itself).
  const watches = new Map<string, { w: Watch; timer: NodeJS.Timeout }>();
  route('POST', '/v1/databases/:db/branches/:branch/watches', async (req, res) => {
    const ref = refOf(req);
    const body = parse(StartWatchBody, req.body ?? {}, 'body');
    if (watches.size >= MAX_WATCHES)
      throw new BpgError('unavailable', `${MAX_WATCHES} migration watches are running already; stop one first`);
    const w = await engine.watchMigration(ref, { maxLockSeconds: body.maxLockSeconds });
    const timer = setTimeout(() => {
      watches.delete(w.id);
      w.stop().catch(() => {});
    }, WATCH_MAX_AGE_MS);
    timer.unref();
    watches.set(w.id, { w, timer });
    opLog(res, 'watch started', { branch: w.branch, watch: w.id });
    send(res, 201, { id: w.id, branch: w.branch, startedAt: w.startedAt });
  });

  route('POST', '/v1/databases/:db/branches/:branch/watches/:id/stop', async (req, res) => {
    const ref = refOf(req);
    const id = param(req, 'id');
    const entry = watches.get(id);
    if (!entry || entry.w.branch !== refName(ref))
      throw new HttpError(404, 'not_found', `no running watch with that id on branch '${refName(ref)}'`);
    clearTimeout(entry.timer);
    watches.delete(id);
    const report = await track(entry.w.stop());
    opLog(res, 'watch stopped', {
      branch: entry.w.branch,
      watch: id,
      ms: report.durationMs,
      flagged: report.flagged.length,
    });
    send(res, 200, report);
  });

  // ---------------------------------------------------------------- fallbacks

  app.use((req, _res, next) => next(new HttpError(404, 'not_found', `no route ${req.method} ${req.path}`)));

  // Four arguments: this is how express knows an error handler.
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const { status, code, message } = toHttp(err);
    if (status >= 500)
      log.warn(`request failed: ${describe(err)}`, { requestId: locals(res).id, token: locals(res).token, status });
    if (res.headersSent) {
      res.end();
      return;
    }
    if (err instanceof Overloaded) res.setHeader('Retry-After', String(err.retryAfterSeconds));
    send(res, status, errorBody(code, message));
  });

  return {
    app,
    routes,
    locks,
    operations,
    beginShutdown() {
      closing = true;
      admission.close();
      for (const [id, { w, timer }] of watches) {
        clearTimeout(timer);
        watches.delete(id);
        w.stop().catch(() => {});
      }
    },
    async drained() {
      while (running.size) await Promise.allSettled([...running]);
    },
  };
}

/** `memory` ('1g' or bytes) and `cpus` of a body, for the engine (which checks them against the limits). */
function resources(body: { memory?: string | number; cpus?: number; disk?: string | number }): {
  memory?: number;
  cpus?: number;
  disk?: number;
} {
  let memory: number | undefined;
  let disk: number | undefined;
  if (body.disk !== undefined) {
    try {
      disk = parseSize(body.disk);
    } catch (e) {
      throw invalid(`invalid body: disk: ${describe(e)}`);
    }
  }
  if (body.memory !== undefined) {
    try {
      memory = parseSize(body.memory);
    } catch (e) {
      throw invalid(`invalid body: memory: ${describe(e)}`);
    }
  }
  return { memory, cpus: body.cpus, disk };
}

/** `GET /v1/databases` -> `listDatabases`: the OpenAPI operationId names each route's operation. */
function operationNames(): Map<string, string> {
  const paths = openapi().paths as Record<string, Record<string, { operationId?: string }>>;
  const out = new Map<string, string>();
  for (const [p, ops] of Object.entries(paths))
    for (const [m, o] of Object.entries(ops)) if (o.operationId) out.set(`${m.toUpperCase()} ${p}`, o.operationId);
  return out;
}

function errorBody(code: ApiErrorCode | ErrorCode, message: string): ErrorBody {
  return { error: { code, message } };
}

/** Any thrown value as status, code and a one-line message: never a stack trace. */
function toHttp(err: unknown): { status: number; code: ApiErrorCode; message: string } {
  if (err instanceof HttpError) return { status: err.status, code: err.code, message: err.message };
  if (err instanceof BpgError) return { status: STATUS[err.code], code: err.code, message: describe(err) };
  // body-parser and the router mark client errors with a status and a type.
  const e = err as { status?: unknown; type?: unknown };
  const status = typeof e?.status === 'number' ? e.status : 500;
  if (status === 413)
    return { status, code: 'too_large', message: 'request body is larger than the limit (api.bodyLimit)' };
  if (e?.type === 'entity.parse.failed')
    return { status: 400, code: 'invalid', message: 'request body is not valid JSON' };
  if (status >= 400 && status < 500) return { status, code: 'invalid', message: describe(err) };
  return { status: 500, code: 'failed', message: describe(err) };
}

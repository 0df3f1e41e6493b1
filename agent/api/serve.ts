import type { Config } from '../config.js';
import { Engine } from '../engine/engine.js';
import { BpgError, describe, invalid } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { collectTokens } from './auth.js';
import { listenOn, parseListen } from './listen.js';
import { createServer as createHttpServer } from 'node:http';
import type { Socket } from 'node:net';
import { listenLocalSocket, socketProblem, type LocalSocket } from './local-socket.js';
import { startHousekeeper } from './housekeeper.js';
import { SpareKeeper } from '../engine/port-slots.js';
import { lockSet } from './locks.js';
import { createApi, type Api } from './server.js';
import { startRouter, type Router } from '../proxy/router.js';
import { checkPlaintext, createApiServer, loadTls } from './transport.js';

export interface ServeOptions {
  /** host:port; overrides api.listen from the config (`bpg serve --listen`). Port 0 picks one. */
  listen?: string;
  /** Default: JSON lines on stderr. */
  log?: Logger;
  /** Default: an engine on the config with the real drivers. */
  engine?: Engine;
  /** Where BPG_API_TOKEN is read; default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Shut down cleanly on SIGTERM and SIGINT (a second one stops at once). Default true. */
  handleSignals?: boolean;
  /** Plain HTTP on a non-loopback address (`bpg serve --allow-plaintext`); or api.allowPlaintext. */
  allowPlaintext?: boolean;
  /**
   * Also listen on this unix socket for the CLI on this host (local-socket.ts); `bpg serve` passes
   * `<stateDir>/agent.sock`. Default none: a daemon embedded in a test or a program opens no socket.
   */
  socket?: string;
}

export interface RunningServer {
  /** http://host:port, or https:// with api.tls */
  url: string;
  port: number;
  api: Api;
  /** The router (proxy.enabled), or null. */
  router: Router | null;
  /** The local socket's path, or null when there is none. */
  socketPath: string | null;
  /** Stops accepting, lets running operations finish, closes connections. Branches keep running. */
  close(): Promise<void>;
  /** Resolves when the server has shut down, however that was asked for. */
  closed: Promise<void>;
}

/** The agent daemon: recovers interrupted operations, then serves the HTTP API until a signal. */
export async function serve(cfg: Config, opts: ServeOptions = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger({ json: true });
  const listen = opts.listen ?? cfg.api.listen;
  const { host } = parseListen(listen); // a bad address fails before anything starts
  checkPlaintext(host, listen, {
    tls: cfg.api.tls !== null,
    allowPlaintext: cfg.api.allowPlaintext || opts.allowPlaintext === true,
  });
  const tokens = collectTokens(cfg.api.tokens, opts.env ?? process.env);
  if (tokens.length === 0) throw invalid('no API token: add api.tokens to the config, or set BPG_API_TOKEN');

  // Certificate and key are read now: a broken pair fails before recovery or anything else runs.
  const tls = await loadTls(cfg.api.tls, log);
  const engine = opts.engine ?? new Engine(cfg, { log });
  try {
    await engine.preflight();
  } catch (e) {
    log.warn(`starting anyway: ${describe(e)}; operations will answer 503 until it is fixed`);
  }
  // Reconcile before serving: interrupted operations finished or undone, orphans removed,
  // branches that should run started. Never fatal: the API answers 503 while the stack is down.
  try {
    const report = await engine.doctor({ fix: true });
    const changed = report.findings.filter((f) => f.status !== 'found');
    if (changed.length)
      log.warn('reconciled on start', {
        findings: changed.map((f) => ({ kind: f.kind, subject: f.subject, status: f.status, action: f.action })),
      });
  } catch (e) {
    log.warn(
      `could not reconcile on start: ${describe(e)} (interrupted operations are retried before each operation; run 'bpg doctor')`,
    );
  }

  // Spare port slots: a create takes one and they are refilled behind it (engine/port-slots.ts).
  const spares = new SpareKeeper(engine.ctx);
  engine.ctx.spares = spares;
  spares.poke({ trim: true });
  spares.watchState(cfg.stateDir);

  // Connections accepted on the local socket (below): their requests need no token (server.ts).
  const fromSocket = new WeakSet<Socket>();
  const api = createApi({
    engine,
    tokens,
    log,
    bodyLimit: cfg.api.bodyLimit,
    isLocal: (req) => fromSocket.has(req.socket),
  });
  const server = createApiServer(api.app, tls);
  const { url, port } = await listenOn(server, listen);
  // The CLI on this host sends its commands here (no token: the socket is 0600, the daemon's user only).
  const localServer = createHttpServer(api.app);
  localServer.on('connection', (socket: Socket) => fromSocket.add(socket));
  let local: LocalSocket | null = null;
  if (opts.socket !== undefined) {
    const path = opts.socket;
    try {
      local = await listenLocalSocket(localServer, path);
    } catch (e) {
      if (e instanceof BpgError) {
        await new Promise<void>((r) => server.close(() => r()));
        throw e;
      }
      log.warn(socketProblem(path, e));
    }
  }
  log.info('listening', {
    url,
    socket: local?.path ?? null,
    tokens: tokens.map((t) => t.name),
    pool: cfg.zfs.pool,
    stateDir: cfg.stateDir,
  });

  const branchLock = (ref: { database: string; branch: string }) =>
    lockSet([ref.database, 'shared'], [`${ref.database}/${ref.branch}`, 'exclusive']);

  // The router: one endpoint for every branch; it starts idle-stopped branches under the same locks.
  let router: Router | null = null;
  if (cfg.proxy.enabled) {
    try {
      router = await startRouter({
        cfg,
        store: engine.store,
        log,
        start: (ref) => engine.start(ref),
        containerAddress: (container) => engine.docker.address(container),
        withBranchLock: (ref, fn) => api.locks.with(branchLock(ref), fn),
      });
    } catch (e) {
      await Promise.all([new Promise<void>((r) => server.close(() => r())), local?.close()]);
      throw e;
    }
    // proxy.listen with port 0 (tests): connection strings name the port it got.
    if (cfg.proxy.publicPort === null && /:0$/.test(cfg.proxy.listen)) engine.cfg.proxy.publicPort = router.port;
  }

  // Expiry, idle stop, scheduled snapshots: under the same per-branch locks as API requests, so
  // the two queue behind each other instead of answering 'busy'.
  const housekeeper = startHousekeeper(engine, {
    interval: cfg.housekeeping.interval,
    log,
    activity: router ? (ref) => router!.activity(ref) : undefined,
    around: (t, fn) =>
      api.locks.with('snapshot' in t ? lockSet([`snapshot:${t.snapshot}`, 'exclusive']) : branchLock(t), fn),
  });

  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  let closing: Promise<void> | null = null;

  const close = (): Promise<void> => {
    closing ??= (async () => {
      log.info('shutting down: no new requests; running operations finish, branches keep running');
      api.beginShutdown();
      const housekeeping = housekeeper.stop();
      const routerClosed = router?.close();
      const serverClosed = new Promise<void>((r) => server.close(() => r()));
      const localClosed = local?.close();
      // Keep-alive connections with no request in flight would hold close() open.
      const sweep = () => {
        server.closeIdleConnections();
        localServer.closeIdleConnections();
      };
      const sweeper = setInterval(sweep, 200);
      sweep();
      try {
        await Promise.all([serverClosed, localClosed, api.drained(), housekeeping, routerClosed, spares.close()]);
      } finally {
        clearInterval(sweeper);
      }
      log.info('stopped');
      resolveClosed();
    })();
    return closing;
  };

  if (opts.handleSignals !== false) {
    // SIGHUP: read proxy.tls again (a renewed certificate); a broken pair keeps the old one.
    const onHup = () => {
      if (!router) return log.info('SIGHUP: nothing to reload (the router is off)');
      router.reloadTls().catch((e: unknown) => log.warn(`SIGHUP: kept the old certificate: ${describe(e)}`));
    };
    process.on('SIGHUP', onHup);
    const onSignal = (signal: NodeJS.Signals) => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      process.off('SIGHUP', onHup);
      log.info(
        `${signal}: stopping (send it again to stop at once; interrupted operations are recovered at the next start)`,
      );
      void close();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }

  return { url, port, api, router, socketPath: local?.path ?? null, close, closed };
}

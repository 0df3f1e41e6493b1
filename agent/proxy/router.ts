/**
 * The router: one PostgreSQL endpoint for every branch (`proxy.*` in the config, run by `bpg serve`).
 *
 * Per connection: negotiate encryption (SSLRequest → TLS with proxy.tls, GSSENCRequest → 'N'),
 * read the StartupMessage, pick the branch (routing.ts), start it if the idle stop stopped it
 * (wake.ts), connect to its port on this host, forward the StartupMessage with the cluster's own
 * database name, and from then on relay bytes. Authentication is the branch's own (SCRAM passes
 * through untouched): the router never sees a password. Backend messages are framed only until
 * ReadyForQuery, to remember BackendKeyData for cancel requests.
 */
import { stat } from 'node:fs/promises';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { TLSSocket, createSecureContext, type SecureContext } from 'node:tls';
import type { Duplex } from 'node:stream';
import { effectiveRequireTls, type Config } from '../config.js';
import { describe } from '../errors.js';
import type { Logger } from '../log.js';
import { refName, type BranchRef } from '../names.js';
import type { BranchRecord, DatabaseRecord, State } from '../state/schema.js';
import type { StateStore } from '../state/store.js';
import { listenOn } from '../api/listen.js';
import { loadTls } from '../api/transport.js';
import { proxyMetrics as M, type RefusalReason } from './metrics.js';
import {
  MessageFramer,
  ProtocolError,
  errorFields,
  errorResponse,
  parseFirstPacket,
  startupPacket,
  type FirstPacket,
} from './protocol.js';
import { readPacket } from './read-packet.js';
import { routeOf, safe } from './routing.js';
import { Waker, type WakeDeps } from './wake.js';

export interface RouterOptions extends WakeDeps {
  cfg: Config;
  store: StateStore;
  log: Logger;
  /** A running container's address on its Docker network (the daemon passes the Docker driver's); without it, published ports. */
  containerAddress?: (container: string) => Promise<{ ip: string } | null>;
}

interface Target {
  host: string;
  port: number;
}

/** How long a container's address is trusted without asking Docker again. */
const ADDRESS_TTL_MS = 5000;

export interface Activity {
  /** Client connections open through the router now. */
  open: number;
  /** Last time one opened or closed (ms since the epoch), null if never since the router started. */
  lastSeenAt: number | null;
}

export interface Router {
  /** The port it listens on (proxy.listen's, or the one it got for port 0). */
  port: number;
  address: string;
  /** Reads proxy.tls again (SIGHUP); a broken pair is refused and the old one kept. */
  reloadTls(): Promise<void>;
  /** What the idle stop needs to know about one branch. */
  activity(ref: BranchRef): Activity;
  /** Stops accepting and closes every relayed connection. */
  close(): Promise<void>;
}

/** An answer the router gives on its own: SQLSTATE, message, metric reason. */
class Refusal extends Error {
  constructor(
    readonly sqlstate: string,
    message: string,
    readonly reason: RefusalReason,
    readonly hint?: string,
  ) {
    super(message);
  }
}

interface Session {
  key: string;
  client: Duplex;
  backend: Socket | null;
  cancelKey: string | null;
}

export async function startRouter(o: RouterOptions): Promise<Router> {
  const px = o.cfg.proxy;
  const requireTls = effectiveRequireTls(px);
  const files = await loadTls(px.tls, o.log, 'proxy.tls');
  let secure: SecureContext | null = files
    ? createSecureContext({ cert: files.cert, key: files.key, minVersion: 'TLSv1.2' })
    : null;
  const backendHost = backendAddress(o.cfg.postgres.bindAddress);
  const waker = new Waker(o, o.log);

  const sockets = new Set<Socket>();
  /** Client connections that count against proxy.maxConnections: accepted and not refused or closed. */
  const counted = new Set<Socket>();
  const sessions = new Set<Session>();
  const perBranch = new Map<string, Activity>();
  const cancelKeys = new Map<string, Target>();
  let cached: { mtimeKey: string; state: State } | null = null;
  const addresses = new Map<string, { target: Target | null; stateKey: string; at: number }>();

  const activityOf = (key: string): Activity => {
    let a = perBranch.get(key);
    if (!a) perBranch.set(key, (a = { open: 0, lastSeenAt: null }));
    return a;
  };

  /** The state, read again only when the file changed (a connection costs a stat, not a parse). */
  const readState = async (): Promise<State> => {
    const st = await stat(o.store.file).catch(() => null);
    const mtimeKey = st ? `${st.mtimeMs}:${st.size}:${st.ino}` : 'none';
    if (cached && cached.mtimeKey === mtimeKey) return cached.state;
    const state = await o.store.read();
    cached = { mtimeKey, state };
    return state;
  };

  const refuse = (sock: Socket, client: Duplex, r: Refusal) => {
    M.refused.inc({ reason: r.reason });
    o.log.debug('router: refused', { reason: r.reason, sqlstate: r.sqlstate, message: r.message });
    // A refused client no longer takes a place, even while it is slow to close its side.
    counted.delete(sock);
    if (!client.destroyed && client.writable) {
      client.end(errorResponse(r.sqlstate, r.message, { hint: r.hint }));
      setTimeout(() => sock.destroy(), 5000).unref();
    } else client.destroy();
  };

  async function handle(sock: Socket): Promise<void> {
    sock.setNoDelay(true);
    let client: Duplex = sock;
    let servername: string | null = null;
    const timer = setTimeout(() => {
      M.refused.inc({ reason: 'timeout' });
      o.log.debug('router: dropped a client that did not finish its startup in time');
      sock.destroy();
    }, px.startupTimeout);
    let first: FirstPacket;
    try {
      try {
        first = parseFirstPacket(await readPacket(client, px.maxStartupPacket));
        let encrypted = false;
        let gss = false;
        while (first.kind === 'ssl' || first.kind === 'gssenc') {
          if (first.kind === 'gssenc') {
            if (gss || encrypted) throw new ProtocolError('duplicate GSSENCRequest');
            gss = true;
            sock.write('N');
          } else {
            if (encrypted) throw new ProtocolError('SSLRequest inside TLS');
            if (!secure) sock.write('N');
            else {
              if (sock.readableLength > 0) throw new ProtocolError('received unencrypted data after SSL request');
              sock.write('S');
              const t = await upgrade(sock, secure);
              client = t;
              encrypted = true;
              servername = typeof t.servername === 'string' ? t.servername : null;
            }
          }
          first = parseFirstPacket(await readPacket(client, px.maxStartupPacket));
        }
        if (first.kind === 'cancel') {
          clearTimeout(timer);
          forwardCancel(first.key, first.packet);
          client.end();
          return;
        }
        if (requireTls && !encrypted)
          throw new Refusal(
            '28000',
            'this router accepts TLS connections only: connect with sslmode=require',
            'no_tls',
            'add sslmode=require to the connection string',
          );
      } finally {
        clearTimeout(timer);
      }
      if (counted.size > px.maxConnections)
        throw new Refusal('53300', 'sorry, too many clients already (proxy.maxConnections)', 'too_many');
      await route(client, first, servername);
    } catch (e) {
      if (e instanceof Refusal) return refuse(sock, client, e);
      if (e instanceof ProtocolError) return refuse(sock, client, new Refusal('08P01', e.message, 'protocol'));
      if (isGone(e)) return void client.destroy();
      o.log.warn(`router: connection failed: ${describe(e)}`);
      refuse(sock, client, new Refusal('XX000', 'the router could not serve this connection', 'unreachable'));
    }
  }

  async function route(client: Duplex, first: Extract<FirstPacket, { kind: 'startup' }>, servername: string | null) {
    const params = new Map(first.params);
    const asked = params.get('database') || params.get('user')!;
    const r = routeOf(asked, servername, px.domain);
    if (!r.ok) throw new Refusal('3D000', r.message, 'unknown');
    const { b, db } = await ready(r.ref);
    const key = refName(b);
    const act = activityOf(key);
    if (act.open >= px.maxConnectionsPerBranch)
      throw new Refusal('53300', `sorry, too many clients already for branch "${key}"`, 'too_many');
    params.set('database', db.pgDatabase);

    // Counted from here: the idle stop must not stop a branch a client is logging in to.
    act.open++;
    act.lastSeenAt = Date.now();
    M.open.inc({ branch: key });
    let backend: Socket;
    let target: Target;
    try {
      ({ socket: backend, target } = await connectBackend(b));
    } catch (e) {
      act.open--;
      act.lastSeenAt = Date.now();
      M.open.dec({ branch: key });
      throw new Refusal(
        '57P03',
        `branch "${key}" is not answering (${(e as NodeJS.ErrnoException).code ?? 'error'}); try again in a moment`,
        'unreachable',
      );
    }
    M.total.inc({ branch: key });
    const session: Session = { key, client, backend, cancelKey: null };
    sessions.add(session);
    let closed = false;
    const done = () => {
      if (closed) return;
      closed = true;
      sessions.delete(session);
      act.open--;
      act.lastSeenAt = Date.now();
      M.open.dec({ branch: key });
      if (session.cancelKey) cancelKeys.delete(session.cancelKey);
      client.destroy();
      backend.destroy();
    };
    client.on('close', done);
    backend.on('close', done);
    client.on('error', () => done());
    if (client.destroyed) return done();
    backend.on('error', () => done());
    backend.write(startupPacket(first.version, params));

    // Client to branch: bytes as they come (the password exchange included).
    relay(client, backend, key, 'to_branch');
    // Branch to client: framed until ReadyForQuery (BackendKeyData is kept for cancels), then piped.
    const framer = new MessageFramer();
    const onData = (chunk: Buffer) => {
      M.bytes.inc({ branch: key, direction: 'to_client' }, chunk.length);
      let startupOver = false;
      try {
        for (const m of framer.push(chunk)) {
          // One key per session (PostgreSQL sends one): more from a hostile branch must not grow the map.
          if (m.type === 'K' && m.body.length >= 8 && session.cancelKey === null) {
            session.cancelKey = m.body.toString('hex');
            cancelKeys.set(session.cancelKey, target);
          } else if (m.type === 'Z') startupOver = true;
          else if (m.type === 'E') {
            const f = errorFields(m.body);
            o.log.debug('router: the branch refused a client', { branch: key, sqlstate: f.get('C') });
          }
        }
      } catch {
        startupOver = true; // not framed as expected: stop looking, keep relaying
      }
      const more = client.write(chunk);
      if (startupOver) {
        backend.off('data', onData);
        relay(backend, client, key, 'to_client', more);
      } else if (!more) {
        backend.pause();
        client.once('drain', () => backend.resume());
      }
    };
    backend.on('data', onData);
  }

  /**
   * The branch's PostgreSQL: at the container's address on its Docker network when the runtime
   * gives one (no docker-proxy in the path: a relay less per message), else its published port.
   * Addresses are cached a few seconds and dropped when the state changes (a start, stop, reset) or
   * a connection to one fails; a container that does not answer there is reached on its port.
   */
  async function connectBackend(b: BranchRecord): Promise<{ socket: Socket; target: Target }> {
    const published = { host: backendHost, port: b.port };
    const viaNetwork = await containerTarget(b);
    if (viaNetwork) {
      try {
        return { socket: await dial(viaNetwork, 2000), target: viaNetwork };
      } catch {
        addresses.delete(b.container);
      }
    }
    return { socket: await dial(published, 10_000), target: published };
  }

  async function containerTarget(b: BranchRecord): Promise<Target | null> {
    if (!o.containerAddress) return null;
    const hit = addresses.get(b.container);
    const stateKey = cached?.mtimeKey ?? '';
    if (hit && hit.stateKey === stateKey && Date.now() - hit.at < ADDRESS_TTL_MS) return hit.target;
    const a = await o.containerAddress(b.container).catch(() => null);
    const target = a ? { host: a.ip, port: 5432 } : null;
    addresses.set(b.container, { target, stateKey, at: Date.now() });
    return target;
  }

  /** Copies src to dst with backpressure, counting bytes (into the metric when the stream ends: a counter per chunk costs throughput). */
  function relay(src: Duplex, dst: Duplex, key: string, direction: 'to_branch' | 'to_client', flowing = true) {
    let bytes = 0;
    const flush = () => {
      if (bytes) M.bytes.inc({ branch: key, direction }, bytes);
      bytes = 0;
    };
    const timer = setInterval(flush, 10_000);
    timer.unref();
    src.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (!dst.write(chunk)) src.pause();
    });
    src.once('close', () => {
      clearInterval(timer);
      flush();
    });
    dst.on('drain', () => src.resume());
    src.on('end', () => dst.end());
    // Paused while the other side's buffer is full: its 'drain' resumes it.
    if (flowing) src.resume();
    else src.pause();
  }

  /** The branch record once it can take a connection: woken if the idle stop stopped it. */
  async function ready(ref: BranchRef): Promise<{ b: BranchRecord; db: DatabaseRecord }> {
    for (let attempt = 0; ; attempt++) {
      const s = await readState();
      const b = s.branches[refName(ref)] ?? findCaseless(s, ref);
      const db = b ? s.databases[b.database] : undefined;
      const name = b ? refName(b) : refName(ref);
      if (!db || !b) throw new Refusal('3D000', `branch "${safe(name)}" does not exist`, 'unknown');
      if (b.status === 'creating')
        throw new Refusal('57P03', `branch "${name}" is being created; try again in a moment`, 'busy');
      if (b.status === 'deleting') throw new Refusal('57P03', `branch "${name}" is being deleted`, 'busy');
      const op = b.operation?.kind ?? null;
      if (op === 'reset' || op === 'rename' || op === 'delete' || op?.startsWith('recover'))
        throw new Refusal('57P03', `branch "${name}" is being ${verb(op)}; try again in a moment`, 'busy');
      if (b.status === 'running' && op === null) return { b, db };
      if (b.status === 'stopped' && op === null && b.stoppedBy !== 'idle')
        throw new Refusal(
          '55000',
          `branch "${name}" was stopped by a person ('bpg stop'), so the router does not start it`,
          'stopped',
          `start it with 'bpg start ${name}'`,
        );
      if (b.status === 'stopped' && op === null && !px.wakeOnConnect)
        throw new Refusal('55000', `branch "${name}" is stopped (idle); proxy.wakeOnConnect is off`, 'stopped');
      if (attempt >= 10) throw new Refusal('57P03', `branch "${name}" is busy; try again in a moment`, 'busy');
      // Stopped by the idle stop, or a start/stop/restart/snapshot under way: wait for the branch's
      // lock (the daemon's own operations), then start it if it is still idle-stopped.
      if (attempt > 0) await new Promise((r) => setTimeout(r, 300));
      try {
        await waker.wake(b, () => readState());
      } catch (e) {
        if (e instanceof Refusal) throw e;
        M.refused.inc({ reason: 'wake_failed' });
        o.log.warn(`router: could not start branch ${name}: ${describe(e)}`);
        throw new Refusal('57P03', `branch "${name}" could not be started; try again in a moment`, 'busy');
      }
      cached = null;
    }
  }

  function forwardCancel(key: string, packet: Buffer): void {
    const target = cancelKeys.get(key);
    M.cancels.inc({ result: target ? 'forwarded' : 'unknown' });
    if (!target) return; // as PostgreSQL does: no answer either way
    const s = connect(target);
    s.on('error', () => s.destroy());
    s.on('connect', () => s.end(packet));
    s.setTimeout(10_000, () => s.destroy());
  }

  const server: Server = createServer((sock) => {
    sockets.add(sock);
    counted.add(sock);
    sock.on('close', () => {
      sockets.delete(sock);
      counted.delete(sock);
    });
    sock.on('error', () => sock.destroy());
    void handle(sock).catch((e: unknown) => {
      o.log.warn(`router: ${describe(e)}`);
      sock.destroy();
    });
  });
  server.on('error', (e) => o.log.warn(`router: listener error: ${describe(e)}`));
  const { port } = await listenOn(server, px.listen);
  const addr = server.address() as AddressInfo;
  o.log.info('router listening', {
    address: `${addr.address}:${addr.port}`,
    tls: secure !== null,
    requireTls,
    domain: px.domain,
  });

  return {
    port,
    address: addr.address,
    async reloadTls() {
      const f = await loadTls(px.tls, o.log, 'proxy.tls');
      if (!f) return;
      secure = createSecureContext({ cert: f.cert, key: f.key, minVersion: 'TLSv1.2' });
      o.log.info('router: certificate reloaded', { cert: px.tls!.cert });
    },
    activity(ref) {
      const a = perBranch.get(refName(ref));
      return a ? { ...a } : { open: 0, lastSeenAt: null };
    },
    async close() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      for (const s of sessions) s.backend?.destroy();
      await closed;
    },
  };
}

/** TLS on an accepted socket after answering 'S' (minimum TLS 1.2; ALPN 'postgresql' when asked). */
function upgrade(sock: Socket, secureContext: SecureContext): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = new TLSSocket(sock, { isServer: true, secureContext, ALPNProtocols: ['postgresql'] });
    const fail = (e: Error) => reject(e);
    t.once('error', fail);
    t.once('close', () => reject(Object.assign(new Error('closed during the TLS handshake'), { code: 'ECONNRESET' })));
    t.once('secure', () => {
      t.off('error', fail);
      t.on('error', () => t.destroy());
      resolve(t);
    });
  });
}

/** A TCP connection with a time limit on the connect itself. */
function dial(t: Target, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(t);
    s.setNoDelay(true);
    const timer = setTimeout(() => {
      s.destroy();
      reject(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      s.on('error', () => s.destroy()); // until the session's own handlers are attached
      resolve(s);
    });
  });
}

function backendAddress(bind: string): string {
  if (bind === '0.0.0.0') return '127.0.0.1';
  if (bind === '::') return '::1';
  return bind;
}

function findCaseless(s: State, ref: BranchRef): BranchRecord | undefined {
  const want = refName(ref).toLowerCase();
  return Object.values(s.branches).find((b) => refName(b).toLowerCase() === want);
}

function verb(op: string): string {
  if (op === 'reset' || op === 'recover-reset') return 'reset';
  if (op === 'rename' || op === 'recover-rename') return 'renamed';
  if (op === 'delete' || op === 'recover-delete' || op === 'recover') return 'deleted';
  return 'recovered';
}

function isGone(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code === 'ECONNRESET' || code === 'EPIPE' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ECLOSED';
}

/**
 * `bpg serve`'s local socket: a unix socket in the state folder (`<stateDir>/agent.sock`, mode
 * 0600) through which the CLI on the same host sends its commands to the daemon instead of loading
 * the engine itself. File permissions are the check: only the daemon's user (root) can connect,
 * so requests on it need no token (the server counts them as the admin `local`).
 *
 * Light on purpose (node:net and node:fs only): the CLI imports `agentSocketPath` too.
 */
import { lstat, unlink } from 'node:fs/promises';
import { connect, type Server } from 'node:net';
import { join } from 'node:path';
import { BpgError, conflict, describe } from '../errors.js';

export const SOCKET_NAME = 'agent.sock';

/** Where the daemon on a state folder listens locally. */
export const agentSocketPath = (stateDir: string): string => join(stateDir, SOCKET_NAME);

/** Whether something accepts connections on the unix socket at `path` right now. */
export function socketAnswers(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    const done = (v: boolean) => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

const kindOf = (st: { isSymbolicLink(): boolean; isDirectory(): boolean; isFile(): boolean }) =>
  st.isSymbolicLink() ? 'a symbolic link' : st.isDirectory() ? 'a folder' : st.isFile() ? 'a file' : 'not a socket';

/**
 * Removes a socket left behind by a daemon that died, and only that: anything else at `path` (a
 * file, a folder, a link: never followed) is refused, and so is a socket someone answers on.
 */
async function clearStale(path: string): Promise<void> {
  const st = await lstat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return null;
    throw e;
  });
  if (!st) return;
  if (!st.isSocket())
    throw new BpgError(
      'invalid',
      `${path} is ${kindOf(st)}, not a socket: remove it (bpg serve puts its local socket there)`,
    );
  if (await socketAnswers(path))
    throw conflict(`another bpg serve answers on ${path}: stop it first (one daemon per state folder)`);
  // Still the same socket file we looked at (not swapped for something else meanwhile)?
  const again = await lstat(path).catch(() => null);
  if (!again?.isSocket() || again.ino !== st.ino || again.dev !== st.dev)
    throw conflict(`${path} changed while starting`);
  await unlink(path);
}

export interface LocalSocket {
  path: string;
  /** Stops listening; the socket file is removed. */
  close(): Promise<void>;
}

/**
 * `server` listening on the unix socket at `path`, created with mode 0600 (the umask is narrowed
 * while the socket is bound, so it is never reachable with wider permissions).
 */
export async function listenLocalSocket(server: Server, path: string): Promise<LocalSocket> {
  await clearStale(path);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // listen() binds synchronously: the narrowed umask covers the bind and nothing else.
    const umask = process.umask(0o177);
    try {
      server.listen({ path }, () => {
        server.off('error', reject);
        resolve();
      });
    } finally {
      process.umask(umask);
    }
  });
  const st = await lstat(path);
  if (!st.isSocket() || (st.mode & 0o077) !== 0) {
    await new Promise<void>((r) => server.close(() => r()));
    throw new BpgError('failed', `${path}: the socket was not created with mode 0600`);
  }
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        if (!server.listening) return resolve();
        server.close(() => resolve());
      }),
  };
}

/** One line for a socket that could not be opened (the daemon still serves over TCP). */
export const socketProblem = (path: string, e: unknown) =>
  `no local socket at ${path}: ${describe(e)}; the CLI on this host loads the engine itself`;

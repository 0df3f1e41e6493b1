import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { Socket } from 'node:net';
import pg from 'pg';
import { sleep } from './exec.js';
import type { BackupLabel, ConnectOptions, PgTarget, Postgres } from './interfaces.js';
export type { BackupLabel, ConnectOptions, PgTarget } from './interfaces.js';

/** A fresh random password: 32 URL-safe characters, so it needs no escaping in a URI. */
export function newPassword(): string {
  return randomBytes(24).toString('base64url');
}

/**
 * The SCRAM-SHA-256 verifier PostgreSQL stores for a password. Sending the verifier instead of
 * the password keeps the plain text out of the server's statement log.
 */
export function scramVerifier(password: string, iterations = 4096): string {
  const salt = randomBytes(16);
  const salted = pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

export const quoteIdent = (s: string) => `"${s.replace(/"/g, '""')}"`;
export const quoteLiteral = (s: string) => `'${s.replace(/'/g, "''")}'`;

/**
 * The agent's sessions set what they rely on in the startup packet, which wins over ALTER ROLE and
 * ALTER DATABASE settings a branch's superuser may have planted (a 1 ms statement_timeout, read-only
 * transactions, a search_path that puts its own functions first). Bounded waits: a branch holding a
 * lock or a slow statement fails the operation on that branch instead of hanging it.
 */
export const AGENT_SESSION_OPTIONS = [
  'search_path=pg_catalog',
  'default_transaction_read_only=off',
  'statement_timeout=600000',
  'lock_timeout=60000',
  'idle_in_transaction_session_timeout=0',
]
  .map((o) => `-c ${o}`)
  .join(' ');

/** The error a session's read bound ended it with, by client (withClient answers it rather than what followed). */
const readLimitErrors = new WeakMap<pg.Client, { error: Error | null }>();

/**
 * A socket that closes itself once the server has sent more than `max` bytes: a branch's server is
 * the pull request's, and a query's answer (even from a catalog function it has replaced) must not
 * fill the agent's memory. The query in flight, or the next one, then fails.
 */
function readLimitedSocket(max: number, seen: { error: Error | null }): Socket {
  const s = new Socket();
  let received = 0;
  s.on('data', (chunk: Buffer) => {
    received += chunk.length;
    if (received > max && !s.destroyed) {
      const size = max % 1048576 === 0 ? `${max / 1048576} MiB` : `${max} bytes`;
      seen.error = new Error(`the server sent more than ${size} on one session`);
      s.destroy(seen.error);
    }
  });
  return s;
}

export async function connect(t: PgTarget, timeoutMs = 5000, o: ConnectOptions = {}): Promise<pg.Client> {
  const { maxReadBytes } = o;
  const seen = { error: null as Error | null };
  const c = new pg.Client({
    ...t,
    connectionTimeoutMillis: timeoutMs,
    application_name: 'betterpg',
    options: AGENT_SESSION_OPTIONS,
    ...(maxReadBytes !== undefined ? { stream: () => readLimitedSocket(maxReadBytes, seen) } : {}),
  });
  if (maxReadBytes !== undefined) readLimitErrors.set(c, seen);
  c.on('error', () => {}); // a server going away must not crash the agent; the next query fails instead
  await c.connect();
  return c;
}

export async function withClient<T>(t: PgTarget, fn: (c: pg.Client) => Promise<T>, o: ConnectOptions = {}): Promise<T> {
  const c = await connect(t, undefined, o);
  try {
    return await fn(c);
  } catch (e) {
    // "Client has encountered a connection error" says less than why the session was closed.
    throw readLimitErrors.get(c)?.error ?? e;
  } finally {
    await c.end().catch(() => {});
  }
}

/**
 * Waits until a real query succeeds on a server that accepts writes (a clone in archive recovery
 * already answers read-only queries before it promotes). `stillAlive` lets the caller stop early when the container
 * has exited, instead of waiting out the whole timeout.
 */
export async function waitReady(t: PgTarget, timeoutMs: number, stillAlive?: () => Promise<boolean>): Promise<void> {
  await (await openWhenReady(t, timeoutMs, stillAlive)).end().catch(() => {});
}

/** waitReady, keeping the session that found the server ready (the caller ends it): one connection less. */
export async function openWhenReady(
  t: PgTarget,
  timeoutMs: number,
  stillAlive?: () => Promise<boolean>,
): Promise<pg.Client> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  let n = 0;
  while (Date.now() < deadline) {
    let c: pg.Client | null = null;
    try {
      c = await connect(t);
      const inRecovery = (await c.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]!.r;
      if (!inRecovery) return c;
      lastErr = new Error('still in recovery');
    } catch (e) {
      lastErr = e;
    }
    await c?.end().catch(() => {});
    if (/password authentication failed/i.test((lastErr as Error)?.message ?? '')) throw lastErr;
    if (stillAlive && ++n % 10 === 0 && !(await stillAlive())) {
      throw new Error(`PostgreSQL exited during start-up (${(lastErr as Error)?.message ?? 'no answer'})`);
    }
    await sleep(n < 20 ? 10 : n < 40 ? 25 : 100); // a fresh clone usually answers within ~0.1 s
  }
  throw new Error(
    `PostgreSQL did not answer within ${Math.round(timeoutMs / 1000)} s: ${(lastErr as Error)?.message ?? ''}`,
  );
}

export async function serverVersionNum(c: pg.Client): Promise<number> {
  const r = await c.query<{ v: string }>("SELECT current_setting('server_version_num') AS v");
  return Number(r.rows[0]!.v);
}

/**
 * Non-exclusive backup mode is bound to one session: start and stop must run on the same held
 * connection, with the snapshot taken between them. If this process dies in the middle, the
 * connection closes and PostgreSQL ends backup mode itself, so the parent is never left in it.
 */
export async function withBackupMode(
  c: pg.Client,
  label: string,
  takeSnapshot: () => Promise<void>,
  o: { waitForArchive?: boolean; stopTimeoutMs?: number } = {},
): Promise<BackupLabel> {
  const stopTimeoutMs = o.stopTimeoutMs ?? 120_000;
  const wait = o.waitForArchive ? 'true' : 'false';
  const v = await serverVersionNum(c);
  const start =
    v >= 150000 ? 'SELECT pg_backup_start($1, true) AS lsn' : 'SELECT pg_start_backup($1, true, false) AS lsn';
  const stop =
    v >= 150000
      ? `SELECT lsn, labelfile, spcmapfile FROM pg_backup_stop(${wait})`
      : `SELECT lsn, labelfile, spcmapfile FROM pg_stop_backup(false, ${wait})`;
  await c.query(start, [label]);
  try {
    await takeSnapshot();
  } catch (e) {
    await c.query(v >= 150000 ? 'SELECT pg_backup_stop(false)' : 'SELECT pg_stop_backup(false, false)').catch(() => {});
    throw e;
  }
  // wait_for_archive polls the archiver once a second: a second on every branch. Without it, the
  // stop still switches and flushes the segment holding the backup-end record, and a clone made
  // right away copies the WAL from the parent's archive or pg_wal. Kept snapshots wait.
  await c.query(`SET statement_timeout = ${Math.round(stopTimeoutMs)}`);
  let row: { lsn: string; labelfile: string; spcmapfile: string | null };
  try {
    row = (await c.query(stop)).rows[0];
  } catch (e) {
    if (/statement timeout/i.test((e as Error).message)) {
      throw new Error(
        `pg_backup_stop did not finish in time${o.waitForArchive ? ": WAL archiving is failing (see 'bpg wal info')" : ''}`,
        { cause: e },
      );
    }
    throw e;
  } finally {
    await c.query('RESET statement_timeout').catch(() => {});
  }
  const m = /START WAL LOCATION: [0-9A-F/]+ \(file ([0-9A-F]{24})\)/.exec(row.labelfile);
  if (!m) throw new Error('could not read the start segment from the backup label');
  const firstSegment = m[1]!;
  const tli = firstSegment.slice(0, 8);
  const seg = (await c.query<{ f: string }>('SELECT pg_walfile_name($1::pg_lsn) AS f', [row.lsn])).rows[0]!.f;
  // pg_walfile_name names the file on the server's current timeline, which is the backup's.
  const lastSegment = tli + seg.slice(8);
  return { labelfile: row.labelfile, spcmapfile: row.spcmapfile ?? '', firstSegment, lastSegment };
}

/** The PostgreSQL side of the engine (interfaces.ts): sessions, readiness, backup mode. */
export const postgresClients: Postgres = { connect, withClient, waitReady, openWhenReady, withBackupMode };

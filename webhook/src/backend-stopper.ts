/**
 * Ends the PostgreSQL backend of a migration that ran past its time limit, from outside its session,
 * so that nothing the file did keeps it alive: `SET statement_timeout = 0` changes nothing here, and
 * `pg_terminate_backend` (not a cancel, which a PL/pgSQL handler for `query_canceled` can swallow)
 * signals the backend's whole process group, so a program it started with `COPY ... TO PROGRAM` is
 * signalled too. Then the backend must really be gone: it is looked for (by pid and start time, so a
 * reused pid is not mistaken for it) until it is. One that does not go (a backend waiting for a
 * program that ignores the signal), or a branch that cannot be reached to ask (the file ended our
 * other session, took every connection slot, changed the password), is ended by restarting the
 * branch through the agent: its container stops, killed if need be, and with it every process in it.
 */
import pg from 'pg';
import { pgClientConfig, type PgTarget } from '../../shared/pg-config.js';

/** How long a terminated backend gets to go before the branch is restarted. */
export const TERMINATE_WAIT_MS = 10_000;
/** For each of the stopper's own queries and its connection. */
const QUERY_TIMEOUT_MS = 10_000;

/** A backend, named so that a later one with the same pid is not taken for it. */
export interface Backend {
  pid: number;
  /** backend_start in microseconds since the epoch, as text (a bigint). */
  startedUs: string;
}

export type StopOutcome = 'terminated' | 'restarted';

/** The backend of a connected client; for `BackendStopper.stop` later. */
export async function backendOf(client: pg.Client): Promise<Backend> {
  const r = await client.query<{ pid: number; started_us: string }>(
    `SELECT pid, (extract(epoch FROM backend_start) * 1000000)::bigint::text AS started_us FROM pg_stat_activity WHERE pid = pg_backend_pid()`,
  );
  const row = r.rows[0];
  if (!row) throw new Error('cannot find this session in pg_stat_activity');
  return { pid: row.pid, startedUs: row.started_us };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class BackendStopper {
  private session: pg.Client | null = null;

  /**
   * `restartBranch`: the last resort, the agent restarting the branch. `waitMs`: how long a
   * terminated backend gets to go.
   */
  constructor(
    /** The branch, as the migration's own session reaches it (through the router, when it runs one). */
    private readonly target: PgTarget,
    private readonly restartBranch: () => Promise<void>,
    private readonly waitMs = TERMINATE_WAIT_MS,
  ) {}

  /** Connects ahead of need (before the files run, which could fill every connection slot); best effort. */
  async open(): Promise<void> {
    this.session = await this.connect().catch(() => null);
  }

  async close(): Promise<void> {
    await this.session?.end().catch(() => {});
    this.session = null;
  }

  /** Ends `b`, and says how. Throws only when even the restart failed. */
  async stop(b: Backend): Promise<StopOutcome> {
    if (await this.terminate(b)) return 'terminated';
    await this.close();
    await this.restartBranch();
    return 'restarted';
  }

  /** True once the backend is gone; false when it stays, or when the branch cannot be asked. */
  private async terminate(b: Backend): Promise<boolean> {
    // Twice: the session opened ahead may have been ended by the file itself; then a new one.
    for (let i = 0; i < 2; i++) {
      try {
        this.session ??= await this.connect();
        const s = this.session;
        const match = `pid = $1 AND (extract(epoch FROM backend_start) * 1000000)::bigint::text = $2`;
        await s.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE ${match}`, [b.pid, b.startedUs]);
        const end = Date.now() + this.waitMs;
        for (;;) {
          const left = await s.query(`SELECT 1 FROM pg_stat_activity WHERE ${match}`, [b.pid, b.startedUs]);
          if (left.rowCount === 0) return true;
          if (Date.now() > end) return false;
          await sleep(100);
        }
      } catch {
        await this.close();
      }
    }
    return false;
  }

  private async connect(): Promise<pg.Client> {
    const c = new pg.Client({
      ...pgClientConfig(this.target),
      connectionTimeoutMillis: QUERY_TIMEOUT_MS,
      query_timeout: QUERY_TIMEOUT_MS,
      application_name: 'betterpg-webhook-stopper',
    });
    c.on('error', () => {}); // the branch restarting under it
    try {
      await c.connect();
      return c;
    } catch (e) {
      await c.end().catch(() => {});
      throw e;
    }
  }
}

/**
 * SQL migrations without running the PR's code on the database box: the files fetched by
 * migration-files.ts are applied in name order, each in its own transaction together with its row in
 * `betterpg.migrations`, so a later push applies only files not recorded yet. The first failing file
 * is rolled back and stops the run.
 *
 * Each file has a time limit kept by the receiver, not by a server setting the file could change:
 * past it, the file's backend is ended from outside (backend-stopper.ts) and the file counts as
 * failed, rolled back. Result rows are thrown away as they arrive, so a file that selects gigabytes
 * does not fill the receiver's memory.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import { describe } from '../../agent/errors.js';
import { pgClientConfig, type PgTarget } from '../../shared/pg-config.js';
import { backendOf, BackendStopper, type Backend, type StopOutcome } from './backend-stopper.js';
import type { MigrationSummary } from './comment.js';
import type { MigrationFile } from './migration-files.js';

export type { MigrationFile } from './migration-files.js';

/** The record of what was applied on a branch; its own schema keeps it out of the app's `public`. */
export const MIGRATIONS_TABLE = 'betterpg.migrations';

/** The branch could not be reached or went away mid-way: retry the job, do not blame the SQL. */
export class MigrationConnectionError extends Error {
  override name = 'MigrationConnectionError';
}

// Class 08 (connection exception), 57P01-57P03 (shutdown, cannot connect now), 53300 (too many connections).
const CONNECTION_SQLSTATE = /^(08|57P0[1-3]|53300)/;

function isConnectionProblem(e: unknown): boolean {
  const err = e as { code?: unknown; message?: unknown };
  if (typeof err?.code === 'string') {
    if (CONNECTION_SQLSTATE.test(err.code)) return true;
    if (/^E[A-Z]+$/.test(err.code)) return true; // ECONNREFUSED, ECONNRESET, ETIMEDOUT, ...
  }
  return typeof err?.message === 'string' && /Connection terminated|connection timeout/i.test(err.message);
}

/** A PostgreSQL error as the lines a developer wants to see, with the line of the file it points at. */
export function describeSqlError(e: unknown, sql: string): string {
  const err = e as {
    message?: string;
    code?: string;
    detail?: string;
    hint?: string;
    position?: string;
    where?: string;
  };
  const out = [`ERROR: ${err.message ?? String(e)}${err.code ? ` (SQLSTATE ${err.code})` : ''}`];
  const pos = Number(err.position);
  if (Number.isInteger(pos) && pos > 0) {
    const before = sql.slice(0, pos - 1);
    const line = before.split('\n').length;
    const text = sql.split('\n')[line - 1] ?? '';
    out.push(`LINE ${line}: ${text.trim()}`);
  }
  if (err.detail) out.push(`DETAIL: ${err.detail}`);
  if (err.hint) out.push(`HINT: ${err.hint}`);
  if (err.where) out.push(`CONTEXT: ${err.where}`);
  return out.join('\n');
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** A query whose rows are dropped as they arrive (a migration's SELECTs are of no use here). */
export class RowlessQuery extends pg.Query {
  handleDataRow(): void {}
}

/** A query ran past its deadline, and the receiver ended it: `how`, or the error that stopped that. */
class OverTime extends Error {
  constructor(
    readonly how: StopOutcome | Error,
    /** performance.now() when the deadline passed. */
    readonly at: number,
  ) {
    super(how instanceof Error ? how.message : how);
  }
}

export interface ApplyOptions {
  commit: string;
  timeoutSeconds: number;
  /** The last resort for a backend that outlives its time limit: the agent restarts the branch. */
  restartBranch: () => Promise<void>;
}

/**
 * Applies the files not recorded on the branch yet, on `target` (the branch's connection as the
 * agent gives it: through the router when it runs one, with libpq's sslmode=require, see
 * shared/pg-config.ts). SQL errors and files over the time limit end up in the summary (`failed`);
 * connection problems throw `MigrationConnectionError` so that the job is retried.
 */
export async function applyMigrations(
  target: PgTarget,
  path: string,
  files: MigrationFile[],
  opts: ApplyOptions,
): Promise<MigrationSummary> {
  const summary: MigrationSummary = { path, applied: [], alreadyApplied: [], changed: [] };
  const limitMs = Math.round(opts.timeoutSeconds * 1000);
  const client = new pg.Client({
    ...pgClientConfig(target),
    connectionTimeoutMillis: 15_000,
    application_name: 'betterpg-webhook',
  });
  // An error event without a listener would crash the process (the server ending the session).
  client.on('error', () => {});
  const stopper = new BackendStopper(target, opts.restartBranch);
  let backend: Backend | undefined;

  /**
   * One query that must end by `deadline` (epoch ms): past it, the backend is ended and OverTime
   * thrown. Its rows are dropped unless `keepRows`.
   */
  const limited = <R extends pg.QueryResultRow = pg.QueryResultRow>(
    deadline: number,
    text: string,
    values?: unknown[],
    keepRows = false,
  ): Promise<R[]> =>
    new Promise<R[]>((resolve, reject) => {
      let over = false;
      const timer = setTimeout(
        () => {
          over = true;
          const at = performance.now();
          // The stopper ends the backend; the query then fails with the connection, and we say why.
          void stopper.stop(backend!).then(
            (how) => reject(new OverTime(how, at)),
            (e) => reject(new OverTime(e as Error, at)),
          );
        },
        Math.max(0, deadline - Date.now()),
      );
      const Query = keepRows ? pg.Query : RowlessQuery;
      client.query(
        new Query<R>(
          { text, ...(values ? { values } : {}) },
          (err: Error | undefined, res: { rows: R[] } | undefined) => {
            if (over) return; // the stopper's outcome decides
            clearTimeout(timer);
            if (err) reject(err);
            else resolve(res?.rows ?? []);
          },
        ),
      );
    });

  try {
    await client.connect();
    backend = await backendOf(client);
    await stopper.open();
    const setup = Date.now() + limitMs;
    // Should the receiver die mid-file, the backend notices its client gone within seconds, not
    // after the file (PostgreSQL 14 and later; a file can turn it off, but then it is the time limit's).
    await limited(setup, 'SET client_connection_check_interval = 2000').catch((e: unknown) => {
      if (e instanceof OverTime) throw e;
    });
    await limited(
      setup,
      `CREATE SCHEMA IF NOT EXISTS betterpg;
      CREATE TABLE IF NOT EXISTS ${MIGRATIONS_TABLE} (
        name text PRIMARY KEY,
        sha256 text NOT NULL,
        commit text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
      )`,
    );
    const done = new Map(
      (
        await limited<{ name: string; sha256: string }>(
          setup,
          `SELECT name, sha256 FROM ${MIGRATIONS_TABLE}`,
          undefined,
          true,
        )
      ).map((r) => [r.name, r.sha256]),
    );
    for (const f of files) {
      const hash = sha256(f.sql);
      const before = done.get(f.name);
      if (before !== undefined) {
        summary.alreadyApplied.push(f.name);
        if (before !== hash) summary.changed.push(f.name);
        continue;
      }
      const t0 = performance.now();
      // One limit for the file and its record together.
      const deadline = Date.now() + limitMs;
      try {
        await limited(deadline, 'BEGIN');
        // The simple query protocol: a file may hold many statements. A BEGIN/COMMIT inside it ends our
        // transaction early (README): keep files free of them.
        await limited(deadline, f.sql);
        await limited(deadline, `INSERT INTO ${MIGRATIONS_TABLE} (name, sha256, commit) VALUES ($1, $2, $3)`, [
          f.name,
          hash,
          opts.commit,
        ]);
        await limited(deadline, 'COMMIT');
      } catch (e) {
        if (e instanceof OverTime) {
          const secs = Math.round((e.at - t0) / 1000);
          const how =
            e.how === 'terminated'
              ? 'its backend was terminated, and the file was rolled back'
              : e.how === 'restarted'
                ? 'its backend did not end when told to, so the branch was restarted, and the file was rolled back'
                : `ending its backend failed (restarting the branch: ${describe(e.how)}); restart the branch by hand`;
          summary.failed = {
            name: f.name,
            output: `stopped after ${secs} s: over the limit of ${opts.timeoutSeconds} s per file (migrations.timeoutSeconds); ${how}`,
            timedOut: true,
          };
          return summary;
        }
        if (isConnectionProblem(e)) throw e;
        await client.query('ROLLBACK').catch(() => {});
        summary.failed = { name: f.name, output: describeSqlError(e, f.sql) };
        return summary;
      }
      summary.applied.push(f.name);
    }
    return summary;
  } catch (e) {
    if (e instanceof OverTime)
      throw new MigrationConnectionError(
        `the branch's PostgreSQL did not answer within ${opts.timeoutSeconds} s while preparing ${MIGRATIONS_TABLE}`,
      );
    if (isConnectionProblem(e))
      throw new MigrationConnectionError(`cannot reach the branch's PostgreSQL: ${(e as Error).message}`, { cause: e });
    throw e;
  } finally {
    await stopper.close();
    await client.end().catch(() => {});
  }
}

/**
 * SQL migrations without running the PR's code on the database box: the `*.sql` files of the
 * configured folder are read at the PR's head commit through the contents API and applied in name
 * order, each in its own transaction together with its row in `betterpg.migrations`, so a later
 * push applies only files not recorded yet. The first failing file is rolled back and stops the run.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import type { MigrationSummary } from './comment.js';
import type { RepoApi } from './github.js';

export interface MigrationFile {
  name: string;
  sql: string;
}

/** The record of what was applied on a branch; its own schema keeps it out of the app's `public`. */
export const MIGRATIONS_TABLE = 'betterpg.migrations';

/** The folder's `*.sql` files at `ref`, sorted by name (code-point order: `001_` < `002_` < `010_`); null if no folder. */
export async function fetchMigrations(gh: RepoApi, path: string, ref: string): Promise<MigrationFile[] | null> {
  const entries = await gh.listDir(path, ref);
  if (entries === null) return null;
  const names = entries
    .filter((e) => e.type === 'file' && e.name.toLowerCase().endsWith('.sql'))
    .map((e) => e.name)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const files: MigrationFile[] = [];
  for (const name of names) files.push({ name, sql: await gh.readFile(`${path}/${name}`, ref) });
  return files;
}

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
  const err = e as { message?: string; code?: string; detail?: string; hint?: string; position?: string; where?: string };
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

/**
 * Applies the files not recorded on the branch yet. SQL errors end up in the summary (`failed`);
 * connection problems throw `MigrationConnectionError` so that the job is retried.
 */
export async function applyMigrations(uri: string, path: string, files: MigrationFile[], opts: { commit: string; timeoutSeconds: number }): Promise<MigrationSummary> {
  const summary: MigrationSummary = { path, applied: [], alreadyApplied: [], changed: [] };
  const client = new pg.Client({ connectionString: uri, connectionTimeoutMillis: 15_000, application_name: 'betterpg-webhook' });
  // An error event without a listener would crash the process (the server ending the session).
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query(`CREATE SCHEMA IF NOT EXISTS betterpg;
      CREATE TABLE IF NOT EXISTS ${MIGRATIONS_TABLE} (
        name text PRIMARY KEY,
        sha256 text NOT NULL,
        commit text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
      )`);
    const done = new Map((await client.query<{ name: string; sha256: string }>(`SELECT name, sha256 FROM ${MIGRATIONS_TABLE}`)).rows.map((r) => [r.name, r.sha256]));
    for (const f of files) {
      const hash = sha256(f.sql);
      const before = done.get(f.name);
      if (before !== undefined) {
        summary.alreadyApplied.push(f.name);
        if (before !== hash) summary.changed.push(f.name);
        continue;
      }
      await client.query('BEGIN');
      try {
        await client.query(`SET LOCAL statement_timeout = ${Math.round(opts.timeoutSeconds * 1000)}`);
        // The simple query protocol: a file may hold many statements. A BEGIN/COMMIT inside it ends our
        // transaction early (README): keep files free of them.
        await client.query(f.sql);
        await client.query(`INSERT INTO ${MIGRATIONS_TABLE} (name, sha256, commit) VALUES ($1, $2, $3)`, [f.name, hash, opts.commit]);
        await client.query('COMMIT');
      } catch (e) {
        if (isConnectionProblem(e)) throw e;
        await client.query('ROLLBACK').catch(() => {});
        summary.failed = { name: f.name, output: describeSqlError(e, f.sql) };
        return summary;
      }
      summary.applied.push(f.name);
    }
    return summary;
  } catch (e) {
    if (isConnectionProblem(e)) throw new MigrationConnectionError(`cannot reach the branch's PostgreSQL: ${(e as Error).message}`, { cause: e });
    throw e;
  } finally {
    await client.end().catch(() => {});
  }
}

import { execFile } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { BpgError, describe, invalid } from '../errors.js';
import type { PgTarget } from '../drivers/interfaces.js';
import type { BranchRecord } from '../state/schema.js';
import type { EngineContext } from './context.js';
import { runOnData, withTempServer } from './temp-server.js';

/**
 * Masking: the admin's SQL file and/or command, run on a freshly imported copy before it becomes
 * main (on import and on every refresh), then the clean-up that leaves no original value anywhere
 * a branch can read. A branch is a ZFS clone of main's files, so "anywhere" is every byte of every
 * file in main's data directory when its snapshot is taken, and its WAL archive:
 *
 *  - the copy is built and masked with no WAL archiving (the archive only ever sees WAL written
 *    after the clean-up), on a server with no network, autovacuum off and no logging collector;
 *  - after masking, every statistic is deleted and recomputed (`pg_statistic` keeps most-common
 *    values; ANALYZE alone leaves a table's old row when the table is now empty), then VACUUM FULL
 *    in every database rewrites every table, TOAST table, index, large object and catalog
 *    (pg_statistic included) into new files: no dead tuple, no free space in a page and no index
 *    entry of the old values is left; the old files are unlinked (ZFS frees their blocks, and the
 *    dataset has no snapshot yet that could keep them);
 *  - CHECKPOINT and a clean (fast) shutdown, then `pg_resetwal` (safe on a cleanly shut down
 *    cluster: nothing in pg_wal is needed) removes every WAL segment, whose full-page images and
 *    inserts hold the pre-masking rows (recycled segments would keep old bytes too).
 *
 * Tested by grepping the raw bytes of every file of main's dataset, a new branch's dataset and
 * main's WAL archive for the original values (agent/test/refresh.test.ts).
 */

/** What masks a copy: SQL (from a file) run in the database, and/or a command (argv) run on the host. */
export interface MaskingSpec {
  /** Absolute path of a SQL file. */
  sql: string | null;
  /** A program and its arguments, run with PGHOST/PGPORT/PGUSER/PGDATABASE set to the copy. */
  command: string[] | null;
}

/** The largest masking SQL file read. */
const MAX_SQL_BYTES = 16 * 1024 * 1024;
/** How long a masking command may run. */
const COMMAND_TIMEOUT_MS = 6 * 60 * 60 * 1000;

/** A masking spec with its SQL file's path made absolute and checked now (one clear line if unreadable). */
export async function checkMasking(m: MaskingSpec): Promise<MaskingSpec> {
  let sql: string | null = null;
  if (m.sql !== null) {
    sql = isAbsolute(m.sql) ? m.sql : resolve(m.sql);
    const st = await stat(sql).catch(() => null);
    if (!st || !st.isFile()) throw invalid(`masking SQL file ${sql} does not exist or is not a file`);
    if (st.size > MAX_SQL_BYTES) throw invalid(`masking SQL file ${sql} is larger than 16 MiB`);
  }
  if (m.command !== null && (m.command.length === 0 || !m.command[0]))
    throw invalid('masking command must name a program');
  return { sql, command: m.command };
}

export const hasMasking = (m: MaskingSpec | null | undefined): m is MaskingSpec =>
  !!m && (m.sql !== null || (m.command !== null && m.command.length > 0));

export interface MaskTarget {
  record: BranchRecord;
  image: string;
  pgdata: string;
  dataDir: string;
  /** The PostgreSQL database the masking runs in. */
  pgDatabase: string;
  /** Names this run's temporary container and socket folder. */
  tag: string;
}

/**
 * Masks a cleanly shut down cluster in `dataDir` and scrubs it (see above); leaves it cleanly shut
 * down with fresh WAL. A failing SQL statement or a command exiting non-zero throws (the caller
 * undoes: nothing of the copy becomes main).
 */
export async function maskCluster(ctx: EngineContext, t: MaskTarget, m: MaskingSpec): Promise<void> {
  const sqlText = m.sql !== null ? await readFile(m.sql, 'utf8') : null;
  await withTempServer(ctx, t, async (server) => {
    if (sqlText !== null) {
      ctx.log.info(`masking: running ${m.sql}`);
      await ctx.pg
        .withClient(server.target(t.pgDatabase), async (c) => {
          // The agent's sessions start with search_path=pg_catalog; the masking SQL is the admin's, run as on any server.
          await c.query(`SET statement_timeout = 0; SET search_path = "$user", public`);
          // One simple-protocol query: its statements run in one implicit transaction (unless the file has its own BEGIN/COMMIT).
          await c.query(sqlText);
        })
        .catch((e) => {
          throw new BpgError('failed', `masking SQL ${m.sql} failed: ${describe(e)}`, { cause: e });
        });
    }
    if (m.command !== null && m.command.length) {
      ctx.log.info(`masking: running ${m.command[0]}`);
      await runCommand(m.command, {
        PGHOST: server.sockDir,
        PGPORT: '5432',
        PGUSER: ctx.cfg.postgres.superuser,
        PGDATABASE: t.pgDatabase,
      });
    }
    await scrub(ctx, server.target.bind(server));
  });
  // The cluster is cleanly shut down: its WAL holds the pre-masking rows and is not needed.
  await runOnData(ctx, t, 'pg_resetwal', ['-D', t.pgdata]);
}

/** Statistics recomputed from the masked rows, every table rewritten, a checkpoint. */
async function scrub(ctx: EngineContext, target: (db: string) => PgTarget): Promise<void> {
  const dbs = await ctx.pg.withClient(target('postgres'), async (c) =>
    (await c.query<{ d: string }>('SELECT datname AS d FROM pg_database WHERE datallowconn ORDER BY 1')).rows.map(
      (r) => r.d,
    ),
  );
  for (const d of dbs) {
    ctx.log.info(`masking: rewriting database ${d} (statistics, VACUUM FULL)`);
    await ctx.pg.withClient(target(d), async (c) => {
      await c.query('SET statement_timeout = 0');
      await c.query('DELETE FROM pg_catalog.pg_statistic');
      await c.query('DELETE FROM pg_catalog.pg_statistic_ext_data');
      await c.query('ANALYZE');
      await c.query('VACUUM (FULL, FREEZE)');
      // pg_statistic rows written by ANALYZE hold masked values only; VACUUM FULL rewrote the old ones away.
    });
  }
  await ctx.pg.withClient(target('postgres'), (c) => c.query('CHECKPOINT'));
}

/** A masking command: argv (no shell), the copy's connection in the environment, its output on our stderr. */
function runCommand(argv: string[], env: Record<string, string>): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    execFile(
      argv[0]!,
      argv.slice(1),
      {
        timeout: COMMAND_TIMEOUT_MS,
        maxBuffer: 64 * 1024 * 1024,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', ...env },
      },
      (err, _stdout, stderr) => {
        if (!err) return resolvePromise();
        const last = String(stderr).trim().split('\n').filter(Boolean).pop();
        const code = (err as { code?: unknown }).code;
        reject(
          new BpgError(
            'failed',
            `masking command ${argv[0]} failed (${typeof code === 'number' ? `exit code ${code}` : describe(err)})${last ? `: ${last}` : ''}`,
          ),
        );
      },
    );
  });
}

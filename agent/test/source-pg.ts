import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

/**
 * A source PostgreSQL for import tests: a container of the test image that the agent does NOT
 * manage (no io.betterpg labels), on Docker's default bridge, with password (SCRAM) logins and
 * replication allowed from anywhere, seeded with pgbench tables, another schema, a role and a
 * large object. The agent's import containers reach it at its bridge address, and so does the test.
 */

export interface SourcePg {
  name: string;
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /** postgres://user@host:5432/database (no password). */
  url: string;
  /** The same with the password in it. */
  urlWithPassword: string;
  query<T extends pg.QueryResultRow = Record<string, unknown>>(
    sql: string,
    params?: unknown[],
    db?: string,
  ): Promise<T[]>;
  /** Runs pgbench -i -s <scale> inside the source's container (no password needed: local trust). */
  pgbenchInit(scale: number): void;
  stop(): void;
}

const docker = (args: string[]) =>
  execFileSync('docker', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();

export async function startSourcePg(
  o: { image?: string; database?: string; password?: string; name?: string } = {},
): Promise<SourcePg> {
  const image = o.image ?? process.env.BPG_IMAGE ?? 'betterpg/postgres:15-local';
  const name = o.name ?? `bpgtest-source-${randomBytes(4).toString('hex')}`;
  // A password with characters that need escaping in a URL and in a passfile.
  const password = o.password ?? `S3cr:t\\${randomBytes(6).toString('hex')}@/%`;
  const database = o.database ?? 'app';
  const dir = mkdtempSync(join(tmpdir(), 'bpg-source-'));
  chmodSync(dir, 0o755);
  const data = join(dir, 'data');
  execFileSync('mkdir', ['-m', '0700', data]);
  chownSync(data, 999, 999);
  writeFileSync(join(dir, 'pw'), password + '\n', { mode: 0o600 });
  chownSync(join(dir, 'pw'), 999, 999);
  const stop = () => {
    try {
      docker(['rm', '-f', '-v', name]);
    } catch {
      // already gone
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    docker([
      'run',
      '--rm',
      '--network',
      'none',
      '--user',
      '999:999',
      '-v',
      `${dir}:/src`,
      '--entrypoint',
      'initdb',
      image,
      '-D',
      '/src/data',
      '-U',
      'postgres',
      '--pwfile=/src/pw',
      '--auth-local=trust',
      '--auth-host=scram-sha-256',
      '-E',
      'UTF8',
      '--locale=C',
    ]);
    writeFileSync(
      join(data, 'pg_hba.conf'),
      'local all all trust\nhost all all 0.0.0.0/0 scram-sha-256\nhost replication all 0.0.0.0/0 scram-sha-256\n',
    );
    docker([
      'run',
      '-d',
      '--name',
      name,
      '--user',
      '999:999',
      '-v',
      `${dir}:/src`,
      '--entrypoint',
      'postgres',
      image,
      '-D',
      '/src/data',
      '-c',
      'listen_addresses=*',
      '-c',
      'unix_socket_directories=/tmp',
      '-c',
      'wal_level=replica',
      '-c',
      'max_wal_senders=5',
    ]);
    const host = docker(['inspect', '-f', '{{.NetworkSettings.IPAddress}}', name]);
    if (!host) throw new Error(`source container ${name} has no bridge address`);
    const conn = (db = database) => ({
      host,
      port: 5432,
      user: 'postgres',
      password,
      database: db,
      connectionTimeoutMillis: 5000,
    });
    const query = async <T extends pg.QueryResultRow>(sql: string, params: unknown[] = [], db?: string) => {
      const c = new pg.Client(conn(db));
      await c.connect();
      try {
        return (await c.query<T>(sql, params)).rows;
      } finally {
        await c.end();
      }
    };
    for (let i = 0; ; i++) {
      try {
        await query('SELECT 1', [], 'postgres');
        break;
      } catch (e) {
        if (i > 150) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    await query(`CREATE DATABASE ${database}`, [], 'postgres');
    const user = 'postgres';
    const enc = encodeURIComponent;
    return {
      name,
      host,
      port: 5432,
      user,
      password,
      database,
      url: `postgres://${user}@${host}:5432/${database}`,
      urlWithPassword: `postgres://${user}:${enc(password)}@${host}:5432/${database}`,
      query,
      pgbenchInit: (scale) => {
        docker([
          'exec',
          '--user',
          '999:999',
          name,
          'pgbench',
          '-h',
          '/tmp',
          '-U',
          'postgres',
          '-i',
          '-q',
          '-s',
          String(scale),
          database,
        ]);
      },
      stop,
    };
  } catch (e) {
    stop();
    throw e;
  }
}

/** Seeds what an import must carry: pgbench tables, another schema with a view and a sequence, a role owning a table, a large object. */
export async function seedSource(src: SourcePg, scale = 1): Promise<void> {
  src.pgbenchInit(scale);
  await src.query(`
    CREATE ROLE app_reader LOGIN PASSWORD 'reader-pw-not-copied';
    CREATE SCHEMA crm;
    CREATE TABLE crm.customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE, note text);
    INSERT INTO crm.customers (email, note) SELECT 'user' || g || '@example.com', repeat('x', g % 50) FROM generate_series(1, 500) g;
    CREATE VIEW crm.recent AS SELECT * FROM crm.customers WHERE id > 400;
    ALTER TABLE crm.customers OWNER TO app_reader;
    GRANT SELECT ON pgbench_accounts TO app_reader;
    SELECT lo_from_bytea(4242, 'large object bytes'::bytea);
  `);
}

/** A digest of what the source holds, to compare with main after an import. */
export const CONTENT_SQL = `
  SELECT
    (SELECT md5(string_agg(a::text, ',' ORDER BY aid)) FROM pgbench_accounts a) AS accounts,
    (SELECT md5(string_agg(b::text, ',' ORDER BY bid)) FROM pgbench_branches b) AS branches,
    (SELECT count(*)::int FROM pgbench_history) AS history,
    (SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM crm.customers c) AS customers,
    (SELECT count(*)::int FROM crm.recent) AS recent,
    (SELECT last_value::int FROM crm.customers_id_seq) AS seq,
    (SELECT encode(lo_get(4242), 'escape')) AS lo`;

/**
 * A source PostgreSQL for the import and refresh benchmarks: a container of the image that no agent
 * manages, on Docker's default bridge, password logins and replication allowed, filled by `pgbench -i`.
 */
import { chmodSync, chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { IMAGE } from './agent.mjs';
import { must, run } from './bench.mjs';

/**
 * Starts container `name` with its cluster in `dir` (postgres's password `password`, given to initdb
 * in a file, never as an argument) and fills database `bench` at the pgbench scale that gives about
 * `sizeMb` of data. Returns its URL (no password), the scale, its size in bytes and its account rows.
 */
export async function startSource({ dir, name, password, sizeMb, log }) {
  mkdirSync(join(dir, 'data'), { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o755);
  chownSync(join(dir, 'data'), 999, 999);
  writeFileSync(join(dir, 'pw'), password + '\n', { mode: 0o600 });
  chownSync(join(dir, 'pw'), 999, 999);
  const docker = (args) => must('docker', args);
  await docker([
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
    IMAGE,
    '-D',
    '/src/data',
    '-U',
    'postgres',
    '--pwfile=/src/pw',
    '--auth-local=trust',
    '--auth-host=scram-sha-256',
  ]);
  writeFileSync(
    join(dir, 'data', 'pg_hba.conf'),
    'local all all trust\nhost all all 0.0.0.0/0 scram-sha-256\nhost replication all 0.0.0.0/0 scram-sha-256\n',
  );
  await docker([
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
    IMAGE,
    '-D',
    '/src/data',
    '-c',
    'listen_addresses=*',
    '-c',
    'unix_socket_directories=/tmp',
    '-c',
    'max_wal_size=4GB',
  ]);
  const host = (await docker(['inspect', '-f', '{{.NetworkSettings.IPAddress}}', name])).stdout.trim();
  for (let i = 0; ; i++) {
    const r = await run('docker', ['exec', name, 'pg_isready', '-h', '/tmp', '-q']);
    if (r.code === 0) break;
    if (i > 100) throw new Error('the source did not start');
    await new Promise((res) => setTimeout(res, 200));
  }
  // pgbench: scale 1 is about 15 MB of tables and indexes
  const scale = Math.max(1, Math.round(sizeMb / 15));
  log(`filling the source: pgbench -i -s ${scale} (about ${sizeMb} MB)`);
  await docker(['exec', name, 'createdb', '-h', '/tmp', '-U', 'postgres', 'bench']);
  await docker(['exec', name, 'pgbench', '-h', '/tmp', '-U', 'postgres', '-i', '-q', '-s', String(scale), 'bench']);
  const size = (
    await docker([
      'exec',
      name,
      'psql',
      '-h',
      '/tmp',
      '-U',
      'postgres',
      '-At',
      '-d',
      'bench',
      '-c',
      'SELECT pg_database_size(current_database())',
    ])
  ).stdout.trim();
  return { url: `postgres://postgres@${host}:5432/bench`, scale, bytes: Number(size), rows: scale * 100000 };
}

/** Removes the source container and its volumes (nothing if it is gone). */
export const stopSource = (name) => run('docker', ['rm', '-f', '-v', name]);

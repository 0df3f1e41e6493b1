import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContainerSpec, PgTarget } from '../drivers/interfaces.js';
import { hardening } from '../drivers/hardening.js';
import type { BranchRecord } from '../state/schema.js';
import { labels, ownerOf } from './containers.js';
import type { EngineContext } from './context.js';
import { mkdirOwned } from './datadir.js';
import { Layout } from './layout.js';

/**
 * A cluster started for the agent alone, before any branch can see it (masking, its clean-up):
 * no network at all, no WAL archiving, no logging collector, listening only on a Unix socket in a
 * folder of the agent's (`<stateDir>/tmp/sock-<tag>`) that the agent reaches as root. It is
 * stopped cleanly (a fast shutdown) and removed when `fn` ends, also when it fails.
 */
export interface TempServer {
  /** Where the agent connects (the socket folder as host, port 5432). */
  target(database: string): PgTarget;
  /** The socket folder on the host (PGHOST for a masking command). */
  sockDir: string;
}

const CONTAINER_SOCK = '/run/bpg-sock';

export function tempServerName(b: BranchRecord, tag: string): string {
  return `bpg-tmp-${b.id}-${tag}`;
}

export async function withTempServer<T>(
  ctx: EngineContext,
  o: { record: BranchRecord; image: string; pgdata: string; dataDir: string; tag: string },
  fn: (s: TempServer) => Promise<T>,
): Promise<T> {
  const name = tempServerName(o.record, o.tag);
  const sockDir = join(ctx.layout.tmpDir(), `sock-${o.tag}`);
  await mkdir(ctx.layout.tmpDir(), { recursive: true, mode: 0o700 });
  await rm(sockDir, { recursive: true, force: true });
  await mkdirOwned(sockDir, ownerOf(ctx), 0o700);
  const p = ctx.cfg.postgres;
  const spec: ContainerSpec = {
    name,
    image: o.image,
    user: `${p.uid}:${p.gid}`,
    entrypoint: ['postgres'],
    cmd: [
      '-D',
      o.pgdata,
      '-c',
      `data_directory=${o.pgdata}`,
      '-c',
      'listen_addresses=',
      '-c',
      `unix_socket_directories=${CONTAINER_SOCK}`,
      '-c',
      'port=5432',
      '-c',
      `hba_file=${Layout.containerHba}`,
      '-c',
      'archive_mode=off',
      '-c',
      'logging_collector=off',
      '-c',
      'log_statement=none',
      '-c',
      'log_min_error_statement=panic',
      '-c',
      'max_wal_size=4GB',
      '-c',
      'autovacuum=off',
    ],
    binds: [
      `${o.dataDir}:${o.pgdata}`,
      `${sockDir}:${CONTAINER_SOCK}`,
      `${ctx.layout.hbaFile()}:${Layout.containerHba}:ro`,
    ],
    labels: labels(ctx, o.record),
    memoryBytes: p.memory,
    shmSizeBytes: p.shmSize,
    stopTimeoutSeconds: p.stopTimeoutSeconds,
    restartPolicy: 'no',
    ...hardening(ctx.cfg, { oneShot: true }),
  };
  const server: TempServer = {
    sockDir,
    target: (database) => ({ host: sockDir, port: 5432, user: p.superuser, password: o.record.password, database }),
  };
  await ctx.docker.remove(name);
  try {
    await ctx.docker.create(spec);
    await ctx.docker.start(name);
    await ctx.pg.waitReady(server.target('postgres'), p.readyTimeoutSeconds * 1000, async () => {
      const st = await ctx.docker.state(name);
      return st?.running === true;
    });
    const out = await fn(server);
    // SIGINT (the stop signal of every container the driver makes): a fast shutdown, which ends with a shutdown checkpoint (a clean stop).
    await ctx.docker.stop(name, p.stopTimeoutSeconds);
    return out;
  } catch (e) {
    const tail = (await ctx.docker.logsTail(name, 5).catch(() => '')).trim().split('\n').pop();
    if (tail) ctx.log.debug(`temporary server ${name}: ${tail}`);
    throw e;
  } finally {
    await ctx.docker.remove(name).catch(() => {});
    await rm(sockDir, { recursive: true, force: true }).catch(() => {});
  }
}

/** A one-shot container of the image on a data directory (pg_resetwal, pg_controldata); no network. */
export async function runOnData(
  ctx: EngineContext,
  o: { record: BranchRecord; image: string; pgdata: string; dataDir: string; tag: string },
  entrypoint: string,
  args: string[],
): Promise<string> {
  const p = ctx.cfg.postgres;
  const res = await ctx.docker.runOnce({
    name: `bpg-once-${o.record.id}-${o.tag}`,
    image: o.image,
    user: `${p.uid}:${p.gid}`,
    entrypoint: [entrypoint],
    cmd: args,
    binds: [`${o.dataDir}:${o.pgdata}`],
    labels: labels(ctx, o.record),
    ...hardening(ctx.cfg, { oneShot: true }),
  });
  if (res.exitCode !== 0)
    throw new Error(
      `${entrypoint} exited with ${res.exitCode}: ${res.output.trim().split('\n').slice(-2).join(' / ')}`,
    );
  return res.output;
}

import type { Config } from '../config.js';
import type { BranchRecord, DatabaseRecord } from '../state/schema.js';

/** A branch as every face shows it (CLI --json, HTTP API). */
export interface BranchView {
  name: string;
  database: string;
  branch: string;
  parent: string | null;
  status: string;
  port: number;
  /**
   * How clients reach it: through the router when proxy.enabled (database `<db>@<branch>`,
   * sslmode=require with proxy.tls), else the branch's own port. `direct` is always the
   * branch's own port (for use on the box).
   */
  connection: Connection & {
    via: 'router' | 'direct';
    /** What `sslmode` the uri asks for (null: the client's default). */
    sslmode: 'require' | null;
    direct: Connection;
  };
  dataset: string;
  container: string;
  image: string;
  consistency: 'application' | 'crash' | null;
  /** The parent's structure without its rows (a fresh cluster), and the seed run after it. */
  schemaOnly: boolean;
  seed: { bytes: number; sha256: string } | null;
  createdAt: string;
  usedBytes: number | null;
  /** When housekeeping deletes it (null: never). */
  expiresAt: string | null;
  protected: boolean;
  lastActiveAt: string | null;
  /** Why a stopped branch is stopped ('idle': by the idle stop). */
  stoppedBy: 'user' | 'idle' | null;
  memoryBytes: number;
  cpus: number;
  /** ZFS quota of the branch's dataset (null: none), and whether it is (nearly) used up. */
  diskQuotaBytes: number | null;
  diskFull: boolean;
  /** The branch's WAL archive: bytes used, its quota, and whether it is full (archiving then fails). */
  walBytes: number | null;
  walQuotaBytes: number | null;
  walFull: boolean;
  /**
   * Which refresh of main the branch's data comes from (`bpg db refresh`): `generation` 0 is main as
   * created or imported; `current` is false for a branch made before main's latest refresh.
   */
  refresh?: { generation: number; current: boolean; refreshedAt: string | null };
}

export interface Connection {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  uri: string;
}

/** Space of one dataset (`zfs get used,available,quota`). */
export interface Space {
  used: number;
  available: number;
  quota: number | null;
}

/** Less than one WAL segment left under a quota: the next write fails with "Disk quota exceeded". */
const FULL_BELOW = 16 * 1024 * 1024;
const isFull = (s: Space | null) => s !== null && s.quota !== null && s.available < FULL_BELOW;

export interface DatabaseView {
  name: string;
  image: string;
  createdAt: string;
  branches: BranchView[];
}

export function branchView(
  cfg: Config,
  db: DatabaseRecord,
  b: BranchRecord,
  live: { status: string; disk: Space | null; wal: Space | null },
): BranchView {
  const user = cfg.postgres.superuser;
  const direct = connectionOf(cfg.postgres.publicHost, b.port, user, b.password, db.pgDatabase, null);
  const px = cfg.proxy;
  const connection = px.enabled
    ? {
        ...connectionOf(
          px.publicHost ?? cfg.postgres.publicHost,
          px.publicPort ?? listenPort(px.listen),
          user,
          b.password,
          routedDatabaseName(b.database, b.branch),
          px.tls ? 'require' : null,
        ),
        via: 'router' as const,
        sslmode: px.tls ? ('require' as const) : null,
        direct,
      }
    : { ...direct, via: 'direct' as const, sslmode: null, direct };
  return {
    name: `${b.database}/${b.branch}`,
    database: b.database,
    branch: b.branch,
    parent: b.parent,
    status: live.status,
    port: b.port,
    connection,
    dataset: b.dataset,
    container: b.container,
    image: b.image,
    consistency: b.origin?.consistency ?? null,
    schemaOnly: b.schemaOnly,
    seed: b.seed,
    createdAt: b.createdAt,
    usedBytes: live.disk?.used ?? null,
    expiresAt: b.expiresAt,
    protected: b.protected,
    lastActiveAt: b.lastActiveAt,
    stoppedBy: b.stoppedBy,
    memoryBytes: b.memory ?? cfg.postgres.memory,
    cpus: b.cpus ?? cfg.postgres.cpus,
    diskQuotaBytes: live.disk ? live.disk.quota : b.disk,
    diskFull: isFull(live.disk),
    walBytes: live.wal?.used ?? null,
    walQuotaBytes: live.wal ? live.wal.quota : cfg.postgres.walQuota,
    walFull: isFull(live.wal),
    refresh: {
      generation: b.generation,
      current: b.generation === db.generation,
      refreshedAt: db.refreshedAt,
    },
  };
}

/** The database name a client gives the router for a branch: `<db>@<branch>`. */
export function routedDatabaseName(database: string, branch: string): string {
  return `${database}@${branch}`;
}

function listenPort(listen: string): number {
  return Number(/:(\d+)$/.exec(listen)![1]);
}

function connectionOf(
  host: string,
  port: number,
  user: string,
  password: string,
  database: string,
  sslmode: 'require' | null,
): Connection {
  const hostInUri = host.includes(':') ? `[${host}]` : host;
  const query = sslmode ? `?sslmode=${sslmode}` : '';
  // '@' stays literal in the path (RFC 3986 allows it there; libpq and WHATWG URLs read it so):
  // node-postgres decodes the path with decodeURI, which leaves '%40' as it is, and would ask the
  // router for database "api%40pr-1".
  const path = encodeURIComponent(database).replace(/%40/g, '@');
  return {
    host,
    port,
    user,
    password,
    database,
    uri: `postgresql://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${hostInUri}:${port}/${path}${query}`,
  };
}

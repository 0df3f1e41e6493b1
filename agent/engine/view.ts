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
  connection: { host: string; port: number; user: string; password: string; database: string; uri: string };
  dataset: string;
  container: string;
  image: string;
  consistency: 'application' | 'crash' | null;
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
  const host = cfg.postgres.publicHost;
  const user = cfg.postgres.superuser;
  const hostInUri = host.includes(':') ? `[${host}]` : host;
  return {
    name: `${b.database}/${b.branch}`,
    database: b.database,
    branch: b.branch,
    parent: b.parent,
    status: live.status,
    port: b.port,
    connection: {
      host,
      port: b.port,
      user,
      password: b.password,
      database: db.pgDatabase,
      uri: `postgresql://${encodeURIComponent(user)}:${encodeURIComponent(b.password)}@${hostInUri}:${b.port}/${encodeURIComponent(db.pgDatabase)}`,
    },
    dataset: b.dataset,
    container: b.container,
    image: b.image,
    consistency: b.origin?.consistency ?? null,
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
  };
}

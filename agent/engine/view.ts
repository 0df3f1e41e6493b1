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
}

export interface DatabaseView {
  name: string;
  image: string;
  createdAt: string;
  branches: BranchView[];
}

export function branchView(cfg: Config, db: DatabaseRecord, b: BranchRecord, live: { status: string; usedBytes: number | null }): BranchView {
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
    usedBytes: live.usedBytes,
    expiresAt: b.expiresAt,
    protected: b.protected,
    lastActiveAt: b.lastActiveAt,
    stoppedBy: b.stoppedBy,
    memoryBytes: b.memory ?? cfg.postgres.memory,
    cpus: b.cpus ?? cfg.postgres.cpus,
  };
}

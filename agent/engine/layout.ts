import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { Config } from '../config.js';

/**
 * Where each thing lives. Names cannot collide: `/` and `.` never occur inside a database or
 * branch name, so `a-b/c` and `a/b-c` map to different datasets and containers.
 */
export class Layout {
  constructor(private readonly cfg: Config) {}

  get root(): string {
    return `${this.cfg.zfs.pool}/${this.cfg.zfs.datasetBase}`;
  }
  databaseDataset(db: string): string {
    return `${this.root}/${db}`;
  }
  branchDataset(db: string, branch: string): string {
    return `${this.root}/${db}/${branch}`;
  }
  /**
   * Container names carry a short hash of the root, so two agents on one host (different
   * datasetBase) never want the same name; the driver also refuses containers labelled for
   * another root. Names recorded before (`bpg-<db>.<branch>`) stay as they are.
   */
  container(db: string, branch: string): string {
    return `bpg-${db}.${branch}.${this.rootTag}`;
  }
  /** 8 hex digits of sha256(root). */
  get rootTag(): string {
    return createHash('sha256').update(this.root).digest('hex').slice(0, 8);
  }
  /**
   * WAL archives: one dataset per branch under `<root>/_wal` (`_` never starts a database name),
   * keyed by the branch's stable id so renames never move them, each with a quota
   * (postgres.walQuota), mounted under the state folder: `<stateDir>/wal/<id>`.
   */
  get walRoot(): string {
    return `${this.root}/${WAL_ROOT_NAME}`;
  }
  walDataset(id: string): string {
    return `${this.walRoot}/${id}`;
  }
  /**
   * Empty clusters, one per image (and superuser), that schema-only branches are cloned from:
   * `<root>/_template/<tag>` (`_` never starts a database name), each with the snapshot `@empty`.
   */
  get templateRoot(): string {
    return `${this.root}/${TEMPLATE_ROOT_NAME}`;
  }
  templateDataset(image: string): string {
    const tag = createHash('sha256')
      .update(`${image}\n${this.cfg.postgres.superuser}\n${this.cfg.postgres.uid}:${this.cfg.postgres.gid}`)
      .digest('hex')
      .slice(0, 12);
    return `${this.templateRoot}/${tag}`;
  }
  /** Where the WAL root is mounted; each branch's archive is the folder of its id in it. */
  walMount(): string {
    return join(this.cfg.stateDir, 'wal');
  }
  walDir(id: string): string {
    return join(this.walMount(), id);
  }
  /** Where WAL folders of an install from before WAL datasets wait while they are migrated. */
  legacyWalDir(): string {
    return join(this.cfg.stateDir, 'wal-legacy');
  }
  /** The client authentication file every branch uses, mounted read-only (outside any data directory). */
  hbaFile(): string {
    return join(this.cfg.stateDir, 'pg_hba.conf');
  }
  tmpDir(): string {
    return join(this.cfg.stateDir, 'tmp');
  }
  /** The data directory inside a branch's mounted dataset. */
  static dataDir(mountpoint: string): string {
    return join(mountpoint, 'data');
  }
  /** Where a branch's own archive appears inside its container. */
  static readonly containerArchive = '/var/lib/postgresql/wal-archive';
  /** Where the agent's pg_hba.conf appears inside a container (read-only). */
  static readonly containerHba = '/etc/betterpg/pg_hba.conf';
}

/** The dataset under the root that holds the empty template clusters (schema-only branches). */
export const TEMPLATE_ROOT_NAME = '_template';

/** The dataset under the root that holds every branch's WAL archive dataset. */
export const WAL_ROOT_NAME = '_wal';

export const ZFS_PROP = {
  managed: 'betterpg:managed',
  database: 'betterpg:database',
  branch: 'betterpg:branch',
  id: 'betterpg:id',
  operation: 'betterpg:operation',
  consistency: 'betterpg:consistency',
  /** On a WAL archive dataset: the id of the branch whose archive it is ('root' on `_wal` itself). */
  wal: 'betterpg:wal',
} as const;

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
  /** Per-branch WAL archive on the host, outside every dataset; keyed by the branch's stable id. */
  walDir(id: string): string {
    return join(this.cfg.stateDir, 'wal', id);
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
}

export const ZFS_PROP = {
  managed: 'betterpg:managed',
  database: 'betterpg:database',
  branch: 'betterpg:branch',
  id: 'betterpg:id',
  operation: 'betterpg:operation',
  consistency: 'betterpg:consistency',
} as const;

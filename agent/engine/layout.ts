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
  container(db: string, branch: string): string {
    return `bpg-${db}.${branch}`;
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

import { z } from 'zod';

export const Consistency = z.enum(['application', 'crash']);
export type Consistency = z.infer<typeof Consistency>;

export const BranchStatus = z.enum(['creating', 'running', 'stopped', 'deleting']);
export type BranchStatus = z.infer<typeof BranchStatus>;

/** An operation in flight on a branch: the journal entry that keeps two operations apart. */
export const Operation = z.object({
  kind: z.string(),
  pid: z.number().int(),
  /** The boot and process start time of the owner (see state/owner.ts): a PID alone can be reused. */
  boot: z.string().optional(),
  pidStart: z.string().optional(),
  startedAt: z.string(),
  /** What recovery needs to finish or undo it (names of temporary datasets, the phase reached). */
  data: z.record(z.string(), z.string()).optional(),
});
export type Operation = z.infer<typeof Operation>;

export const BranchRecord = z.object({
  /** Stable id: names the WAL folder, so renames never move archives. */
  id: z.string().regex(/^[a-f0-9]{16}$/),
  database: z.string(),
  branch: z.string(),
  parent: z.string().nullable(),
  status: BranchStatus,
  port: z.number().int(),
  password: z.string(),
  image: z.string(),
  dataset: z.string(),
  container: z.string(),
  /** Snapshot of the parent this branch was cloned from (null for main). */
  origin: z.object({ snapshot: z.string(), consistency: Consistency }).nullable(),
  createdAt: z.string(),
  operation: Operation.nullable(),
  /** The housekeeping loop deletes the branch after this moment (null: never). */
  expiresAt: z.string().nullable().default(null),
  /** Never deleted by expiry nor stopped when idle. */
  protected: z.boolean().default(false),
  /** Last time a client was seen connected (idle stop counts from here, or from the last start). */
  lastActiveAt: z.string().nullable().default(null),
  /** Why a stopped branch is stopped: by someone, or by the idle stop. */
  stoppedBy: z.enum(['user', 'idle']).nullable().default(null),
  /** Container limits for this branch (null: postgres.memory / postgres.cpus from the config). */
  memory: z.number().int().positive().nullable().default(null),
  cpus: z.number().positive().nullable().default(null),
  /** ZFS quota of the branch's dataset in bytes (null: none). */
  disk: z.number().int().positive().nullable().default(null),
});
export type BranchRecord = z.infer<typeof BranchRecord>;

/** What a clone of an application-consistent snapshot needs besides the snapshot itself. */
export const BackupInfo = z.object({
  labelfile: z.string(),
  spcmapfile: z.string(),
  firstSegment: z.string(),
  lastSegment: z.string(),
});
export type BackupInfo = z.infer<typeof BackupInfo>;

/** A kept snapshot of a branch (for --from-snapshot and point-in-time recovery). */
export const SnapshotRecord = z.object({
  id: z.string().regex(/^snap-[a-f0-9]{8}$/),
  /** The branch's stable id; its current name is looked up, so renames need no rewrite here. */
  branchId: z.string(),
  /** ZFS snapshot name after the '@'. */
  name: z.string(),
  label: z.string().nullable(),
  consistency: Consistency,
  backup: BackupInfo.nullable(),
  createdAt: z.string(),
  /** Taken by the schedule (pruned by its retention), not by someone. */
  scheduled: z.boolean().default(false),
});
export type SnapshotRecord = z.infer<typeof SnapshotRecord>;

export const ImportMethod = z.enum(['dump', 'basebackup']);
export type ImportMethod = z.infer<typeof ImportMethod>;

/** Where the source's password is: nowhere (trust, a client certificate), a secrets file, an env variable, a file. */
export const PasswordRef = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('none') }),
  z.object({ kind: z.literal('secret'), id: z.string().regex(/^[a-f0-9]{16}$/) }),
  z.object({ kind: z.literal('env'), name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/) }),
  z.object({ kind: z.literal('file'), path: z.string().startsWith('/') }),
]);
export type PasswordRef = z.infer<typeof PasswordRef>;

/** What the state keeps about a database's source (for refresh): no password, only where it is (agent/engine/import-source.ts). */
export const SourceRecord = z.object({
  /** postgres://user@host:port/db?params — never with a password. */
  url: z.string(),
  method: ImportMethod,
  jobs: z.number().int().min(1).max(64),
  roles: z.boolean(),
  password: PasswordRef,
  importedAt: z.string().optional(),
});
export type SourceRecord = z.infer<typeof SourceRecord>;

export const DatabaseRecord = z.object({
  name: z.string(),
  image: z.string(),
  createdAt: z.string(),
  /** The PostgreSQL database inside the cluster that connection strings name. */
  pgDatabase: z.string(),
  operation: Operation.nullable(),
  /** Where main's data was imported from (`db create --from-url`); absent: an empty cluster. */
  source: SourceRecord.optional(),
});
export type DatabaseRecord = z.infer<typeof DatabaseRecord>;

export const State = z
  .object({
    version: z.literal(1),
    databases: z.record(z.string(), DatabaseRecord),
    branches: z.record(z.string(), BranchRecord),
    snapshots: z.record(z.string(), SnapshotRecord).default({}),
    /**
     * WAL archives live on ZFS datasets of their own (`<root>/_wal/<id>`). Absent in states written
     * before that: those installs keep WAL folders on the host's disk until migrated (wal-migration.ts).
     */
    walOnZfs: z.boolean().default(false),
  })
  .superRefine((s, ctx) => {
    const ports = new Map<number, string>();
    for (const [key, b] of Object.entries(s.branches)) {
      if (key !== `${b.database}/${b.branch}`)
        ctx.addIssue({ code: 'custom', message: `branch key ${key} does not match its record` });
      if (!s.databases[b.database])
        ctx.addIssue({ code: 'custom', message: `branch ${key} belongs to unknown database ${b.database}` });
      if (b.parent !== null && !s.branches[b.parent])
        ctx.addIssue({ code: 'custom', message: `branch ${key} has unknown parent ${b.parent}` });
      if ((b.branch === 'main') !== (b.parent === null))
        ctx.addIssue({ code: 'custom', message: `branch ${key}: only main has no parent` });
      const other = ports.get(b.port);
      if (other) ctx.addIssue({ code: 'custom', message: `branches ${other} and ${key} share port ${b.port}` });
      ports.set(b.port, key);
    }
    const ids = new Set(Object.values(s.branches).map((b) => b.id));
    for (const [key, snap] of Object.entries(s.snapshots)) {
      if (key !== snap.id) ctx.addIssue({ code: 'custom', message: `snapshot key ${key} does not match its record` });
      if (!ids.has(snap.branchId)) ctx.addIssue({ code: 'custom', message: `snapshot ${key} belongs to no branch` });
    }
    for (const name of Object.keys(s.databases)) {
      const op = s.databases[name]!.operation;
      if (!s.branches[`${name}/main`] && op === null)
        ctx.addIssue({ code: 'custom', message: `database ${name} has no main branch` });
    }
  });
export type State = z.infer<typeof State>;

export const emptyState = (): State => ({ version: 1, databases: {}, branches: {}, snapshots: {}, walOnZfs: true });

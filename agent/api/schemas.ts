/**
 * The HTTP API's request and response shapes, defined once. The server validates requests with
 * them; the client (and so the GitHub Action and the webhook receiver) parses responses with them.
 * Keep this module free of server-only imports (no express, no engine, no drivers).
 */
import { z } from 'zod';
import { parseTtl } from '../duration.js';
import { BranchPart, DatabaseName, ImageRef } from '../name-schemas.js';

export { BranchPart, DatabaseName };

// ---------------------------------------------------------------- errors

/** The engine's codes (agent/errors.ts) plus the ones only HTTP has. */
export const ApiErrorCode = z.enum([
  'invalid', // 400: names, bodies, query parameters
  'unauthorized', // 401: missing or wrong bearer token
  'forbidden', // 403: the token's role or databases do not allow it
  'not_found', // 404: unknown database, branch or route
  'conflict', // 409: duplicate, busy, another parent, children in the way
  'too_large', // 413: body over api.bodyLimit
  'failed', // 500: an operation started and could not finish
  'unavailable', // 503: ZFS pool or Docker engine down, or the agent shutting down
]);
export type ApiErrorCode = z.infer<typeof ApiErrorCode>;

/** Every error response, whatever the status. */
export const ErrorBody = z.object({
  error: z.object({ code: z.string(), message: z.string() }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;

// ---------------------------------------------------------------- views (same objects as the CLI's --json)

const Endpoint = z.object({
  host: z.string(),
  port: z.number().int(),
  user: z.string(),
  password: z.string(),
  database: z.string(),
  uri: z.string(),
});

/** Through the router when the agent runs one (database `<db>@<branch>`), else the branch's own port; `direct` is always its own port. */
export const Connection = z.preprocess(
  olderAgent,
  Endpoint.extend({
    via: z.enum(['router', 'direct']),
    sslmode: z.enum(['require']).nullable(),
    direct: Endpoint,
  }),
);

/** Agents from before the router answer no via/sslmode/direct: a newer client (the Action) fills them in. */
function olderAgent(v: unknown): unknown {
  if (v === null || typeof v !== 'object' || 'via' in v) return v;
  const c = v as Record<string, unknown>;
  const direct = { host: c.host, port: c.port, user: c.user, password: c.password, database: c.database, uri: c.uri };
  return { ...c, via: 'direct', sslmode: null, direct };
}

export const BranchView = z.object({
  /** `<db>/<branch>` */
  name: z.string(),
  database: z.string(),
  branch: z.string(),
  /** `<db>/<branch>` of the parent; null for main. */
  parent: z.string().nullable(),
  /** running, stopped, creating, deleting, down, missing, restarting, interrupted */
  status: z.string(),
  port: z.number().int(),
  connection: Connection,
  dataset: z.string(),
  container: z.string(),
  image: z.string(),
  consistency: z.enum(['application', 'crash']).nullable(),
  /** The parent's structure without its rows (no copy of its data), and the seed run after it (its size and sha256). */
  schemaOnly: z.boolean().default(false),
  seed: z.object({ bytes: z.number().int(), sha256: z.string() }).nullable().default(null),
  createdAt: z.string(),
  usedBytes: z.number().nullable(),
  /** When housekeeping deletes the branch; null: never. */
  expiresAt: z.string().nullable(),
  /** Never expired nor stopped when idle. */
  protected: z.boolean(),
  lastActiveAt: z.string().nullable(),
  /** Why a stopped branch is stopped; 'idle': by the idle stop (start it again to use it). */
  stoppedBy: z.enum(['user', 'idle']).nullable(),
  memoryBytes: z.number(),
  cpus: z.number(),
  /** ZFS quota of the branch's dataset (null: none); diskFull: less than 16 MiB left under it. */
  diskQuotaBytes: z.number().nullable(),
  diskFull: z.boolean(),
  /** The branch's WAL archive dataset: used, quota, full (then archiving fails until space is freed). */
  walBytes: z.number().nullable(),
  walQuotaBytes: z.number().nullable(),
  walFull: z.boolean(),
  /** The refresh of main the branch's data comes from; current: false for a branch made before main's latest refresh. */
  refresh: z
    .object({ generation: z.number().int(), current: z.boolean(), refreshedAt: z.string().nullable() })
    .optional(),
});
export type BranchView = z.infer<typeof BranchView>;

export const DatabaseView = z.object({
  name: z.string(),
  image: z.string(),
  createdAt: z.string(),
  branches: z.array(BranchView),
});
export type DatabaseView = z.infer<typeof DatabaseView>;

// ---------------------------------------------------------------- requests

/** `7d`, `12h`, `30m`, `90s`: at least a second, at most 365 days (agent/duration.ts parses it). */
export const Ttl = z
  .string()
  .max(32)
  .superRefine((v, ctx) => {
    try {
      parseTtl(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
    }
  });

export const SnapshotId = z.string().regex(/^snap-[a-f0-9]{8}$/, 'snapshot ids look like snap-1a2b3c4d');

/** `branch` (of the same database) or `db/branch`, as the CLI's --from. */
export const BranchRefText = z.string().refine((v) => {
  const parts = v.split('/');
  if (parts.length === 1) return BranchPart.safeParse(parts[0]).success;
  return parts.length === 2 && DatabaseName.safeParse(parts[0]).success && BranchPart.safeParse(parts[1]).success;
}, "must be a branch name or '<database>/<branch>' (letters, digits, '_' and '-')");

/** A branch's memory: bytes, or a size with a unit ('512m', '1g', '1.5GiB'). Capped by limits.maxMemory. */
export const MemorySize = z.union([
  z.number().int().positive(),
  z.string().regex(/^\d+(\.\d+)?\s*[kmgt]?(i?b)?$/i, "memory must be bytes or a size such as '512m' or '1g'"),
]);
/** A branch's disk quota: bytes or a size with a unit ('5g'). Capped by limits.maxDisk. */
export const DiskSize = z.union([
  z.number().int().positive(),
  z.string().regex(/^\d+(\.\d+)?\s*[kmgt]?(i?b)?$/i, "disk must be bytes or a size such as '5g' or '100g'"),
]);
/** A branch's CPUs (Docker --cpus). Capped by limits.maxCpus. */
export const Cpus = z.number().min(0.01, 'cpus must be at least 0.01').max(256);

/** PUT /v1/databases/{db}/branches/{branch}: every field optional. */
export const PutBranchBody = z
  .object({
    /** Parent branch; default `main` of the same database. */
    from: BranchRefText.optional(),
    /** Crash-consistent (CHECKPOINT, no backup mode): faster. Only used when the branch is created. */
    fast: z.boolean().optional(),
    /**
     * Delete the branch this long after now; null: never (also overrides the pr-<n> default).
     * On an existing branch it renews the expiry; without it, an expiring pr-<n> branch is renewed
     * by the config's expiry.prBranchTtl (never shortened).
     */
    ttl: Ttl.nullable().optional(),
    /** Never deleted by expiry nor stopped when idle. Applied to an existing branch too. */
    protected: z.boolean().optional(),
    /** Clone a kept snapshot instead of taking a fresh one (its branch is the parent). */
    fromSnapshot: SnapshotId.optional(),
    /** Point-in-time recovery of `from` (default main): ISO 8601 with a zone, or e.g. '2 hours ago'. */
    pitr: z.string().min(1).max(64).optional(),
    /** Container memory and CPUs (default postgres.memory / postgres.cpus). Only used when the branch is created. */
    memory: MemorySize.optional(),
    cpus: Cpus.optional(),
    /** ZFS quota of the branch's dataset (default postgres.diskQuota). Only used when the branch is created. */
    disk: DiskSize.optional(),
    /**
     * The parent's structure without any of its rows (a fresh cluster, no copy of its data): for
     * pull requests nobody vouched for. An existing branch must be of the same kind.
     */
    schemaOnly: z.boolean().optional(),
    /** SQL run in a schema-only branch after the structure (and again on reset); at most 1 MiB (and api.bodyLimit). */
    seed: z
      .string()
      .max(1024 * 1024)
      .optional(),
  })
  .strict();
export type PutBranchBody = z.infer<typeof PutBranchBody>;

/** PATCH /v1/databases/{db}/branches/{branch}: change expiry or protection (at least one field). */
export const PatchBranchBody = z
  .object({
    /** Expire this long from now; null: never. main cannot expire. */
    ttl: Ttl.nullable().optional(),
    /** Never deleted by expiry nor stopped when idle; main is always protected. */
    protected: z.boolean().optional(),
  })
  .strict()
  .refine((b) => b.ttl !== undefined || b.protected !== undefined, 'give ttl or protected');
export type PatchBranchBody = z.infer<typeof PatchBranchBody>;

/** POST /v1/databases/{db}/branches/{branch}/snapshots */
export const CreateSnapshotBody = z
  .object({
    label: z
      .string()
      .max(200)
      .regex(/^[^\x00-\x1f]*$/, 'label must be printable')
      .optional(),
  })
  .strict();
export type CreateSnapshotBody = z.infer<typeof CreateSnapshotBody>;

/**
 * POST /v1/databases `from`: import main's data from a live PostgreSQL (then the answer is 202 with
 * an operation to poll). A password inside `url` is kept in a secrets file of the agent's and never
 * echoed back; `passwordEnv` / `passwordFile` name where the agent finds it instead.
 */
export const ImportFrom = z
  .object({
    url: z.string().min(1).max(2048),
    method: z.enum(['dump', 'basebackup']).optional(),
    jobs: z.number().int().min(1).max(64).optional(),
    roles: z.boolean().optional(),
    passwordEnv: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'passwordEnv must be an environment variable name')
      .optional(),
    passwordFile: z.string().startsWith('/', 'passwordFile must be an absolute path').max(4096).optional(),
  })
  .strict();
export type ImportFrom = z.infer<typeof ImportFrom>;

/** POST /v1/databases */
export const CreateDatabaseBody = z
  .object({
    name: DatabaseName,
    /** Import main's data from a live PostgreSQL: answered 202 with an operation (GET /v1/operations/{id}). */
    from: ImportFrom.optional(),
    /** With `from`: a masking SQL file on the agent's host (absolute path) run on the copy before main starts. */
    maskingSql: z.string().startsWith('/', 'maskingSql must be an absolute path').max(4096).optional(),
    /** PostgreSQL image; default postgres.image from the agent's config. */
    image: ImageRef.optional(),
    /** Container memory and CPUs of its main branch (default postgres.memory / postgres.cpus). */
    memory: MemorySize.optional(),
    /** ZFS quota of main's dataset (default: none). */
    disk: DiskSize.optional(),
    cpus: Cpus.optional(),
  })
  .strict();
export type CreateDatabaseBody = z.infer<typeof CreateDatabaseBody>;

/**
 * POST /v1/databases/{db}/refresh: a new main from the source, masked, swapped in (202 with an
 * operation). Without a field, what was recorded at import (or databases.<db>.refresh) is used.
 * `from`, `passwordEnv`, `passwordFile` and `maskingSql` need role admin (the agent connects to a URL
 * the caller chose, or reads a file or variable of its own host).
 */
export const RefreshBody = z
  .object({
    from: z.string().min(1).max(2048).optional(),
    passwordEnv: ImportFrom.shape.passwordEnv,
    passwordFile: ImportFrom.shape.passwordFile,
    method: z.enum(['dump', 'basebackup']).optional(),
    jobs: z.number().int().min(1).max(64).optional(),
    /** A masking SQL file on the agent's host (absolute path). */
    maskingSql: z.string().startsWith('/', 'maskingSql must be an absolute path').max(4096).optional(),
  })
  .strict();
export type RefreshBody = z.infer<typeof RefreshBody>;

/** What an import has done so far (agent/engine/import-build.ts). */
export const ImportProgress = z.object({
  phase: z.enum(['check', 'dump', 'restore', 'analyze', 'basebackup', 'recover', 'done']),
  bytes: z.number(),
  totalBytes: z.number().nullable(),
  tables: z.number(),
  totalTables: z.number().nullable(),
  bytesPerSecond: z.number(),
  elapsedMs: z.number(),
});
export type ImportProgress = z.infer<typeof ImportProgress>;

export const OperationId = z.string().regex(/^op-[a-f0-9]{16}$/, 'operation ids look like op-0123456789abcdef');

/** GET /v1/operations/{id}: a long operation (an import) the agent runs after answering 202. */
export const OperationView = z.object({
  id: OperationId,
  /** create-database (an import) or refresh-database. */
  kind: z.string(),
  database: z.string(),
  status: z.enum(['running', 'succeeded', 'failed']),
  startedAt: z.string(),
  finishedAt: z.string().nullable(),
  progress: ImportProgress.nullable(),
  /** The database once the operation succeeded. */
  result: DatabaseView.nullable(),
  error: z.object({ code: z.string(), message: z.string() }).nullable(),
});
export type OperationView = z.infer<typeof OperationView>;

/** 202 answers and GET /v1/operations/{id}. */
export const OperationResponse = z.object({ operation: OperationView });
export type OperationResponse = z.infer<typeof OperationResponse>;

/** `?force=true` on DELETE: also delete child branches (or every branch of a database). */
export const ForceQuery = z.object({ force: z.enum(['true', 'false']).optional() }).strict();

/** `?force=true&fast=true` on POST …/reset: also delete children and kept snapshots; crash-consistent snapshot of the parent. */
export const ResetQuery = z
  .object({ force: z.enum(['true', 'false']).optional(), fast: z.enum(['true', 'false']).optional() })
  .strict();

/** POST /v1/databases/{db}/branches: create a branch (409 when it exists); the PUT body plus its name. */
export const CreateBranchBody = PutBranchBody.extend({ name: BranchPart }).strict();
export type CreateBranchBody = z.infer<typeof CreateBranchBody>;

/** POST /v1/databases/{db}/rename */
export const RenameDatabaseBody = z.object({ name: DatabaseName }).strict();
export type RenameDatabaseBody = z.infer<typeof RenameDatabaseBody>;

/** POST …/branches/{branch}/rename: the new name, `<branch>` or `<db>/<branch>` of the same database. */
export const RenameBranchBody = z.object({ name: BranchRefText }).strict();
export type RenameBranchBody = z.infer<typeof RenameBranchBody>;

/** POST …/branches/{branch}/wal/cleanup: remove archived WAL older than `days` (what kept snapshots need stays). */
export const WalCleanupBody = z
  .object({ days: z.number().min(0).max(100_000), dryRun: z.boolean().optional() })
  .strict();
export type WalCleanupBody = z.infer<typeof WalCleanupBody>;

// ---------------------------------------------------------------- responses

export const Health = z.object({ status: z.literal('ok') });
export type Health = z.infer<typeof Health>;

export const PutBranchResponse = z.object({ created: z.boolean(), branch: BranchView });
export type PutBranchResponse = z.infer<typeof PutBranchResponse>;

/** Same as `bpg branch delete --json`: the branches removed, children first. */
export const DeleteBranchResponse = z.object({ deleted: z.array(z.string()) });
export type DeleteBranchResponse = z.infer<typeof DeleteBranchResponse>;

/** Same as `bpg db delete --json`. */
export const DeleteDatabaseResponse = z.object({ deleted: z.string() });
export type DeleteDatabaseResponse = z.infer<typeof DeleteDatabaseResponse>;

/** Same as `bpg snapshot list --json` items. */
export const SnapshotView = z.object({
  id: z.string(),
  branch: z.string(),
  label: z.string().nullable(),
  createdAt: z.string(),
  usedBytes: z.number().nullable(),
  consistency: z.enum(['application', 'crash']),
  zfsSnapshot: z.string(),
  usedBy: z.array(z.string()),
  /** Taken by the schedule (snapshots.every), pruned by its retention (snapshots.keep). */
  scheduled: z.boolean(),
});
export type SnapshotView = z.infer<typeof SnapshotView>;
export const SnapshotList = z.array(SnapshotView);
export const DeleteSnapshotResponse = z.object({ deleted: z.string() });

const Seg = z.object({ segment: z.string(), time: z.string() });
/** Same as `bpg wal info --json` items. */
/** POST …/watches: start watching a migration on the branch. */
export const StartWatchBody = z
  .object({
    /** Flag locks that block writes held longer than this (default: the agent's review.maxLockSeconds). */
    maxLockSeconds: z.number().positive().max(86_400).optional(),
  })
  .strict();
export type StartWatchBody = z.infer<typeof StartWatchBody>;

export const WatchView = z.object({
  id: z.string(),
  branch: z.string(),
  startedAt: z.string(),
});
export type WatchView = z.infer<typeof WatchView>;

export const SafetyReport = z.object({
  durationMs: z.number(),
  locks: z.array(
    z.object({
      table: z.string(),
      mode: z.string(),
      seconds: z.number(),
      blocks: z.enum(['reads and writes', 'writes']).nullable(),
    }),
  ),
  rewritten: z.array(z.string()),
  dropped: z.array(z.string()),
  rows: z.array(z.object({ table: z.string(), rows: z.number().nullable(), estimated: z.boolean() })),
  flagged: z.array(z.string()),
  maxLockSeconds: z.number(),
  samples: z.number().int(),
  intervalMs: z.number(),
  incomplete: z.string().nullable(),
});
export type SafetyReport = z.infer<typeof SafetyReport>;

export const WalInfo = z.object({
  branch: z.string(),
  folder: z.string(),
  segments: z.number(),
  bytes: z.number(),
  oldest: Seg.nullable(),
  newest: Seg.nullable(),
  gaps: z.array(z.object({ timeline: z.string(), from: z.string(), to: z.string(), missing: z.number() })),
  historyFiles: z.number(),
  lastFailure: Seg.extend({ reason: z.string().nullable() }).nullable(),
  lastArchived: Seg.nullable(),
  quotaBytes: z.number().nullable(),
  full: z.boolean(),
});
export type WalInfo = z.infer<typeof WalInfo>;

/** Same as `bpg wal cleanup --json`. */
export const WalCleanup = z.object({
  branch: z.string(),
  dryRun: z.boolean(),
  removed: z.array(z.string()),
  removedBytes: z.number(),
  kept: z.array(z.object({ segments: z.number(), reason: z.string() })),
  removedTemp: z.array(z.string()),
});
export type WalCleanup = z.infer<typeof WalCleanup>;
export const WalInfoList = z.array(WalInfo);

// ---------------------------------------------------------------- status and doctor

/** Same as `bpg status --json` (GET /v1/status). */
export const SystemStatus = z.object({
  pool: z
    .object({
      pool: z.string(),
      sizeBytes: z.number(),
      freeBytes: z.number(),
      allocatedBytes: z.number(),
      usedPercent: z.number(),
    })
    .nullable(),
  datasetBase: z
    .object({
      dataset: z.string(),
      usedBytes: z.number(),
      availableBytes: z.number(),
      quotaBytes: z.number().nullable(),
    })
    .nullable(),
  docker: z.object({ reachable: z.boolean() }),
  counts: z.object({
    databases: z.number(),
    branches: z.number(),
    byStatus: z.record(z.string(), z.number()),
  }),
  limits: z.object({
    branchesPerDatabase: z.number().nullable(),
    branchesTotal: z.number().nullable(),
    maxMemory: z.number().nullable(),
    maxCpus: z.number().nullable(),
    maxDisk: z.number().nullable(),
    minFreeBytes: z.number(),
    concurrentCreates: z.number(),
    createQueueLength: z.number(),
    createQueueTimeout: z.number(),
  }),
  branches: z.array(
    z.object({
      name: z.string(),
      database: z.string(),
      branch: z.string(),
      status: z.string(),
      port: z.number(),
      usedBytes: z.number().nullable(),
      walBytes: z.number(),
      diskQuotaBytes: z.number().nullable(),
      diskFull: z.boolean(),
      walQuotaBytes: z.number().nullable(),
      walFull: z.boolean(),
      expiresAt: z.string().nullable(),
      protected: z.boolean(),
      memoryBytes: z.number(),
      cpus: z.number(),
    }),
  ),
});
export type SystemStatus = z.infer<typeof SystemStatus>;

/** What doctor compares: the kinds of finding (agent/engine/doctor-inspect.ts). */
export const FindingKind = z.enum([
  'interrupted-operation',
  'orphan-container',
  'orphan-dataset',
  'orphan-snapshot',
  'orphan-wal-folder',
  'orphan-temp-file',
  'foreign-dataset',
  'moved-dataset',
  'missing-dataset',
  'unmounted-dataset',
  'not-running',
  'running-but-stopped',
  'port-mismatch',
  'port-taken',
  'missing-wal-folder',
  'missing-snapshot',
  'legacy-wal',
  'missing-firewall-rule',
]);

/** Same as `bpg doctor [--fix] --json` (GET /v1/doctor, POST /v1/doctor/fix). */
export const DoctorReport = z.object({
  healthy: z.boolean(),
  fix: z.boolean(),
  findings: z.array(
    z.object({
      kind: FindingKind,
      subject: z.string(),
      detail: z.string(),
      action: z.string().nullable(),
      status: z.enum(['found', 'fixed', 'failed', 'left']),
      severity: z.enum(['error', 'warning']),
      error: z.string().optional(),
    }),
  ),
  checked: z.object({
    databases: z.number(),
    branches: z.number(),
    datasets: z.number(),
    snapshots: z.number(),
    containers: z.number(),
    walFolders: z.number(),
  }),
});
export type DoctorReport = z.infer<typeof DoctorReport>;
export const DatabaseList = z.array(DatabaseView);
export const BranchList = z.array(BranchView);

// ---------------------------------------------------------------- schema diff

/** Every kind of object a schema diff knows, in the order it lists them. */
export const SCHEMA_KINDS = [
  'schema',
  'extension',
  'type',
  'enum',
  'sequence',
  'table',
  'column',
  'constraint',
  'index',
  'view',
  'function',
  'trigger',
] as const;
export const SchemaKind = z.enum(SCHEMA_KINDS);
export type SchemaKind = z.infer<typeof SchemaKind>;

/** How people name each kind: singular, plural. */
export const SCHEMA_KIND_NAMES: Readonly<Record<SchemaKind, readonly [string, string]>> = {
  schema: ['schema', 'schemas'],
  extension: ['extension', 'extensions'],
  type: ['type', 'types'],
  enum: ['enum', 'enums'],
  sequence: ['sequence', 'sequences'],
  table: ['table', 'tables'],
  column: ['column', 'columns'],
  constraint: ['constraint', 'constraints'],
  index: ['index', 'indexes'],
  view: ['view', 'views'],
  function: ['function', 'functions'],
  trigger: ['trigger', 'triggers'],
};

export const ChangeCounts = z.object({ added: z.number().int(), dropped: z.number().int(), altered: z.number().int() });
export type ChangeCounts = z.infer<typeof ChangeCounts>;

/** A column as a schema diff shows it. */
export const ColumnDef = z.object({
  type: z.string(),
  /** null: none */
  default: z.string().nullable(),
  nullable: z.boolean(),
  identity: z.enum(['always', 'by default']).nullable(),
  /** A generated column's expression. */
  generated: z.string().nullable(),
  /** Only when not the type's default collation. */
  collation: z.string().nullable(),
});

export const SchemaChange = z.object({
  kind: SchemaKind,
  change: z.enum(['added', 'dropped', 'altered']),
  /** Quoted as PostgreSQL quotes it; qualified with its schema, except a column's, constraint's or trigger's own name. */
  name: z.string(),
  /** The table of a column, index, constraint or trigger. */
  table: z.string().nullable(),
  /** What changed in an altered object, one short note each ("type: integer → bigint"); an added or dropped column's definition. */
  details: z.array(z.string()),
  /** Columns only: before and after (null where it did not exist). */
  column: z.object({ before: ColumnDef.nullable(), after: ColumnDef.nullable() }).nullable(),
});
export type SchemaChange = z.infer<typeof SchemaChange>;

/**
 * GET /v1/databases/{db}/branches/{branch}/schema-diff and `bpg branch diff --json`. Names and SQL
 * come from the branch (a pull request's SQL): escape them for where they are shown.
 */
export const SchemaDiff = z.object({
  /** `<db>/<branch>` described */
  branch: z.string(),
  /** `<db>/<branch>` it is compared with (default: its parent) */
  against: z.string(),
  identical: z.boolean(),
  /** Every kind, every change counted (also those past the list's limit). */
  counts: z.record(SchemaKind, ChangeCounts),
  /** Kind by kind, then by name; a table's column changes follow it. At most 1000. */
  changes: z.array(SchemaChange),
  changesOmitted: z.number().int(),
  /**
   * Normalised SQL diff: `--- <against>`, `+++ <branch>`, then per object `@@ <change> <kind> <name> @@`
   * and its SQL with `+`, `-` or ` ` before each line. Control characters escaped; '' when identical.
   */
  sql: z.string(),
  /** Something left out: see truncatedKinds, changesOmitted, or a last `@@ truncated ... @@` line in sql. */
  truncated: z.boolean(),
  /** Kinds of which a branch has more objects than the agent reads: compared in name order up to where it stopped. */
  truncatedKinds: z.array(SchemaKind),
});
export type SchemaDiff = z.infer<typeof SchemaDiff>;

/** What a pull request comment shows of a schema diff: the counts and the SQL (fold it). */
export type SchemaDiffSummary = Pick<SchemaDiff, 'branch' | 'against' | 'identical' | 'counts' | 'truncated' | 'sql'>;

export function schemaDiffSummary(d: SchemaDiff): SchemaDiffSummary {
  return {
    branch: d.branch,
    against: d.against,
    identical: d.identical,
    counts: d.counts,
    truncated: d.truncated,
    sql: d.sql,
  };
}

/** One line per kind with changes, in kind order: `tables: 1 added, 2 altered`. Empty when identical. */
export function schemaCountLines(counts: Record<SchemaKind, ChangeCounts>): string[] {
  return SCHEMA_KINDS.flatMap((k) => {
    const c = counts[k];
    const parts = (['added', 'dropped', 'altered'] as const).filter((x) => c[x] > 0).map((x) => `${c[x]} ${x}`);
    return parts.length === 0 ? [] : [`${SCHEMA_KIND_NAMES[k][1]}: ${parts.join(', ')}`];
  });
}

/** `?against=<branch>` or `<db>/<branch>` of the same database. */
export const SchemaDiffQuery = z.object({ against: BranchRefText.optional() }).strict();

export const BRANCH_ACTIONS = ['reset', 'start', 'stop', 'restart'] as const;
export type BranchAction = (typeof BRANCH_ACTIONS)[number];

/** The first problem zod found, as one line: `from: must be a branch name ...`. */
export function firstIssue(err: z.ZodError): string {
  const i = err.issues[0];
  if (!i) return 'invalid';
  return i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message;
}

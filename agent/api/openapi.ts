/**
 * GET /v1/openapi.json. Paths are written by hand (the test checks them against the routes the
 * server registers); the component schemas are generated from schemas.ts, so bodies cannot drift.
 */
import { z } from 'zod';
import * as S from './schemas.js';
import { roleLine, routeRole } from './roles.js';

const json = (schema: object) => ({ 'application/json': { schema } });
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const ok = (description: string, schema: object) => ({ description, content: json(schema) });

const err = (description: string) => ({ description, content: json(ref('Error')) });
const COMMON = {
  '401': err('Missing or wrong bearer token'),
  '403': err("The token's role or databases do not allow it (nothing was changed)"),
  '500': err('The operation failed; its finished steps were undone'),
  '503': err(
    'ZFS pool or Docker engine not available, the agent is shutting down, or (creates) too many creates at once: see Retry-After',
  ),
};
const BAD = { '400': err('Invalid name, body or query parameter') };
const MISSING = { '404': err('No such database or branch') };
const CONFLICT = { '409': err('Conflict: exists, busy, another parent, or children in the way') };
const LIMITED = {
  '409': err(
    'Conflict: exists, busy, another parent, a limit reached (the message names the limits.* key), or the pool out of space',
  ),
};
const TOO_LARGE = { '413': err('Request body over the limit (api.bodyLimit, default 64 KiB)') };

const pathParam = (name: string, description: string) => ({
  name,
  in: 'path',
  required: true,
  description,
  schema: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_-]*$' },
});
const DB = pathParam('db', 'Database name');
const BRANCH = pathParam('branch', 'Branch name (main is the database itself)');
const FORCE = (what: string) => ({
  name: 'force',
  in: 'query',
  required: false,
  description: what,
  schema: { type: 'string', enum: ['true', 'false'] },
});

function lifecycle(verb: string, summary: string, extra: object = {}, query: object[] = []) {
  return {
    post: {
      operationId: `${verb}Branch`,
      summary,
      parameters: [DB, BRANCH, ...query],
      responses: {
        '200': ok(`The branch after ${verb}`, ref('BranchView')),
        ...BAD,
        ...MISSING,
        ...CONFLICT,
        ...COMMON,
        ...extra,
      },
    },
  };
}

const component = (schema: z.ZodType, io: 'input' | 'output') => {
  const { $schema: _ignored, ...rest } = z.toJSONSchema(schema, { io, target: 'draft-2020-12' }) as Record<
    string,
    unknown
  >;
  return rest;
};

export function openapi(): Record<string, unknown> {
  const doc = document();
  // Each operation states the role it needs (roles.ts, which the server enforces): a field, and a line.
  for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, Record<string, unknown>>>))
    for (const [method, op] of Object.entries(ops)) {
      const role = routeRole(method, path);
      op['x-betterpg-role'] = role;
      op.description = typeof op.description === 'string' ? `${op.description} ${roleLine(role)}` : roleLine(role);
    }
  return doc;
}

function document(): Record<string, unknown> {
  return {
    openapi: '3.1.0',
    info: {
      title: 'BetterPG agent API',
      version: '1',
      description:
        'Instant PostgreSQL branches on ZFS. Every route but /v1/health needs `Authorization: Bearer <token>`. ' +
        'Objects are the same as `bpg ... --json` prints. Errors are `{ "error": { "code", "message" } }`. ' +
        'Each operation names the role it needs in `x-betterpg-role` (read < write < admin; none: no token): a token ' +
        'without it gets 403 `forbidden`, and a token limited to some databases gets 403 for any other database ' +
        '(lists show only its databases). A 403 changes nothing.',
    },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: {
        Error: component(S.ErrorBody, 'output'),
        Health: component(S.Health, 'output'),
        BranchView: component(S.BranchView, 'output'),
        DatabaseView: component(S.DatabaseView, 'output'),
        PutBranchBody: component(S.PutBranchBody, 'input'),
        PutBranchResponse: component(S.PutBranchResponse, 'output'),
        PatchBranchBody: component(S.PatchBranchBody, 'input'),
        CreateDatabaseBody: component(S.CreateDatabaseBody, 'input'),
        DeleteBranchResponse: component(S.DeleteBranchResponse, 'output'),
        DeleteDatabaseResponse: component(S.DeleteDatabaseResponse, 'output'),
        SnapshotView: component(S.SnapshotView, 'output'),
        CreateSnapshotBody: component(S.CreateSnapshotBody, 'input'),
        DeleteSnapshotResponse: component(S.DeleteSnapshotResponse, 'output'),
        WalInfo: component(S.WalInfo, 'output'),
        SchemaDiff: component(S.SchemaDiff, 'output'),
        StartWatchBody: component(S.StartWatchBody, 'input'),
        WatchView: component(S.WatchView, 'output'),
        SafetyReport: component(S.SafetyReport, 'output'),
        CreateBranchBody: component(S.CreateBranchBody, 'input'),
        RenameDatabaseBody: component(S.RenameDatabaseBody, 'input'),
        RenameBranchBody: component(S.RenameBranchBody, 'input'),
        WalCleanupBody: component(S.WalCleanupBody, 'input'),
        WalCleanup: component(S.WalCleanup, 'output'),
        SystemStatus: component(S.SystemStatus, 'output'),
        DoctorReport: component(S.DoctorReport, 'output'),
      },
    },
    security: [{ bearer: [] }],
    paths: {
      '/v1/health': {
        get: {
          operationId: 'health',
          summary: 'Liveness; needs no token and tells nothing else',
          security: [],
          responses: { '200': ok('Up', ref('Health')) },
        },
      },
      '/v1/openapi.json': {
        get: {
          operationId: 'openapi',
          summary: 'This document',
          responses: { '200': { description: 'OpenAPI 3.1', content: json({ type: 'object' }) }, ...COMMON },
        },
      },
      '/v1/databases': {
        get: {
          operationId: 'listDatabases',
          summary: 'Every database with its branches',
          responses: { '200': ok('Databases', { type: 'array', items: ref('DatabaseView') }), ...COMMON },
        },
        post: {
          operationId: 'createDatabase',
          summary: 'Create a database and its main branch (not idempotent: an existing name is a 409)',
          requestBody: { required: true, content: json(ref('CreateDatabaseBody')) },
          responses: { '201': ok('Created', ref('DatabaseView')), ...BAD, ...LIMITED, ...TOO_LARGE, ...COMMON },
        },
      },
      '/v1/databases/{db}': {
        get: {
          operationId: 'getDatabase',
          summary: 'One database with its branches',
          parameters: [DB],
          responses: { '200': ok('The database', ref('DatabaseView')), ...BAD, ...MISSING, ...COMMON },
        },
        delete: {
          operationId: 'deleteDatabase',
          summary: 'Delete a database with its main branch; with force=true, with every branch',
          parameters: [DB, FORCE('Also delete every other branch of it')],
          responses: {
            '200': ok('Deleted', ref('DeleteDatabaseResponse')),
            ...BAD,
            ...MISSING,
            ...CONFLICT,
            ...COMMON,
          },
        },
      },
      '/v1/databases/{db}/branches': {
        get: {
          operationId: 'listBranches',
          summary: "The database's branches",
          parameters: [DB],
          responses: {
            '200': ok('Branches', { type: 'array', items: ref('BranchView') }),
            ...BAD,
            ...MISSING,
            ...COMMON,
          },
        },
        post: {
          operationId: 'createBranch',
          summary: 'Create a branch named `name` (not idempotent: an existing name is a 409; PUT is get-or-create)',
          description:
            'The body is the PUT body plus `name`; `from` defaults to main. Answers 201 with the branch and a Location header. ' +
            'An existing branch of that name is a 409 before anything is made.',
          parameters: [DB],
          requestBody: { required: true, content: json(ref('CreateBranchBody')) },
          responses: {
            '201': ok('Created', ref('BranchView')),
            ...BAD,
            ...MISSING,
            ...LIMITED,
            ...TOO_LARGE,
            ...COMMON,
          },
        },
      },
      '/v1/databases/{db}/rename': {
        post: {
          operationId: 'renameDatabase',
          summary:
            "Rename a database with all its branches (direct connection strings stay valid; the router's <db>@<branch> names change)",
          parameters: [DB],
          requestBody: { required: true, content: json(ref('RenameDatabaseBody')) },
          responses: {
            '200': ok('The database under its new name', ref('DatabaseView')),
            ...BAD,
            ...MISSING,
            '409': err('The new name exists, or a branch is busy'),
            ...TOO_LARGE,
            ...COMMON,
          },
        },
      },
      '/v1/databases/{db}/branches/{branch}/rename': {
        post: {
          operationId: 'renameBranch',
          summary:
            "Rename a branch within its database (data, port and password stay; the router's <db>@<branch> name changes)",
          parameters: [DB, BRANCH],
          requestBody: { required: true, content: json(ref('RenameBranchBody')) },
          responses: {
            '200': ok('The branch under its new name', ref('BranchView')),
            ...BAD,
            ...MISSING,
            '409': err('The new name exists, main, another database, or the branch is busy'),
            ...TOO_LARGE,
            ...COMMON,
          },
        },
      },
      '/v1/branches': {
        get: {
          operationId: 'listAllBranches',
          summary: 'Every branch of every database',
          responses: { '200': ok('Branches', { type: 'array', items: ref('BranchView') }), ...COMMON },
        },
      },
      '/v1/status': {
        get: {
          operationId: 'status',
          summary:
            'Pool usage, counts by status, limits, and every branch with its size, WAL and expiry (`bpg status`)',
          responses: { '200': ok('Status', ref('SystemStatus')), ...COMMON },
        },
      },
      '/v1/doctor': {
        get: {
          operationId: 'doctor',
          summary: 'Compare the state with ZFS, Docker and the state folder; changes nothing (`bpg doctor`)',
          description:
            'Answers 200 with the report whether or not it is healthy: `healthy` is false while a finding of severity error is open.',
          responses: { '200': ok('The report', ref('DoctorReport')), ...COMMON },
        },
      },
      '/v1/doctor/fix': {
        post: {
          operationId: 'doctorFix',
          summary:
            'Repair what is safe to repair: finish or undo interrupted operations, remove orphans, start what should run (`bpg doctor --fix`)',
          description:
            'Never destroys a dataset holding a known branch, and leaves alone anything with an operation in flight. ' +
            'Answers 200 with the report; `healthy` is false when something could not be fixed.',
          responses: { '200': ok('The report after the repairs', ref('DoctorReport')), ...COMMON },
        },
      },
      '/v1/databases/{db}/branches/{branch}': {
        get: {
          operationId: 'getBranch',
          summary: 'One branch with its connection',
          parameters: [DB, BRANCH],
          responses: { '200': ok('The branch', ref('BranchView')), ...BAD, ...MISSING, ...COMMON },
        },
        put: {
          operationId: 'putBranch',
          summary: 'Get or create a branch (safe to call twice)',
          description:
            'Creates the branch from `from` (default main) and answers 201 with created=true, or answers 200 with created=false and the ' +
            'branch as it is. A branch that exists with another parent is a 409. Calls for one branch run one at a time. ' +
            '`fast` is used only when creating. `fromSnapshot` clones a kept snapshot; `pitr` (ISO 8601 with a zone, or "2 hours ago") ' +
            'recovers `from` to that moment from its newest snapshot before it. `ttl` (30m, 12h, 7d; at most 365d; null: never) makes ' +
            'housekeeping delete the branch that long from now; branches named pr-<n> get expiry.prBranchTtl by default. A PUT of an ' +
            'existing branch renews it: `ttl` sets the expiry from now, and without it an expiring pr-<n> branch is extended by the ' +
            'default (so a pull request that keeps pushing keeps its branch). `protected` branches are never expired nor stopped when idle. ' +
            '`memory` and `cpus` set the container limits (only when creating; above limits.maxMemory / limits.maxCpus is a 409). ' +
            'limits.branchesPerDatabase, limits.branchesTotal and limits.minFreeBytes are checked before anything is made (409 naming the key).',
          parameters: [DB, BRANCH],
          requestBody: { required: false, content: json(ref('PutBranchBody')) },
          responses: {
            '200': ok('Exists already', ref('PutBranchResponse')),
            '201': ok('Created', ref('PutBranchResponse')),
            ...BAD,
            ...MISSING,
            ...LIMITED,
            ...TOO_LARGE,
            ...COMMON,
          },
        },
        patch: {
          operationId: 'setBranch',
          summary:
            'Change expiry (`ttl` from now, null: never) and/or protection; main cannot expire and is always protected',
          parameters: [DB, BRANCH],
          requestBody: { required: true, content: json(ref('PatchBranchBody')) },
          responses: {
            '200': ok('The branch', ref('BranchView')),
            ...BAD,
            ...MISSING,
            ...CONFLICT,
            ...TOO_LARGE,
            ...COMMON,
          },
        },
        delete: {
          operationId: 'deleteBranch',
          summary: 'Delete a branch and everything it owns; 404 if it is already gone (clients treat that as done)',
          parameters: [DB, BRANCH, FORCE('Also delete its child branches')],
          responses: {
            '200': ok('Deleted (children first)', ref('DeleteBranchResponse')),
            ...BAD,
            ...MISSING,
            ...CONFLICT,
            ...COMMON,
          },
        },
      },
      '/v1/databases/{db}/branches/{branch}/reset': lifecycle(
        'reset',
        "Reset a branch to its parent's current state (port and password stay)",
        {},
        [
          FORCE('Also delete its child branches and kept snapshots'),
          {
            name: 'fast',
            in: 'query',
            required: false,
            description: 'Crash-consistent snapshot of the parent (CHECKPOINT, no backup mode)',
            schema: { type: 'string', enum: ['true', 'false'] },
          },
        ],
      ),
      '/v1/snapshots': {
        get: {
          operationId: 'listSnapshots',
          summary: 'Every kept snapshot',
          responses: { '200': ok('Snapshots, oldest first', { type: 'array', items: ref('SnapshotView') }), ...COMMON },
        },
      },
      '/v1/snapshots/{id}': {
        delete: {
          operationId: 'deleteSnapshot',
          summary: 'Delete a kept snapshot; refused (409, naming them) while branches were cloned from it',
          parameters: [
            {
              name: 'id',
              in: 'path',
              required: true,
              description: 'Snapshot id',
              schema: { type: 'string', pattern: '^snap-[a-f0-9]{8}$' },
            },
          ],
          responses: {
            '200': ok('Deleted', ref('DeleteSnapshotResponse')),
            ...BAD,
            ...MISSING,
            ...CONFLICT,
            ...COMMON,
          },
        },
      },
      '/v1/databases/{db}/branches/{branch}/snapshots': {
        get: {
          operationId: 'listBranchSnapshots',
          summary: "A branch's kept snapshots",
          parameters: [DB, BRANCH],
          responses: {
            '200': ok('Snapshots', { type: 'array', items: ref('SnapshotView') }),
            ...BAD,
            ...MISSING,
            ...COMMON,
          },
        },
        post: {
          operationId: 'createSnapshot',
          summary: 'Take an application-consistent snapshot of a branch and keep it (for fromSnapshot and pitr)',
          parameters: [DB, BRANCH],
          requestBody: { required: false, content: json(ref('CreateSnapshotBody')) },
          responses: {
            '201': ok('The snapshot', ref('SnapshotView')),
            ...BAD,
            ...MISSING,
            ...CONFLICT,
            ...TOO_LARGE,
            ...COMMON,
          },
        },
      },
      '/v1/databases/{db}/branches/{branch}/schema-diff': {
        get: {
          operationId: 'schemaDiff',
          summary:
            'What a branch changed in the schema compared with its parent (or `against`): objects and a SQL diff',
          description:
            "Reads both branches' catalogs (user schemas only; objects of extensions are counted with their extension) and lists " +
            'schemas, extensions, types, enums, sequences, tables, columns (type, default, nullability), constraints, indexes, views, ' +
            'functions and triggers that were added, dropped or altered, with a normalised SQL diff (sorted by name; no OIDs, owners, ' +
            'grants or comments). Both branches must be running (409 otherwise). main has no parent: give `against` (400 without). ' +
            'A schema larger than the agent reads is compared in name order up to where it stopped (`truncated`, `truncatedKinds`). ' +
            "Names and SQL are the branch's own: escape them where you show them.",
          parameters: [
            DB,
            BRANCH,
            {
              name: 'against',
              in: 'query',
              required: false,
              description:
                'The branch to compare with: `<branch>` or `<db>/<branch>` of the same database (default: the parent)',
              schema: { type: 'string' },
            },
          ],
          responses: {
            '200': ok('The diff', ref('SchemaDiff')),
            ...BAD,
            ...MISSING,
            '409': err('A branch is not running, or busy with another operation'),
            ...COMMON,
          },
        },
      },
      '/v1/databases/{db}/branches/{branch}/wal': {
        get: {
          operationId: 'walInfo',
          summary: "A branch's WAL archive: segments, bytes, oldest/newest, gaps, last failure",
          parameters: [DB, BRANCH],
          responses: { '200': ok('WAL', ref('WalInfo')), ...BAD, ...MISSING, ...COMMON },
        },
      },
      '/v1/wal': {
        get: {
          operationId: 'listWal',
          summary: "Every branch's WAL archive (`bpg wal info`)",
          responses: { '200': ok('WAL of each branch', { type: 'array', items: ref('WalInfo') }), ...COMMON },
        },
      },
      '/v1/databases/{db}/branches/{branch}/wal/cleanup': {
        post: {
          operationId: 'walCleanup',
          summary:
            'Remove archived WAL older than `days`, keeping what kept snapshots need (`bpg wal cleanup`); `dryRun` only says what would go',
          parameters: [DB, BRANCH],
          requestBody: { required: true, content: json(ref('WalCleanupBody')) },
          responses: {
            '200': ok('What was (or would be) removed and kept', ref('WalCleanup')),
            ...BAD,
            ...MISSING,
            ...CONFLICT,
            ...TOO_LARGE,
            ...COMMON,
          },
        },
      },
      '/v1/databases/{db}/branches/{branch}/watches': {
        post: {
          operationId: 'startWatch',
          summary:
            "Start watching a migration on a running branch: its table locks (pg_locks, sampled every 50 ms from the agent's own session), then rewrites and row counts at the stop",
          parameters: [DB, BRANCH],
          requestBody: { required: false, content: json(ref('StartWatchBody')) },
          responses: {
            '201': ok('The watch', ref('WatchView')),
            ...BAD,
            ...MISSING,
            '409': err('The branch is not running'),
            ...COMMON,
          },
        },
      },
      '/v1/databases/{db}/branches/{branch}/watches/{id}/stop': {
        post: {
          operationId: 'stopWatch',
          summary:
            'Stop a watch and get the safety report: duration, locks held on tables that existed before, rewrites, row counts, flagged locks',
          parameters: [DB, BRANCH, { name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          responses: { '200': ok('The safety report', ref('SafetyReport')), ...BAD, ...MISSING, ...COMMON },
        },
      },
      '/metrics': {
        get: {
          operationId: 'metrics',
          summary:
            'Prometheus metrics: branches by status, operation counts and durations, pool and branch bytes, WAL bytes, process',
          description:
            'Prometheus text exposition format 0.0.4. Needs the bearer token unless api.metricsWithoutToken is set.',
          responses: {
            '200': { description: 'Metrics', content: { 'text/plain; version=0.0.4': { schema: { type: 'string' } } } },
            ...COMMON,
          },
        },
      },
      '/v1/databases/{db}/branches/{branch}/start': lifecycle(
        'start',
        "Start a branch's PostgreSQL (port and password stay)",
      ),
      '/v1/databases/{db}/branches/{branch}/stop': lifecycle('stop', "Stop a branch's PostgreSQL (its data stays)"),
      '/v1/databases/{db}/branches/{branch}/restart': lifecycle('restart', "Restart a branch's PostgreSQL"),
    },
  };
}

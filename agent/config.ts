import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { isIP } from 'node:net';
import YAML from 'yaml';
import { z } from 'zod';
import { BpgError, invalid } from './errors.js';
import { parseDuration } from './duration.js';
import { DatabaseName, ImageRef } from './name-schemas.js';
import { configPath, DEFAULT_STATE_DIR } from './config-file.js';
import { parseSize } from './size.js';

export { configPath, DEFAULT_CONFIG_PATH } from './config-file.js';
export { parseSize } from './size.js';

const Size = z.union([z.number().int().positive(), z.string()]).transform((v, ctx) => {
  try {
    return parseSize(v);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
    return z.NEVER;
  }
});

/** Durations as milliseconds; written 30s, 15m, 1h, 7d or a number of seconds. */
const Duration = z.union([z.number().positive(), z.string()]).transform((v, ctx) => {
  try {
    return parseDuration(v);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
    return z.NEVER;
  }
});

/** Scheduled snapshots of a database's main branch: one every `every`, the newest `keep` kept. */
const SnapshotSchedule = z
  .object({
    every: Duration,
    keep: z.number().int().min(1).max(10_000),
  })
  .strict();

/**
 * Masking of a database's imported copy before it becomes main (on import and every refresh): a
 * SQL file run in the database, and/or a command (argv, no shell) run on the host with PGHOST,
 * PGPORT, PGUSER and PGDATABASE set to the copy.
 */
const Masking = z
  .object({
    sql: z.string().startsWith('/', 'must be an absolute path').optional(),
    command: z.array(z.string().min(1)).min(1).max(1000).optional(),
  })
  .strict()
  .refine((m) => m.sql !== undefined || m.command !== undefined, 'set sql, command or both');

/** A scheduled refresh of main from its source (`bpg serve` runs it when due). */
const RefreshSchedule = z
  .object({
    every: Duration,
    /** The source (postgres://user@host:port/db, no password in it); default: the one recorded at import. */
    from: z
      .string()
      .refine((v) => {
        try {
          const u = new URL(v);
          return (u.protocol === 'postgres:' || u.protocol === 'postgresql:') && u.password === '';
        } catch {
          return false;
        }
      }, 'must be a postgres:// URL without a password (use passwordEnv or passwordFile)')
      .optional(),
    method: z.enum(['dump', 'basebackup']).optional(),
    jobs: z.number().int().min(1).max(64).optional(),
    /** Where the source's password is: an environment variable of `bpg serve`, or a file. */
    passwordEnv: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/)
      .optional(),
    passwordFile: z.string().startsWith('/', 'must be an absolute path').optional(),
  })
  .strict();

const Port = z.number().int().min(1).max(65535);
const ZfsName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]*$/, 'letters, digits, _ . : - only');

export const ConfigSchema = z
  .object({
    zfs: z
      .object({
        pool: ZfsName.default('tank'),
        datasetBase: ZfsName.default('betterpg'),
      })
      .strict()
      .prefault({}),
    postgres: z
      .object({
        image: ImageRef.default('postgres:17'),
        /** Images a new database may name (`--image`, `image` in the API) besides `image`; anything else is refused. */
        allowedImages: z.array(ImageRef).max(100).default([]),
        bindAddress: z
          .string()
          .refine((v) => isIP(v) !== 0, 'must be an IP address')
          .default('127.0.0.1'),
        /** Written into connection strings: a host name or an IP address, nothing that could bend a URI. */
        publicHost: z
          .string()
          .refine(
            (v) => isIP(v) !== 0 || /^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(v),
            'must be a host name or an IP address',
          )
          .default('127.0.0.1'),
        portRange: z
          .tuple([Port, Port])
          .refine(([a, b]) => a <= b, 'first port must not be above the second')
          .default([15432, 16431]),
        /**
         * Port slots `bpg serve` keeps started ahead of need (engine/port-slots.ts): each branch's
         * PostgreSQL joins the network namespace of a small container that owns its port on the
         * branch network, and a new branch takes a spare one instead of waiting for Docker to set
         * up a network (about 0.2 s of a create). Each spare holds one port of portRange. 0: none.
         */
        warmSlots: z.number().int().min(0).max(20).default(2),
        /** uid:gid the image runs PostgreSQL as (999 in the official images). */
        uid: z.number().int().nonnegative().default(999),
        gid: z.number().int().nonnegative().default(999),
        superuser: z
          .string()
          .regex(/^[a-z_][a-z0-9_]*$/)
          .default('postgres'),
        memory: Size.default(512 * 1024 ** 2),
        cpus: z.number().positive().max(256).default(1),
        shmSize: Size.default(128 * 1024 ** 2),
        /**
         * ZFS quota of each branch's dataset: the most NEW space it may take from the pool (what it
         * writes after the clone, and its kept snapshots). Not main's: main holds the data every
         * branch is cloned from (set one with --disk on db create). null: no quota.
         */
        diskQuota: Size.nullable().default(20 * 1024 ** 3),
        /**
         * ZFS quota of each branch's WAL archive dataset. null: no quota. At least one WAL segment:
         * below that ZFS refuses to make the dataset, or PostgreSQL can archive nothing.
         */
        walQuota: Size.refine(
          (v) => v >= 16 * 1024 ** 2,
          'must be at least 16m (one WAL segment), or null for no quota',
        )
          .nullable()
          .default(10 * 1024 ** 3),
        /**
         * Container hardening (agent/drivers/hardening.ts); each key has an off value. PR SQL runs
         * shell commands in the container as uid 999 (COPY ... TO PROGRAM): these bound what it can do.
         */
        /** Most processes in one branch container (a fork bomb stops here); null: no limit. */
        pidsLimit: z
          .number()
          .int()
          .min(32, 'must be at least 32 (PostgreSQL needs a process per connection)')
          .max(1_000_000)
          .nullable()
          .default(512),
        /** Drop every Linux capability (PostgreSQL runs as uid 999 and needs none). */
        dropCapabilities: z.boolean().default(true),
        /** no-new-privileges: nothing in the container gains privileges through setuid files. */
        noNewPrivileges: z.boolean().default(true),
        /** Read-only root filesystem; /tmp and the socket directory become tmpfs. */
        readOnlyRootfs: z.boolean().default(true),
        /** Container log (json-file) rotated at this size, at most logMaxFiles files; null: the daemon's default logging. */
        logMaxSize: Size.nullable().default(10 * 1024 ** 2),
        logMaxFiles: z.number().int().min(1).max(100).default(3),
        /**
         * Branch containers join the Docker network `<network>-isolated` (egress off) or
         * `<network>-egress`, shared by every agent on the host, without container-to-container
         * traffic; null: Docker's default bridge (no isolation; needs egress: true).
         */
        network: z
          .string()
          .regex(
            /^[a-z][a-z0-9]{0,5}$/,
            'lowercase letters and digits, at most 6 (the bridge is named <network>-isolated)',
          )
          .nullable()
          .default('bpg'),
        /** Branch containers may open connections (to the internet, the host, other hosts); off: they only answer. */
        egress: z.boolean().default(false),
        stopTimeoutSeconds: z.number().int().positive().default(30),
        readyTimeoutSeconds: z.number().int().positive().default(120),
        /** postgresql.conf settings written for every branch (the agent's own keys win). */
        settings: z
          .record(
            z.string().regex(/^[a-z_.]+$/, 'setting names are lowercase words'),
            // One line each: a line break in a value would add lines of its own to postgresql.conf.
            z.union([
              z.string().regex(/^[^\x00-\x1f]*$/, 'values must be one line of printable text'),
              z.number(),
              z.boolean(),
            ]),
          )
          .default({ shared_buffers: '32MB', max_connections: 50, work_mem: '4MB', jit: 'off' }),
      })
      .strict()
      .prefault({}),
    stateDir: z.string().startsWith('/', 'must be an absolute path').default(DEFAULT_STATE_DIR),
    /** The HTTP API (`bpg serve`). Tokens may also come from env BPG_API_TOKEN. */
    api: z
      .object({
        /** host:port, or [v6]:port; port 0 picks a free one. */
        listen: z
          .string()
          .regex(/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must look like 127.0.0.1:7432')
          .default('127.0.0.1:7432'),
        tokens: z
          .array(
            z
              .object({
                /** Logged with every operation; never the token itself. */
                name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, _ . - only (at most 64)'),
                token: z
                  .string()
                  .min(16, 'must be at least 16 characters')
                  .max(4096)
                  .regex(/^\S+$/, 'must not contain spaces'),
                /** read: GET routes only; write: also changes to databases, branches, snapshots; admin (absent): also the doctor. */
                role: z.enum(['admin', 'write', 'read']).optional(),
                /** Only these databases (every route; lists are filtered to them). Absent: every database. */
                databases: z.array(DatabaseName).min(1, 'list at least one database, or leave it out').optional(),
              })
              .strict(),
          )
          .refine((t) => new Set(t.map((x) => x.name)).size === t.length, 'token names must be unique')
          .default([]),
        /** Largest request body accepted; bigger ones get 413. */
        bodyLimit: Size.default(64 * 1024),
        /** HTTPS instead of HTTP: PEM files. Use it whenever the API leaves the loopback interface. */
        tls: z
          .object({ cert: z.string().startsWith('/'), key: z.string().startsWith('/') })
          .strict()
          .nullable()
          .default(null),
        /** Plain HTTP on an address other hosts can reach (default: refused unless tls is set). */
        allowPlaintext: z.boolean().default(false),
        /** Serve GET /metrics without a token (for a Prometheus that cannot send one). */
        metricsWithoutToken: z.boolean().default(false),
        /** A scrape without a token is answered from a collection at most this old (they share one, never start their own). */
        metricsMaxAge: Duration.default(parseDuration('2s')),
        /** Requests without a token waiting at once (for /metrics); more get 503 with Retry-After. */
        maxUnauthenticatedInFlight: z.number().int().min(1).max(100_000).default(64),
      })
      .strict()
      .prefault({}),
    /**
     * The router (agent/proxy): one PostgreSQL endpoint for every branch, run by `bpg serve`. A
     * client names its branch in the database name (`<db>@<branch>`) or the TLS SNI host name
     * (`<branch>.<db>.<domain>`); the router starts idle-stopped branches on connect.
     */
    proxy: z
      .object({
        enabled: z.boolean().default(false),
        /** host:port, or [v6]:port. */
        listen: z
          .string()
          .regex(/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must look like 127.0.0.1:6432')
          .default('127.0.0.1:6432'),
        /** SNI routing: `<branch>.<db>.<domain>` (wildcard DNS and a wildcard certificate); null: by database name only. */
        domain: z
          .string()
          .regex(/^[A-Za-z0-9]([A-Za-z0-9.-]{0,200}[A-Za-z0-9])?$/, 'must be a DNS name such as db.example.com')
          .nullable()
          .default(null),
        /** Host in connection strings; null: postgres.publicHost. */
        publicHost: z
          .string()
          .refine(
            (v) => isIP(v) !== 0 || /^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(v),
            'must be a host name or an IP address',
          )
          .nullable()
          .default(null),
        /** Port in connection strings (a load balancer in front); null: the port of proxy.listen. */
        publicPort: Port.nullable().default(null),
        /** PEM files; checked at start, read again on SIGHUP. */
        tls: z
          .object({ cert: z.string().startsWith('/'), key: z.string().startsWith('/') })
          .strict()
          .nullable()
          .default(null),
        /** A plaintext startup gets an error asking for sslmode=require; null: true unless proxy.listen is loopback. */
        requireTls: z.boolean().nullable().default(null),
        /** Largest startup packet accepted (PostgreSQL's own limit is 10000 bytes). */
        maxStartupPacket: z.number().int().min(64).max(1_000_000).default(10_000),
        /** A client that has not finished its TLS handshake and startup packet in this time is dropped. */
        startupTimeout: Duration.default(parseDuration('10s')),
        /** Open client connections through the router, all branches together; more get 53300. */
        maxConnections: z.number().int().min(1).max(1_000_000).default(2000),
        /** Open client connections to one branch; more get 53300. */
        maxConnectionsPerBranch: z.number().int().min(1).max(100_000).default(100),
        /** Start a branch the idle stop stopped when a client connects to it. */
        wakeOnConnect: z.boolean().default(true),
      })
      .strict()
      .prefault({}),
    /** The migration safety report (watches of a branch while a PR's migrations run). */
    review: z
      .object({
        /** A lock that blocks writes held longer than this by a migration is flagged. */
        maxLockSeconds: z.number().positive().max(86_400).default(1),
      })
      .strict()
      .prefault({}),
    /** Branch expiry and idle stop, run by the daemon's housekeeping loop. */
    expiry: z
      .object({
        /** TTL for branches named pr-<number> created without one (null: no default). */
        prBranchTtl: Duration.nullable().default(parseDuration('7d')),
        /** Stop running branches nobody has connected to for this long (null: never). */
        idleStopAfter: Duration.nullable().default(null),
      })
      .strict()
      .prefault({}),
    housekeeping: z
      .object({
        /** How often `bpg serve` expires branches, stops idle ones and takes scheduled snapshots. */
        interval: Duration.default(parseDuration('1m')),
        /**
         * Archived WAL older than this is removed from every branch, except what a kept snapshot
         * needs for point-in-time recovery (null: keep all). Recovery starts at a snapshot, so
         * older WAL without one is of no use, and each application-consistent branch of a
         * parent archives a (mostly empty) 16 MiB segment of it.
         */
        walMaxAge: Duration.nullable().default(parseDuration('1d')),
      })
      .strict()
      .prefault({}),
    /** Default snapshot schedule for every database (null: none). */
    snapshots: SnapshotSchedule.nullable().default(null),
    /** Per-database settings; `snapshots: null` turns the default schedule off for one. */
    databases: z
      .record(
        z.string(),
        z
          .object({
            snapshots: SnapshotSchedule.nullable().optional(),
            masking: Masking.optional(),
            refresh: RefreshSchedule.optional(),
          })
          .strict(),
      )
      .default({}),
    limits: z
      .object({
        branchesPerDatabase: z.number().int().positive().nullable().default(100),
        branchesTotal: z.number().int().positive().nullable().default(500),
        /** The most memory and CPUs one branch may be given (postgres.memory/cpus are the defaults). */
        maxMemory: Size.nullable().default(null),
        maxCpus: z.number().positive().nullable().default(null),
        /** The largest --disk (quota) one branch may be given; postgres.diskQuota must be within it. */
        maxDisk: Size.nullable().default(null),
        /** Creates are refused while the pool has less free space than this. */
        minFreeBytes: Size.default(512 * 1024 ** 2),
        /** Database and branch creates `bpg serve` runs at once; more wait in arrival order. */
        concurrentCreates: z.number().int().min(1).max(1000).default(4),
        /** Creates that may wait for a turn; one more gets 503 with Retry-After at once (0: none wait). */
        createQueueLength: z.number().int().min(0).max(100_000).default(64),
        /** A create that waited this long for its turn gets 503 with Retry-After, having made nothing. */
        createQueueTimeout: Duration.default(parseDuration('60s')),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type Config = z.infer<typeof ConfigSchema>;
export type ConfigInput = z.input<typeof ConfigSchema>;

/** proxy.requireTls as it applies: the setting, or true unless the router listens on the loopback interface only. */
export function effectiveRequireTls(px: Config['proxy']): boolean {
  if (px.requireTls !== null) return px.requireTls;
  const host = px.listen.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  return !(host === 'localhost' || host === '::1' || /^127\./.test(host));
}

export function parseConfig(raw: unknown, where: string): Config {
  const r = ConfigSchema.safeParse(raw ?? {});
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const key = issue.path.length ? issue.path.join('.') : '(top level)';
    throw invalid(`invalid config ${where}: ${key}: ${issue.message}`);
  }
  if (r.data.postgres.network === null && !r.data.postgres.egress) {
    throw invalid(
      `invalid config ${where}: postgres.network: null (Docker's default bridge) cannot keep egress off; set postgres.egress: true too`,
    );
  }
  const [lo, hi] = r.data.postgres.portRange;
  if (hi - lo > 100_000) throw invalid(`invalid config ${where}: postgres.portRange: too wide`);
  // The defaults are what a branch gets without --memory/--cpus: they must be within the limits too.
  const { maxMemory, maxCpus } = r.data.limits;
  if (maxMemory !== null && r.data.postgres.memory > maxMemory)
    throw invalid(`invalid config ${where}: postgres.memory is above limits.maxMemory`);
  if (maxCpus !== null && r.data.postgres.cpus > maxCpus)
    throw invalid(`invalid config ${where}: postgres.cpus is above limits.maxCpus`);
  const px = r.data.proxy;
  if (px.enabled && px.tls === null && effectiveRequireTls(px))
    throw invalid(
      `invalid config ${where}: proxy.tls: the router listens on ${px.listen}, beyond the loopback interface, and needs a certificate (or set proxy.requireTls: false)`,
    );
  const { maxDisk } = r.data.limits;
  const quota = r.data.postgres.diskQuota;
  if (maxDisk !== null && (quota === null || quota > maxDisk))
    throw invalid(`invalid config ${where}: postgres.diskQuota is above limits.maxDisk`);
  return r.data;
}

export async function loadConfig(path = configPath()): Promise<Config> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new BpgError('unavailable', `no config file at ${path}: run 'bpg init' (or set BPG_CONFIG)`);
    }
    throw e;
  }
  let raw: unknown;
  try {
    raw = YAML.parse(text);
  } catch (e) {
    throw invalid(`invalid config ${path}: not YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  return parseConfig(raw, path);
}

/** Writes a config file (validated first), atomically. */
export async function writeConfig(input: ConfigInput, path = configPath()): Promise<Config> {
  const cfg = parseConfig(input, path);
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, YAML.stringify(input), { mode: 0o600 }); // it may hold API tokens
  await rename(tmp, path);
  return cfg;
}

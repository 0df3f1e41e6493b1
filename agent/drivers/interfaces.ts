import type pg from 'pg';

/**
 * What the engine needs from the outside world, and nothing more: a store of datasets (ZFS), a
 * container runtime (Docker) and PostgreSQL clients. The engine's rules are written against these;
 * the drivers implement them (ZfsDriver, DockerDriver, postgresClients). Another runtime (e.g. a
 * Kubernetes one, docs/design/kubernetes.md) would implement the same two interfaces.
 */

// ------------------------------------------------------------------ the types they exchange

export interface ContainerSpec {
  name: string;
  image: string;
  user: string;
  entrypoint: string[];
  cmd: string[];
  binds: string[];
  labels: Record<string, string>;
  /** Publish 5432 on this host address and port; omitted for one-shot containers. */
  publish?: { hostIp: string; hostPort: number };
  memoryBytes?: number;
  nanoCpus?: number;
  shmSizeBytes?: number;
  stopTimeoutSeconds?: number;
  restartPolicy?: 'no' | 'unless-stopped';
  /** The signal `docker stop` sends first (default SIGINT: PostgreSQL's fast shutdown). */
  stopSignal?: string;
  // Hardening (agent/drivers/hardening.ts builds these from the postgres.* keys); omitted: Docker's default.
  pidsLimit?: number;
  capDrop?: string[];
  securityOpt?: string[];
  readOnlyRootfs?: boolean;
  /** tmpfs mounts: path -> mount options. */
  tmpfs?: Record<string, string>;
  /** json-file log, rotated. */
  log?: { maxSizeBytes: number; maxFiles: number };
  /**
   * A branch network (created on demand, firewalled without egress), no network at all, another
   * container's network namespace (a one-shot that talks to that container's server on 127.0.0.1,
   * with its reach and no more), or (omitted) Docker's default bridge.
   */
  network?: NetworkPlan | 'none' | { container: string };
}

export interface ContainerState {
  id: string;
  running: boolean;
  /** Docker restarted it under its restart policy since it was created: it crashed. */
  restarts: number;
  status: string;
  exitCode: number;
  /** When the container last started (ISO), null if never. */
  startedAt: string | null;
  labels: Record<string, string>;
}

/** User properties the agent stamps on everything it creates, so reconcile can tell ours from yours. */
export type ZfsProps = Record<string, string>;

export interface ZfsEntry {
  name: string;
  type: 'filesystem' | 'snapshot';
  /** betterpg:managed and betterpg:id, where set on this dataset itself (not inherited). */
  managed: boolean;
  id: string | null;
  /** betterpg:wal, where set: the branch id whose WAL archive this dataset is ('root' on `_wal`). */
  wal: string | null;
  mounted: boolean;
  /** The snapshot a clone was made from, or null. */
  origin: string | null;
}

export interface PgTarget {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

/** How a session with a branch's server is opened. */
export interface ConnectOptions {
  /** Close the session (failing the query in flight) once the server has sent more than this many bytes. */
  maxReadBytes?: number;
}

export interface BackupLabel {
  labelfile: string;
  spcmapfile: string;
  /** WAL segments (on the backup's timeline) from the start to the end of the backup, inclusive. */
  firstSegment: string;
  lastSegment: string;
}

export interface NetworkPlan {
  /** Network and bridge name (at most 15 characters, a Linux interface name). */
  name: string;
  /** Containers may open connections; false: the firewall rules below apply. */
  egress: boolean;
}

export interface FirewallRule {
  chain: 'DOCKER-USER' | 'INPUT';
  /** iptables arguments after the chain: what `-C`, `-I` and `-D` take. */
  rule: string[];
}

// ------------------------------------------------------------------ the interfaces

export interface DatasetStore {
  poolExists(pool: string): Promise<boolean>;
  exists(name: string): Promise<boolean>;
  create(name: string, props?: ZfsProps, parents?: boolean): Promise<void>;
  snapshot(snap: string, props?: ZfsProps): Promise<void>;
  clone(snap: string, target: string, props?: ZfsProps): Promise<void>;
  set(name: string, props: ZfsProps): Promise<void>;
  /** Numeric and string properties of one dataset. */
  get(name: string, props: string[]): Promise<Record<string, string>>;
  /** The same for a dataset and its descendants (down to `depth` levels), by dataset name. */
  getTree(name: string, props: string[], depth?: number): Promise<Map<string, Record<string, string>>>;
  mountpoint(name: string): Promise<string>;
  mount(name: string): Promise<void>;
  umount(name: string): Promise<void>;
  isMounted(name: string): Promise<boolean>;
  /** Mounted now, from the kernel's mount table: no command. */
  mountedNow(): Promise<Set<string>>;
  /** The same, with where each is mounted (dataset name -> folder). */
  mountsNow(): Promise<Map<string, string>>;
  /** The folder a dataset is mounted on, mounted first when it is not. */
  mountedFolder(name: string): Promise<string>;
  /** Gone already counts as done. */
  destroy(name: string, opts?: { recursive?: boolean }): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  snapshots(dataset: string): Promise<string[]>;
  /** Every filesystem and snapshot under `root` with what reconcile needs. */
  inventory(root: string): Promise<ZfsEntry[]>;
}

export interface ManagedContainer {
  id: string;
  name: string;
  labels: Record<string, string>;
  state: string;
}

export interface ContainerRuntime {
  ping(): Promise<void>;
  /** Makes sure the image is present (pulling it if it can) and returns its PGDATA. */
  ensureImage(image: string): Promise<{ pgdata: string }>;
  create(spec: ContainerSpec): Promise<string>;
  start(name: string): Promise<void>;
  stop(name: string, timeoutSeconds: number): Promise<void>;
  /** Gone already counts as done. */
  remove(name: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  state(name: string): Promise<ContainerState | null>;
  /** A running container's address on its Docker network (the host reaches it there without docker-proxy); null if none. */
  address(name: string): Promise<{ ip: string; startedAt: string | null } | null>;
  binding(name: string): Promise<{
    hostPort: number | null;
    hostIp: string | null;
    labels: Record<string, string>;
    memory: number;
    nanoCpus: number;
  } | null>;
  logsTail(name: string, lines?: number, sinceSeconds?: number): Promise<string>;
  runOnce(spec: ContainerSpec, timeoutMs?: number): Promise<{ exitCode: number; output: string }>;
  /** This agent's containers (optionally filtered by more labels). */
  listManaged(labels?: Record<string, string>): Promise<ManagedContainer[]>;
  /** The firewall rules a no-egress branch network needs and does not have (empty: none missing). */
  missingFirewallRules(plan: NetworkPlan): Promise<FirewallRule[]>;
  /** Makes the branch network and its firewall rules, checking again even if checked lately. */
  ensureNetwork(plan: NetworkPlan): Promise<void>;
}

export interface Postgres {
  connect(t: PgTarget, timeoutMs?: number, o?: ConnectOptions): Promise<pg.Client>;
  withClient<T>(t: PgTarget, fn: (c: pg.Client) => Promise<T>, o?: ConnectOptions): Promise<T>;
  waitReady(t: PgTarget, timeoutMs: number, stillAlive?: () => Promise<boolean>): Promise<void>;
  /** waitReady, returning the session that found the server ready (the caller ends it). */
  openWhenReady(t: PgTarget, timeoutMs: number, stillAlive?: () => Promise<boolean>): Promise<pg.Client>;
  withBackupMode(
    c: pg.Client,
    label: string,
    takeSnapshot: () => Promise<void>,
    o?: { waitForArchive?: boolean; stopTimeoutMs?: number },
  ): Promise<BackupLabel>;
}

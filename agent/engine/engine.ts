import { randomBytes } from 'node:crypto';
import { chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config.js';
import { BpgError, conflict, describe, invalid, notFound, unavailable } from '../errors.js';
import type { Logger } from '../log.js';
import { refName, type BranchRef } from '../names.js';
import { DockerDriver, LABEL_BRANCH, LABEL_DATABASE, LABEL_ID, LABEL_ROOT, LABEL_SPEC, type ContainerSpec } from '../drivers/docker.js';
import { hardening } from '../drivers/hardening.js';
import { ZfsDriver } from '../drivers/zfs.js';
import { newPassword, quoteIdent, quoteLiteral, scramVerifier, waitReady, withBackupMode, withClient, connect, type BackupLabel, type PgTarget } from '../drivers/postgres.js';
import type { BranchRecord, DatabaseRecord, Operation, SnapshotRecord, State } from '../state/schema.js';
import { planPitr } from './history.js';
import { recoverReset } from './reset.js';
import { recoverBranchRename, recoverDatabaseRename } from './rename.js';
import { StateStore } from '../state/store.js';
import { newOperation, operationAlive, operationDead } from '../state/operation.js';
import { configureNewCluster, mkdirOwned, PG_HBA, prepareBackupClone, prepareCrashClone, serverArgs, writeUserConf } from './datadir.js';
import { WalArchives } from './wal-archive.js';
import { migrateLegacyWal } from './wal-migration.js';
import { createHash } from 'node:crypto';
import { lstat, readFile, rename } from 'node:fs/promises';
import { Layout, ZFS_PROP } from './layout.js';
import { checkImage } from './images.js';
import { checkBranchCount, checkFreeSpace, checkResources, isOutOfSpace, outOfSpaceMessage, ranOutOfSpace } from './limits.js';
import { reservePort } from './ports.js';
import { Steps, StepError } from './steps.js';
import { branchView, type BranchView, type DatabaseView, type Space } from './view.js';

export interface EngineDeps {
  zfs?: ZfsDriver;
  docker?: DockerDriver;
  log: Logger;
}

export interface CreateBranchOptions {
  from?: BranchRef;
  fast?: boolean;
  /** Clone a kept snapshot (`bpg snapshot create`) instead of taking a fresh one. */
  fromSnapshot?: string;
  /** Point-in-time recovery of `from` (default main) to this moment. */
  pitr?: Date;
  /** Delete the branch this long after creation (ms); null: never; undefined: the config's default. */
  ttlMs?: number | null;
  /** Never expired nor stopped when idle. */
  protect?: boolean;
  /** Container limits (bytes, CPUs); default postgres.memory / postgres.cpus. */
  memory?: number;
  cpus?: number;
  /** ZFS quota of the branch's dataset (bytes); default postgres.diskQuota. */
  disk?: number;
}

/** The fields a new branch record starts with besides its identity. */
export function freshBranchFields(o: { expiresAt?: string | null; protect?: boolean; memory?: number; cpus?: number; disk?: number | null } = {}) {
  return {
    expiresAt: o.expiresAt ?? null,
    protected: o.protect ?? false,
    lastActiveAt: new Date().toISOString(),
    stoppedBy: null,
    memory: o.memory ?? null,
    cpus: o.cpus ?? null,
    disk: o.disk ?? null,
  } as const;
}

export interface CreateResult {
  branch: BranchView;
  timings: Record<string, number>;
  totalMs: number;
}

const now = () => new Date().toISOString();
const op = (kind: string): Operation => newOperation(kind);
const newId = () => randomBytes(8).toString('hex');

/** Fails when another live process holds an operation on this record. */
function assertIdle(what: string, current: Operation | null): void {
  if (current && operationAlive(current)) {
    throw conflict(`${what} is busy: '${current.kind}' in progress (pid ${current.pid}, since ${current.startedAt})`);
  }
}

/**
 * The rules. Every face (CLI, HTTP API) calls these methods and nothing else touches ZFS, Docker
 * or the state. Each mutating operation: reserve under the state lock, do the slow work outside it
 * as steps with undo, then record the result under the lock.
 */
export class Engine {
  readonly layout: Layout;
  readonly store: StateStore;
  readonly zfs: ZfsDriver;
  readonly docker: DockerDriver;
  /** @internal */
  readonly wal: WalArchives;
  /** @internal */
  readonly log: Logger;

  /** @internal Refuses when another live process holds an operation on this branch. */
  assertIdleFor(b: BranchRecord): void {
    assertIdle(`branch '${refName(b)}'`, b.operation);
  }

  constructor(
    readonly cfg: Config,
    deps: EngineDeps,
  ) {
    this.layout = new Layout(cfg);
    this.store = new StateStore(cfg.stateDir);
    this.zfs = deps.zfs ?? new ZfsDriver();
    this.docker = (deps.docker ?? new DockerDriver()).forRoot(this.layout.root); // never touches another root's containers
    this.wal = new WalArchives(cfg, this.layout, this.zfs);
    this.log = deps.log;
  }

  // ---------------------------------------------------------------- checks

  /** ZFS pool and Docker engine must be there before anything is reserved. */
  async preflight(): Promise<void> {
    const [docker, pool] = await Promise.allSettled([this.docker.ping(), this.zfs.poolExists(this.cfg.zfs.pool)]);
    if (docker.status === 'rejected') throw docker.reason;
    if (pool.status === 'rejected' || !pool.value) {
      throw unavailable(`ZFS pool '${this.cfg.zfs.pool}' does not exist (create it, or run scripts/setup-host.sh)`);
    }
  }

  /** @internal */
  owner() {
    return { uid: this.cfg.postgres.uid, gid: this.cfg.postgres.gid };
  }

  /** @internal */
  target(b: BranchRecord, db: DatabaseRecord, password = b.password, database = db.pgDatabase): PgTarget {
    return { host: this.cfg.postgres.bindAddress, port: b.port, user: this.cfg.postgres.superuser, password, database };
  }

  // ---------------------------------------------------------------- reads

  async listDatabases(): Promise<DatabaseView[]> {
    const state = await this.store.read();
    const live = await this.liveInfo();
    return Object.values(state.databases)
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((db) => this.databaseView(state, db, live));
  }

  async getDatabase(name: string): Promise<DatabaseView> {
    const state = await this.store.read();
    const db = state.databases[name];
    if (!db) throw notFound(`database '${name}' does not exist`);
    return this.databaseView(state, db, await this.liveInfo());
  }

  async listBranches(database?: string): Promise<BranchView[]> {
    const state = await this.store.read();
    if (database !== undefined && !state.databases[database]) throw notFound(`database '${database}' does not exist`);
    const live = await this.liveInfo();
    return Object.values(state.branches)
      .filter((b) => database === undefined || b.database === database)
      .sort((a, b) => refName(a).localeCompare(refName(b)))
      .map((b) => this.view(state, b, live));
  }

  async getBranch(ref: BranchRef): Promise<BranchView> {
    const state = await this.store.read();
    const b = this.requireBranch(state, ref);
    return this.view(state, b, await this.liveInfo());
  }

  /** The view of a branch this process just started: no Docker listing needed, one `zfs get`. */
  /** @internal */
  async freshView(ref: BranchRef): Promise<BranchView> {
    const state = await this.store.read();
    const b = this.requireBranch(state, ref);
    const space = await this.zfs.get(b.dataset, ['used', 'available', 'quota']).then(spaceOf, () => null);
    const live: LiveInfo = { containers: new Map([[b.container, 'running']]), space: new Map(space === null ? [] : [[b.dataset, space]]) };
    return this.view(state, b, live);
  }

  private databaseView(state: State, db: DatabaseRecord, live: LiveInfo): DatabaseView {
    const branches = Object.values(state.branches)
      .filter((b) => b.database === db.name)
      .sort((a, b) => (a.branch === 'main' ? -1 : b.branch === 'main' ? 1 : a.branch.localeCompare(b.branch)))
      .map((b) => this.view(state, b, live));
    return { name: db.name, image: db.image, createdAt: db.createdAt, branches };
  }

  /** @internal */
  view(state: State, b: BranchRecord, live: LiveInfo): BranchView {
    const db = state.databases[b.database]!;
    let status: string = b.status;
    if (b.status === 'running' || b.status === 'stopped') {
      const c = live.containers.get(b.container);
      status = c === undefined ? 'missing' : c === 'running' ? 'running' : b.status === 'running' ? 'down' : 'stopped';
      if (c === 'restarting') status = 'restarting';
    }
    if (operationDead(b.operation)) status = 'interrupted';
    return branchView(this.cfg, db, b, { status, disk: live.space.get(b.dataset) ?? null, wal: live.space.get(this.layout.walDataset(b.id)) ?? null });
  }

  /** One Docker list and one `zfs get` for every read, however many branches. */
  /** @internal */
  async liveInfo(): Promise<LiveInfo> {
    const containers = new Map<string, string>();
    const space = new Map<string, Space>();
    await Promise.all([
      this.docker
        .listManaged()
        .then((l) => l.forEach((c) => containers.set(c.name, c.state)))
        .catch(() => {}),
      (async () => {
        const out = await this.zfs.getRecursive(this.layout.root, ['used', 'available', 'quota']);
        const rows = new Map<string, Record<string, string>>();
        for (const line of out.split('\n')) {
          const [n, p, v] = line.split('\t');
          if (n && p) rows.set(n, { ...rows.get(n), [p]: v ?? '' });
        }
        for (const [n, p] of rows) space.set(n, spaceOf(p));
      })().catch(() => {}),
    ]);
    return { containers, space };
  }

  /** @internal */
  requireDatabase(state: State, name: string): DatabaseRecord {
    const db = state.databases[name];
    if (!db) throw notFound(`database '${name}' does not exist`);
    return db;
  }

  /** @internal */
  requireBranch(state: State, ref: BranchRef): BranchRecord {
    this.requireDatabase(state, ref.database);
    const b = state.branches[refName(ref)];
    if (!b) throw notFound(`branch '${refName(ref)}' does not exist`);
    return b;
  }

  // ---------------------------------------------------------------- databases

  async createDatabase(name: string, opts: { image?: string; memory?: number; cpus?: number; disk?: number } = {}): Promise<CreateResult> {
    const t0 = performance.now();
    checkResources(this.cfg, opts);
    const image = opts.image ?? this.cfg.postgres.image;
    checkImage(this.cfg, image);
    await this.begin();
    await checkFreeSpace(this.zfs, this.cfg);
    const startedAt = Date.now();
    const log = this.log;
    const ref = { database: name, branch: 'main' };
    const key = refName(ref);

    const record = await this.store.update(async (s) => {
      if (s.databases[name]) throw conflict(`database '${name}' already exists`);
      checkBranchCount(this.cfg, s, name);
      const port = await reservePort(s, this.cfg.postgres.portRange, this.cfg.postgres.bindAddress);
      s.databases[name] = { name, image, createdAt: now(), pgDatabase: name, operation: op('create-database') };
      const b: BranchRecord = {
        id: newId(),
        database: name,
        branch: 'main',
        parent: null,
        status: 'creating',
        port,
        password: newPassword(),
        image,
        dataset: this.layout.branchDataset(name, 'main'),
        container: this.layout.container(name, 'main'),
        origin: null,
        createdAt: now(),
        operation: op('create'),
        ...freshBranchFields({ protect: true, memory: opts.memory, cpus: opts.cpus, disk: opts.disk }),
      };
      s.branches[key] = b;
      return b;
    });

    const steps = new Steps('db create', log);
    try {
      // Pulled only now, once the name, the limits and duplicates are checked and the name reserved.
      const { pgdata } = await steps.step('check image', () => this.docker.ensureImage(image));
      log.info(`creating database ${name} (image ${image})`);
      await steps.step('zfs create', async () => {
        const dbDs = this.layout.databaseDataset(name);
        const existed = await this.zfs.exists(dbDs);
        if (existed) throw conflict(`dataset ${dbDs} already exists (left over? run 'zfs destroy -r ${dbDs}' if it is not needed)`);
        // compression=on (lz4 on OpenZFS, lzjb on zfs-fuse): WAL files and fresh pages are mostly zeros.
        await this.zfs.create(dbDs, { compression: 'on', atime: 'off', [ZFS_PROP.managed]: 'true', [ZFS_PROP.database]: name }, true);
        try {
          await this.zfs.create(record.dataset, this.branchProps(record));
        } catch (e) {
          await this.zfs.destroy(dbDs, { recursive: true }).catch(() => {});
          throw e;
        }
      }, async () => this.zfs.destroy(this.layout.databaseDataset(name), { recursive: true }));
      const dataDir = Layout.dataDir(await this.zfs.mountpoint(record.dataset));
      await steps.step('prepare folders', async () => {
        await mkdirOwned(dataDir, this.owner());
        await this.wal.create(record.id);
      }, async () => this.wal.destroy(record.id), { partial: true });
      await steps.step('initdb', () => this.initdb(record, image, dataDir, pgdata));
      await steps.step('configure', () => configureNewCluster(dataDir, this.cfg));
      await steps.step('start container', () => this.startContainer(record, pgdata, dataDir), () => this.docker.remove(record.container), { partial: true });
      const db = (await this.store.read()).databases[name]!;
      await steps.step('wait ready', () => this.waitBranchReady(record, db, 'postgres'));
      if (name !== 'postgres') {
        await steps.step('create database', () =>
          withClient(this.target(record, db, record.password, 'postgres'), (c) => c.query(`CREATE DATABASE ${quoteIdent(name)}`)),
        );
      }
    } catch (e) {
      await this.undo(steps, e, async (s) => {
        delete s.branches[key];
        delete s.databases[name];
      }, { containers: [record.container], sinceMs: startedAt });
    }
    await this.store.update((s) => {
      s.databases[name]!.operation = null;
      s.branches[key]!.status = 'running';
      s.branches[key]!.operation = null;
    });
    return { branch: await this.freshView(ref), timings: steps.timings, totalMs: Math.round(performance.now() - t0) };
  }

  /** initdb in a one-shot container of the image, so files belong to the image's postgres user. */
  private async initdb(b: BranchRecord, image: string, dataDir: string, pgdata: string): Promise<void> {
    const tmp = this.layout.tmpDir();
    await mkdir(tmp, { recursive: true, mode: 0o700 });
    const pwfile = join(tmp, `pw-${b.id}`);
    await writeFile(pwfile, b.password + '\n', { mode: 0o600 });
    await chown(pwfile, this.cfg.postgres.uid, this.cfg.postgres.gid);
    try {
      const spec: ContainerSpec = {
        name: `bpg-initdb-${b.id}`,
        image,
        user: `${this.cfg.postgres.uid}:${this.cfg.postgres.gid}`,
        entrypoint: ['initdb'],
        cmd: ['-D', pgdata, '-U', this.cfg.postgres.superuser, '--pwfile=/run/bpg-pwfile', '--auth-local=trust', '--auth-host=scram-sha-256', '-E', 'UTF8', '--locale=C'],
        binds: [`${dataDir}:${pgdata}`, `${pwfile}:/run/bpg-pwfile:ro`],
        labels: this.labels(b),
        ...hardening(this.cfg, { oneShot: true }),
      };
      const res = await this.docker.runOnce(spec);
      if (res.exitCode !== 0) {
        const lines = res.output.trim().split('\n');
        // A full disk is reported early in the output, then buried under clean-up lines.
        const last = lines.find((l) => isOutOfSpace(new Error(l))) ?? lines.slice(-3).join(' / ');
        throw new Error(`initdb exited with ${res.exitCode}: ${last}`);
      }
    } finally {
      await rm(pwfile, { force: true });
    }
  }

  async deleteDatabase(name: string, opts: { force?: boolean } = {}): Promise<void> {
    await this.begin();
    const doomed = await this.store.update((s) => {
      const db = this.requireDatabase(s, name);
      assertIdle(`database '${name}'`, db.operation);
      const branches = Object.values(s.branches).filter((b) => b.database === name);
      const others = branches.filter((b) => b.branch !== 'main');
      if (others.length && !opts.force) {
        throw conflict(`database '${name}' has ${others.length} branch(es) besides main (${others.map(refName).join(', ')}); use --force to delete them all`);
      }
      for (const b of branches) assertIdle(`branch '${refName(b)}'`, b.operation);
      db.operation = op('delete-database');
      for (const b of branches) {
        b.status = 'deleting';
        b.operation = op('delete');
      }
      return deletionOrder(branches);
    });
    for (const b of doomed) await this.destroyBranch(b);
    await this.zfs.destroy(this.layout.databaseDataset(name), { recursive: true });
    await this.store.update((s) => {
      delete s.databases[name];
    });
    this.log.info(`deleted database ${name}`);
  }

  // ---------------------------------------------------------------- branches

  async createBranch(ref: BranchRef, opts: CreateBranchOptions = {}): Promise<CreateResult> {
    const t0 = performance.now();
    await this.begin();
    const key = refName(ref);
    if (ref.branch === 'main') throw conflict(`'main' is created with its database (bpg db create ${ref.database})`);
    if (opts.fromSnapshot && opts.pitr) throw invalid('use either --from-snapshot or --pitr, not both');
    if (opts.fromSnapshot && opts.from) throw invalid('--from-snapshot already names the source branch; drop --from');
    if ((opts.fromSnapshot || opts.pitr) && opts.fast) throw invalid('--fast applies to fresh snapshots only');
    checkResources(this.cfg, opts);
    await checkFreeSpace(this.zfs, this.cfg);
    const startedAt = Date.now();
    const fromRef = opts.from ?? { database: ref.database, branch: 'main' };
    if (fromRef.database !== ref.database) throw invalid(`--from must be a branch of database '${ref.database}', not '${refName(fromRef)}'`);
    const log = this.log;

    // Point-in-time recovery needs the source's WAL up to the target in its archive.
    let pitr: { target: Date; snapshot: SnapshotRecord } | null = null;
    if (opts.pitr) pitr = await planPitr(this, fromRef, opts.pitr);

    const { record, parent, db, kept } = await this.store.update(async (s) => {
      const db = this.requireDatabase(s, ref.database);
      assertIdle(`database '${ref.database}'`, db.operation);
      if (s.branches[key]) throw conflict(`branch '${key}' already exists`);
      checkBranchCount(this.cfg, s, ref.database);
      let parent: BranchRecord | undefined;
      let kept: SnapshotRecord | null = null;
      if (opts.fromSnapshot || pitr) {
        kept = pitr ? pitr.snapshot : (s.snapshots[opts.fromSnapshot!] ?? null);
        if (!kept || !s.snapshots[kept.id]) throw notFound(`snapshot '${opts.fromSnapshot ?? pitr!.snapshot.id}' does not exist`);
        parent = Object.values(s.branches).find((b) => b.id === kept!.branchId);
        if (parent && parent.database !== ref.database) throw invalid(`snapshot '${kept.id}' belongs to database '${parent.database}', not '${ref.database}'`);
      } else {
        parent = s.branches[refName(fromRef)];
      }
      if (!parent) throw notFound(`branch '${refName(fromRef)}' does not exist`);
      if (!kept && parent.status !== 'running' && parent.status !== 'stopped') {
        throw conflict(`branch '${refName(parent)}' is ${parent.status}; it cannot be branched now`);
      }
      assertIdle(`branch '${refName(parent)}'`, parent.operation?.kind === 'delete' ? parent.operation : null);
      const port = await reservePort(s, this.cfg.postgres.portRange, this.cfg.postgres.bindAddress);
      const id = newId();
      const record: BranchRecord = {
        id,
        database: ref.database,
        branch: ref.branch,
        parent: refName(parent),
        status: 'creating',
        port,
        password: newPassword(),
        image: parent.image,
        dataset: this.layout.branchDataset(ref.database, ref.branch),
        container: this.layout.container(ref.database, ref.branch),
        origin: kept
          ? { snapshot: `${parent.dataset}@${kept.name}`, consistency: kept.consistency }
          : { snapshot: `${parent.dataset}@bpg-${id}`, consistency: opts.fast ? 'crash' : 'application' },
        createdAt: now(),
        operation: op('create'),
        // A protected branch gets no pr-<n> default TTL (it would never be enforced); an explicit one is kept.
        ...freshBranchFields({
          expiresAt: opts.protect && opts.ttlMs === undefined ? null : this.expiryFor(ref.branch, opts.ttlMs),
          protect: opts.protect,
          memory: opts.memory,
          cpus: opts.cpus,
          disk: opts.disk ?? this.cfg.postgres.diskQuota,
        }),
      };
      s.branches[key] = record;
      return { record, parent: { ...parent }, db: { ...db }, kept };
    });

    const steps = new Steps('branch create', log);
    try {
      const snap = record.origin!.snapshot;
      const { pgdata } = await steps.step('check image', () => this.docker.ensureImage(record.image));
      let label: BackupLabel | null = kept?.backup ?? null;
      if (!kept) label = await this.snapshotParent(steps, parent, db, snap, { fast: !!opts.fast, label: `betterpg ${key}`, by: record });
      await steps.step('zfs clone', () => this.cloneFresh(snap, record), () => this.zfs.destroy(record.dataset), { partial: true });
      await this.zfs.mount(record.dataset);
      const dataDir = Layout.dataDir(await this.zfs.mountpoint(record.dataset));
      await steps.step('prepare data', async () => {
        await this.wal.create(record.id);
        if (pitr) {
          await prepareBackupClone(dataDir, this.cfg, label!, []);
        } else if (label) {
          const parentData = Layout.dataDir(await this.zfs.mountpoint(parent.dataset));
          await prepareBackupClone(dataDir, this.cfg, label, [{ dir: this.layout.walDir(parent.id) }, ...(kept ? [] : [{ dir: parentData, sub: 'pg_wal' }])]);
        } else {
          await prepareCrashClone(dataDir, this.cfg);
        }
        // partial: a failure half-way (a full disk while WAL is copied) leaves the new WAL archive behind.
      }, () => this.wal.destroy(record.id), { partial: true });
      if (pitr) {
        // Replay the source's archive (mounted read-only for this start only) up to the target.
        const restore = '/var/lib/postgresql/restore-archive';
        const conf = {
          restore_command: `cp ${restore}/%f %p`,
          // numeric offset: zone abbreviations such as 'Z' are not loaded yet when this is parsed
          recovery_target_time: pitr.target.toISOString().replace('T', ' ').replace('Z', '+00'),
          recovery_target_action: 'promote',
          recovery_target_timeline: 'latest',
        };
        await steps.step(
          'start recovery',
          async () => {
            await this.wal.mount(parent.id);
            await this.startContainer(record, pgdata, dataDir, { binds: [`${this.layout.walDir(parent.id)}:${restore}:ro`], conf });
          },
          () => this.docker.remove(record.container),
          { partial: true },
        );
        await steps.step('recover to target', () => this.waitBranchReady({ ...record, password: parent.password }, db));
        // From now on the branch archives into and recovers from its own folder only.
        await steps.step('detach source archive', async () => {
          await this.docker.stop(record.container, this.cfg.postgres.stopTimeoutSeconds);
          await this.docker.remove(record.container);
        });
      }
      await steps.step('start container', () => this.startContainer(record, pgdata, dataDir), () => this.docker.remove(record.container), { partial: true });
      // The clone still has its parent's password: connect with it once, then give the branch its own.
      await steps.step('wait ready', () => this.waitBranchReady({ ...record, password: parent.password }, db));
      await steps.step('set password', () => this.setPassword(record, db, parent.password, record.password));
    } catch (e) {
      await this.undo(steps, e, async (s) => {
        delete s.branches[key];
      }, { containers: [parent.container, record.container], sinceMs: startedAt });
    }
    await this.store.update((s) => {
      s.branches[key]!.status = 'running';
      s.branches[key]!.operation = null;
    });
    if (opts.fast) log.warn(`branch ${key} is crash-consistent (--fast): the parent was checkpointed, not put in backup mode`);
    return { branch: await this.freshView(ref), timings: steps.timings, totalMs: Math.round(performance.now() - t0) };
  }

  /** @internal Clones into a dataset path that must not exist yet (so an undo never destroys a stranger's). */
  async cloneFresh(snap: string, b: BranchRecord, target = b.dataset): Promise<void> {
    if (await this.zfs.exists(target)) throw conflict(`dataset ${target} already exists (left over? 'bpg doctor' or 'zfs destroy -r ${target}')`);
    await this.zfs.clone(snap, target, this.branchProps(b));
  }

  /** @internal Gives a branch's superuser a new password (sent as a SCRAM verifier). */
  async setPassword(b: BranchRecord, db: DatabaseRecord, current: string, next: string): Promise<void> {
    await withClient(this.target(b, db, current), (c) =>
      c.query(`ALTER ROLE ${quoteIdent(this.cfg.postgres.superuser)} PASSWORD ${quoteLiteral(scramVerifier(next))}`),
    );
  }

  /**
   * @internal Snapshots a branch for a clone: backup mode on one held connection (default), or
   * CHECKPOINT then snapshot (`fast`), or a plain snapshot of a stopped cluster, which is at rest.
   * Returns the backup label when there is one. `waitForArchive` makes sure the backup's WAL is
   * in the branch's archive (kept snapshots need that; a clone made right away copies it itself).
   */
  async snapshotParent(
    steps: Steps,
    parent: BranchRecord,
    db: DatabaseRecord,
    snap: string,
    o: { fast: boolean; label: string; by: { database: string; branch: string }; waitForArchive?: boolean },
  ): Promise<BackupLabel | null> {
    const props = { [ZFS_PROP.managed]: 'true', [ZFS_PROP.database]: o.by.database, [ZFS_PROP.branch]: o.by.branch, [ZFS_PROP.consistency]: o.fast ? 'crash' : 'application' };
    const takeSnapshot = () => steps.step('zfs snapshot', () => this.zfs.snapshot(snap, props), () => this.zfs.destroy(snap));
    const parentRunning = (await this.docker.state(parent.container))?.running === true;
    if (!parentRunning) {
      if (parent.status === 'running') throw conflict(`branch '${refName(parent)}' is down (its container is not running); start it first`);
      await takeSnapshot();
      return null;
    }
    if (o.fast) {
      await steps.step('checkpoint', () => withClient(this.target(parent, db), (c) => c.query('CHECKPOINT')));
      await takeSnapshot();
      return null;
    }
    const c = await steps.step('connect to parent', () => connect(this.target(parent, db)));
    try {
      return await steps.step('backup mode', () => withBackupMode(c, o.label, () => takeSnapshot(), { waitForArchive: o.waitForArchive }));
    } finally {
      await c.end().catch(() => {});
    }
  }

  /** `onlyIf` runs under the lock on the branch and every descendant: throw to refuse (housekeeping's re-check). */
  async deleteBranch(ref: BranchRef, opts: { force?: boolean; onlyIf?: (b: BranchRecord) => void } = {}): Promise<string[]> {
    await this.begin();
    const key = refName(ref);
    if (ref.branch === 'main') throw conflict(`'main' can only be deleted with its database (bpg db delete ${ref.database})`);
    const doomed = await this.store.update((s) => {
      const b = this.requireBranch(s, ref);
      const descendants = descendantsOf(s, key);
      if (descendants.length && !opts.force) {
        throw conflict(`branch '${key}' has child branches (${descendants.map(refName).join(', ')}); use --force to delete them too`);
      }
      const all = [b, ...descendants];
      for (const x of all) assertIdle(`branch '${refName(x)}'`, x.operation);
      if (opts.onlyIf) for (const x of all) opts.onlyIf(x);
      for (const x of all) {
        x.status = 'deleting';
        x.operation = op('delete');
      }
      return deletionOrder(all);
    });
    for (const b of doomed) await this.destroyBranch(b);
    return doomed.map(refName);
  }

  /**
   * Removes everything a branch owns, tolerating parts already gone, then its record. Every step is
   * idempotent, so a delete killed anywhere is finished by running this again (recoverInterrupted).
   */
  /** @internal */
  async destroyBranch(b: BranchRecord): Promise<void> {
    const steps = new Steps('branch delete', this.log);
    await steps.step('remove container', () => this.docker.remove(b.container));
    await steps.step('destroy dataset', () => this.zfs.destroy(b.dataset, { recursive: true })); // with its kept snapshots
    await steps.step('remove WAL folder', () => this.wal.destroy(b.id));
    const snap = b.origin?.snapshot;
    await steps.step('forget', () =>
      this.store.update(async (s) => {
        delete s.branches[refName(b)];
        for (const k of Object.keys(s.snapshots)) if (s.snapshots[k]!.branchId === b.id) delete s.snapshots[k];
        // The origin snapshot goes too, unless another branch was cloned from it or it is kept.
        if (snap && !snapshotInUse(s, snap)) await this.zfs.destroy(snap);
      }),
    );
    this.log.info(`deleted branch ${refName(b)}`);
  }

  // ---------------------------------------------------------------- lifecycle

  async start(ref: BranchRef): Promise<BranchView> {
    return this.lifecycle(ref, 'start', async (b, db) => {
      const { pgdata } = await this.docker.ensureImage(b.image);
      await this.zfs.mount(b.dataset);
      const dataDir = Layout.dataDir(await this.zfs.mountpoint(b.dataset));
      await this.startContainer(b, pgdata, dataDir);
      await this.waitBranchReady(b, db);
      return 'running';
    });
  }

  /** Stops the container; port, password and data stay. `by: 'idle'` when the idle stop does it. */
  async stop(ref: BranchRef, by: 'user' | 'idle' = 'user'): Promise<BranchView> {
    return this.lifecycle(ref, 'stop', async (b) => {
      await this.docker.stop(b.container, this.cfg.postgres.stopTimeoutSeconds);
      return 'stopped';
    }, by);
  }

  async restart(ref: BranchRef): Promise<BranchView> {
    return this.lifecycle(ref, 'restart', async (b, db) => {
      await this.docker.stop(b.container, this.cfg.postgres.stopTimeoutSeconds);
      const { pgdata } = await this.docker.ensureImage(b.image);
      await this.zfs.mount(b.dataset);
      await this.startContainer(b, pgdata, Layout.dataDir(await this.zfs.mountpoint(b.dataset)));
      await this.waitBranchReady(b, db);
      return 'running';
    });
  }

  private async lifecycle(ref: BranchRef, kind: string, work: (b: BranchRecord, db: DatabaseRecord) => Promise<'running' | 'stopped'>, stoppedBy?: 'user' | 'idle'): Promise<BranchView> {
    await this.begin();
    const { b, db } = await this.store.update((s) => {
      const b = this.requireBranch(s, ref);
      assertIdle(`branch '${refName(ref)}'`, b.operation);
      if (b.status !== 'running' && b.status !== 'stopped') throw conflict(`branch '${refName(ref)}' is ${b.status}`);
      b.operation = op(kind);
      return { b: { ...b }, db: { ...s.databases[ref.database]! } };
    });
    let status: 'running' | 'stopped' | undefined;
    try {
      status = await work(b, db);
    } finally {
      await this.store.update((s) => {
        const cur = s.branches[refName(ref)];
        if (!cur) return;
        cur.operation = null;
        if (status) {
          cur.status = status;
          cur.stoppedBy = status === 'stopped' ? (stoppedBy ?? 'user') : null;
          if (status === 'running') cur.lastActiveAt = now();
        }
      });
    }
    return this.getBranch(ref);
  }

  /** @internal When a new branch expires: its own TTL, else the PR default for `pr-<n>` names. */
  expiryFor(branch: string, ttlMs: number | null | undefined, from = Date.now()): string | null {
    const ms = ttlMs === undefined ? (/^pr-\d+$/.test(branch) ? this.cfg.expiry.prBranchTtl : null) : ttlMs;
    return ms === null ? null : new Date(from + ms).toISOString();
  }

  // ---------------------------------------------------------------- containers

  /** @internal */
  labels(b: BranchRecord): Record<string, string> {
    return { [LABEL_ROOT]: this.layout.root, [LABEL_DATABASE]: b.database, [LABEL_BRANCH]: b.branch, [LABEL_ID]: b.id };
  }

  /** @internal */
  branchProps(b: BranchRecord) {
    return {
      [ZFS_PROP.managed]: 'true',
      [ZFS_PROP.database]: b.database,
      [ZFS_PROP.branch]: b.branch,
      [ZFS_PROP.id]: b.id,
      // quota, not refquota: a clone references all of its origin's data from the start, so a
      // refquota below the parent's size would refuse the clone itself (measured: "out of space").
      ...(b.disk !== null ? { quota: String(b.disk) } : {}),
    };
  }

  /** The pg_hba.conf every container mounts read-only; written when missing or different. */
  private async ensureHbaFile(): Promise<void> {
    const path = this.layout.hbaFile();
    const current = await readFile(path, 'utf8').catch(() => null);
    if (current === PG_HBA && (await lstat(path)).isFile()) return;
    await mkdir(this.cfg.stateDir, { recursive: true, mode: 0o700 });
    const tmp = `${path}.tmp-${process.pid}`;
    await writeFile(tmp, PG_HBA, { mode: 0o644 });
    await rename(tmp, path);
  }

  /** Creates the branch's container if it is missing (same name, port, mounts), then starts it. */
  /** @internal */
  async startContainer(b: BranchRecord, pgdata: string, dataDir: string, extra: { binds?: string[]; conf?: Record<string, string> } = {}): Promise<void> {
    // betterpg.conf (postgres.settings) is rewritten through an untrusted-directory handle; the
    // settings the agent depends on go on the command line, where SQL cannot change them.
    const major = await writeUserConf(dataDir, this.cfg);
    await this.wal.mount(b.id);
    await this.ensureHbaFile();
    const p = this.cfg.postgres;
    const spec: ContainerSpec = {
      name: b.container,
      image: b.image,
      user: `${p.uid}:${p.gid}`,
      entrypoint: ['postgres'],
      cmd: serverArgs(major, pgdata, extra.conf),
      binds: [`${dataDir}:${pgdata}`, `${this.layout.walDir(b.id)}:${Layout.containerArchive}`, `${this.layout.hbaFile()}:${Layout.containerHba}:ro`, ...(extra.binds ?? [])],
      labels: this.labels(b),
      publish: { hostIp: p.bindAddress, hostPort: b.port },
      memoryBytes: b.memory ?? p.memory,
      nanoCpus: Math.round((b.cpus ?? p.cpus) * 1e9),
      shmSizeBytes: p.shmSize,
      stopTimeoutSeconds: p.stopTimeoutSeconds,
      restartPolicy: 'unless-stopped',
      ...hardening(this.cfg),
    };
    // The container's configuration is fixed when it is made: one made from another spec (an older
    // version of the agent, a changed config) is made again, unless it runs (then at its next start).
    spec.labels[LABEL_SPEC] = createHash('sha256').update(JSON.stringify(spec)).digest('hex').slice(0, 16);
    const existing = await this.docker.state(b.container);
    if (existing && !existing.running && existing.labels[LABEL_SPEC] !== spec.labels[LABEL_SPEC]) await this.docker.remove(b.container);
    if (!existing || (!existing.running && existing.labels[LABEL_SPEC] !== spec.labels[LABEL_SPEC])) await this.docker.create(spec);
    await this.docker.start(b.container);
  }

  /** @internal */
  async waitBranchReady(b: BranchRecord, db: DatabaseRecord, database = db.pgDatabase): Promise<void> {
    try {
      await waitReady(this.target(b, db, b.password, database), this.cfg.postgres.readyTimeoutSeconds * 1000, async () => {
        const st = await this.docker.state(b.container);
        return st?.running === true && st.restarts === 0 && st.status === 'running';
      });
    } catch (e) {
      const tail = (await this.docker.logsTail(b.container, 5)).trim().split('\n').pop();
      throw new Error(`${describe(e)}${tail ? ` (container log: ${tail})` : ''}`);
    }
  }

  // ---------------------------------------------------------------- failure handling

  /** Undo finished steps, drop the reservation, and rethrow one clear error. */
  /** @internal */
  async undo(steps: Steps, err: unknown, dropRecord: (s: State) => Promise<void>, space: { containers?: string[]; sinceMs?: number } = {}): Promise<never> {
    const full = await ranOutOfSpace(this, err, space).catch(() => false); // before the undo frees space
    const failedUndos = await steps.rollback();
    await this.store.update(dropRecord).catch((e) => this.log.warn(`could not release the reservation: ${describe(e)}`));
    const base = err instanceof StepError && err.cause instanceof BpgError ? err.cause : null;
    const suffix = failedUndos.length ? `; could not undo: ${failedUndos.join(', ')} (run 'bpg doctor')` : '; every finished step was undone';
    if (base) throw new BpgError(base.code, base.message);
    if (full) throw new BpgError('conflict', `${outOfSpaceMessage(this.cfg, describe(err))}${suffix}`, { cause: err });
    throw new BpgError('failed', `${describe(err)}${suffix}`, { cause: err });
  }

  /**
   * Finishes or undoes operations whose process died (kill -9, power loss): a half-made branch is
   * removed, a half-deleted one is deleted, a start/stop just loses its marker. Runs before every
   * mutating operation and when the daemon starts.
   */
  /** Before every mutating operation: the pool and Docker are there, and no dead process left work. */
  async begin(): Promise<void> {
    await this.preflight();
    await this.recoverInterrupted();
    await migrateLegacyWal(this);
  }

  async recoverInterrupted(): Promise<string[]> {
    // Lock-free look first: nearly always there is nothing to do, and the lock costs a round of I/O.
    const peek = await this.store.read();
    const dead = operationDead;
    if (!Object.values(peek.branches).some((b) => dead(b.operation)) && !Object.values(peek.databases).some((d) => dead(d.operation))) return [];
    // Claim the dead entries under the lock (so two processes never recover the same one). The kind
    // keeps what was interrupted, so a recovery that is itself killed is picked up again.
    const baseKind = (k: string) => k.replace(/^recover-/, '');
    const stale = await this.store.update((s) => {
      const found: Array<{ b: BranchRecord; kind: string; data: Record<string, string> }> = [];
      for (const b of Object.values(s.branches)) {
        if (!operationDead(b.operation)) continue;
        const kind = baseKind(b.operation.kind);
        const data = b.operation.data ?? {};
        const destroy = kind === 'create' || kind === 'delete' || kind === 'recover';
        if (destroy) b.status = 'deleting';
        found.push({ b: { ...b }, kind: destroy ? 'destroy' : kind, data });
        b.operation = { ...op(destroy ? 'recover' : `recover-${kind}`), data };
      }
      const dbs: Array<{ name: string; kind: string; data: Record<string, string> }> = [];
      for (const db of Object.values(s.databases)) {
        if (operationDead(db.operation)) {
          const kind = baseKind(db.operation.kind);
          dbs.push({ name: db.name, kind, data: db.operation.data ?? {} });
          db.operation = { ...op(`recover-${kind}`), data: db.operation.data ?? {} };
        }
      }
      return { found, dbs };
    });
    const done: string[] = [];
    const clear = (key: string) =>
      this.store.update((s) => {
        if (s.branches[key]) s.branches[key]!.operation = null;
      });
    for (const b of deletionOrder(stale.found.filter((x) => x.kind === 'destroy').map((x) => x.b))) {
      this.log.warn(`cleaning up branch ${refName(b)} left behind by an interrupted operation`);
      await this.destroyBranch(b);
      done.push(refName(b));
    }
    for (const { b, kind, data } of stale.found.filter((x) => x.kind !== 'destroy')) {
      const key = refName(b);
      if (kind === 'reset' && data.phase) {
        this.log.warn(`${data.phase === 'committed' ? 'finishing' : 'undoing'} the interrupted reset of ${key}`);
        await recoverReset(this, b, data);
      } else if (kind === 'rename' && data.target) {
        this.log.warn(`undoing the interrupted rename of ${key}`);
        await recoverBranchRename(this, b, data);
      } else if (kind === 'snapshot' && data.snapshot) {
        const st = await this.store.read();
        if (!snapshotInUse(st, data.snapshot)) await this.zfs.destroy(data.snapshot);
        await clear(key);
      } else {
        // start, stop, restart, or a reset/rename that had not made anything yet: only the marker
        // goes; reconcile (bpg doctor) brings the container in line with the recorded status.
        await clear(key);
      }
      done.push(key);
    }
    for (const { name, kind, data } of stale.dbs) {
      const st = await this.store.read();
      const remaining = Object.values(st.branches).filter((b) => b.database === name);
      if (kind === 'rename' && data.to) {
        this.log.warn(`undoing the interrupted rename of database ${name}`);
        await recoverDatabaseRename(this, name, data);
      } else if (remaining.length === 0 || remaining.every((b) => b.status === 'deleting')) {
        for (const b of deletionOrder(remaining)) await this.destroyBranch(b);
        await this.zfs.destroy(this.layout.databaseDataset(name), { recursive: true });
        await this.store.update((s) => {
          delete s.databases[name];
        });
        this.log.warn(`cleaned up database ${name} left behind by an interrupted operation`);
      } else {
        await this.store.update((s) => {
          if (s.databases[name]) s.databases[name]!.operation = null;
        });
      }
      done.push(name);
    }
    return done;
  }

  /** @internal Mounts a branch's dataset and (re)creates and starts its container, then waits until it answers. */
  async startBranchContainer(b: BranchRecord): Promise<void> {
    const st = await this.store.read();
    const db = this.requireDatabase(st, b.database);
    const { pgdata } = await this.docker.ensureImage(b.image);
    await this.zfs.mount(b.dataset);
    await this.startContainer(b, pgdata, Layout.dataDir(await this.zfs.mountpoint(b.dataset)));
    await this.waitBranchReady(b, db);
  }
}

interface LiveInfo {
  containers: Map<string, string>;
  /** Space of every dataset under the root, branch and WAL datasets alike. */
  space: Map<string, Space>;
}

/** `zfs get used,available,quota` of one dataset as numbers (quota 0: none). */
function spaceOf(p: Record<string, string>): Space {
  const quota = Number(p.quota);
  return { used: Number(p.used), available: Number(p.available), quota: quota > 0 ? quota : null };
}

/** A ZFS snapshot some branch was cloned from, or a kept snapshot (`bpg snapshot create`). */
export function snapshotInUse(s: State, full: string): boolean {
  if (Object.values(s.branches).some((b) => b.origin?.snapshot === full)) return true;
  const [ds, name] = full.split('@');
  return Object.values(s.snapshots).some((k) => k.name === name && Object.values(s.branches).some((b) => b.id === k.branchId && b.dataset === ds));
}

function descendantsOf(s: State, key: string): BranchRecord[] {
  const out: BranchRecord[] = [];
  const walk = (k: string) => {
    for (const b of Object.values(s.branches)) {
      if (b.parent === k) {
        out.push(b);
        walk(refName(b));
      }
    }
  };
  walk(key);
  return out;
}

/** Children before parents: a ZFS clone must go before the snapshot it came from. */
function deletionOrder(branches: BranchRecord[]): BranchRecord[] {
  const keys = new Set(branches.map(refName));
  const depth = (b: BranchRecord): number => {
    let d = 0;
    let p = b.parent;
    const byKey = new Map(branches.map((x) => [refName(x), x]));
    while (p && keys.has(p)) {
      d++;
      p = byKey.get(p)!.parent;
    }
    return d;
  };
  return [...branches].sort((a, b) => depth(b) - depth(a)).map((b) => ({ ...b }));
}

import { chown, lstat, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BpgError, describe } from '../errors.js';
import type { ContainerSpec } from '../drivers/interfaces.js';
import { hardening } from '../drivers/hardening.js';
import { quoteIdent, quoteLiteral, scramVerifier } from '../drivers/postgres.js';
import { UntrustedDir } from '../drivers/untrusted-fs.js';
import { labels, ownerOf } from './containers.js';
import type { EngineContext } from './context.js';
import { configureNewCluster, mkdirOwned } from './datadir.js';
import { initdb } from './initdb.js';
import { passfileLine, scrub, type ImportSource } from './import-source.js';
import { Layout } from './layout.js';

/**
 * What a base backup's copy keeps at the top of its data directory: what PostgreSQL reads or writes
 * there (backup_label and tablespace_map drive the recovery); the rest of the source's folder goes.
 */
const KEEP: ReadonlySet<string> = new Set([
  'PG_VERSION',
  'backup_label',
  'tablespace_map',
  'pg_hba.conf',
  'pg_ident.conf',
  'postgresql.conf',
  'postgresql.auto.conf',
  'base',
  'global',
  'pg_commit_ts',
  'pg_dynshmem',
  'pg_logical',
  'pg_multixact',
  'pg_notify',
  'pg_replslot',
  'pg_serial',
  'pg_snapshots',
  'pg_stat',
  'pg_stat_tmp',
  'pg_subtrans',
  'pg_tblspc',
  'pg_twophase',
  'pg_wal',
  'pg_xact',
]);
/**
 * The builder both import methods share, and refresh builds on: given an empty mounted dataset, it
 * leaves in `Layout.dataDir(mountpoint)` a cleanly shut down cluster of the image holding the
 * source's data, configured as every BetterPG cluster is, whose superuser has `record.password`,
 * with the database `pgDatabase` present.
 *
 * - dump: `pg_dump -Fd -j N` into a work folder of the agent (`<stateDir>/tmp/import-<id>`, never
 *   inside the branch's data), initdb, a temporary server, then `pg_restore -j N` and ANALYZE.
 * - basebackup: `pg_basebackup -X stream` straight into the data directory (same major version
 *   only), the source's configuration files set aside, then recovery and promotion in a temporary
 *   server, and the superuser and its password.
 *
 * Every program runs in a one-shot container of the database's image, so client and server
 * versions match. Only the containers that talk to the source have a network (Docker's default
 * bridge); the temporary server and the restore clients have none: they meet over a Unix socket in
 * the work folder. The source's password reaches them in a 0600 passfile named by the connection
 * string (`passfile=`), never in an argument or an environment variable; whatever the programs
 * print is scrubbed of it before it reaches an error or a log.
 */

export interface BuildTarget {
  /** Names the work folder and the temporary containers, and labels them (doctor knows them by it). */
  id: string;
  database: string;
  branch: string;
  /** The superuser's password the cluster ends up with. */
  password: string;
}

import { mb, progressLine, type ImportProgress } from '../import-progress.js';
export type { ImportProgress } from '../import-progress.js';

export interface BuildOptions {
  record: BuildTarget;
  /** An empty, mounted dataset. */
  dataset: string;
  image: string;
  source: ImportSource;
  progress?: (p: ImportProgress) => void;
  /** The database connection strings name; default: the one recorded for `record.database`. */
  pgDatabase?: string;
}

export interface BuildResult {
  sourceVersion: number;
  bytes: number;
  tables: number;
  timings: Record<string, number>;
}

/** Each program of an import may run this long (a large dump or base backup). */
const STEP_TIMEOUT_MS = 24 * 3600_000;
const POLL_MS = 1000;
const LOG_EVERY_MS = 5000;
/** Inside every import container: the work folder (socket, dump, SQL files) and the passfile. */
const RUN = '/run/bpg';
const PASSFILE = '/run/bpg-pgpass';
const SOCK = `${RUN}/sock`;

export const importContainerNames = (id: string) => ({
  server: `bpg-import-${id}`,
  client: `bpg-import-${id}-client`,
});
export const importWorkDir = (ctx: EngineContext, id: string) => join(ctx.layout.tmpDir(), `import-${id}`);

/** What an import killed half-way leaves: its temporary containers and work folder (idempotent). */
export async function removeImportLeftovers(ctx: EngineContext, id: string): Promise<void> {
  const n = importContainerNames(id);
  await ctx.docker.remove(n.server);
  await ctx.docker.remove(n.client);
  await rm(importWorkDir(ctx, id), { recursive: true, force: true });
}

export interface Probe {
  version: number;
  clientVersion: number;
  size: number | null;
  tables: number | null;
  bootstrapSuperuser: string;
}

export async function buildFromSource(ctx: EngineContext, o: BuildOptions): Promise<BuildResult> {
  const pgDatabase = o.pgDatabase ?? (await ctx.store.read()).databases[o.record.database]?.pgDatabase;
  if (!pgDatabase) throw new Error(`database ${o.record.database} is not in the state`);
  const { pgdata } = await ctx.docker.ensureImage(o.image);
  const dataDir = Layout.dataDir(await ctx.zfs.mountpoint(o.dataset));
  const run = new ImportRun(ctx, o, pgDatabase, pgdata, dataDir);
  try {
    await run.prepare();
    await mkdirOwned(dataDir, ownerOf(ctx));
    return o.source.method === 'dump' ? await run.dump() : await run.basebackup();
  } catch (e) {
    if (e instanceof BpgError) throw e;
    throw new Error(scrub(describe(e), o.source.password), { cause: e });
  } finally {
    await run.cleanUp();
  }
}

/** Checks that the source answers with these credentials and that its version suits the method: nothing is made. */
export async function probeSource(
  ctx: EngineContext,
  o: Pick<BuildOptions, 'record' | 'image' | 'source'>,
): Promise<Probe> {
  const { pgdata } = await ctx.docker.ensureImage(o.image);
  const run = new ImportRun(ctx, { ...o, dataset: '' }, '', pgdata, '');
  try {
    await run.prepare();
    return await run.probe();
  } finally {
    await run.cleanUp();
  }
}

class ImportRun {
  private readonly work: string;
  private readonly names: { server: string; client: string };
  private readonly timings: Record<string, number> = {};
  private readonly owner;

  constructor(
    private readonly ctx: EngineContext,
    private readonly o: Omit<BuildOptions, 'pgDatabase'>,
    private readonly pgDatabase: string,
    private readonly pgdata: string,
    private readonly dataDir: string,
  ) {
    this.work = importWorkDir(ctx, o.record.id);
    this.names = importContainerNames(o.record.id);
    this.owner = ownerOf(ctx);
  }

  private get su() {
    return this.ctx.cfg.postgres.superuser;
  }

  /** The work folder, owned by the image's postgres user: passfile, socket folder, dump folder. */
  async prepare(): Promise<void> {
    await mkdir(this.ctx.layout.tmpDir(), { recursive: true, mode: 0o700 });
    await rm(this.work, { recursive: true, force: true });
    await mkdirOwned(this.work, this.owner);
    await mkdirOwned(join(this.work, 'run'), this.owner);
    await mkdirOwned(join(this.work, 'run', 'sock'), this.owner);
    const pass = join(this.work, 'pgpass');
    await writeFile(pass, this.o.source.password ? passfileLine(this.o.source.password) : '', { mode: 0o600 });
    await chown(pass, this.owner.uid, this.owner.gid);
  }

  async cleanUp(): Promise<void> {
    await this.ctx.docker.remove(this.names.server).catch((e) => this.warn('remove the temporary server', e));
    await this.ctx.docker.remove(this.names.client).catch((e) => this.warn('remove a client container', e));
    await rm(this.work, { recursive: true, force: true }).catch((e) => this.warn('remove the work folder', e));
  }

  private warn(what: string, e: unknown): void {
    this.ctx.log.warn(`import: could not ${what}: ${scrub(describe(e), this.o.source.password)}`);
  }

  /** The source's URL as libpq takes it: the passfile, a connect timeout unless set, an application name. */
  private sourceUrl(): string {
    const u = new URL(this.o.source.url);
    u.searchParams.set('passfile', PASSFILE);
    if (!u.searchParams.has('connect_timeout')) u.searchParams.set('connect_timeout', '15');
    if (!u.searchParams.has('application_name')) u.searchParams.set('application_name', 'betterpg-import');
    return u.toString();
  }

  /** Client arguments for the build's own server: its socket, as the superuser, on database `db`. */
  private asSuperuser(db = this.pgDatabase): string[] {
    return ['-h', SOCK, '-U', this.su, '-d', db];
  }

  /** A one-shot container of the image; `network` only for the ones that reach the source. */
  private spec(entrypoint: string, cmd: string[], o: { network?: boolean; binds?: string[] } = {}): ContainerSpec {
    const p = this.ctx.cfg.postgres;
    const h = hardening(this.ctx.cfg, { oneShot: true });
    return {
      name: this.names.client,
      image: this.o.image,
      user: `${p.uid}:${p.gid}`,
      entrypoint: [entrypoint],
      cmd,
      binds: [
        `${join(this.work, 'run')}:${RUN}`,
        ...(o.network ? [`${join(this.work, 'pgpass')}:${PASSFILE}:ro`] : []),
        ...(o.binds ?? []),
      ],
      labels: labels(this.ctx, this.o.record),
      ...h,
      // The source is the admin's input: the default bridge reaches the hosts Docker's NAT reaches.
      network: o.network ? undefined : 'none',
    };
  }

  /** Runs a one-shot to completion, reporting progress meanwhile; its scrubbed output on failure. */
  private async runOnce(
    what: string,
    spec: ContainerSpec,
    watch?: { phase: ImportProgress['phase']; measure: () => Promise<{ bytes: number; tables: number }> },
    total: { bytes: number | null; tables: number | null } = { bytes: null, tables: null },
  ): Promise<string> {
    const t0 = performance.now();
    const stop = watch ? this.watch(watch.phase, watch.measure, total) : null;
    let res: { exitCode: number; output: string };
    try {
      res = await this.ctx.docker.runOnce(spec, STEP_TIMEOUT_MS);
    } finally {
      await stop?.();
    }
    this.timings[what] = Math.round(performance.now() - t0);
    const output = scrub(res.output, this.o.source.password);
    if (res.exitCode !== 0) {
      const lines = output
        .split('\n')
        .map((l) => l.trim())
        .filter(
          (l) =>
            l &&
            !/^(pg_dump|pg_restore|pg_basebackup): (processing|dumping|reading|saving|creating|launching|finished|last inserted)/.test(
              l,
            ),
        );
      const msg = lines.slice(-3).join(' / ') || `exit code ${res.exitCode}`;
      throw new Error(`${what} failed: ${msg}`);
    }
    return output;
  }

  /** Polls what a phase has written, and reports it through the log (stderr) and `progress`. */
  private watch(
    phase: ImportProgress['phase'],
    measure: () => Promise<{ bytes: number; tables: number }>,
    total: { bytes: number | null; tables: number | null },
  ): () => Promise<void> {
    const t0 = Date.now();
    let lastLog = t0;
    let busy: Promise<void> = Promise.resolve();
    const tick = (final: boolean) => {
      busy = busy.then(async () => {
        const m = await measure().catch(() => null);
        if (!m) return;
        const elapsedMs = Date.now() - t0;
        const p: ImportProgress = {
          phase,
          bytes: m.bytes,
          totalBytes: total.bytes,
          tables: m.tables,
          totalTables: total.tables,
          bytesPerSecond: elapsedMs > 0 ? Math.round((m.bytes / elapsedMs) * 1000) : 0,
          elapsedMs,
        };
        this.o.progress?.(p);
        if (final || Date.now() - lastLog >= LOG_EVERY_MS) {
          lastLog = Date.now();
          this.ctx.log.info(`import: ${progressLine(p)}`);
        }
      });
    };
    const timer = setInterval(() => tick(false), POLL_MS);
    return async () => {
      clearInterval(timer);
      tick(true);
      await busy;
    };
  }

  // ---------------------------------------------------------------- the source

  async probe(): Promise<Probe> {
    const sql = [
      "SELECT current_setting('server_version_num')::int,",
      '  pg_database_size(current_database()),',
      '  (SELECT rolname FROM pg_roles WHERE oid = 10),',
      "  (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'),",
      '  :VERSION_NUM,',
      "  (SELECT sum(pg_database_size(oid)) FROM pg_database WHERE has_database_privilege(oid, 'CONNECT'));",
      '',
    ].join('\n');
    await this.writeRunFile('probe.sql', sql);
    const out = await this.runOnce(
      'connect to the source',
      this.spec(
        'psql',
        ['-X', '-q', '-A', '-t', '-F', '|', '-v', 'ON_ERROR_STOP=1', '-d', this.sourceUrl(), '-f', `${RUN}/probe.sql`],
        { network: true },
      ),
    ).catch((e) => {
      throw new BpgError(
        'failed',
        `cannot read from the source ${this.o.source.url}: ${describe(e).replace(/^connect to the source failed: /, '')}`,
      );
    });
    const row = out
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => /^\d+\|/.test(l))
      .pop();
    const [version, size, bootstrap, tables, client, cluster] = (row ?? '').split('|');
    if (!row || !bootstrap || !Number(version) || !Number(client))
      throw new Error(`the source answered something unexpected: ${out.trim().split('\n').pop() ?? ''}`);
    const probe: Probe = {
      version: Number(version),
      clientVersion: Number(client),
      // a base backup copies every database of the cluster
      size: (this.o.source.method === 'basebackup' ? Number(cluster) : Number(size)) || null,
      tables: Number(tables),
      bootstrapSuperuser: bootstrap,
    };
    const major = (v: number) => Math.floor(v / 10000);
    const [src, img] = [major(probe.version), major(probe.clientVersion)];
    if (this.o.source.method === 'basebackup' && src !== img)
      throw new BpgError(
        'invalid',
        `the source runs PostgreSQL ${src} and the image ${this.o.image} PostgreSQL ${img}: a base backup needs the same major version (use --method dump, or an image of PostgreSQL ${src})`,
      );
    if (this.o.source.method === 'dump' && src > img)
      throw new BpgError(
        'invalid',
        `the source runs PostgreSQL ${src}, newer than the image ${this.o.image} (PostgreSQL ${img}): pg_dump cannot read it; use an image of PostgreSQL ${src} or later`,
      );
    this.ctx.log.info(
      `import: source PostgreSQL ${src} (${probe.version}), ${probe.size === null ? 'size unknown' : mb(probe.size)}, ${probe.tables} tables`,
    );
    return probe;
  }

  private async writeRunFile(name: string, text: string): Promise<void> {
    const path = join(this.work, 'run', name);
    await writeFile(path, text, { mode: 0o600 });
    await chown(path, this.owner.uid, this.owner.gid);
  }

  // ---------------------------------------------------------------- dump

  async dump(): Promise<BuildResult> {
    const src = this.o.source;
    const probe = await this.probe();
    this.o.progress?.(progressAt('check', 0, probe));
    const dumpDir = join(this.work, 'run', 'dump');
    await mkdirOwned(dumpDir, this.owner);
    if (src.roles)
      // Roles without their passwords: password hashes of production have no business in branches
      // a pull request can read (set them on main by hand if a role must log in).
      await this.runOnce(
        'pg_dumpall --roles-only',
        this.spec(
          'pg_dumpall',
          ['--roles-only', '--no-role-passwords', '-d', this.sourceUrl(), '-f', `${RUN}/dump/roles.sql`],
          { network: true },
        ),
      );
    const dumped = () => folderSize(join(dumpDir, 'db'));
    await this.runOnce(
      'pg_dump',
      this.spec('pg_dump', ['-d', this.sourceUrl(), '-Fd', '-j', String(src.jobs), '-Z', '1', '-f', `${RUN}/dump/db`], {
        network: true,
      }),
      { phase: 'dump', measure: dumped },
      { bytes: probe.size, tables: probe.tables },
    );
    const dump = await dumped();

    await this.step('initdb', () => initdb(this.ctx, this.o.record, this.o.image, this.dataDir, this.pgdata));
    await this.step('configure', () => configureNewCluster(this.dataDir, this.ctx.cfg));
    await this.startServer(false);
    if (this.pgDatabase !== 'postgres')
      await this.runOnce('createdb', this.spec('createdb', ['-h', SOCK, '-U', this.su, '--', this.pgDatabase]));
    if (src.roles) {
      await this.filterRoles(dumpDir);
      await this.runOnce(
        'restore roles',
        this.spec('psql', ['-X', '-q', ...this.asSuperuser('postgres'), '-f', `${RUN}/dump/roles.sql`]),
      );
    }
    const written = () => folderSize(this.dataDir).then((s) => ({ bytes: s.bytes, tables: dump.tables }));
    // Without --roles, every object belongs to the superuser and no GRANT is replayed (the source's
    // roles do not exist here). Subscriptions and publications stay out (a branch must not start
    // replicating from production), and so do tablespaces (everything goes to the dataset).
    await this.runOnce(
      'pg_restore',
      this.spec('pg_restore', [
        ...this.asSuperuser(),
        '-j',
        String(src.jobs),
        '--exit-on-error',
        '--no-tablespaces',
        '--no-subscriptions',
        '--no-publications',
        '--no-security-labels',
        ...(src.roles ? [] : ['--no-owner', '--no-privileges']),
        `${RUN}/dump/db`,
      ]),
      { phase: 'restore', measure: written },
      { bytes: null, tables: dump.tables },
    );
    await this.runOnce(
      'analyze',
      this.spec('vacuumdb', [...this.asSuperuser(), '--analyze-only', '-q', '-j', String(src.jobs)]),
    );
    await this.stopServer();
    const final = await folderSize(this.dataDir);
    this.o.progress?.({ ...progressAt('done', final.bytes, probe), tables: dump.tables });
    return { sourceVersion: probe.version, bytes: dump.bytes, tables: dump.tables, timings: this.timings };
  }

  /** pg_dumpall's lines about the superuser go: its attributes here are the agent's, not the source's. */
  private async filterRoles(dumpDir: string): Promise<void> {
    const names = new Set([this.su, quoteIdent(this.su)]);
    await UntrustedDir.with(dumpDir, async (d) => {
      const text = await d.readText('roles.sql', 64 * 1024 * 1024);
      const kept = text
        .split('\n')
        .filter((l) => {
          const m = /^(?:CREATE|ALTER) ROLE ("(?:[^"]|"")+"|[^\s;]+)[\s;]/.exec(l);
          return !(m && names.has(m[1]!));
        })
        .join('\n');
      await d.writeFile('roles.sql', kept, this.owner);
    });
  }

  // ---------------------------------------------------------------- base backup

  async basebackup(): Promise<BuildResult> {
    const probe = await this.probe();
    this.o.progress?.(progressAt('check', 0, probe));
    await mkdirOwned(this.dataDir, this.owner);
    const copied = () => folderSize(this.dataDir);
    await this.runOnce(
      'pg_basebackup',
      this.spec(
        'pg_basebackup',
        ['-d', this.sourceUrl(), '-D', this.pgdata, '-X', 'stream', '-c', 'fast', '--no-manifest'],
        { network: true, binds: [`${this.dataDir}:${this.pgdata}`] },
      ),
      { phase: 'basebackup', measure: copied },
      { bytes: probe.size, tables: probe.tables },
    );
    await this.step('keep only the data', () => this.keepOnlyData());
    await this.step('configure', () => configureNewCluster(this.dataDir, this.ctx.cfg));
    await this.startServer(true);
    // The superuser the agent connects as, with this branch's password (sent as a SCRAM verifier:
    // the plain text is in no file), and the database connection strings name.
    const sql = [
      `SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ${quoteLiteral(this.su)}) AS missing_role \\gset`,
      '\\if :missing_role',
      `CREATE ROLE ${quoteIdent(this.su)};`,
      '\\endif',
      `ALTER ROLE ${quoteIdent(this.su)} WITH SUPERUSER LOGIN PASSWORD ${quoteLiteral(scramVerifier(this.o.record.password))};`,
      `SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = ${quoteLiteral(this.pgDatabase)}) AS missing_db \\gset`,
      '\\if :missing_db',
      `CREATE DATABASE ${quoteIdent(this.pgDatabase)};`,
      '\\endif',
      '',
    ].join('\n');
    await this.writeRunFile('superuser.sql', sql);
    await this.runOnce(
      'set the superuser',
      this.spec('psql', [
        '-X',
        '-q',
        '-v',
        'ON_ERROR_STOP=1',
        '-h',
        SOCK,
        '-U',
        probe.bootstrapSuperuser,
        '-d',
        'template1',
        '-f',
        `${RUN}/superuser.sql`,
      ]),
    );
    await rm(join(this.work, 'run', 'superuser.sql'), { force: true });
    await this.stopServer();
    const final = await folderSize(this.dataDir);
    this.o.progress?.(progressAt('done', final.bytes, probe));
    return { sourceVersion: probe.version, bytes: final.bytes, tables: probe.tables ?? 0, timings: this.timings };
  }

  /**
   * The copy is the source's data directory as it was, with files no branch may read: the server's
   * logs (`log/` or wherever log_directory pointed inside it, `current_logfiles`: queries and
   * errors in them can hold original values), its TLS key, its configuration (postgresql.auto.conf
   * of a replica holds primary_conninfo, maybe with a password), anything an admin left there. So
   * only what PostgreSQL needs stays (KEEP); everything else goes, a folder with all it holds, and
   * postgresql.conf and postgresql.auto.conf are replaced by the agent's. Signal files and the pid
   * file go; recovery.signal is written so the copy recovers and is promoted. Every file here is
   * untrusted (removed through its directory's handle, no link followed).
   */
  private async keepOnlyData(): Promise<void> {
    const o = this.owner;
    await UntrustedDir.with(this.dataDir, async (d) => {
      for (const name of await d.list()) if (!KEEP.has(name)) await d.removeTree(name);
      for (const name of ['postgresql.conf', 'postgresql.auto.conf']) await d.remove(name);
      await d.writeFile('postgresql.conf', "# Written by BetterPG at import (the source's own file is not kept).\n", o);
      await d.writeFile(
        'postgresql.auto.conf',
        '# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n',
        o,
      );
      for (const name of ['standby.signal', 'recovery.signal', 'postmaster.pid', 'postmaster.opts', 'backup_manifest'])
        await d.remove(name);
      await d.writeFile('recovery.signal', '', o);
    });
  }

  // ---------------------------------------------------------------- the temporary server

  private async step<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now();
    const r = await fn();
    this.timings[what] = Math.round(performance.now() - t0);
    return r;
  }

  /**
   * A server on the new data directory with no network, listening only on the socket in the work
   * folder, trusting local connections (its own hba file). While it restores, nothing needs
   * durability per commit: a failed import is thrown away, and the clean shutdown writes everything.
   */
  private async startServer(recovering: boolean): Promise<void> {
    const t0 = performance.now();
    const p = this.ctx.cfg.postgres;
    await this.writeRunFile('pg_hba.conf', 'local all all trust\n');
    const settings: Record<string, string> = {
      listen_addresses: '',
      unix_socket_directories: SOCK,
      hba_file: `${RUN}/pg_hba.conf`,
      data_directory: this.pgdata,
      archive_mode: 'off',
      primary_conninfo: '',
      log_statement: 'none',
      synchronous_commit: 'off',
      autovacuum: 'off',
      shared_preload_libraries: '',
      ...(recovering
        ? {
            restore_command: 'false',
            hot_standby: 'off',
            recovery_target_timeline: 'latest',
            recovery_target_action: 'promote',
          }
        : { wal_level: 'minimal', max_wal_senders: '0', full_page_writes: 'off', maintenance_work_mem: '256MB' }),
    };
    const cmd = ['-D', this.pgdata];
    for (const [k, v] of Object.entries(settings)) cmd.push('-c', `${k}=${v}`);
    const h = hardening(this.ctx.cfg, { oneShot: true });
    await this.ctx.docker.remove(this.names.server);
    await this.ctx.docker.create({
      name: this.names.server,
      image: this.o.image,
      user: `${p.uid}:${p.gid}`,
      entrypoint: ['postgres'],
      cmd,
      binds: [`${this.dataDir}:${this.pgdata}`, `${join(this.work, 'run')}:${RUN}`],
      labels: labels(this.ctx, this.o.record),
      memoryBytes: p.memory,
      nanoCpus: Math.round(p.cpus * 1e9),
      shmSizeBytes: p.shmSize,
      stopTimeoutSeconds: 600,
      restartPolicy: 'no',
      ...h,
    });
    await this.ctx.docker.start(this.names.server);
    const deadline = Date.now() + (recovering ? STEP_TIMEOUT_MS : p.readyTimeoutSeconds * 1000);
    for (;;) {
      if ((await this.pidStatus()) === 'ready') break;
      const st = await this.ctx.docker.state(this.names.server);
      if (!st?.running) {
        const tail = scrub(await this.ctx.docker.logsTail(this.names.server, 5), this.o.source.password);
        throw new Error(`the temporary server stopped: ${tail.trim().split('\n').slice(-2).join(' / ')}`);
      }
      if (Date.now() > deadline) throw new Error('the temporary server did not become ready');
      await new Promise((r) => setTimeout(r, 200));
    }
    this.timings[recovering ? 'recover' : 'start server'] = Math.round(performance.now() - t0);
  }

  /** postmaster.pid's status line: 'ready' once it accepts connections (after promotion). */
  private async pidStatus(): Promise<string | null> {
    try {
      const text = await UntrustedDir.with(this.dataDir, (d) => d.readText('postmaster.pid', 4096));
      return text.split('\n')[7]?.trim() ?? null;
    } catch {
      return null;
    }
  }

  /** A fast shutdown (SIGINT): a shutdown checkpoint, then a clean exit; checked. */
  private async stopServer(): Promise<void> {
    const t0 = performance.now();
    await this.ctx.docker.stop(this.names.server, 600);
    const st = await this.ctx.docker.state(this.names.server);
    const stillThere = await UntrustedDir.with(this.dataDir, (d) => d.kind('postmaster.pid'));
    if (!st || st.running || st.exitCode !== 0 || stillThere !== 'missing') {
      const tail = await this.ctx.docker.logsTail(this.names.server, 3);
      throw new Error(`the temporary server did not shut down cleanly: ${tail.trim().split('\n').pop() ?? ''}`);
    }
    await this.ctx.docker.remove(this.names.server);
    this.timings['stop server'] = Math.round(performance.now() - t0);
  }
}

// ---------------------------------------------------------------- helpers

export { progressLine };

function progressAt(phase: ImportProgress['phase'], bytes: number, probe: Probe): ImportProgress {
  return {
    phase,
    bytes,
    totalBytes: probe.size,
    tables: 0,
    totalTables: probe.tables,
    bytesPerSecond: 0,
    elapsedMs: 0,
  };
}

/** Bytes of the regular files under a folder (no link followed), and the table data files of a pg_dump -Fd folder. */
async function folderSize(dir: string): Promise<{ bytes: number; tables: number }> {
  let bytes = 0;
  let tables = 0;
  const walk = async (d: string) => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        bytes += await lstat(p).then(
          (s) => s.size,
          () => 0,
        );
        if (/^\d+\.dat(\.gz)?$/.test(e.name)) tables++;
      }
    }
  };
  await walk(dir);
  return { bytes, tables };
}

import { chmod, chown, lstat, mkdir } from 'node:fs/promises';
import type { Config } from '../config.js';
import type { BackupLabel } from '../drivers/postgres.js';
import { UntrustedDir, type Owner } from '../drivers/untrusted-fs.js';
import { Layout } from './layout.js';

/**
 * What the agent puts in a branch's data directory, and the server options it starts PostgreSQL
 * with. A data directory belongs to the branch's superuser, who is not trusted: every file here is
 * reached through UntrustedDir (no link followed, no FIFO opened, regular files only), and every
 * setting the agent depends on is a server command-line option, which wins over postgresql.conf,
 * its includes and postgresql.auto.conf (ALTER SYSTEM), so SQL cannot change it.
 */

const USER_CONF = 'betterpg.conf';
const INCLUDE_LINE = `include_if_exists = '${USER_CONF}'`;
/** The largest WAL segment PostgreSQL can be built with; anything bigger in a WAL folder is not a segment. */
const MAX_SEGMENT_BYTES = 1024 ** 3;

/** postgresql.conf quoting: inside '...' a backslash starts an escape, and '' is a quote. */
const confValue = (v: string | number | boolean) =>
  typeof v === 'string'
    ? `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`
    : typeof v === 'boolean'
      ? v
        ? 'on'
        : 'off'
      : String(v);

/**
 * The archive command for servers without basic_archive (before PostgreSQL 15): copy under a
 * temporary name, fsync, rename, fsync the folder; a segment already archived counts as done only
 * when its content is the same (a crash between archiving and PostgreSQL noting it), else it fails
 * and stays failed where `bpg wal info` shows it. A copy killed half-way leaves only the temporary
 * name, which the next attempt overwrites. Needs cp, cmp, sync and mv in the image (the official
 * images have them).
 */
export function shellArchiveCommand(archive: string): string {
  const dst = `${archive}/%f`;
  const tmp = `${archive}/.%f.tmp`;
  return `if test -f ${dst}; then cmp -s %p ${dst}; exit $?; fi; cp %p ${tmp} && sync ${tmp} && mv -f ${tmp} ${dst} && sync ${archive}`;
}

/**
 * The settings the agent depends on, as they must be whatever a branch's SQL does: listening,
 * archiving into the branch's own folder and recovering from it, client authentication from the
 * agent's read-only file, no recovery target or upstream server planted in a config file.
 */
const RECOVERY_TARGETS = [
  'recovery_target',
  'recovery_target_lsn',
  'recovery_target_name',
  'recovery_target_time',
  'recovery_target_xid',
];

export function pinnedSettings(
  pgMajor: number,
  pgdata: string,
  overrides: Record<string, string> = {},
): Record<string, string> {
  const archive = Layout.containerArchive;
  // No recovery target unless the agent sets one (point-in-time recovery): then it is the only one
  // set, as PostgreSQL allows only one (an empty one assigned after it counts as a second).
  const targets = RECOVERY_TARGETS.some((k) => k in overrides)
    ? {}
    : Object.fromEntries(RECOVERY_TARGETS.map((k) => [k, '']));
  const archiving: Record<string, string> =
    pgMajor >= 15
      ? // basic_archive (contrib, PostgreSQL 15+) copies to a temporary file, fsyncs and renames,
        // and treats an identical segment already there as archived, a different one as an error.
        { archive_library: 'basic_archive', 'basic_archive.archive_directory': archive, archive_command: '' }
      : { archive_command: shellArchiveCommand(archive) };
  return {
    listen_addresses: '*',
    port: '5432',
    data_directory: pgdata,
    hba_file: Layout.containerHba,
    wal_level: 'replica',
    archive_mode: 'on',
    ...archiving,
    restore_command: `cp ${archive}/%f %p`,
    ...targets,
    recovery_target_timeline: 'latest',
    primary_conninfo: '',
    password_encryption: 'scram-sha-256',
    // ZFS is copy-on-write: recycling or zero-filling WAL segments only costs space in every clone.
    ...(pgMajor >= 12 ? { wal_init_zero: 'off', wal_recycle: 'off' } : {}),
    ...(pgMajor >= 14 ? { recovery_init_sync_method: 'syncfs' } : {}),
    ...overrides,
  };
}

/** `postgres` arguments: the data directory, then every pinned setting as `-c name=value` (no shell: one argv item each). */
export function serverArgs(pgMajor: number, pgdata: string, overrides: Record<string, string> = {}): string[] {
  const args = ['-D', pgdata];
  for (const [k, v] of Object.entries(pinnedSettings(pgMajor, pgdata, overrides))) args.push('-c', `${k}=${v}`);
  return args;
}

/** The configured postgres.settings, the ones a branch may change with ALTER SYSTEM (the pinned ones are left out). */
export function userConf(cfg: Config, pgMajor: number): string {
  const pinned = new Set(Object.keys(pinnedSettings(pgMajor, '/')));
  const lines = ['# Written by the BetterPG agent before each start from postgres.settings; edits are overwritten.'];
  lines.push(
    '# The settings the agent depends on are server options (ps shows them); they win over this file and ALTER SYSTEM.',
  );
  for (const [k, v] of Object.entries(cfg.postgres.settings)) if (!pinned.has(k)) lines.push(`${k} = ${confValue(v)}`);
  return lines.join('\n') + '\n';
}

/**
 * Every branch's client authentication: password (SCRAM) from anywhere (connections arrive from the
 * Docker bridge gateway, not 127.0.0.1); inside the container, trust over the socket. Lives outside
 * every data directory, read-only in the containers.
 */
export const PG_HBA = `# Written by the BetterPG agent; mounted read-only into every branch container.
local   all   all                 trust
host    all   all   0.0.0.0/0     scram-sha-256
host    all   all   ::/0          scram-sha-256
`;

const owner = (cfg: Config): Owner => ({ uid: cfg.postgres.uid, gid: cfg.postgres.gid });

/** PG_VERSION of an open data directory, read as an untrusted file. */
async function readMajor(d: UntrustedDir, dataDir: string): Promise<number> {
  const v = Number((await d.readText('PG_VERSION', 64)).trim());
  if (!Number.isInteger(v) || v < 9 || v > 99)
    throw new Error(`${dataDir}/PG_VERSION does not hold a PostgreSQL major version`);
  return v;
}

/** The PostgreSQL major version of a data directory. */
export async function pgMajor(dataDir: string): Promise<number> {
  return UntrustedDir.with(dataDir, (d) => readMajor(d, dataDir));
}

/**
 * Writes betterpg.conf (postgres.settings) before each start (startContainer), so a config change
 * reaches every branch; returns the data directory's major version.
 */
export async function writeUserConf(dataDir: string, cfg: Config): Promise<number> {
  return UntrustedDir.with(dataDir, async (d) => {
    const major = await readMajor(d, dataDir);
    await d.writeFile(USER_CONF, userConf(cfg, major), owner(cfg));
    return major;
  });
}

/** After initdb: postgresql.conf includes the agent's file of postgres.settings. */
export async function configureNewCluster(dataDir: string, cfg: Config): Promise<void> {
  await UntrustedDir.with(dataDir, (d) => d.append('postgresql.conf', `\n${INCLUDE_LINE}\n`));
  await writeUserConf(dataDir, cfg);
}

/** A crash-consistent clone: only the dead postmaster's pid file must go (betterpg.conf is written at the start). */
export async function prepareCrashClone(dataDir: string): Promise<void> {
  await UntrustedDir.with(dataDir, (d) => d.remove('postmaster.pid'));
}

/** A folder WAL segments are copied from: a WAL archive, or `pg_wal` inside a data directory (`sub`). */
export interface WalSource {
  dir: string;
  sub?: string;
}

async function openSource(src: WalSource): Promise<UntrustedDir | null> {
  let d: UntrustedDir;
  try {
    d = await UntrustedDir.open(src.dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null; // no archive yet
    throw e;
  }
  if (!src.sub) return d;
  try {
    return await d.dir(src.sub);
  } finally {
    await d.close();
  }
}

/**
 * An application-consistent clone: backup_label (and tablespace_map) from pg_backup_stop, the WAL
 * from backup start to backup end copied from the parent's archive or live pg_wal, first found wins
 * (the backup-end record is written after the snapshot, so the clone does not have it), and
 * recovery.signal so the clone recovers, promotes and starts a new timeline. Every folder involved
 * is the parent's or the clone's, so every file is treated as untrusted.
 */
export async function prepareBackupClone(
  dataDir: string,
  cfg: Config,
  label: BackupLabel,
  walSources: WalSource[],
): Promise<void> {
  const o = owner(cfg);
  await UntrustedDir.with(dataDir, async (d) => {
    await d.remove('postmaster.pid');
    await d.remove('backup_label.old');
    await d.writeFile('backup_label', label.labelfile, o);
    // A tablespace_map only when the backup has one: any other was put there (the clone inherits the parent's files).
    if (label.spcmapfile) await d.writeFile('tablespace_map', label.spcmapfile, o);
    else await d.remove('tablespace_map');
    // Segments are named by timeline and number, so within one timeline name order is WAL order.
    const inRange = (f: string) => /^[0-9A-F]{24}$/.test(f) && f >= label.firstSegment && f <= label.lastSegment;
    const sources: UntrustedDir[] = [];
    try {
      const found = new Map<string, UntrustedDir>();
      for (const src of walSources) {
        const dir = await openSource(src);
        if (!dir) continue;
        sources.push(dir);
        for (const f of (await dir.list()).filter(inRange)) if (!found.has(f)) found.set(f, dir);
      }
      if (walSources.length === 0) {
        // recovery reads the WAL through restore_command (point-in-time recovery)
      } else if (!found.has(label.firstSegment) || !found.has(label.lastSegment)) {
        throw new Error(
          `WAL segments ${label.firstSegment}..${label.lastSegment} are not all in the parent's archive or pg_wal`,
        );
      }
      if (found.size) {
        const pgWal = await d.dir('pg_wal');
        try {
          for (const [f, src] of found) await pgWal.copyFrom(src, f, o, MAX_SEGMENT_BYTES);
        } finally {
          await pgWal.close();
        }
      }
    } finally {
      for (const s of sources) await s.close();
    }
    await d.writeFile('recovery.signal', '', o);
  });
}

/**
 * A folder the agent makes for the branch's user in a place only root can write (a fresh dataset's
 * `data`, a WAL dataset's mount point): refused if something else is already at the path.
 */
export async function mkdirOwned(path: string, o: Owner, mode = 0o700): Promise<void> {
  await mkdir(path, { recursive: true, mode });
  const st = await lstat(path);
  if (!st.isDirectory()) throw new Error(`${path} is not a directory`);
  await chown(path, o.uid, o.gid);
  await chmod(path, mode);
}

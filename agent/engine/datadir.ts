import { chown, copyFile, mkdir, readdir, readFile, rm, writeFile, appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config.js';
import type { BackupLabel } from '../drivers/postgres.js';
import { Layout } from './layout.js';

const AGENT_CONF = 'betterpg.conf';
const INCLUDE_LINE = `include_if_exists = '${AGENT_CONF}'`;

type Owner = { uid: number; gid: number };

async function writeOwned(path: string, text: string, o: Owner): Promise<void> {
  await writeFile(path, text, { mode: 0o600 });
  await chown(path, o.uid, o.gid);
}

export async function mkdirOwned(path: string, o: Owner, mode = 0o700): Promise<void> {
  await mkdir(path, { recursive: true, mode });
  await chown(path, o.uid, o.gid);
}

/** postgresql.conf quoting: inside '...' a backslash starts an escape, and '' is a quote. */
const confValue = (v: string | number | boolean) =>
  typeof v === 'string' ? `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'` : typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v);

/**
 * The agent's own settings, rewritten before every start so a config change reaches every branch.
 * Archiving goes to the branch's own folder; only the bind mount differs between branches.
 */
export function agentConf(cfg: Config, pgMajor: number, overrides: Record<string, string> = {}): string {
  const archive = Layout.containerArchive;
  const mine: Record<string, string | number | boolean> = {
    listen_addresses: '*',
    port: 5432,
    wal_level: 'replica',
    archive_mode: 'on',
    archive_command: `test ! -f ${archive}/%f && cp %p ${archive}/%f`,
    restore_command: `cp ${archive}/%f %p`,
    password_encryption: 'scram-sha-256',
    // ZFS is copy-on-write: recycling or zero-filling WAL segments only costs space in every clone.
    ...(pgMajor >= 12 ? { wal_init_zero: 'off', wal_recycle: 'off' } : {}),
    ...(pgMajor >= 14 ? { recovery_init_sync_method: 'syncfs' } : {}),
  };
  const lines = ['# Written by the BetterPG agent before each start; edits are overwritten.'];
  for (const [k, v] of Object.entries({ ...cfg.postgres.settings, ...mine, ...overrides })) lines.push(`${k} = ${confValue(v)}`);
  return lines.join('\n') + '\n';
}

/** Connections arrive from the Docker bridge gateway, not 127.0.0.1: password auth from anywhere. */
const PG_HBA = `# Written by the BetterPG agent.
local   all   all                 trust
host    all   all   0.0.0.0/0     scram-sha-256
host    all   all   ::/0          scram-sha-256
`;

export async function pgMajor(dataDir: string): Promise<number> {
  return Number((await readFile(join(dataDir, 'PG_VERSION'), 'utf8')).trim());
}

/** After initdb: our pg_hba, and postgresql.conf including the agent's file. */
export async function configureNewCluster(dataDir: string, cfg: Config): Promise<void> {
  const o = cfg.postgres;
  await writeOwned(join(dataDir, 'pg_hba.conf'), PG_HBA, o);
  await appendFile(join(dataDir, 'postgresql.conf'), `\n${INCLUDE_LINE}\n`);
  await writeAgentConf(dataDir, cfg);
}

export async function writeAgentConf(dataDir: string, cfg: Config, overrides?: Record<string, string>): Promise<void> {
  await writeOwned(join(dataDir, AGENT_CONF), agentConf(cfg, await pgMajor(dataDir), overrides), cfg.postgres);
}

/** A crash-consistent clone: only the dead postmaster's pid file must go. */
export async function prepareCrashClone(dataDir: string, cfg: Config): Promise<void> {
  await rm(join(dataDir, 'postmaster.pid'), { force: true });
  await writeAgentConf(dataDir, cfg);
}

/**
 * An application-consistent clone: backup_label (and tablespace_map) from pg_backup_stop, the WAL
 * from backup start to backup end copied from the parent's archive or live pg_wal, first found wins
 * (the backup-end record is written after the snapshot, so the clone does not have it), and recovery.signal so the clone recovers, promotes and starts a new timeline.
 */
export async function prepareBackupClone(dataDir: string, cfg: Config, label: BackupLabel, walSources: string[]): Promise<void> {
  const o = cfg.postgres;
  await rm(join(dataDir, 'postmaster.pid'), { force: true });
  await rm(join(dataDir, 'backup_label.old'), { force: true });
  await writeOwned(join(dataDir, 'backup_label'), label.labelfile, o);
  if (label.spcmapfile) await writeOwned(join(dataDir, 'tablespace_map'), label.spcmapfile, o);
  // Segments are named by timeline and number, so within one timeline name order is WAL order.
  const inRange = (f: string) => /^[0-9A-F]{24}$/.test(f) && f >= label.firstSegment && f <= label.lastSegment;
  const found = new Map<string, string>();
  for (const dir of walSources) {
    for (const f of (await readdir(dir).catch(() => [] as string[])).filter(inRange)) {
      if (!found.has(f)) found.set(f, join(dir, f));
    }
  }
  if (walSources.length === 0) {
    // recovery reads the WAL through restore_command (point-in-time recovery)
  } else if (!found.has(label.firstSegment) || !found.has(label.lastSegment)) {
    throw new Error(`WAL segments ${label.firstSegment}..${label.lastSegment} are not all in the parent's archive or pg_wal`);
  }
  for (const [f, src] of found) {
    const dst = join(dataDir, 'pg_wal', f);
    await copyFile(src, dst);
    await chown(dst, o.uid, o.gid);
  }
  await writeOwned(join(dataDir, 'recovery.signal'), '', o);
  await writeAgentConf(dataDir, cfg);
}

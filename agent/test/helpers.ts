import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import YAML from 'yaml';
import pg from 'pg';
import type { BranchView } from '../engine/view.js';
import type { Logger } from '../log.js';
import { loadConfig, type Config } from '../config.js';
import { Layout } from '../engine/layout.js';
import { pgClientConfig } from '../../shared/pg-config.js';

/** Tests run the real CLI against the real stack configured by scripts/test.sh (BPG_CONFIG). */
export const BPG = fileURLToPath(new URL('../../../bin/bpg.js', import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BPG, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
  });
}

/** Runs the CLI and fails the test with its stderr unless it exits 0. */
export async function ok(args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  const r = await cli(args, env);
  if (r.code !== 0) throw new Error(`bpg ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return r;
}

export async function okJson<T = BranchView>(args: string[], env: Record<string, string | undefined> = {}): Promise<T> {
  return JSON.parse((await ok([...args, '--json'], env)).stdout) as T;
}

/** A database name no other test file uses (files run in parallel on one pool). */
export function uniqueDb(prefix: string): string {
  return `${prefix}${randomBytes(3).toString('hex')}`;
}

/** A query on the branch as clients reach it (through the router when the agent runs one). */
export async function query<T extends pg.QueryResultRow = Record<string, unknown>>(
  b: BranchView,
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  // Through the router with TLS: from the fields, with libpq's sslmode=require (the router's
  // certificate is a test one), shared/pg-config.ts. Otherwise the uri itself, as clients use it
  // (tests change it: another password, startup options).
  const c = new pg.Client({
    ...(b.connection.sslmode === 'require' ? pgClientConfig(b.connection) : { connectionString: b.connection.uri }),
    connectionTimeoutMillis: 10_000,
  });
  await c.connect();
  try {
    return (await c.query<T>(sql, params)).rows;
  } finally {
    await c.end();
  }
}

export function config(): Promise<Config> {
  return loadConfig();
}

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * A `zfs` change made by a test itself, with the driver's rule: zfs-fuse answers "dataset is busy"
 * at random for a moment, so retry that (and only that), up to ~10 s.
 */
export function zfsChange(args: string[]): string {
  for (let i = 0; ; i++) {
    try {
      return sh('zfs', args);
    } catch (e) {
      const err = String((e as { stderr?: unknown }).stderr ?? e);
      if (i >= 40 || !/busy/i.test(err)) throw e;
      execFileSync('sleep', ['0.25']);
    }
  }
}

/** The container name the agent gives a new branch (it carries a hash of the agent's root). */
export async function containerName(db: string, branch: string, configPath?: string): Promise<string> {
  return new Layout(configPath ? await loadConfig(configPath) : await config()).container(db, branch);
}

/**
 * Every dataset and snapshot under `root`, sorted; none when `root` does not exist. Any other zfs
 * error fails the test: "nothing left over" must never pass because ZFS was broken.
 */
export function datasetsUnder(root: string, types = 'filesystem,snapshot'): string[] {
  try {
    return sh('zfs', ['list', '-H', '-o', 'name', '-t', types, '-r', root]).split('\n').filter(Boolean).sort();
  } catch (e) {
    if (/does not exist/.test(String((e as { stderr?: unknown }).stderr ?? ''))) return [];
    throw e;
  }
}

/** Everything the agent has in ZFS and Docker for one database, to prove deletes leave nothing. */
export async function leftovers(
  db: string,
  configPath?: string,
): Promise<{ datasets: string[]; containers: string[] }> {
  const cfg = configPath ? await loadConfig(configPath) : await config();
  const datasets = datasetsUnder(`${cfg.zfs.pool}/${cfg.zfs.datasetBase}/${db}`);
  const containers = sh('docker', [
    'ps',
    '-a',
    '--filter',
    `label=io.betterpg.database=${db}`,
    '--format',
    '{{.Names}}',
  ])
    .split('\n')
    .filter(Boolean);
  return { datasets, containers };
}

export async function queryOne<T extends pg.QueryResultRow = Record<string, unknown>>(
  b: BranchView,
  sql: string,
  params: unknown[] = [],
): Promise<T> {
  const rows = await query<T>(b, sql, params);
  if (!rows[0]) throw new Error(`no row from: ${sql}`);
  return rows[0];
}

/**
 * The first of this run's 2000 ports (scripts/test.sh sets it): below Linux's ephemeral range
 * (32768-60999), so no outgoing connection's local port ever takes a port a test listens on.
 */
export const TEST_PORT_BASE = Number(process.env.BPG_TEST_PORT_BASE ?? 25432);

/** The first port of a slot (ownStateConfig's numbering): where a router of a test listens. */
export function slotPort(slot: number): number {
  return TEST_PORT_BASE + 1000 + slot * 20;
}

/**
 * A config like the test one with its own state folder, dataset base (`<base>-<name>`) and port
 * slice, for tests that leave interrupted work behind on purpose or run a daemon: the next mutating
 * command of ANY process on a state cleans up its interrupted work, so sharing the state would race
 * the other test files. `slot` (0-49, one per state: see the list in docs/internals/testing.md or
 * `grep -rn ownStateConfig`) picks 20 ports after the shared state's 1000.
 */
export function ownStateConfig(
  name: string,
  slot: number,
  change: (raw: Record<string, any>) => void = () => {},
): string {
  const raw = YAML.parse(readFileSync(process.env.BPG_CONFIG!, 'utf8'));
  if (!Number.isInteger(slot) || slot < 0 || slot > 49) throw new Error(`slot ${slot}: 0-49`);
  const base = slotPort(slot);
  // under the run's folder, which scripts/test.sh removes
  raw.stateDir = mkdtempSync(join(dirname(process.env.BPG_CONFIG!), `state-${name}-`));
  raw.zfs.datasetBase = `${raw.zfs.datasetBase}-${name}`;
  raw.postgres.portRange = [base, base + 19];
  change(raw);
  const path = join(raw.stateDir, 'config.yaml');
  writeFileSync(path, YAML.stringify(raw), { mode: 0o600 });
  return path;
}

export interface LogLine {
  level: string;
  msg: string;
  [k: string]: unknown;
}

/** A logger that keeps every line, to check what was done and that no secret is logged (BPG_TEST_VERBOSE echoes them). */
export function recorder(echo = !!process.env.BPG_TEST_VERBOSE): Logger & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  const rec = (level: string) => (msg: string, fields?: Record<string, unknown>) => {
    lines.push({ level, msg, ...fields });
    if (echo) process.stderr.write(JSON.stringify({ level, msg, ...fields }) + '\n');
  };
  return { lines, info: rec('info'), warn: rec('warn'), debug: rec('debug') };
}

/** A TCP port nothing listens on right now (for servers a test starts itself). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/**
 * A spare port slot: `bpg-slot-<port>.<tag>` for a port no branch holds. `bpg serve` and
 * housekeeping start and remove spares on their own (engine/port-slots.ts), so footprints that
 * compare containers before and after leave them out; a branch's own slot is kept in.
 */
export function isSpareSlot(name: string, heldPorts: readonly number[]): boolean {
  const m = /^bpg-slot-(\d+)\./.exec(name);
  return m !== null && !heldPorts.includes(Number(m[1]));
}

/** The state file of a config's agent, as JSON (empty when there is none yet). */
export function readStateFile(cfg: { stateDir: string }): { branches?: Record<string, { port: number }> } {
  const file = join(cfg.stateDir, 'state.json');
  return existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {};
}

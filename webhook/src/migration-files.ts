/**
 * A pull request's migrations, read through the contents API at its head commit (no PR code is
 * checked out or run here), in the repository's layout (migration-layouts.ts: `migrations.format`,
 * or detected from the folder), within limits: at most `maxFiles` migration files, none over
 * `maxFileSize`, all together at most `maxTotalSize`. Listings carry every file's size, so a folder
 * over a limit is refused before a single file is downloaded; the sizes are checked again on what
 * actually arrives. Prisma's migrations sit one folder down: the folders are counted against
 * `maxFiles` before any of them is listed, and nothing deeper is looked at. A refusal is all or
 * nothing: no file of a refused folder is applied.
 */
import type { DirEntry, RepoApi } from './github.js';
import {
  dbmateUpSections,
  detectFormat,
  looksLikeDbmate,
  planFiles,
  PRISMA_FILE,
  prismaFolders,
  supabaseSeedPath,
  type MigrationFormat,
} from './migration-layouts.js';

export interface MigrationFile {
  /**
   * Recorded in `betterpg.migrations` and shown: the path inside the migrations folder (`001_a.sql`,
   * `20240101000000_init/migration.sql`), or for Supabase's seed its path in the repository.
   */
  name: string;
  /** What runs: the file, or for dbmate its `-- migrate:up` sections (the rest blanked, lines kept). */
  sql: string;
  /** The whole file when `sql` is only part of it: its SHA-256 is what is recorded. */
  source?: string;
  /** Flyway's `R__` migrations: applied again whenever their content changes. */
  repeatable?: boolean;
  /** Why the tool itself would stop at this file (dbmate's parse errors): the run fails here. */
  invalid?: string;
}

export interface MigrationLimits {
  maxFiles: number;
  maxFileSize: number;
  maxTotalSize: number;
}

export interface Migrations {
  format: MigrationFormat;
  /** What the layout was detected from; absent when `migrations.format` names it. */
  detectedFrom?: string;
  /** In the order they run. */
  files: MigrationFile[];
  /** Supabase: `seed.sql` beside the folder, for a new branch only (the lifecycle decides). */
  seed?: MigrationFile;
}

export type FetchedMigrations =
  | Migrations
  /**
   * Over a limit, or (`layout`) a layout its tool itself refuses: one line saying why, and nothing
   * to apply.
   */
  | Refusal
  /** No such folder at this commit. */
  | null;

/** GitHub's contents API lists at most this many entries of a folder, and says nothing of the rest. */
export const GITHUB_LISTING_CAP = 1000;

/** `1.5 MiB`, `640 KiB`, `12 bytes` */
export function formatSize(n: number): string {
  if (n >= 1024 * 1024) return `${+(n / 1024 / 1024).toFixed(1)} MiB`;
  if (n >= 1024) return `${+(n / 1024).toFixed(1)} KiB`;
  return `${n} bytes`;
}

/** A file to download: `name` as recorded, `path` in the repository, `size` as listed. */
interface ToRead {
  name: string;
  path: string;
  size?: number;
  repeatable?: boolean;
}

type Refusal = { refused: string; layout?: true };

/** The folder is laid out in a way its tool would refuse (two migrations of one version, ...). */
const badLayout = (reason: string): Refusal => ({ refused: reason, layout: true });

function overCap(path: string, entries: DirEntry[]): Refusal | null {
  return entries.length >= GITHUB_LISTING_CAP
    ? {
        refused: `${path || 'the repository root'} has ${GITHUB_LISTING_CAP} entries or more; GitHub lists no more than that, so some files could not be seen`,
      }
    : null;
}

/**
 * The migrations at `ref` in `path`, in the order they run. `format` undefined: detected from the
 * folder's listing (and, between plain and dbmate, from the files' `-- migrate:up` lines).
 */
export async function fetchMigrations(
  gh: RepoApi,
  path: string,
  ref: string,
  limits: MigrationLimits,
  format?: MigrationFormat,
): Promise<FetchedMigrations> {
  const entries = await gh.listDir(path, ref);
  if (entries === null) return null;
  const capped = overCap(path, entries);
  if (capped) return capped;
  const detected = format === undefined ? detectFormat(path, entries) : undefined;
  let layout = format ?? detected!.format;
  let detectedFrom = detected?.from;

  let toRead: ToRead[];
  if (layout === 'prisma') {
    const listed = await listPrisma(gh, path, ref, entries, limits);
    if ('refused' in listed) return listed;
    toRead = listed;
  } else {
    const plan = planFiles(
      layout,
      entries.filter((e) => e.type === 'file').map((e) => e.name),
    );
    if ('invalid' in plan) return badLayout(`${path}: ${plan.invalid}`);
    const sizes = new Map(entries.map((e) => [e.name, e.size]));
    toRead = plan.migrations.map((m) => ({
      name: m.name,
      path: `${path}/${m.name}`,
      size: sizes.get(m.name),
      ...(m.repeatable ? { repeatable: true } : {}),
    }));
  }
  let seed: ToRead | undefined;
  if (layout === 'supabase') {
    const found = await findSeed(gh, path, ref);
    if (found !== null && 'refused' in found) return found;
    seed = found ?? undefined;
  }

  const all = seed ? [...toRead, seed] : toRead;
  const what =
    (layout === 'plain'
      ? `.sql files in ${path}`
      : layout === 'prisma'
        ? `migrations in ${path}`
        : `migration files in ${path}`) + (seed ? ` and ${seed.path}` : '');
  if (all.length > limits.maxFiles)
    return { refused: `${all.length} ${what}; at most ${limits.maxFiles} (migrations.maxFiles)` };
  const tooBig = (name: string, size: number) => ({
    refused: `${name} is ${formatSize(size)}; at most ${formatSize(limits.maxFileSize)} per file (migrations.maxFileSize)`,
  });
  const tooMuch = (size: number, exact: boolean) => ({
    refused: `the ${what} come to ${exact ? '' : 'at least '}${formatSize(size)}; at most ${formatSize(limits.maxTotalSize)} in all (migrations.maxTotalSize)`,
  });
  // First from the listings' sizes, before anything is downloaded...
  let listed = 0;
  for (const e of all) {
    if (e.size === undefined) continue;
    if (e.size > limits.maxFileSize) return tooBig(e.name, e.size);
    listed += e.size;
  }
  if (listed > limits.maxTotalSize)
    return tooMuch(
      listed,
      all.every((e) => e.size !== undefined),
    );

  // ... then on the bytes that arrive (a listing could be wrong, or silent on a size).
  const texts = new Map<string, string>();
  let total = 0;
  for (const e of all) {
    const text = await gh.readFile(e.path, ref);
    const size = Buffer.byteLength(text);
    if (size > limits.maxFileSize) return tooBig(e.name, size);
    total += size;
    if (total > limits.maxTotalSize) return tooMuch(total, false);
    texts.set(e.path, text);
  }

  if (detected && layout === 'plain' && looksLikeDbmate(toRead.map((e) => texts.get(e.path)!))) {
    // dbmate's files are plain .sql files: only their `-- migrate:up` lines tell them apart.
    layout = 'dbmate';
    detectedFrom = '-- migrate:up';
    const plan = planFiles(
      'dbmate',
      toRead.map((e) => e.name),
    );
    if ('invalid' in plan) return badLayout(`${path}: ${plan.invalid}`);
    const keep = new Set(plan.migrations.map((m) => m.name));
    const order = plan.migrations.map((m) => m.name);
    toRead = toRead.filter((e) => keep.has(e.name)).sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name));
  }

  const file = (e: ToRead): MigrationFile => {
    const text = texts.get(e.path)!;
    if (layout !== 'dbmate') return { name: e.name, sql: text, ...(e.repeatable ? { repeatable: true } : {}) };
    const up = dbmateUpSections(text);
    return 'invalid' in up
      ? { name: e.name, sql: '', source: text, invalid: up.invalid }
      : { name: e.name, sql: up.sql, source: text };
  };
  return {
    format: layout,
    ...(detectedFrom !== undefined ? { detectedFrom } : {}),
    files: toRead.map(file),
    ...(seed ? { seed: { name: seed.name, sql: texts.get(seed.path)! } } : {}),
  };
}

/**
 * Prisma: `<folder>/<timestamp>_<name>/migration.sql`. The folders are counted before any is listed;
 * each must hold its migration.sql (Prisma stops at one that does not: P3015).
 */
async function listPrisma(
  gh: RepoApi,
  path: string,
  ref: string,
  entries: DirEntry[],
  limits: MigrationLimits,
): Promise<ToRead[] | Refusal> {
  const folders = prismaFolders(entries);
  if (folders.length > limits.maxFiles)
    return { refused: `${folders.length} migrations in ${path}; at most ${limits.maxFiles} (migrations.maxFiles)` };
  const out: ToRead[] = [];
  for (const folder of folders) {
    const inner = await gh.listDir(`${path}/${folder}`, ref);
    if (inner === null) return badLayout(`${path}/${folder} could not be listed at this commit`);
    const capped = overCap(`${path}/${folder}`, inner);
    if (capped) return capped;
    const sql = inner.find((e) => e.name === PRISMA_FILE && e.type === 'file');
    if (!sql)
      return badLayout(
        `${path}/${folder} has no ${PRISMA_FILE}; Prisma stops there too (P3015): restore the file or delete the folder`,
      );
    out.push({ name: `${folder}/${PRISMA_FILE}`, path: `${path}/${folder}/${PRISMA_FILE}`, size: sql.size });
  }
  return out;
}

/** Supabase's `seed.sql` beside the migrations folder, from its folder's listing; null when there is none. */
async function findSeed(gh: RepoApi, path: string, ref: string): Promise<ToRead | Refusal | null> {
  const seed = supabaseSeedPath(path);
  const entries = await gh.listDir(seed.parent, ref);
  if (entries === null) return null;
  const capped = overCap(seed.parent, entries);
  if (capped) return capped;
  const e = entries.find((x) => x.name === 'seed.sql' && x.type === 'file');
  return e ? { name: seed.path, path: seed.path, size: e.size } : null;
}

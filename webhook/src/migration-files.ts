/**
 * A pull request's migration files, read through the contents API at its head commit (no PR code is
 * checked out or run here), within limits: at most `maxFiles` `.sql` files, none over `maxFileSize`,
 * all together at most `maxTotalSize`. The listing carries every file's size, so a folder over a
 * limit is refused before a single file is downloaded; the sizes are checked again on what
 * actually arrives. A refusal is all or nothing: no file of a refused folder is applied.
 */
import type { RepoApi } from './github.js';

export interface MigrationFile {
  name: string;
  sql: string;
}

export interface MigrationLimits {
  maxFiles: number;
  maxFileSize: number;
  maxTotalSize: number;
}

export type FetchedMigrations =
  /** The folder's `*.sql` files in name order. */
  | { files: MigrationFile[] }
  /** Over a limit: one line saying which, and nothing to apply. */
  | { refused: string }
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

/** The folder's `*.sql` files at `ref`, sorted by name (code-point order: `001_` < `002_` < `010_`). */
export async function fetchMigrations(
  gh: RepoApi,
  path: string,
  ref: string,
  limits: MigrationLimits,
): Promise<FetchedMigrations> {
  const entries = await gh.listDir(path, ref);
  if (entries === null) return null;
  if (entries.length >= GITHUB_LISTING_CAP) {
    return {
      refused: `${path} has ${GITHUB_LISTING_CAP} entries or more; GitHub lists no more than that, so some files could not be seen`,
    };
  }
  const sql = entries
    .filter((e) => e.type === 'file' && e.name.toLowerCase().endsWith('.sql'))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  if (sql.length > limits.maxFiles)
    return { refused: `${sql.length} .sql files in ${path}; at most ${limits.maxFiles} (migrations.maxFiles)` };

  const tooBig = (name: string, size: number) => ({
    refused: `${name} is ${formatSize(size)}; at most ${formatSize(limits.maxFileSize)} per file (migrations.maxFileSize)`,
  });
  const tooMuch = (size: number, exact: boolean) => ({
    refused: `the .sql files in ${path} come to ${exact ? '' : 'at least '}${formatSize(size)}; at most ${formatSize(limits.maxTotalSize)} in all (migrations.maxTotalSize)`,
  });
  // First from the listing's sizes, before anything is downloaded...
  let listed = 0;
  for (const e of sql) {
    if (e.size === undefined) continue;
    if (e.size > limits.maxFileSize) return tooBig(e.name, e.size);
    listed += e.size;
  }
  if (listed > limits.maxTotalSize)
    return tooMuch(
      listed,
      sql.every((e) => e.size !== undefined),
    );

  // ... then on the bytes that arrive (a listing could be wrong, or silent on a size).
  const files: MigrationFile[] = [];
  let total = 0;
  for (const e of sql) {
    const text = await gh.readFile(`${path}/${e.name}`, ref);
    const size = Buffer.byteLength(text);
    if (size > limits.maxFileSize) return tooBig(e.name, size);
    total += size;
    if (total > limits.maxTotalSize) return tooMuch(total, false);
    files.push({ name: e.name, sql: text });
  }
  return { files };
}

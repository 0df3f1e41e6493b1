import { z } from 'zod';
import { invalid } from './errors.js';

/**
 * Database and branch names. They become parts of ZFS dataset names, Docker container names,
 * and PostgreSQL database names, so the alphabet is deliberately small: letters, digits, `_`
 * and `-`, starting with a letter or digit (a leading `-` would read as an option to zfs/docker).
 */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;
export const MAX_DB_NAME = 40;
export const MAX_BRANCH_NAME = 63;

function nameSchema(kind: string, max: number) {
  return z
    .string()
    .min(1, `${kind} name is empty`)
    .max(max, `${kind} name is longer than ${max} characters`)
    .regex(NAME_RE, `${kind} name may only use letters, digits, '_' and '-', and must start with a letter or digit`);
}

export const DatabaseName = nameSchema('database', MAX_DB_NAME);
export const BranchPart = nameSchema('branch', MAX_BRANCH_NAME);

export interface BranchRef {
  database: string;
  branch: string;
}

export const refName = (r: BranchRef) => `${r.database}/${r.branch}`;

/**
 * Someone's input as an error message quotes it: control characters escaped (a newline would cut
 * the CLI's one error line, or forge a second one) and at most 80 characters.
 */
export function shown(value: string): string {
  const safe = value.replace(
    /[\x00-\x1f\x7f\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return safe.length > 80 ? `${safe.slice(0, 80)}…` : safe;
}

/**
 * Text someone else wrote (a branch's SQL: names, definitions, function bodies), made safe to print
 * on a terminal or in a comment without cutting it: control characters other than newline and tab,
 * line and paragraph separators, and the bidirectional controls of "Trojan source" are escaped as
 * `\uXXXX`, so nothing can move the cursor, clear a line, or reorder what the reader sees.
 */
export function printable(value: string): string {
  return value.replace(
    /[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

function check(schema: z.ZodString, value: string, whole: string): string {
  const r = schema.safeParse(value);
  if (!r.success) throw invalid(`invalid name '${shown(whole)}': ${r.error.issues[0]?.message ?? 'not allowed'}`);
  return r.data;
}

export function parseDatabaseName(value: string): string {
  return check(DatabaseName, value, value);
}

export function parseBranchPart(value: string): string {
  return check(BranchPart, value, value);
}

/** Parses `<db>/<branch>`. With `defaultDb`, a bare `<branch>` is taken as a branch of it. */
export function parseBranchRef(value: string, defaultDb?: string): BranchRef {
  const parts = value.split('/');
  if (parts.length === 1 && defaultDb !== undefined) {
    return { database: parseDatabaseName(defaultDb), branch: check(BranchPart, parts[0]!, value) };
  }
  if (parts.length !== 2) throw invalid(`invalid branch name '${shown(value)}': expected <database>/<branch>`);
  return { database: check(DatabaseName, parts[0]!, value), branch: check(BranchPart, parts[1]!, value) };
}

/** A Docker image reference (`postgres:17`, `registry:5000/pg@sha256:...`): no spaces, no leading `-`. */
export const ImageRef = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$/, 'image must be a Docker image reference (e.g. postgres:17)');

export function parseImage(value: string): string {
  const r = ImageRef.safeParse(value);
  if (!r.success) throw invalid(`invalid image '${shown(value)}': ${r.error.issues[0]?.message ?? 'not allowed'}`);
  return r.data;
}

export const SNAPSHOT_ID_RE = /^snap-[a-f0-9]{8}$/;

export function parseSnapshotId(value: string): string {
  if (!SNAPSHOT_ID_RE.test(value)) throw invalid(`invalid snapshot id '${shown(value)}' (ids look like snap-1a2b3c4d)`);
  return value;
}

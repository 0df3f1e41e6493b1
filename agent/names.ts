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

export { printable, shown } from './quote.js';
import { shown } from './quote.js';

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

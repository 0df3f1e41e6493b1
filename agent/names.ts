import { invalid } from './errors.js';
import { shown } from './quote.js';

/**
 * Database and branch names. They become parts of ZFS dataset names, Docker container names,
 * and PostgreSQL database names, so the alphabet is deliberately small: letters, digits, `_`
 * and `-`, starting with a letter or digit (a leading `-` would read as an option to zfs/docker).
 *
 * Plain checks, no zod: the CLI checks names before it sends a request without loading zod.
 * The zod schemas built on these rules are in name-schemas.ts.
 */
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;
export const MAX_DB_NAME = 40;
export const MAX_BRANCH_NAME = 63;

/** A Docker image reference (`postgres:17`, `registry:5000/pg@sha256:...`): no spaces, no leading `-`. */
export const IMAGE_RE = /^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$/;
export const IMAGE_MESSAGE = 'image must be a Docker image reference (e.g. postgres:17)';

export type NameKind = 'database' | 'branch';
export const NAME_MAX: Record<NameKind, number> = { database: MAX_DB_NAME, branch: MAX_BRANCH_NAME };

/** The messages of each rule, in the order they are checked (shared with the zod schemas). */
export const nameMessages = (kind: NameKind) => ({
  empty: `${kind} name is empty`,
  long: `${kind} name is longer than ${NAME_MAX[kind]} characters`,
  alphabet: `${kind} name may only use letters, digits, '_' and '-', and must start with a letter or digit`,
});

/** What is wrong with a name, or null when it is allowed. */
export function nameProblem(kind: NameKind, value: string): string | null {
  const m = nameMessages(kind);
  if (value.length < 1) return m.empty;
  if (value.length > NAME_MAX[kind]) return m.long;
  if (!NAME_RE.test(value)) return m.alphabet;
  return null;
}

export interface BranchRef {
  database: string;
  branch: string;
}

export const refName = (r: BranchRef) => `${r.database}/${r.branch}`;

export { printable, shown } from './quote.js';

function check(kind: NameKind, value: string, whole: string): string {
  const problem = nameProblem(kind, value);
  if (problem) throw invalid(`invalid name '${shown(whole)}': ${problem}`);
  return value;
}

export function parseDatabaseName(value: string): string {
  return check('database', value, value);
}

export function parseBranchPart(value: string): string {
  return check('branch', value, value);
}

/** Parses `<db>/<branch>`. With `defaultDb`, a bare `<branch>` is taken as a branch of it. */
export function parseBranchRef(value: string, defaultDb?: string): BranchRef {
  const parts = value.split('/');
  if (parts.length === 1 && defaultDb !== undefined) {
    return { database: parseDatabaseName(defaultDb), branch: check('branch', parts[0]!, value) };
  }
  if (parts.length !== 2) throw invalid(`invalid branch name '${shown(value)}': expected <database>/<branch>`);
  return { database: check('database', parts[0]!, value), branch: check('branch', parts[1]!, value) };
}

export function parseImage(value: string): string {
  if (!IMAGE_RE.test(value)) throw invalid(`invalid image '${shown(value)}': ${IMAGE_MESSAGE}`);
  return value;
}

export const SNAPSHOT_ID_RE = /^snap-[a-f0-9]{8}$/;

export function parseSnapshotId(value: string): string {
  if (!SNAPSHOT_ID_RE.test(value)) throw invalid(`invalid snapshot id '${shown(value)}' (ids look like snap-1a2b3c4d)`);
  return value;
}

import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, open, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { invalid } from '../errors.js';
import type { Config } from '../config.js';
import { ImportMethod, PasswordRef, type SourceRecord } from '../state/schema.js';

export { ImportMethod, PasswordRef, SourceRecord } from '../state/schema.js';

/**
 * Where an import reads from: a live PostgreSQL named by a URL (the admin's input, never a pull
 * request's), and where its password is. The password itself is never kept in the state, a log,
 * an error or a process argument: the state keeps only a reference to it — a secrets file of its own
 * under `<stateDir>/secrets` (when the URL carried the password), an environment variable of the
 * agent, or a file the admin keeps — and it reaches pg_dump/pg_basebackup in a passfile.
 */

/** What the builder is given: the source with its password resolved (in memory only). */
export interface ImportSource {
  /** Without a password. */
  url: string;
  password?: string;
  method: ImportMethod;
  jobs: number;
  roles: boolean;
}

export const MAX_JOBS = 64;
/** Connection parameters that would name a password or a file of the agent's: refused in the URL's query. */
const REFUSED_PARAMS = new Set(['password', 'passfile', 'service', 'servicefile', 'sslpassword']);

export interface ParsedUrl {
  /** The URL without its password. */
  url: string;
  /** The password the URL carried, if any (decoded). */
  password: string | null;
  host: string;
  database: string;
  user: string;
}

/** Any URL-like text with its credentials masked, for messages about a URL that did not parse. */
export function maskUrl(text: string): string {
  return text.replace(/(\/\/[^:/@\s]*):[^@\s]*@/g, '$1:***@');
}

/** Parses and checks a source URL: postgres:// or postgresql://, a host, a user; splits off the password. */
export function parseSourceUrl(raw: string): ParsedUrl {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw invalid(
      `--from-url is not a URL (expected postgres://user[:password]@host[:port]/database): ${maskUrl(raw)}`,
    );
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:')
    throw invalid(`--from-url must start with postgres:// or postgresql://, not ${u.protocol}//`);
  if (!u.hostname)
    throw invalid('--from-url names no host (a socket on the agent host is not reachable from the import container)');
  if (!u.username) throw invalid('--from-url names no user (postgres://user@host/database)');
  if (/[\x00-\x1f\s]/.test(raw)) throw invalid('--from-url must not contain spaces or control characters');
  for (const k of u.searchParams.keys())
    if (REFUSED_PARAMS.has(k.toLowerCase()))
      throw invalid(`--from-url must not set '${k}' (give the password in the URL, --password-env or --password-file)`);
  const password = u.password ? decodeURIComponent(u.password) : null;
  u.password = '';
  const database = decodeURIComponent(u.pathname.replace(/^\//, '')) || decodeURIComponent(u.username);
  if (database.includes('/')) throw invalid('--from-url: the path must be one database name');
  return { url: u.toString(), password, host: u.hostname, database, user: decodeURIComponent(u.username) };
}

/** The source as the user gave it (CLI flags, API body), before its password is stored. */
export interface SourceInput {
  url: string;
  method?: ImportMethod;
  jobs?: number;
  roles?: boolean;
  passwordEnv?: string;
  passwordFile?: string;
}

/** Checks a source input at the edge; the password reference it will keep (a secret still to be written). */
export function checkSourceInput(input: SourceInput): {
  parsed: ParsedUrl;
  method: ImportMethod;
  jobs: number;
  roles: boolean;
  ref: PasswordRef | { kind: 'url' };
} {
  const parsed = parseSourceUrl(input.url);
  const method = ImportMethod.safeParse(input.method ?? 'dump');
  if (!method.success) throw invalid(`--method must be dump or basebackup, not '${String(input.method)}'`);
  const jobs = input.jobs ?? 1;
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > MAX_JOBS)
    throw invalid(`--jobs must be a whole number from 1 to ${MAX_JOBS}`);
  if (method.data === 'basebackup' && jobs !== 1) throw invalid('--jobs applies to the dump method only');
  const roles = input.roles ?? false;
  if (method.data === 'basebackup' && roles)
    throw invalid('--roles applies to the dump method only (a base backup copies every role anyway)');
  const given = [parsed.password !== null, input.passwordEnv !== undefined, input.passwordFile !== undefined].filter(
    Boolean,
  ).length;
  if (given > 1) throw invalid('give the source password one way only: in the URL, --password-env or --password-file');
  let ref: PasswordRef | { kind: 'url' } = { kind: 'none' };
  if (parsed.password !== null) ref = { kind: 'url' };
  else if (input.passwordEnv !== undefined) {
    const r = PasswordRef.safeParse({ kind: 'env', name: input.passwordEnv });
    if (!r.success) throw invalid('--password-env must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)');
    ref = r.data;
  } else if (input.passwordFile !== undefined) {
    if (!input.passwordFile.startsWith('/')) throw invalid('--password-file must be an absolute path');
    ref = { kind: 'file', path: input.passwordFile };
  }
  return { parsed, method: method.data, jobs, roles, ref };
}

/**
 * The API's check before it answers 202: the input as checkSourceInput, and a password reference
 * that resolves now (an unset variable or unreadable file is a 400, not a failed operation).
 */
export async function checkImportInput(cfg: Config, input: SourceInput): Promise<void> {
  const { ref } = checkSourceInput(input);
  if (ref.kind !== 'url') await resolvePassword(cfg, ref);
}

// ---------------------------------------------------------------- secrets

const secretsDir = (cfg: Config) => join(cfg.stateDir, 'secrets');
const secretPath = (cfg: Config, id: string) => join(secretsDir(cfg), `source-${id}`);

/** Keeps a password in a file of its own (folder 0700, file 0600, written under a temporary name then renamed). */
export async function writeSecret(cfg: Config, password: string): Promise<PasswordRef> {
  const dir = secretsDir(cfg);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const st = await lstat(dir);
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory`);
  await chmod(dir, 0o700);
  const id = randomBytes(8).toString('hex');
  const tmp = `${secretPath(cfg, id)}.tmp`;
  await writeFile(tmp, password, { mode: 0o600, flag: 'wx' });
  await rename(tmp, secretPath(cfg, id));
  return { kind: 'secret', id };
}

/** Removes a secrets file (gone already counts as done); other references own nothing. */
export async function removeSecret(cfg: Config, ref: PasswordRef | null | undefined): Promise<void> {
  if (ref?.kind === 'secret') await rm(secretPath(cfg, ref.id), { force: true });
}

const MAX_PASSWORD_BYTES = 4096;

/** Reads a file that holds only a password (its first line). */
async function readPasswordFile(path: string, what: string): Promise<string> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw invalid(`${what} ${path} cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw invalid(`${what} ${path} is not a regular file`);
    if (st.size > MAX_PASSWORD_BYTES) throw invalid(`${what} ${path} is larger than ${MAX_PASSWORD_BYTES} bytes`);
    const text = (await fh.readFile('utf8')).split(/\r?\n/)[0] ?? '';
    if (!text) throw invalid(`${what} ${path} is empty`);
    return text;
  } finally {
    await fh.close();
  }
}

/** The password a reference points to, read now (a refresh reads it again: rotated passwords are picked up). */
export async function resolvePassword(cfg: Config, ref: PasswordRef): Promise<string | undefined> {
  switch (ref.kind) {
    case 'none':
      return undefined;
    case 'secret':
      return readPasswordFile(secretPath(cfg, ref.id), "the source's secrets file");
    case 'env': {
      const v = process.env[ref.name];
      if (v === undefined || v === '')
        throw invalid(`the environment variable ${ref.name} (the source's password) is not set for the agent`);
      return v;
    }
    case 'file':
      return readPasswordFile(ref.path, '--password-file');
  }
}

/** The source the builder gets from a recorded one: its password read from where the record says. */
export async function sourceOf(cfg: Config, rec: SourceRecord): Promise<ImportSource> {
  return {
    url: rec.url,
    password: await resolvePassword(cfg, rec.password),
    method: rec.method,
    jobs: rec.jobs,
    roles: rec.roles,
  };
}

// ---------------------------------------------------------------- scrubbing

/** Text from pg_dump & co. with the password (and any URL credentials) masked, safe for errors and logs. */
export function scrub(text: string, password: string | undefined): string {
  let out = maskUrl(text);
  if (password) {
    out = out.split(password).join('***');
    const enc = encodeURIComponent(password);
    if (enc !== password) out = out.split(enc).join('***');
  }
  return out;
}

/** A libpq passfile line that matches any server: `\` and `:` escaped. */
export function passfileLine(password: string): string {
  return `*:*:*:*:${password.replace(/\\/g, '\\\\').replace(/:/g, '\\:')}\n`;
}

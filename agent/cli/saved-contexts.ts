/**
 * Saved contexts: named agents (URL, token, optional CA file) in
 * `$XDG_CONFIG_HOME/betterpg/contexts.yaml` (default ~/.config/betterpg/contexts.yaml), and which one
 * is current. The file holds tokens: it is written 0600 in a 0700 folder, replaced atomically, and a
 * token is never printed (see `publicView`).
 */
import { chmod, mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { ContextsFile, SavedContext } from './context-schemas.js';
import { BpgError, invalid, notFound } from '../errors.js';
import { shown } from '../quote.js';
import { contextsPath } from './contexts-path.js';

/** zod only when there is a file to read or write (or a URL or token to check). */
const schemas = () => import('./context-schemas.js');
export type { ContextsFile, SavedContext } from './context-schemas.js';

/** yaml only when there is a file to read or write: without one, a command need not pay its ~35 ms. */
const yaml = async () => (await import('yaml')).default;

export { contextsPath };

/** The file as saved; an empty one when there is none. */
export async function readContexts(path = contextsPath()): Promise<ContextsFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { current: null, contexts: [] };
    throw new BpgError('failed', `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = (await yaml()).parse(text) ?? {};
  } catch (e) {
    throw invalid(`${path} is not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  const r = (await schemas()).ContextsFile.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0];
    throw invalid(`${path}: ${i ? `${i.path.join('.') || '(top)'}: ${i.message}` : 'not a contexts file'}`);
  }
  return r.data;
}

/** Writes the file 0600 (its folder 0700) through a temporary file and a rename: never half-written. */
export async function writeContexts(file: ContextsFile, path = contextsPath()): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const tmp = `${path}.${process.pid}.tmp`;
  // 'wx': a file (or a link) already at the temporary name is an error, never followed.
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile((await yaml()).stringify((await schemas()).ContextsFile.parse(file)), 'utf8');
    await fh.chmod(0o600);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw e;
  }
}

/** The saved context `name`, or a not-found error listing the names. */
export function findContext(file: ContextsFile, name: string): SavedContext {
  const c = file.contexts.find((x) => x.name === name);
  if (!c) {
    const names = file.contexts.map((x) => x.name);
    throw notFound(
      `no context '${shown(name)}'${names.length ? ` (saved: ${names.join(', ')})` : ' (none saved: bpg context add)'}`,
    );
  }
  return c;
}

/** A context as `bpg context list` shows it: never the token. */
export function publicView(c: SavedContext, current: string | null | undefined) {
  return { name: c.name, url: c.url, ca: c.ca ?? null, current: c.name === current };
}

/** Adds or replaces `c`; the first context saved becomes the current one. */
export function withContext(file: ContextsFile, c: SavedContext): ContextsFile {
  const contexts = [...file.contexts.filter((x) => x.name !== c.name), c].sort((a, b) => a.name.localeCompare(b.name));
  return { current: file.current ?? c.name, contexts };
}

export function withoutContext(file: ContextsFile, name: string): ContextsFile {
  findContext(file, name);
  return {
    current: file.current === name ? null : file.current,
    contexts: file.contexts.filter((x) => x.name !== name),
  };
}

/** An absolute path to a CA file that exists, for `--ca` in a saved context. */
export async function checkedCaPath(path: string): Promise<string> {
  const abs = resolve(path);
  const st = await stat(abs).catch(() => null);
  if (!st?.isFile()) throw invalid(`--ca: ${shown(path)} is not a file`);
  return abs;
}

/** Warns (through `warn`) when the file can be read by others: it holds tokens. */
export async function warnIfOpen(path: string, warn: (msg: string) => void): Promise<void> {
  const st = await stat(path).catch(() => null);
  if (st && (st.mode & 0o077) !== 0)
    warn(`${path} can be read by other users (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it`);
}

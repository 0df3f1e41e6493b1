/**
 * seed_file: the SQL a schema-only branch runs after its structure, read from the workspace. The
 * file is the pull request's (its checkout), so it must stay inside the workspace: a link to a file
 * of the runner (its environment, a token) would otherwise be sent to the branch, where the pull
 * request's author can read it.
 */
import { lstat, readFile, realpath } from 'node:fs/promises';
import { isAbsolute, relative, resolve } from 'node:path';
import { ActionError } from './errors.js';

/** As the agent accepts it (agent/engine/schema-only.ts MAX_SEED_BYTES). */
export const MAX_SEED_BYTES = 1024 * 1024;

export async function readSeedFile(
  path: string,
  workspace = process.env.GITHUB_WORKSPACE ?? process.cwd(),
): Promise<string> {
  const root = await realpath(workspace);
  let real: string;
  try {
    real = await realpath(resolve(root, path));
  } catch (e) {
    throw new ActionError(`input seed_file: ${path} cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const rel = relative(root, real);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel))
    throw new ActionError(`input seed_file: ${path} is outside the workspace`);
  const st = await lstat(real);
  if (!st.isFile()) throw new ActionError(`input seed_file: ${path} is not a regular file`);
  if (st.size > MAX_SEED_BYTES)
    throw new ActionError(`input seed_file: ${path} is ${st.size} bytes; at most ${MAX_SEED_BYTES} are accepted`);
  return readFile(real, 'utf8');
}

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The version in the checkout's package.json, for `bpg --version`. Read as a file, not with a JSON
 * import (Node 20 warns about those); found by walking up from this module, which runs from build/.
 */
export function packageVersion(from = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const path = join(dir, 'package.json');
    if (existsSync(path)) {
      // Our own package.json, read on every start: a plain check, not zod (~50 ms to load).
      const { version } = JSON.parse(readFileSync(path, 'utf8')) as { version?: unknown };
      if (typeof version !== 'string' || version === '') throw new Error(`${path}: no version`);
      return version;
    }
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

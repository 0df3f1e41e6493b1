import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

const PackageJson = z.object({ version: z.string().min(1) });

/**
 * The version in the checkout's package.json, for `bpg --version`. Read as a file, not with a JSON
 * import (Node 20 warns about those); found by walking up from this module, which runs from build/.
 */
export function packageVersion(from = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const path = join(dir, 'package.json');
    if (existsSync(path)) return PackageJson.parse(JSON.parse(readFileSync(path, 'utf8'))).version;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

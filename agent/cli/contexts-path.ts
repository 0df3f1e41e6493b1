// Apart from saved-contexts.ts (zod, yaml): `bpg --help` shows the path without loading them.
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';

/** The file's path: $XDG_CONFIG_HOME (when absolute, per the XDG spec) or ~/.config. */
export function contextsPath(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CONFIG_HOME;
  const base = xdg && isAbsolute(xdg) ? xdg : join(homedir(), '.config');
  return join(base, 'betterpg', 'contexts.yaml');
}

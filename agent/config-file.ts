/**
 * Where the config file is, and its `stateDir` read without validating the rest: the one place that
 * knows both rules, shared by loadConfig (config.ts) and the CLI's look for `bpg serve`'s socket
 * (cli/backend.ts), so they never disagree.
 *
 * Light on purpose (node:fs only; yaml is loaded only for a file the line scan cannot read with
 * certainty): on the agent's host every CLI command reads the state folder before it sends anything
 * to `bpg serve`, and yaml plus the whole config schema cost ~60 ms of start-up that the socket path
 * need not pay. Full validation still happens wherever the config is used (loadConfig).
 */
import { readFile } from 'node:fs/promises';

export const DEFAULT_CONFIG_PATH = '/etc/betterpg/config.yaml';
export const DEFAULT_STATE_DIR = '/var/lib/betterpg';

/** The config file: BPG_CONFIG when set and not empty, else /etc/betterpg/config.yaml. */
export function configPath(): string {
  return process.env.BPG_CONFIG || DEFAULT_CONFIG_PATH;
}

/** What the schema takes for `stateDir` (config.ts: an absolute path, default DEFAULT_STATE_DIR); null: invalid. */
function stateDirOf(raw: unknown): string | null {
  if (raw === null || raw === undefined) return DEFAULT_STATE_DIR; // an empty file: every default
  if (typeof raw !== 'object' || Array.isArray(raw)) return null;
  const v = (raw as { stateDir?: unknown }).stateDir;
  if (v === undefined) return DEFAULT_STATE_DIR;
  return typeof v === 'string' && v.startsWith('/') ? v : null;
}

/**
 * `stateDir` from the text of a config file by a line scan, for the block-style files `bpg init`
 * writes: undefined whenever the scan cannot be certain YAML reads the same (quotes, flow
 * collections, anchors, tags, block scalars, tabs, CRs, directives, repeated keys, an indented first key, a value
 * continued on the next line); the caller then parses the file with yaml.
 */
export function scanStateDir(text: string): string | undefined {
  if (/["'[\]{}&*!|>%@`\t\r\ufeff]/.test(text)) return undefined;
  const lines = text.split('\n');
  let found: string | undefined;
  const keys = new Set<string>();
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (/^\s*(#.*)?$/.test(line)) continue; // blank or a comment
    if (/^\s/.test(line)) {
      if (keys.size === 0) return undefined; // the top-level mapping is indented
      continue; // inside the value of the last top-level key
    }
    const key = /^([A-Za-z_][A-Za-z0-9_]*):(?:[ ]+(.*))?$/.exec(line);
    if (!key) return undefined; // `- item`, `? key`, `---`, `<<: ...`, `key :` ...
    if (keys.has(key[1]!)) return undefined; // a repeated key: yaml refuses the file
    keys.add(key[1]!);
    if (key[1] !== 'stateDir') continue;
    const value = /^(\/[A-Za-z0-9._/-]*)(?:[ ]+#.*)?$/.exec(key[2] ?? '');
    if (!value) return undefined;
    // A plain value goes on over the next indented line: `stateDir: /a` + `  b` is '/a b'.
    const next = lines.slice(i + 1).find((l) => !/^\s*$/.test(l));
    if (next !== undefined && /^\s/.test(next)) return undefined;
    found = value[1]!;
  }
  return found ?? DEFAULT_STATE_DIR;
}

/**
 * The state folder the config file at `path` names, without validating the rest of it. null when it
 * cannot be told (no file, not YAML, an invalid stateDir): loadConfig then says what is wrong.
 */
export async function readStateDir(path = configPath()): Promise<string | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return null;
  }
  const scanned = scanStateDir(text);
  if (scanned !== undefined) return scanned;
  const { default: YAML } = await import('yaml');
  try {
    return stateDirOf(YAML.parse(text));
  } catch {
    return null;
  }
}

/**
 * Which agent a command talks to. Precedence: flags (--agent, --token/--token-file, --ca,
 * --context) > environment (BPG_AGENT_URL, BPG_AGENT_TOKEN, BPG_AGENT_CA, BPG_CONTEXT) > the
 * current saved context > this host (`bpg serve`'s socket, else the in-process engine). `--local`
 * forces the in-process engine.
 *
 * A token only goes where it was meant to: a saved context's token to that context's URL, the
 * environment's token to a URL from flags or the environment; a token given as a flag goes to
 * whatever URL the command uses.
 */
import { readFile } from 'node:fs/promises';
import type { z } from 'zod';
import { describe, invalid } from '../errors.js';
import { shown } from '../names.js';
import { contextsPath } from './contexts-path.js';

// zod and the saved contexts load only when a command is sent to another agent (or a context names one).
const saved = () => import('./saved-contexts.js');
const schemas = () => import('./context-schemas.js');

/** The program's global flags that choose the agent. */
export interface TargetFlags {
  agent?: string;
  token?: string;
  tokenFile?: string;
  ca?: string;
  context?: string;
  local?: boolean;
}

export interface RemoteTarget {
  url: string;
  token: string;
  /** PEM text of a CA to trust besides the system's. */
  caPem?: string;
  /** Where the URL came from, for messages: `--agent`, `BPG_AGENT_URL`, `context 'prod'`. */
  source: string;
}

export interface TargetIo {
  env: NodeJS.ProcessEnv;
  /** All of standard input (for `--token -`). */
  stdin: () => Promise<string>;
  contextsFile?: string;
}

const defaultIo = (): TargetIo => ({ env: process.env, stdin: readStdin });

export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw invalid(`${what}: cannot read ${shown(path)}: ${(e as NodeJS.ErrnoException).code ?? describe(e)}`);
  }
}

function checked<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const r = schema.safeParse(value);
  if (!r.success) throw invalid(`${what}: ${r.error.issues[0]?.message ?? 'invalid'}`);
  return r.data;
}

/** The name of the context in use (flag, BPG_CONTEXT or the current one), or null. */
async function contextName(flags: TargetFlags, io: TargetIo): Promise<{ name: string | null; path: string }> {
  const path = io.contextsFile ?? contextsPath(io.env);
  if (flags.context !== undefined) return { name: flags.context, path };
  if (io.env.BPG_CONTEXT) return { name: io.env.BPG_CONTEXT, path };
  return { name: (await (await saved()).readContexts(path)).current ?? null, path };
}

/** The remote agent the flags, environment and saved contexts name; null: this host. */
export async function resolveTarget(flags: TargetFlags, io: TargetIo = defaultIo()): Promise<RemoteTarget | null> {
  const env = io.env;
  if (flags.local) {
    if (flags.agent !== undefined || flags.context !== undefined)
      throw invalid('--local runs on this host: it cannot be combined with --agent or --context');
    return null;
  }
  if (flags.agent !== undefined && flags.context !== undefined) throw invalid('give --agent or --context, not both');
  if (flags.token !== undefined && flags.tokenFile !== undefined)
    throw invalid('give --token or --token-file, not both');

  const flagToken = async (): Promise<string | undefined> => {
    if (flags.tokenFile !== undefined) return (await readText(flags.tokenFile, '--token-file')).trim();
    if (flags.token === '-') return (await io.stdin()).trim();
    return flags.token;
  };
  const caOf = async (path: string | undefined, what: string) =>
    path === undefined || path === '' ? undefined : readText(path, what);

  let url: string;
  let source: string;
  let token: string | undefined;
  let caPem: string | undefined;
  if (flags.agent !== undefined || (flags.context === undefined && env.BPG_AGENT_URL)) {
    const fromFlag = flags.agent !== undefined;
    source = fromFlag ? '--agent' : 'BPG_AGENT_URL';
    url = checked((await schemas()).AgentUrl, fromFlag ? flags.agent : env.BPG_AGENT_URL, source);
    token = (await flagToken()) ?? (env.BPG_AGENT_TOKEN || undefined);
    caPem = flags.ca !== undefined ? await caOf(flags.ca, '--ca') : await caOf(env.BPG_AGENT_CA, 'BPG_AGENT_CA');
    if (token === undefined)
      throw invalid(
        `${source} names an agent but no token is given: use --token-file <file>, --token - (standard input), BPG_AGENT_TOKEN, or a saved context (bpg context add)`,
      );
  } else {
    const { name, path } = await contextName(flags, io);
    if (name === null) {
      if (flags.token !== undefined || flags.tokenFile !== undefined || flags.ca !== undefined)
        throw invalid(
          '--token, --token-file and --ca need an agent: give --agent <url> (or BPG_AGENT_URL, or a context)',
        );
      return null;
    }
    const { findContext, readContexts } = await saved();
    const c = findContext(await readContexts(path), name);
    source = `context '${c.name}'`;
    url = c.url;
    token = (await flagToken()) ?? c.token;
    caPem = flags.ca !== undefined ? await caOf(flags.ca, '--ca') : await caOf(c.ca, `the CA file of ${source}`);
  }
  token = checked((await schemas()).AgentToken, token, 'the token');
  if (caPem !== undefined && !/-----BEGIN CERTIFICATE-----/.test(caPem))
    throw invalid('the CA file must hold PEM text (-----BEGIN CERTIFICATE-----)');
  return { url, token, caPem, source };
}

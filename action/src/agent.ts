/**
 * The agent side: the typed API client (bundled from agent/api) and one clear sentence for each
 * way a call can fail, so the step's single error line says what to fix.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { BpgApiError, BpgClient } from '../../agent/api/client.js';
import { ActionError } from './errors.js';

const PEM = '-----BEGIN CERTIFICATE-----';

/** agent_ca as PEM text: given as such (from a secret or variable), or read from a file in the workspace. */
export function caPem(input: string | null): string | undefined {
  if (input === null) return undefined;
  if (input.includes(PEM)) return input;
  let text: string;
  try {
    text = readFileSync(resolve(input), 'utf8');
  } catch (e) {
    throw new ActionError(
      `input agent_ca is neither PEM text nor a readable file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
  if (!text.includes(PEM)) throw new ActionError(`input agent_ca: ${input} holds no PEM certificate`);
  return text;
}

export function agentClient(url: string, token: string, ca: string | null = null): BpgClient {
  // Retries (connection refused or reset) back off 0.25, 0.5, 1, 2 s: a restarting agent is
  // waited for, a wrong address fails within seconds.
  return new BpgClient({ baseUrl: url, token, ca: caPem(ca), retries: 4, retryDelayMs: 250 });
}

/** `what` says what the action was doing: 'create branch app/pr-2'. */
export function explain(e: unknown, url: string, what: string): ActionError {
  if (!(e instanceof BpgApiError))
    return new ActionError(`${what}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
  const cause = { cause: e };
  if (e.code === 'unreachable' && /certificate is not trusted/.test(e.message)) {
    const why = /cannot reach the agent at \S+: (\S+)/.exec(e.message)?.[1] ?? 'certificate refused';
    return new ActionError(
      `the BetterPG agent at ${url} has a TLS certificate this runner does not trust: pass its CA as agent_ca (${why})`,
      { cause: e },
    );
  }
  if (e.code === 'unreachable') {
    // The client's message ends with the socket error's code: '...: ECONNREFUSED'.
    const why = e.message.slice(e.message.lastIndexOf(': ') + 2);
    return new ActionError(
      `cannot reach the BetterPG agent at ${url} (${why}): check agent_url, that 'bpg serve' is running there, and that this runner can reach that address`,
      cause,
    );
  }
  if (e.code === 'timeout')
    return new ActionError(`the BetterPG agent at ${url} did not answer in time (${what}): ${e.message}`, cause);
  if (e.status === 401) {
    return new ActionError(
      `the BetterPG agent at ${url} refused agent_token (401): it must be one of the agent's api.tokens (or its BPG_API_TOKEN)`,
      cause,
    );
  }
  if (e.code === 'bad_response')
    return new ActionError(
      `${url} did not answer like a BetterPG agent (${what}): ${e.message}; check agent_url`,
      cause,
    );
  const id = e.requestId ? ` [request ${e.requestId}]` : '';
  return new ActionError(`${what}: the agent answered ${e.status} ${e.code}: ${e.message}${id}`, cause);
}

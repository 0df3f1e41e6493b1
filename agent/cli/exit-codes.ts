/**
 * bpg's exit codes, by kind of failure, the same for the in-process engine and a remote agent:
 * the one place that maps errors (BpgError codes, the API's status and code, commander's usage
 * errors) to them. docs/reference/cli.md lists them.
 */
import { CommanderError } from 'commander';
import { BpgError } from '../errors.js';

export const EXIT = {
  ok: 0,
  /** The operation failed (its finished steps were undone), or something needs attention (doctor). */
  failed: 1,
  /** Bad usage or invalid input: unknown command or option, a bad name, a command that runs only on the box. */
  usage: 2,
  /** No such database, branch or snapshot. */
  notFound: 3,
  /**
   * A conflict (the name exists, children in the way, a limit) or the agent is busy (409; 503: its
   * create line is full, it is shutting down or its stack is down: try again later).
   */
  conflict: 4,
  /** The agent cannot be reached (refused, TLS refused, no answer) or refused the token (401, 403). */
  unreachable: 5,
} as const;

const BY_ENGINE_CODE: Record<BpgError['code'], number> = {
  invalid: EXIT.usage,
  not_found: EXIT.notFound,
  conflict: EXIT.conflict,
  // In process: the pool, Docker or the config is missing. That is a failure here, not 'busy'.
  unavailable: EXIT.failed,
  failed: EXIT.failed,
};

/** What a BpgApiError carries (agent/api/client.ts); matched by shape so this module loads no client. */
interface ApiErrorShape {
  name: 'BpgApiError';
  status: number;
  code: string;
}
const isApiError = (e: unknown): e is ApiErrorShape =>
  e instanceof Error && e.name === 'BpgApiError' && typeof (e as { status?: unknown }).status === 'number';

/** The exit code for anything a command threw. */
export function exitCodeOf(e: unknown): number {
  if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
  if (e instanceof BpgError) return BY_ENGINE_CODE[e.code];
  if (isApiError(e)) {
    const { status, code } = e;
    if (status === 0) {
      if (code === 'unreachable' || code === 'timeout') return EXIT.unreachable;
      // A long operation (import, refresh) that failed on the agent carries the engine's own code.
      return code in BY_ENGINE_CODE ? BY_ENGINE_CODE[code as BpgError['code']] : EXIT.failed;
    }
    if (status === 401 || status === 403) return EXIT.unreachable;
    if (status === 404) return EXIT.notFound;
    if (status === 409 || status === 503) return EXIT.conflict;
    if (status === 400 || status === 413 || status === 422) return EXIT.usage;
    return EXIT.failed;
  }
  return EXIT.failed;
}

/**
 * Errors the engine raises on purpose. Every face (CLI, HTTP API) maps `code` to its own
 * convention: the CLI prints `message` on one line, the API picks a status from `code`.
 */
export type ErrorCode =
  | 'invalid' // bad input: names, flags, bodies
  | 'not_found' // unknown database, branch or snapshot
  | 'conflict' // duplicate name, busy branch, children in the way, limits
  | 'unavailable' // ZFS pool, Docker engine or image missing
  | 'failed'; // an operation started and could not finish (its steps were undone)

export class BpgError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'BpgError';
  }
}

export const invalid = (msg: string) => new BpgError('invalid', msg);
export const notFound = (msg: string) => new BpgError('not_found', msg);
export const conflict = (msg: string) => new BpgError('conflict', msg);
export const unavailable = (msg: string) => new BpgError('unavailable', msg);

/**
 * A "does not exist" from the engine (BpgError 'not_found') or from an agent over HTTP (its
 * BpgApiError carries the same code, and status 404): read by shape, so this module loads no client.
 */
export function isNotFound(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { code?: unknown; status?: unknown };
  return e.code === 'not_found' || e.status === 404;
}

/** One line describing any thrown value, for logs and for the CLI. */
export function describe(err: unknown): string {
  if (err instanceof Error) return err.message.split('\n')[0] ?? String(err);
  return String(err);
}

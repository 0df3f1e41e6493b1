import { randomBytes } from 'node:crypto';
import { BpgError, describe } from '../errors.js';
import type { ImportProgress } from '../engine/import-build.js';
import type { DatabaseView } from '../engine/view.js';
import type { OperationView } from './schemas.js';

/**
 * Long operations the API answers with 202 and runs on (an import; a refresh): each gets an id the
 * client polls with GET /v1/operations/{id} for its status, progress, result or error. Kept in
 * memory: a restarted agent forgets them (its reconcile undoes an operation it did not finish).
 * Finished ones are kept for `keepMs`, and at most `max` in all (the oldest finished go first).
 */

export interface OperationRun {
  /** Passes progress on to whoever polls. */
  progress: (p: ImportProgress) => void;
}

export class Operations {
  private readonly ops = new Map<string, OperationView>();

  constructor(private readonly opts: { keepMs?: number; max?: number } = {}) {}

  /**
   * Starts `run` and returns its operation at once. `run` must not throw synchronously; its error
   * becomes the operation's (code and one line, which the engine has already scrubbed of secrets).
   */
  start(
    kind: string,
    database: string,
    run: (op: OperationRun) => Promise<DatabaseView>,
  ): { view: OperationView; done: Promise<void> } {
    this.prune();
    const view: OperationView = {
      id: `op-${randomBytes(8).toString('hex')}`,
      kind,
      database,
      status: 'running',
      startedAt: new Date().toISOString(),
      finishedAt: null,
      progress: null,
      result: null,
      error: null,
    };
    this.ops.set(view.id, view);
    const done = run({ progress: (p) => (view.progress = { ...p }) }).then(
      (result) => {
        view.result = result;
        view.status = 'succeeded';
        view.finishedAt = new Date().toISOString();
      },
      (e) => {
        view.error = { code: e instanceof BpgError ? e.code : 'failed', message: describe(e) };
        view.status = 'failed';
        view.finishedAt = new Date().toISOString();
      },
    );
    return { view: structuredClone(view), done };
  }

  get(id: string): OperationView | undefined {
    const v = this.ops.get(id);
    return v && structuredClone(v);
  }

  /** Running operations on a database (a second import or refresh of it is refused while one runs). */
  runningOn(database: string): OperationView[] {
    return [...this.ops.values()].filter((o) => o.database === database && o.status === 'running');
  }

  private prune(): void {
    const keep = this.opts.keepMs ?? 3600_000;
    const max = this.opts.max ?? 500;
    const now = Date.now();
    for (const [id, o] of this.ops)
      if (o.finishedAt !== null && now - Date.parse(o.finishedAt) > keep) this.ops.delete(id);
    const finished = [...this.ops.values()].filter((o) => o.finishedAt !== null);
    while (this.ops.size >= max && finished.length) this.ops.delete(finished.shift()!.id);
  }
}

import type { Logger } from '../log.js';
import { describe } from '../errors.js';

/**
 * A multi-step operation: each finished step may register an undo. When a later step fails, the
 * undos run in reverse order, and the original error is rethrown with the failed step's name.
 */
export class Steps {
  private undos: Array<{ name: string; undo: () => Promise<void> }> = [];
  readonly timings: Record<string, number> = {};

  constructor(
    private readonly operation: string,
    private readonly log: Logger,
    // Fault injection, off unless set (tests only): `<operation>:<step>`, e.g. `branch create:zfs clone`.
    private readonly killAfter = process.env.BPG_FAULT_KILL_AFTER,
    private readonly failAfter = process.env.BPG_FAULT_FAIL_AFTER,
  ) {}

  /**
   * Runs one step. With `partial`, the step can fail half-way (a clone made but not mounted, a
   * container created but not started), so its undo runs on failure too; such undos must be
   * idempotent and the step must not touch anything that existed before it.
   */
  async step<T>(
    name: string,
    run: () => Promise<T>,
    undo?: (result: T | undefined) => Promise<void>,
    opts: { partial?: boolean } = {},
  ): Promise<T> {
    const t0 = performance.now();
    let result: T;
    try {
      result = await run();
    } catch (e) {
      if (undo && opts.partial) this.undos.push({ name, undo: () => undo(undefined) });
      throw new StepError(this.operation, name, e);
    }
    this.timings[name] = Math.round(performance.now() - t0);
    this.log.debug(`${this.operation}: ${name}`, { ms: this.timings[name] });
    if (undo) this.undos.push({ name, undo: () => undo(result) });
    const here = `${this.operation}:${name}`;
    if (this.killAfter === here) process.kill(process.pid, 'SIGKILL'); // as a kill -9 would
    if (this.failAfter === here)
      throw new StepError(this.operation, name, new Error('injected failure (BPG_FAULT_FAIL_AFTER)'));
    return result;
  }

  /** Runs the undos in reverse order; failures are logged and do not stop the others. */
  async rollback(): Promise<string[]> {
    const failed: string[] = [];
    for (const { name, undo } of this.undos.reverse()) {
      try {
        await undo();
      } catch (e) {
        failed.push(name);
        this.log.warn(`${this.operation}: could not undo '${name}': ${describe(e)}`);
      }
    }
    this.undos = [];
    return failed;
  }
}

export class StepError extends Error {
  constructor(
    readonly operation: string,
    readonly stepName: string,
    override readonly cause: unknown,
  ) {
    super(`${operation} failed at step '${stepName}': ${describe(cause)}`, { cause });
    this.name = 'StepError';
  }
}

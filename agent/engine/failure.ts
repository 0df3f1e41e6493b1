import { BpgError, describe } from '../errors.js';
import type { State } from '../state/schema.js';
import type { EngineContext } from './context.js';
import { outOfSpaceMessage, ranOutOfSpace } from './limits.js';
import { StepError, type Steps } from './steps.js';

/**
 * A failed operation: undo its finished steps, drop its reservation from the state, and rethrow
 * one clear error (the engine's own, or the failed step's, with what could not be undone).
 */
export async function undoAndFail(
  ctx: EngineContext,
  steps: Steps,
  err: unknown,
  dropRecord: (s: State) => Promise<void> | void,
  space: { containers?: string[]; sinceMs?: number } = {},
): Promise<never> {
  const full = await ranOutOfSpace(ctx, err, space).catch(() => false); // before the undo frees space
  const failedUndos = await steps.rollback();
  await ctx.store.update(dropRecord).catch((e) => ctx.log.warn(`could not release the reservation: ${describe(e)}`));
  const base = err instanceof StepError && err.cause instanceof BpgError ? err.cause : null;
  const suffix = failedUndos.length
    ? `; could not undo: ${failedUndos.join(', ')} (run 'bpg doctor')`
    : '; every finished step was undone';
  if (base) throw new BpgError(base.code, base.message);
  if (full) throw new BpgError('conflict', `${outOfSpaceMessage(ctx.cfg, describe(err))}${suffix}`, { cause: err });
  throw new BpgError('failed', `${describe(err)}${suffix}`, { cause: err });
}

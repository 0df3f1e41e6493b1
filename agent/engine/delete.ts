import { conflict } from '../errors.js';
import { refName, type BranchRef } from '../names.js';
import { newOperation } from '../state/operation.js';
import type { BranchRecord } from '../state/schema.js';
import type { EngineContext } from './context.js';
import { begin } from './begin.js';
import { destroyBranch } from './destroy.js';
import { removeSecret } from './import-source.js';
import { assertIdle, deletionOrder, descendantsOf, requireBranch, requireDatabase } from './rules.js';

/**
 * Deletes: mark everything that goes under the lock (status `deleting`, an operation), then
 * destroy it outside the lock, children before parents (destroy.ts).
 */

export async function deleteDatabase(ctx: EngineContext, name: string, opts: { force?: boolean } = {}): Promise<void> {
  await begin(ctx);
  const doomed = await ctx.store.update((s) => {
    const db = requireDatabase(s, name);
    assertIdle(`database '${name}'`, db.operation);
    const branches = Object.values(s.branches).filter((b) => b.database === name);
    const others = branches.filter((b) => b.branch !== 'main');
    if (others.length && !opts.force) {
      throw conflict(
        `database '${name}' has ${others.length} branch(es) besides main (${others.map(refName).join(', ')}); use --force to delete them all`,
      );
    }
    for (const b of branches) assertIdle(`branch '${refName(b)}'`, b.operation);
    db.operation = newOperation('delete-database');
    for (const b of branches) {
      b.status = 'deleting';
      b.operation = newOperation('delete');
    }
    return deletionOrder(branches);
  });
  for (const b of doomed) await destroyBranch(ctx, b);
  await ctx.zfs.destroy(ctx.layout.databaseDataset(name), { recursive: true });
  const source = (await ctx.store.read()).databases[name]?.source;
  await ctx.store.update((s) => {
    delete s.databases[name];
  });
  await removeSecret(ctx.cfg, source?.password); // the source's password, if the agent kept it
  ctx.log.info(`deleted database ${name}`);
}

/** `onlyIf` runs under the lock on the branch and every descendant: throw to refuse (housekeeping's re-check). */
export async function deleteBranch(
  ctx: EngineContext,
  ref: BranchRef,
  opts: { force?: boolean; onlyIf?: (b: BranchRecord) => void } = {},
): Promise<string[]> {
  await begin(ctx);
  const key = refName(ref);
  if (ref.branch === 'main')
    throw conflict(`'main' can only be deleted with its database (bpg db delete ${ref.database})`);
  const doomed = await ctx.store.update((s) => {
    const b = requireBranch(s, ref);
    const descendants = descendantsOf(s, key);
    if (descendants.length && !opts.force) {
      throw conflict(
        `branch '${key}' has child branches (${descendants.map(refName).join(', ')}); use --force to delete them too`,
      );
    }
    const all = [b, ...descendants];
    for (const x of all) assertIdle(`branch '${refName(x)}'`, x.operation);
    if (opts.onlyIf) for (const x of all) opts.onlyIf(x);
    for (const x of all) {
      x.status = 'deleting';
      x.operation = newOperation('delete');
    }
    return deletionOrder(all);
  });
  for (const b of doomed) await destroyBranch(ctx, b);
  return doomed.map(refName);
}

import { refName } from '../names.js';
import { branchKindOf, databaseKindOf, newOperation, operationDead, type OperationKind } from '../state/operation.js';
import type { BranchRecord, Operation } from '../state/schema.js';
import type { EngineContext } from './context.js';
import { destroyBranch } from './destroy.js';
import { removeSecret } from './import-source.js';
import { recoverBranchRename, recoverDatabaseRename } from './rename-steps.js';
import { recoverReset } from './reset-steps.js';
import { deletionOrder, snapshotInUse } from './rules.js';

/**
 * Finishes or undoes operations whose process died (kill -9, power loss, a reboot): a half-made
 * branch is removed, a half-deleted one deleted, a reset undone before its commit and finished
 * after it, a rename undone, a snapshot's leftover dropped; a start/stop just loses its marker
 * (reconcile brings the container in line with the recorded status).
 */

/** What recovery does for a branch operation of each kind: checked by the compiler for every kind. */
type BranchRecovery = 'destroy' | 'reset' | 'rename' | 'snapshot' | 'marker';

export function branchRecoveryFor(recorded: string): BranchRecovery {
  const kind = branchKindOf(recorded);
  switch (kind) {
    case 'create':
    case 'delete':
    case 'recover':
      return 'destroy';
    case 'reset':
      return 'reset';
    case 'rename':
      return 'rename';
    case 'snapshot':
      return 'snapshot';
    case 'start':
    case 'stop':
    case 'restart':
    case null: // a kind this version does not know: only the marker goes
      return 'marker';
    default:
      return unreachable(kind);
  }
}

function unreachable(x: never): never {
  throw new Error(`unknown operation kind ${String(x)}`);
}

/** The journal entry a recovery leaves while it works: a recovery killed too is picked up again. */
function claimed(recorded: string, data: Record<string, string>, destroy: boolean): Operation {
  if (destroy) return { ...newOperation('recover'), data };
  const base = recorded.replace(/^recover-/, '');
  const known = branchKindOf(base) ?? databaseKindOf(base);
  return known && known !== 'recover'
    ? { ...newOperation(`recover-${known}` as OperationKind), data }
    : { ...newOperation('recover'), kind: `recover-${base}`, data };
}

export async function recoverInterrupted(ctx: EngineContext): Promise<string[]> {
  // Lock-free look first: nearly always there is nothing to do, and the lock costs a round of I/O.
  const peek = await ctx.store.read();
  if (
    !Object.values(peek.branches).some((b) => operationDead(b.operation)) &&
    !Object.values(peek.databases).some((d) => operationDead(d.operation))
  )
    return [];
  // Claim the dead entries under the lock (so two processes never recover the same one).
  const stale = await ctx.store.update((s) => {
    const found: Array<{ b: BranchRecord; how: BranchRecovery; data: Record<string, string> }> = [];
    for (const b of Object.values(s.branches)) {
      if (!operationDead(b.operation)) continue;
      const how = branchRecoveryFor(b.operation.kind);
      const data = b.operation.data ?? {};
      if (how === 'destroy') b.status = 'deleting';
      found.push({ b: { ...b }, how, data });
      b.operation = claimed(b.operation.kind, data, how === 'destroy');
    }
    const dbs: Array<{ name: string; kind: string; data: Record<string, string> }> = [];
    for (const db of Object.values(s.databases)) {
      if (!operationDead(db.operation)) continue;
      const data = db.operation.data ?? {};
      dbs.push({ name: db.name, kind: databaseKindOf(db.operation.kind) ?? db.operation.kind, data });
      db.operation = claimed(db.operation.kind, data, false);
    }
    return { found, dbs };
  });
  const done: string[] = [];
  const clear = (key: string) =>
    ctx.store.update((s) => {
      if (s.branches[key]) s.branches[key]!.operation = null;
    });
  for (const b of deletionOrder(stale.found.filter((x) => x.how === 'destroy').map((x) => x.b))) {
    ctx.log.warn(`cleaning up branch ${refName(b)} left behind by an interrupted operation`);
    await destroyBranch(ctx, b);
    done.push(refName(b));
  }
  for (const { b, how, data } of stale.found.filter((x) => x.how !== 'destroy')) {
    const key = refName(b);
    if (how === 'reset' && data.phase) {
      ctx.log.warn(`${data.phase === 'committed' ? 'finishing' : 'undoing'} the interrupted reset of ${key}`);
      await recoverReset(ctx, b, data);
    } else if (how === 'rename' && data.target) {
      ctx.log.warn(`undoing the interrupted rename of ${key}`);
      await recoverBranchRename(ctx, b, data);
    } else if (how === 'snapshot' && data.snapshot) {
      const st = await ctx.store.read();
      if (!snapshotInUse(st, data.snapshot)) await ctx.zfs.destroy(data.snapshot);
      await clear(key);
    } else {
      // start, stop, restart, or a reset/rename that had not made anything yet: only the marker goes.
      await clear(key);
    }
    done.push(key);
  }
  for (const { name, kind, data } of stale.dbs) {
    const st = await ctx.store.read();
    const remaining = Object.values(st.branches).filter((b) => b.database === name);
    if (kind === 'rename' && data.to) {
      ctx.log.warn(`undoing the interrupted rename of database ${name}`);
      await recoverDatabaseRename(ctx, name, data);
    } else if (remaining.length === 0 || remaining.every((b) => b.status === 'deleting')) {
      for (const b of deletionOrder(remaining)) await destroyBranch(ctx, b);
      await ctx.zfs.destroy(ctx.layout.databaseDataset(name), { recursive: true });
      await removeSecret(ctx.cfg, st.databases[name]?.source?.password);
      await ctx.store.update((s) => {
        delete s.databases[name];
      });
      ctx.log.warn(`cleaned up database ${name} left behind by an interrupted operation`);
    } else {
      await ctx.store.update((s) => {
        if (s.databases[name]) s.databases[name]!.operation = null;
      });
    }
    done.push(name);
  }
  return done;
}

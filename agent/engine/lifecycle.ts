import { conflict } from '../errors.js';
import { refName, type BranchRef } from '../names.js';
import { newOperation, type BranchOperationKind } from '../state/operation.js';
import type { BranchRecord, DatabaseRecord } from '../state/schema.js';
import { startContainer, waitBranchReady } from './containers.js';
import type { EngineContext } from './context.js';
import { Layout } from './layout.js';
import { getBranch } from './reads.js';
import { begin } from './begin.js';
import { assertIdle, now, requireBranch } from './rules.js';
import type { BranchView } from './view.js';

/** Start, stop and restart: port, password and data stay; the recorded status follows. */

export function start(ctx: EngineContext, ref: BranchRef): Promise<BranchView> {
  return lifecycle(ctx, ref, 'start', async (b, db) => {
    const { pgdata } = await ctx.docker.ensureImage(b.image);
    await startContainer(ctx, b, pgdata, Layout.dataDir(await ctx.zfs.mountedFolder(b.dataset)));
    await waitBranchReady(ctx, b, db);
    return 'running';
  });
}

/** Stops the container; port, password and data stay. `by: 'idle'` when the idle stop does it. */
export function stop(ctx: EngineContext, ref: BranchRef, by: 'user' | 'idle' = 'user'): Promise<BranchView> {
  return lifecycle(
    ctx,
    ref,
    'stop',
    async (b) => {
      await ctx.docker.stop(b.container, ctx.cfg.postgres.stopTimeoutSeconds);
      return 'stopped';
    },
    by,
  );
}

/** Stop and start; the container is made again when its spec changed (an upgrade, a config change). */
export function restart(ctx: EngineContext, ref: BranchRef): Promise<BranchView> {
  return lifecycle(ctx, ref, 'restart', async (b, db) => {
    await ctx.docker.stop(b.container, ctx.cfg.postgres.stopTimeoutSeconds);
    const { pgdata } = await ctx.docker.ensureImage(b.image);
    await startContainer(ctx, b, pgdata, Layout.dataDir(await ctx.zfs.mountedFolder(b.dataset)));
    await waitBranchReady(ctx, b, db);
    return 'running';
  });
}

async function lifecycle(
  ctx: EngineContext,
  ref: BranchRef,
  kind: BranchOperationKind,
  work: (b: BranchRecord, db: DatabaseRecord) => Promise<'running' | 'stopped'>,
  stoppedBy?: 'user' | 'idle',
): Promise<BranchView> {
  await begin(ctx);
  const { b, db } = await ctx.store.update((s) => {
    const b = requireBranch(s, ref);
    assertIdle(`branch '${refName(ref)}'`, b.operation);
    if (b.status !== 'running' && b.status !== 'stopped') throw conflict(`branch '${refName(ref)}' is ${b.status}`);
    b.operation = newOperation(kind);
    return { b: { ...b }, db: { ...s.databases[ref.database]! } };
  });
  let status: 'running' | 'stopped' | undefined;
  try {
    status = await work(b, db);
  } finally {
    await ctx.store.update((s) => {
      const cur = s.branches[refName(ref)];
      if (!cur) return;
      cur.operation = null;
      if (status) {
        cur.status = status;
        cur.stoppedBy = status === 'stopped' ? (stoppedBy ?? 'user') : null;
        if (status === 'running') cur.lastActiveAt = now();
      }
    });
  }
  return getBranch(ctx, ref);
}

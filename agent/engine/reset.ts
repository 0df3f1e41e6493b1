import { randomBytes } from 'node:crypto';
import { conflict, invalid } from '../errors.js';
import { refName, type BranchRef } from '../names.js';
import { newOperation } from '../state/operation.js';
import type { BranchRecord } from '../state/schema.js';
import { begin } from './begin.js';
import { freshClone, setPassword, snapshotParent } from './clone.js';
import { startContainer, waitBranchReady } from './containers.js';
import type { EngineContext } from './context.js';
import { prepareBackupClone, prepareCrashClone } from './datadir.js';
import { deleteBranch } from './delete.js';
import { undoAndFail } from './failure.js';
import { Layout } from './layout.js';
import { getBranch } from './reads.js';
import { finishReset, resetPlan } from './reset-steps.js';
import { assertBranchIdle, requireBranch } from './rules.js';
import { buildSchemaOnly, readSeed } from './schema-only.js';
import { Steps } from './steps.js';
import type { BranchView } from './view.js';

/**
 * Brings a branch back to its parent's current state. The new clone is prepared beside the old
 * one and swapped in by renames, so a failure before the swap leaves the branch as it was. Port,
 * password and connection string stay; the old WAL folder is cleared.
 */
export async function resetBranch(
  ctx: EngineContext,
  ref: BranchRef,
  o: { force?: boolean; fast?: boolean } = {},
): Promise<BranchView> {
  await begin(ctx);
  const key = refName(ref);
  if (ref.branch === 'main') throw conflict(`'main' has no parent to reset to`);
  const { b, parent, db, children } = await ctx.store.update((s) => {
    const b = requireBranch(s, ref);
    assertBranchIdle(b);
    if (b.status !== 'running' && b.status !== 'stopped') throw conflict(`branch '${key}' is ${b.status}`);
    if (b.schemaOnly && o.fast)
      throw invalid(`branch '${key}' is schema-only (rebuilt from its parent's schema): --fast does not apply`);
    const parent = s.branches[b.parent!]!;
    const children = Object.values(s.branches).filter((x) => x.parent === key);
    if (children.length && !o.force) {
      throw conflict(
        `branch '${key}' has child branches (${children.map(refName).join(', ')}); use --force to delete them and reset`,
      );
    }
    const kept = Object.values(s.snapshots).filter((k) => k.branchId === b.id);
    if (kept.length && !o.force)
      throw conflict(
        `branch '${key}' has kept snapshots (${kept.map((k) => k.id).join(', ')}); use --force to drop them and reset`,
      );
    assertBranchIdle(parent);
    b.operation = newOperation('reset');
    return { b: { ...b }, parent: { ...parent }, db: { ...s.databases[ref.database]! }, children };
  });
  if (children.length) {
    await ctx.store.update((s) => {
      s.branches[key]!.operation = null;
    });
    await deleteBranch(ctx, { database: ref.database, branch: children[0]!.branch }, { force: true });
    for (const c of children.slice(1))
      await deleteBranch(ctx, { database: c.database, branch: c.branch }, { force: true });
    await ctx.store.update((s) => {
      s.branches[key]!.operation = newOperation('reset');
    });
  }

  const tag = randomBytes(4).toString('hex');
  const plan = resetPlan(ctx, b, parent, tag);
  // The names recovery needs if this process dies: it undoes an unfinished reset, finishes a committed one.
  await ctx.store.update((s) => {
    s.branches[key]!.operation = newOperation('reset', { ...plan, phase: 'swap' });
  });
  const { snap, fresh, old, oldWal } = plan;
  const next: BranchRecord = b.schemaOnly
    ? b
    : { ...b, origin: { snapshot: snap, consistency: o.fast ? 'crash' : 'application' } };
  const steps = new Steps('branch reset', ctx.log);
  // The superuser's password in the new clone until the branch's own is set: the parent's, or the template's.
  let initialPassword = parent.password;
  try {
    const { pgdata } = await steps.step('check image', () => ctx.docker.ensureImage(b.image));
    if (b.schemaOnly) {
      // The parent's current structure and the branch's seed, in a fresh cluster beside the old one.
      const seed = await readSeed(ctx, b.dataset);
      initialPassword = await buildSchemaOnly(ctx, steps, { record: b, parent, db, into: fresh, pgdata, seed });
    } else {
      const label = await snapshotParent(ctx, steps, parent, db, snap, {
        fast: !!o.fast,
        label: `betterpg reset ${key}`,
        by: ref,
      });
      const clone = freshClone(ctx, snap, b, fresh);
      await steps.step('zfs clone', clone.run, () => clone.undo(), { partial: true });
      const dataDir = Layout.dataDir(await ctx.zfs.mountedFolder(fresh));
      await steps.step('prepare data', async () => {
        const parentData = Layout.dataDir(await ctx.zfs.mountpoint(parent.dataset));
        if (label)
          await prepareBackupClone(dataDir, ctx.cfg, label, [
            { dir: ctx.layout.walDir(parent.id) },
            { dir: parentData, sub: 'pg_wal' },
          ]);
        else await prepareCrashClone(dataDir);
      });
    }
    // The swap: from here on, undo puts the old branch back.
    await steps.step(
      'remove old container',
      () => ctx.docker.remove(b.container),
      async () => {
        await startContainer(ctx, b, pgdata, Layout.dataDir(await ctx.zfs.mountedFolder(b.dataset)));
        await waitBranchReady(ctx, b, db);
      },
    );
    await steps.step(
      'swap datasets',
      async () => {
        await ctx.zfs.rename(b.dataset, old);
        await ctx.zfs.rename(fresh, b.dataset);
      },
      async () => {
        await ctx.zfs.rename(b.dataset, fresh);
        await ctx.zfs.rename(old, b.dataset);
      },
    );
    // The old archive is set aside (its own dataset, renamed) until the reset commits.
    await steps.step(
      'clear WAL folder',
      async () => {
        await ctx.wal.rename(ctx.layout.walDataset(b.id), oldWal);
        await ctx.wal.create(b.id);
      },
      async () => {
        await ctx.wal.destroy(b.id);
        await ctx.wal.rename(oldWal, ctx.layout.walDataset(b.id));
      },
    );
    const dataDir = Layout.dataDir(await ctx.zfs.mountpoint(b.dataset));
    await steps.step(
      'start container',
      () => startContainer(ctx, next, pgdata, dataDir),
      () => ctx.docker.remove(b.container),
      { partial: true },
    );
    await steps.step('wait ready', () => waitBranchReady(ctx, { ...next, password: initialPassword }, db));
    await steps.step('set password', () => setPassword(ctx, next, db, initialPassword, b.password));
    // Committed: the branch is the new clone. What follows only drops what the old one owned.
    await steps.step('commit', () =>
      ctx.store.update(async (s) => {
        const cur = s.branches[key]!;
        cur.origin = next.origin;
        cur.generation = parent.generation; // a reset brings the branch to the parent's refresh
        cur.status = 'running';
        cur.stoppedBy = null;
        cur.lastActiveAt = new Date().toISOString();
        cur.operation = { ...cur.operation!, data: { ...plan, phase: 'committed' } };
        for (const k of Object.keys(s.snapshots)) if (s.snapshots[k]!.branchId === b.id) delete s.snapshots[k];
      }),
    );
  } catch (err) {
    await undoAndFail(ctx, steps, err, async (s) => {
      const cur = s.branches[key];
      if (cur) cur.operation = null;
    });
  }
  await finishReset(ctx, key, plan, steps);
  return getBranch(ctx, ref);
}

import { randomBytes } from 'node:crypto';
import { rename as mv, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { conflict } from '../errors.js';
import { refName, type BranchRef } from '../names.js';
import type { BranchRecord } from '../state/schema.js';
import { mkdirOwned, prepareBackupClone, prepareCrashClone } from './datadir.js';
import { newOperation } from '../state/operation.js';
import type { BranchView } from './view.js';
import { snapshotInUse, type Engine } from './engine.js';
import { Layout } from './layout.js';
import { Steps } from './steps.js';

/**
 * Brings a branch back to its parent's current state. The new clone is prepared beside the old
 * one and swapped in by renames, so a failure before the swap leaves the branch as it was. Port,
 * password and connection string stay; the old WAL folder is cleared.
 */
export async function resetBranch(e: Engine, ref: BranchRef, o: { force?: boolean; fast?: boolean } = {}): Promise<BranchView> {
  await e.begin();
  const key = refName(ref);
  if (ref.branch === 'main') throw conflict(`'main' has no parent to reset to`);
  const { b, parent, db, children } = await e.store.update((s) => {
    const b = e.requireBranch(s, ref);
    e.assertIdleFor(b);
    if (b.status !== 'running' && b.status !== 'stopped') throw conflict(`branch '${key}' is ${b.status}`);
    const parent = s.branches[b.parent!]!;
    const children = Object.values(s.branches).filter((x) => x.parent === key);
    if (children.length && !o.force) {
      throw conflict(`branch '${key}' has child branches (${children.map(refName).join(', ')}); use --force to delete them and reset`);
    }
    const kept = Object.values(s.snapshots).filter((k) => k.branchId === b.id);
    if (kept.length && !o.force) throw conflict(`branch '${key}' has kept snapshots (${kept.map((k) => k.id).join(', ')}); use --force to drop them and reset`);
    e.assertIdleFor(parent);
    b.operation = newOperation('reset');
    return { b: { ...b }, parent: { ...parent }, db: { ...s.databases[ref.database]! }, children };
  });
  if (children.length) {
    await e.store.update((s) => {
      s.branches[key]!.operation = null;
    });
    await e.deleteBranch({ database: ref.database, branch: children[0]!.branch }, { force: true });
    for (const c of children.slice(1)) await e.deleteBranch({ database: c.database, branch: c.branch }, { force: true });
    await e.store.update((s) => {
      s.branches[key]!.operation = newOperation('reset');
    });
  }

  const tag = randomBytes(4).toString('hex');
  const plan = resetPlan(e, b, parent, tag);
  // The names recovery needs if this process dies: it undoes an unfinished reset, finishes a committed one.
  await e.store.update((s) => {
    s.branches[key]!.operation = newOperation('reset', { ...plan, phase: 'swap' });
  });
  const { snap, fresh, old, oldWal } = plan;
  const walDir = e.layout.walDir(b.id);
  const next: BranchRecord = { ...b, origin: { snapshot: snap, consistency: o.fast ? 'crash' : 'application' } };
  const steps = new Steps('branch reset', e.log);
  try {
    const { pgdata } = await steps.step('check image', () => e.docker.ensureImage(b.image));
    const label = await e.snapshotParent(steps, parent, db, snap, { fast: !!o.fast, label: `betterpg reset ${key}`, by: ref });
    await steps.step('zfs clone', () => e.cloneFresh(snap, b, fresh), () => e.zfs.destroy(fresh), { partial: true });
    await e.zfs.mount(fresh);
    await steps.step('prepare data', async () => {
      const dataDir = Layout.dataDir(await e.zfs.mountpoint(fresh));
      const parentData = Layout.dataDir(await e.zfs.mountpoint(parent.dataset));
      if (label) await prepareBackupClone(dataDir, e.cfg, label, [{ dir: e.layout.walDir(parent.id) }, { dir: parentData, sub: 'pg_wal' }]);
      else await prepareCrashClone(dataDir, e.cfg);
    });
    // The swap: from here on, undo puts the old branch back.
    await steps.step('remove old container', () => e.docker.remove(b.container), async () => {
      await e.zfs.mount(b.dataset);
      await e.startContainer(b, pgdata, Layout.dataDir(await e.zfs.mountpoint(b.dataset)));
      await e.waitBranchReady(b, db);
    });
    await steps.step('swap datasets', async () => {
      await e.zfs.rename(b.dataset, old);
      await e.zfs.rename(fresh, b.dataset);
    }, async () => {
      await e.zfs.rename(b.dataset, fresh);
      await e.zfs.rename(old, b.dataset);
    });
    // The old archive is set aside (its own dataset, renamed) until the reset commits.
    await steps.step('clear WAL folder', async () => {
      await e.wal.rename(e.layout.walDataset(b.id), oldWal);
      await e.wal.create(b.id);
    }, async () => {
      await e.wal.destroy(b.id);
      await e.wal.rename(oldWal, e.layout.walDataset(b.id));
    });
    const dataDir = Layout.dataDir(await e.zfs.mountpoint(b.dataset));
    await steps.step('start container', () => e.startContainer(next, pgdata, dataDir), () => e.docker.remove(b.container), { partial: true });
    await steps.step('wait ready', () => e.waitBranchReady({ ...next, password: parent.password }, db));
    await steps.step('set password', () => e.setPassword(next, db, parent.password, b.password));
    // Committed: the branch is the new clone. What follows only drops what the old one owned.
    await steps.step('commit', () =>
      e.store.update(async (s) => {
        const cur = s.branches[key]!;
        cur.origin = next.origin;
        cur.status = 'running';
        cur.stoppedBy = null;
        cur.lastActiveAt = new Date().toISOString();
        cur.operation = { ...cur.operation!, data: { ...plan, phase: 'committed' } };
        for (const k of Object.keys(s.snapshots)) if (s.snapshots[k]!.branchId === b.id) delete s.snapshots[k];
      }),
    );
  } catch (err) {
    await e.undo(steps, err, async (s) => {
      const cur = s.branches[key];
      if (cur) cur.operation = null;
    });
  }
  await finishReset(e, key, plan, steps);
  return e.getBranch(ref);
}

/** Names of everything one reset makes; kept in the operation's journal entry for recovery. */
function resetPlan(e: Engine, b: BranchRecord, parent: BranchRecord, tag: string) {
  return {
    tag,
    snap: `${parent.dataset}@bpg-${b.id}-${tag}`,
    fresh: `${b.dataset}.reset-${tag}`, // '.' never occurs in branch names: no collision
    old: `${b.dataset}.old-${tag}`,
    oldWal: `${e.layout.walDataset(b.id)}.old-${tag}`, // '.' never occurs in an id: no collision
    prevOrigin: b.origin?.snapshot ?? '',
  };
}
type ResetPlan = ReturnType<typeof resetPlan>;

/** After the commit: drop the old clone, its WAL and its origin snapshot (unless still used). */
async function finishReset(e: Engine, key: string, plan: ResetPlan, steps = new Steps('branch reset', e.log)): Promise<void> {
  await steps.step('drop old dataset', () => e.zfs.destroy(plan.old, { recursive: true }));
  // A plan journalled before WAL datasets names a folder (an absolute path); now a dataset.
  await steps.step('drop old WAL', () => (plan.oldWal.startsWith('/') ? rm(plan.oldWal, { recursive: true, force: true }) : e.wal.destroyDataset(plan.oldWal)));
  await steps.step('drop old origin', async () => {
    const st = await e.store.read();
    if (plan.prevOrigin && !snapshotInUse(st, plan.prevOrigin)) await e.zfs.destroy(plan.prevOrigin);
  });
  await e.store.update((s) => {
    const cur = s.branches[key];
    if (cur) cur.operation = null;
  });
}

/**
 * A reset whose process died: before the commit it is undone (the old clone, WAL folder and
 * container come back; the new clone and snapshot go), after it the clean-up is finished.
 */
export async function recoverReset(e: Engine, b: BranchRecord, data: Record<string, string>): Promise<void> {
  const plan = data as unknown as ResetPlan & { phase: string };
  const key = refName(b);
  if (plan.phase === 'committed') {
    await finishReset(e, key, plan);
    return;
  }
  const walDir = e.layout.walDir(b.id);
  await e.docker.remove(b.container);
  if (await e.zfs.exists(plan.old)) {
    // The swap began: whatever sits at the branch's name now is the new clone.
    if (await e.zfs.exists(b.dataset)) await e.zfs.destroy(b.dataset, { recursive: true });
    await e.zfs.rename(plan.old, b.dataset);
  }
  await e.zfs.destroy(plan.fresh, { recursive: true });
  if (plan.oldWal.startsWith('/')) {
    // journalled before WAL datasets: folders on the host
    if (await exists(plan.oldWal)) {
      await rm(walDir, { recursive: true, force: true });
      await mv(plan.oldWal, walDir);
      await mkdirOwned(walDir, { uid: e.cfg.postgres.uid, gid: e.cfg.postgres.gid });
    }
  } else if (await e.zfs.exists(plan.oldWal)) {
    await e.wal.destroy(b.id);
    await e.wal.rename(plan.oldWal, e.layout.walDataset(b.id));
  }
  const st = await e.store.read();
  if (!snapshotInUse(st, plan.snap)) await e.zfs.destroy(plan.snap);
  await e.store.update((s) => {
    const cur = s.branches[key];
    if (cur) cur.operation = null;
  });
  if (b.status === 'running') await e.startBranchContainer(b);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

import { randomBytes } from 'node:crypto';
import { conflict, invalid, notFound } from '../errors.js';
import { refName, shown, type BranchRef } from '../names.js';
import { newOperation } from '../state/operation.js';
import type { BranchRecord, SnapshotRecord, State } from '../state/schema.js';
import { begin } from './begin.js';
import { snapshotParent } from './clone.js';
import type { EngineContext } from './context.js';
import { undoAndFail } from './failure.js';
import { assertBranchIdle, requireBranch } from './rules.js';
import { Steps } from './steps.js';

/**
 * Kept snapshots: taken in backup mode with their WAL archived (so point-in-time recovery can start
 * from them), listed with what uses them, deleted unless a branch was cloned from them.
 */

export interface SnapshotView {
  id: string;
  branch: string;
  label: string | null;
  createdAt: string;
  usedBytes: number | null;
  consistency: 'application' | 'crash';
  zfsSnapshot: string;
  usedBy: string[];
  /** Taken by the schedule, pruned by its retention. */
  scheduled: boolean;
}

function branchById(s: State, id: string): BranchRecord | undefined {
  return Object.values(s.branches).find((b) => b.id === id);
}

export function snapshotsOf(s: State, b: BranchRecord): SnapshotRecord[] {
  return Object.values(s.snapshots)
    .filter((k) => k.branchId === b.id)
    .sort((a, c) => a.createdAt.localeCompare(c.createdAt));
}

/** Branches cloned from a kept snapshot (they keep it alive). */
export function usersOf(s: State, snap: SnapshotRecord): string[] {
  const owner = branchById(s, snap.branchId);
  if (!owner) return [];
  const full = `${owner.dataset}@${snap.name}`;
  return Object.values(s.branches)
    .filter((b) => b.origin?.snapshot === full)
    .map(refName);
}

/** `scheduled`: taken by housekeeping's schedule, so its retention may prune it (manual ones never). */
export async function createSnapshot(
  ctx: EngineContext,
  ref: BranchRef,
  o: { label?: string; scheduled?: boolean } = {},
): Promise<SnapshotView> {
  await begin(ctx);
  if (o.label !== undefined && (o.label.length > 200 || /[\x00-\x1f]/.test(o.label)))
    throw invalid('--label must be printable and at most 200 characters');
  const id = `snap-${randomBytes(4).toString('hex')}`;
  const { b, db } = await ctx.store.update((s) => {
    const b = requireBranch(s, ref);
    if (b.status !== 'running' && b.status !== 'stopped') throw conflict(`branch '${refName(b)}' is ${b.status}`);
    assertBranchIdle(b);
    // The marker names the ZFS snapshot, so recovery can drop it if this process dies before recording it.
    b.operation = newOperation('snapshot', { snapshot: `${b.dataset}@bpg-${id}` });
    return { b: { ...b }, db: { ...s.databases[ref.database]! } };
  });
  const name = `bpg-${id}`;
  const full = `${b.dataset}@${name}`;
  const steps = new Steps('snapshot create', ctx.log);
  let backup: Awaited<ReturnType<typeof snapshotParent>> = null;
  try {
    backup = await snapshotParent(ctx, steps, b, db, full, {
      fast: false,
      label: `betterpg ${id}`,
      by: ref,
      waitForArchive: true,
    });
    await ctx.store.update((s) => {
      const cur = s.branches[refName(ref)];
      if (!cur || cur.id !== b.id) throw conflict(`branch '${refName(ref)}' changed while it was being snapshotted`);
      cur.operation = null;
      s.snapshots[id] = {
        id,
        branchId: b.id,
        name,
        label: o.label ?? null,
        consistency: 'application',
        backup: backup ? { ...backup } : null,
        createdAt: new Date().toISOString(),
        scheduled: o.scheduled === true,
      };
    });
  } catch (err) {
    await undoAndFail(ctx, steps, err, async (s) => {
      const cur = s.branches[refName(ref)];
      if (cur && cur.id === b.id) cur.operation = null;
    });
  }
  return (await listSnapshots(ctx)).find((x) => x.id === id)!;
}

export async function listSnapshots(ctx: EngineContext, ref?: BranchRef): Promise<SnapshotView[]> {
  const s = await ctx.store.read();
  const only = ref ? requireBranch(s, ref) : null;
  const out: SnapshotView[] = [];
  for (const snap of Object.values(s.snapshots).sort((a, c) => a.createdAt.localeCompare(c.createdAt))) {
    const owner = branchById(s, snap.branchId);
    if (!owner || (only && owner.id !== only.id)) continue;
    const full = `${owner.dataset}@${snap.name}`;
    const used = await ctx.zfs.get(full, ['used']).then(
      (p) => Number(p.used),
      () => null,
    );
    out.push({
      id: snap.id,
      branch: refName(owner),
      label: snap.label,
      createdAt: snap.createdAt,
      usedBytes: used,
      consistency: snap.consistency,
      zfsSnapshot: full,
      usedBy: usersOf(s, snap),
      scheduled: snap.scheduled,
    });
  }
  return out;
}

export async function deleteSnapshot(ctx: EngineContext, id: string): Promise<void> {
  if (!/^snap-[a-f0-9]{8}$/.test(id)) throw invalid(`invalid snapshot id '${shown(id)}' (ids look like snap-1a2b3c4d)`);
  const full = await ctx.store.update((s) => {
    const snap = s.snapshots[id];
    if (!snap) throw notFound(`snapshot '${id}' does not exist`);
    const users = usersOf(s, snap);
    if (users.length)
      throw conflict(
        `snapshot '${id}' is in use: branch(es) ${users.join(', ')} were cloned from it; delete them first`,
      );
    const owner = branchById(s, snap.branchId)!;
    delete s.snapshots[id];
    return `${owner.dataset}@${snap.name}`;
  });
  await ctx.zfs.destroy(full);
}

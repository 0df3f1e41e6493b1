import type pg from 'pg';
import { conflict } from '../errors.js';
import { CommandError } from '../drivers/exec.js';
import { quoteIdent, quoteLiteral, scramVerifier, type BackupLabel } from '../drivers/postgres.js';
import { refName } from '../names.js';
import type { BranchRecord, DatabaseRecord } from '../state/schema.js';
import { branchProps, target } from './containers.js';
import type { EngineContext } from './context.js';
import { ZFS_PROP } from './layout.js';
import type { Steps } from './steps.js';

/** The steps branch create, reset and snapshot create share: snapshot a parent, clone it, give the clone its password. */

/**
 * A crash-consistent clone replays the WAL written since its parent's last checkpoint when it
 * starts. Below this much, that replay takes milliseconds and a CHECKPOINT (tens of ms, and I/O on
 * the parent) would only move the replay's start: an idle parent (main between pull requests) is
 * not checkpointed again for every branch.
 */
export const CHECKPOINT_BELOW_BYTES = 1024 * 1024;

/** CHECKPOINT, unless less than CHECKPOINT_BELOW_BYTES of WAL was written since the last one. */
async function checkpointIfBehind(c: pg.Client): Promise<void> {
  const r = await c.query<{ behind: string | null }>(
    'SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_insert_lsn(), redo_lsn)::text AS behind FROM pg_catalog.pg_control_checkpoint()',
  );
  const behind = Number(r.rows[0]?.behind ?? NaN);
  if (!(behind >= 0 && behind < CHECKPOINT_BELOW_BYTES)) await c.query('CHECKPOINT');
}

/**
 * Snapshots a branch for a clone: backup mode on one held connection (default), or CHECKPOINT then
 * snapshot (`fast`), or a plain snapshot of a stopped cluster, which is at rest. Returns the backup
 * label when there is one. `waitForArchive` makes sure the backup's WAL is in the branch's archive
 * (kept snapshots need that; a clone made right away copies it itself).
 */
export async function snapshotParent(
  ctx: EngineContext,
  steps: Steps,
  parent: BranchRecord,
  db: DatabaseRecord,
  snap: string,
  o: { fast: boolean; label: string; by: { database: string; branch: string }; waitForArchive?: boolean },
): Promise<BackupLabel | null> {
  const props = {
    [ZFS_PROP.managed]: 'true',
    [ZFS_PROP.database]: o.by.database,
    [ZFS_PROP.branch]: o.by.branch,
    [ZFS_PROP.consistency]: o.fast ? 'crash' : 'application',
  };
  const takeSnapshot = () =>
    steps.step(
      'zfs snapshot',
      () => ctx.zfs.snapshot(snap, props),
      () => ctx.zfs.destroy(snap),
    );
  const parentRunning = (await ctx.docker.state(parent.container))?.running === true;
  if (!parentRunning) {
    if (parent.status === 'running')
      throw conflict(`branch '${refName(parent)}' is down (its container is not running); start it first`);
    await takeSnapshot();
    return null;
  }
  if (o.fast) {
    await steps.step('checkpoint', () => ctx.pg.withClient(target(ctx, parent, db), checkpointIfBehind));
    await takeSnapshot();
    return null;
  }
  const c = await steps.step('connect to parent', () => ctx.pg.connect(target(ctx, parent, db)));
  try {
    return await steps.step('backup mode', () =>
      ctx.pg.withBackupMode(c, o.label, () => takeSnapshot(), { waitForArchive: o.waitForArchive }),
    );
  } finally {
    await c.end().catch(() => {});
  }
}

/** Undo of a create's WAL archive, made in the background: destroyed once its making has settled. */
export async function dropWal(ctx: EngineContext, b: BranchRecord, making: Promise<unknown>): Promise<void> {
  await making;
  await ctx.wal.destroy(b.id);
}

/**
 * A clone into a dataset path that must not exist yet, and its undo (for a partial step), which
 * destroys only what this clone made: never a dataset that was there already, or was made by
 * someone else meanwhile (a leftover `bpg doctor` reports, a stranger's).
 */
export function freshClone(
  ctx: EngineContext,
  snap: string,
  b: BranchRecord,
  into = b.dataset,
): { run: () => Promise<void>; undo: (o?: { recursive?: boolean }) => Promise<void> } {
  let made = false;
  return {
    run: async () => {
      if (await ctx.zfs.exists(into))
        throw conflict(`dataset ${into} already exists (left over? 'bpg doctor' or 'zfs destroy -r ${into}')`);
      try {
        await ctx.zfs.clone(snap, into, branchProps(b));
        made = true;
      } catch (e) {
        // Maybe made half-way (cloned, not mounted), unless ZFS says the name was taken meanwhile.
        made = !(e instanceof CommandError && /already exists/i.test(e.stderr));
        throw e;
      }
    },
    undo: async (o = {}) => {
      if (made) await ctx.zfs.destroy(into, o);
    },
  };
}

/** Gives a branch's superuser a new password (sent as a SCRAM verifier, never as text). */
export async function setPassword(
  ctx: EngineContext,
  b: BranchRecord,
  db: DatabaseRecord,
  current: string,
  next: string,
  /** A session already open as the superuser (the one that found the branch ready), else a new one. */
  session?: pg.Client | null,
): Promise<void> {
  const sql = `ALTER ROLE ${quoteIdent(ctx.cfg.postgres.superuser)} PASSWORD ${quoteLiteral(scramVerifier(next))}`;
  if (session) await session.query(sql);
  else await ctx.pg.withClient(target(ctx, b, db, current), (c) => c.query(sql));
}

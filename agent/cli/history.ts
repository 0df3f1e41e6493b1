import type { Command } from 'commander';
import type { SnapshotView } from '../engine/snapshots.js';
import type { WalCleanup, WalInfo } from '../engine/wal.js';
import { invalid } from '../errors.js';
import type { CliContext } from './context.js';
import { formatOf, jsonOption, outputOption } from './output.js';
import { plain, type Paint } from './colour.js';
import { bytes, styled, table } from './render.js';

/** names.js (and zod, ~50 ms) when a command runs: --help, --version and completion need not load it. */
const names = () => import('../names.js');

export function snapshotTable(list: SnapshotView[], paint: Paint = plain): string {
  if (!list.length) return 'no snapshots\n';
  return table(
    [
      ['ID', 'BRANCH', 'CREATED', 'USED', 'CONSISTENCY', 'LABEL', 'USED BY'],
      ...list.map((s) => [
        s.id,
        s.branch,
        s.createdAt,
        bytes(s.usedBytes),
        s.consistency,
        s.label ?? '-',
        s.usedBy.join(',') || '-',
      ]),
    ],
    styled(paint, -1),
  );
}

export function walTable(list: WalInfo[], paint: Paint = plain): string {
  return table(
    [
      ['BRANCH', 'SEGMENTS', 'BYTES', 'OLDEST', 'NEWEST', 'GAPS', 'LAST FAILURE'],
      ...list.map((w) => [
        w.branch,
        String(w.segments),
        bytes(w.bytes),
        w.oldest ? `${w.oldest.segment} ${w.oldest.time}` : '-',
        w.newest ? `${w.newest.segment} ${w.newest.time}` : '-',
        w.gaps.length ? w.gaps.map((g) => `${g.from}..${g.to}`).join(',') : 'none',
        w.lastFailure ? `${w.lastFailure.segment} at ${w.lastFailure.time}` : '-',
      ]),
    ],
    styled(paint, -1),
  );
}

export function walCleanupText(r: WalCleanup): string {
  return (
    `${r.dryRun ? 'would remove' : 'removed'} ${r.removed.length} segment(s), ${bytes(r.removedBytes)}\n` +
    r.kept.map((k) => `kept ${k.segments} segment(s): ${k.reason}\n`).join('')
  );
}

/** `bpg snapshot ...` and `bpg wal ...`: kept snapshots and WAL archives (the engine holds the rules). */
export function registerHistoryCommands(program: Command, { out, engine }: CliContext): void {
  const snapshot = program.command('snapshot').description('kept snapshots of a branch (application-consistent)');
  snapshot
    .command('create <branch>')
    .description('take an application-consistent snapshot of a branch and keep it')
    .option('--label <label>', 'a note kept with the snapshot')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o) => {
      const { parseBranchRef } = await names();
      const snap = await (await engine()).createSnapshot(parseBranchRef(name), { label: o.label });
      out.result(o, snap, () => `${snap.id}\n`);
    });
  snapshot
    .command('list [branch]')
    .description('list kept snapshots (of one branch, or all)')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string | undefined, o) => {
      const { parseBranchRef } = await names();
      out.result(o, await (await engine()).listSnapshots(name ? parseBranchRef(name) : undefined), snapshotTable);
    });
  snapshot
    .command('delete <id>')
    .description('delete a kept snapshot (refused while a branch was cloned from it)')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (id: string, o) => {
      await (await engine()).deleteSnapshot(id);
      out.result(o, { deleted: id }, () => `deleted snapshot ${id}\n`);
    });

  const wal = program.command('wal').description("a branch's WAL archive");
  wal
    .command('info [branch]')
    .description('segments, bytes, oldest/newest, gaps and the last archive failure')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string | undefined, o) => {
      const { parseBranchRef } = await names();
      const list = await (await engine()).walInfo(name ? parseBranchRef(name) : undefined);
      out.result(o, list, walTable);
      if (formatOf(o) !== 'table') return;
      // Why archiving fails, one line each, after the table (on stderr: it is a warning, not data).
      for (const w of list) {
        if (w.lastFailure?.reason)
          out.warn(`${w.branch}: archiving ${w.lastFailure.segment} failed: ${w.lastFailure.reason}`);
        else if (w.full) out.warn(`${w.branch}: the WAL archive is full (postgres.walQuota)`);
      }
    });
  wal
    .command('cleanup <branch>')
    .description('remove archived WAL older than N days, keeping what kept snapshots need')
    .requiredOption('--days <n>', 'age in days')
    .option('--dry-run', 'only say what would go')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o) => {
      const { parseBranchRef } = await names();
      if (!/^\d+(\.\d+)?$/.test(o.days)) throw invalid('--days must be a number of days, 0 or more');
      const r = await (await engine()).walCleanup(parseBranchRef(name), Number(o.days), !!o.dryRun);
      out.result(o, r, walCleanupText);
    });
}

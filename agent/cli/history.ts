import type { Command } from 'commander';
import type { Engine } from '../engine/engine.js';
import { invalid } from '../errors.js';
import { parseBranchRef, parseDatabaseName } from '../names.js';
import { branchDetail, bytes, printJson, table } from './output.js';

/** History commands: snapshots, WAL, reset and rename (the engine holds the rules). */
export function registerHistoryCommands(program: Command, engine: () => Promise<Engine>): void {
  const snapshot = program.command('snapshot').description('kept snapshots of a branch (application-consistent)');
  snapshot
    .command('create <branch>')
    .description('take an application-consistent snapshot of a branch and keep it')
    .option('--label <label>', 'a note kept with the snapshot')
    .option('--json', 'print JSON on stdout')
    .action(async (name: string, o) => {
      const snap = await (await engine()).createSnapshot(parseBranchRef(name), { label: o.label });
      if (o.json) printJson(snap);
      else process.stdout.write(`${snap.id}\n`);
    });
  snapshot
    .command('list [branch]')
    .description('list kept snapshots (of one branch, or all)')
    .option('--json', 'print JSON on stdout')
    .action(async (name: string | undefined, o) => {
      const list = await (await engine()).listSnapshots(name ? parseBranchRef(name) : undefined);
      if (o.json) return printJson(list);
      if (!list.length) return void process.stdout.write('no snapshots\n');
      process.stdout.write(
        table([
          ['ID', 'BRANCH', 'CREATED', 'USED', 'CONSISTENCY', 'LABEL', 'USED BY'],
          ...list.map((s) => [s.id, s.branch, s.createdAt, bytes(s.usedBytes), s.consistency, s.label ?? '-', s.usedBy.join(',') || '-']),
        ]),
      );
    });
  snapshot
    .command('delete <id>')
    .description('delete a kept snapshot (refused while a branch was cloned from it)')
    .option('--json', 'print JSON on stdout')
    .action(async (id: string, o) => {
      await (await engine()).deleteSnapshot(id);
      if (o.json) printJson({ deleted: id });
      else process.stdout.write(`deleted snapshot ${id}\n`);
    });

  const wal = program.command('wal').description("a branch's WAL archive");
  wal
    .command('info [branch]')
    .description('segments, bytes, oldest/newest, gaps and the last archive failure')
    .option('--json', 'print JSON on stdout')
    .action(async (name: string | undefined, o) => {
      const list = await (await engine()).walInfo(name ? parseBranchRef(name) : undefined);
      if (o.json) return printJson(list);
      process.stdout.write(
        table([
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
        ]),
      );
      // Why archiving fails, one line each, after the table (on stderr: it is a warning, not data).
      for (const w of list) {
        if (w.lastFailure?.reason) process.stderr.write(`warning: ${w.branch}: archiving ${w.lastFailure.segment} failed: ${w.lastFailure.reason}\n`);
        else if (w.full) process.stderr.write(`warning: ${w.branch}: the WAL archive is full (postgres.walQuota)\n`);
      }
    });
  wal
    .command('cleanup <branch>')
    .description('remove archived WAL older than N days, keeping what kept snapshots need')
    .requiredOption('--days <n>', 'age in days')
    .option('--dry-run', 'only say what would go')
    .option('--json', 'print JSON on stdout')
    .action(async (name: string, o) => {
      const days = Number(o.days);
      if (!/^\d+(\.\d+)?$/.test(o.days)) throw invalid('--days must be a number of days, 0 or more');
      const r = await (await engine()).walCleanup(parseBranchRef(name), days, !!o.dryRun);
      if (o.json) return printJson(r);
      process.stdout.write(`${r.dryRun ? 'would remove' : 'removed'} ${r.removed.length} segment(s), ${bytes(r.removedBytes)}\n`);
      for (const k of r.kept) process.stdout.write(`kept ${k.segments} segment(s): ${k.reason}\n`);
    });
}

/** `branch reset` and `branch rename`, `db rename`. */
export function registerMoveCommands(db: Command, branch: Command, engine: () => Promise<Engine>): void {
  branch
    .command('reset <branch>')
    .description("bring a branch back to its parent's current state (port and password stay)")
    .option('--force', 'also delete its child branches and kept snapshots')
    .option('--fast', 'crash-consistent snapshot of the parent')
    .option('--json', 'print JSON on stdout')
    .action(async (name: string, o) => {
      const b = await (await engine()).resetBranch(parseBranchRef(name), { force: o.force, fast: o.fast });
      if (o.json) printJson(b);
      else process.stdout.write(branchDetail(b));
    });
  branch
    .command('rename <branch> <new>')
    .description('rename a branch (data, port and password stay)')
    .option('--json', 'print JSON on stdout')
    .action(async (from: string, to: string, o) => {
      const ref = parseBranchRef(from);
      const b = await (await engine()).renameBranch(ref, parseBranchRef(to, ref.database));
      if (o.json) printJson(b);
      else process.stdout.write(`renamed ${from} to ${b.name}\n`);
    });
  db.command('rename <db> <new>')
    .description('rename a database with all its branches (connection strings stay valid)')
    .option('--json', 'print JSON on stdout')
    .action(async (from: string, to: string, o) => {
      const d = await (await engine()).renameDatabase(parseDatabaseName(from), parseDatabaseName(to));
      if (o.json) printJson(d);
      else process.stdout.write(`renamed database ${from} to ${d.name}\n`);
    });
}

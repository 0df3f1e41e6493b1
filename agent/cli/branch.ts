import { Option, type Command } from 'commander';
import { parseBranchRef, parseDatabaseName, parseSnapshotId } from '../names.js';
import type { CliContext } from './context.js';
import { ttlOption } from './expiry.js';
import { branchDetail, branchTable, printJson } from './output.js';
import { cpusOption, diskOption, memoryOption, resources } from './resources.js';

/**
 * `bpg branch create|list|get|delete|reset|rename` and `bpg start|stop|restart`. Returns the `branch`
 * command for the subcommands other modules add (`branch set`).
 */
export function registerBranchCommands(program: Command, cli: CliContext): Command {
  const branch = program.command('branch').description('branches: <db>/<branch>');

  branch
    .command('create <branch>')
    .description('create a branch (application-consistent by default)')
    .option('--from <branch>', 'parent branch (default: <db>/main)')
    .option('--fast', 'crash-consistent: CHECKPOINT then snapshot, no backup mode')
    .option('--from-snapshot <id>', 'clone a kept snapshot (bpg snapshot list)')
    .option('--pitr <time>', "point-in-time recovery of --from: ISO 8601 with zone, or e.g. '2 hours ago'")
    .addOption(memoryOption())
    .addOption(cpusOption())
    .addOption(diskOption('default: postgres.diskQuota'))
    .option('--ttl <duration>', "delete it this long after creation (30m, 12h, 7d; 'none': never; pr-<n> branches default to expiry.prBranchTtl)")
    .option('--protect', 'never delete it by expiry nor stop it when idle')
    .addOption(new Option('--json', 'print JSON on stdout'))
    .action(async (name: string, o) => {
      const ref = parseBranchRef(name);
      const from = o.from !== undefined ? parseBranchRef(o.from, ref.database) : undefined; // --from '' is an error, not main
      const pitr = o.pitr === undefined ? undefined : (await import('../engine/history.js')).parseTime(o.pitr);
      if (o.fromSnapshot !== undefined) parseSnapshotId(o.fromSnapshot);
      const ttlMs = o.ttl === undefined ? undefined : ttlOption(o.ttl);
      const res = await (await cli.engine()).createBranch(ref, { from, fast: o.fast, fromSnapshot: o.fromSnapshot, pitr, ttlMs, protect: o.protect, ...resources(o) });
      cli.log().info(`created ${res.branch.name} from ${res.branch.parent} in ${res.totalMs} ms`);
      if (o.json) printJson(res.branch);
      else process.stdout.write(branchDetail(res.branch));
    });

  branch
    .command('list [db]')
    .description('list branches (of one database, or all)')
    .addOption(new Option('--json', 'print JSON on stdout'))
    .action(async (name: string | undefined, o) => {
      const list = await (await cli.engine()).listBranches(name === undefined ? undefined : parseDatabaseName(name));
      if (o.json) printJson(list);
      else process.stdout.write(branchTable(list));
    });

  branch
    .command('get <branch>')
    .description('show one branch with its connection string')
    .addOption(new Option('--json', 'print JSON on stdout'))
    .action(async (name: string, o) => {
      const b = await (await cli.engine()).getBranch(parseBranchRef(name));
      if (o.json) printJson(b);
      else process.stdout.write(branchDetail(b));
    });

  branch
    .command('delete <branch>')
    .description('delete a branch and everything it owns')
    .option('--force', 'also delete its child branches')
    .addOption(new Option('--json', 'print JSON on stdout'))
    .action(async (name: string, o) => {
      const deleted = await (await cli.engine()).deleteBranch(parseBranchRef(name), { force: o.force });
      if (o.json) printJson({ deleted });
      else process.stdout.write(deleted.map((d) => `deleted branch ${d}\n`).join(''));
    });

  branch
    .command('reset <branch>')
    .description("bring a branch back to its parent's current state (port and password stay)")
    .option('--force', 'also delete its child branches and kept snapshots')
    .option('--fast', 'crash-consistent snapshot of the parent')
    .option('--json', 'print JSON on stdout')
    .action(async (name: string, o) => {
      const { resetBranch } = await import('../engine/reset.js');
      const b = await resetBranch(await cli.engine(), parseBranchRef(name), { force: o.force, fast: o.fast });
      if (o.json) printJson(b);
      else process.stdout.write(branchDetail(b));
    });

  branch
    .command('rename <branch> <new>')
    .description('rename a branch (data, port and password stay)')
    .option('--json', 'print JSON on stdout')
    .action(async (from: string, to: string, o) => {
      const { renameBranch } = await import('../engine/rename.js');
      const ref = parseBranchRef(from);
      const b = await renameBranch(await cli.engine(), ref, parseBranchRef(to, ref.database));
      if (o.json) printJson(b);
      else process.stdout.write(`renamed ${from} to ${b.name}\n`);
    });

  for (const verb of ['start', 'stop', 'restart'] as const) {
    program
      .command(`${verb} <branch>`)
      .description(`${verb} a branch's PostgreSQL (port and password stay)`)
      .addOption(new Option('--json', 'print JSON on stdout'))
      .action(async (name: string, o) => {
        const b = await (await cli.engine())[verb](parseBranchRef(name));
        if (o.json) printJson(b);
        else process.stdout.write(`${b.name} ${b.status} on port ${b.port}\n`);
      });
  }
  return branch;
}

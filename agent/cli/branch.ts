import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { describe, invalid, isNotFound } from '../errors.js';
import type { CliContext } from './context.js';
import { parseTime } from './engine.js';
import { ttlOption } from './expiry.js';
import { jsonOption, outputOption } from './output.js';
import { branchDetail, branchTable, where } from './render.js';
import { cpusOption, diskOption, memoryOption, resources } from './resources.js';

/** names.js (and zod, ~50 ms) when a command runs: --help, --version and completion need not load it. */
const names = () => import('../names.js');

/**
 * `bpg branch create|list|get|diff|delete|reset|rename` and `bpg start|stop|restart`. Returns the `branch`
 * command for the subcommands other modules add (`branch set`).
 */
export function registerBranchCommands(program: Command, { out, engine }: CliContext): Command {
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
    .option(
      '--ttl <duration>',
      "delete it this long after creation (30m, 12h, 7d; 'none': never; pr-<n> branches default to expiry.prBranchTtl)",
    )
    .option('--protect', 'never delete it by expiry nor stop it when idle')
    .option('--schema-only', "the parent's structure without its rows (a fresh cluster: no copy of its data)")
    .option('--seed <file.sql>', 'SQL run after the structure (schema-only; again on reset)')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o) => {
      const { parseBranchRef, parseSnapshotId } = await names();
      const ref = parseBranchRef(name);
      const seed = o.seed === undefined ? undefined : await readSeedFile(o.seed);
      const from = o.from !== undefined ? parseBranchRef(o.from, ref.database) : undefined; // --from '' is an error, not main
      const pitr = o.pitr === undefined ? undefined : await parseTime(o.pitr);
      if (o.fromSnapshot !== undefined) parseSnapshotId(o.fromSnapshot);
      const ttlMs = o.ttl === undefined ? undefined : ttlOption(o.ttl);
      const limits = resources(o);
      const res = await (
        await engine()
      ).createBranch(ref, {
        from,
        fast: o.fast,
        fromSnapshot: o.fromSnapshot,
        pitr,
        ttlMs,
        protect: o.protect,
        schemaOnly: o.schemaOnly,
        seed,
        ...limits,
      });
      out.log().info(`created ${res.branch.name} from ${res.branch.parent} in ${res.totalMs} ms`);
      out.result(o, res.branch, branchDetail);
    });

  branch
    .command('list [db]')
    .description('list branches (of one database, or all)')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string | undefined, o) => {
      const { parseDatabaseName } = await names();
      out.result(
        o,
        await (await engine()).listBranches(name === undefined ? undefined : parseDatabaseName(name)),
        branchTable,
      );
    });

  branch
    .command('get <branch>')
    .description('show one branch with its connection string')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o) => {
      const { parseBranchRef } = await names();
      out.result(o, await (await engine()).getBranch(parseBranchRef(name)), branchDetail);
    });

  branch
    .command('diff <branch>')
    .description('what a branch changed in the schema compared with its parent: objects, then a SQL diff')
    .option('--against <branch>', 'compare with this branch of the same database instead of the parent')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o) => {
      const { parseBranchRef } = await names();
      const ref = parseBranchRef(name);
      const against = o.against !== undefined ? parseBranchRef(o.against, ref.database) : undefined;
      const diff = await (await engine()).schemaDiff(ref, { against });
      out.result(o, diff, (await import('./render-schema-diff.js')).schemaDiffText); // api/schemas.js: zod
    });

  branch
    .command('delete <branch>')
    .description('delete a branch and everything it owns')
    .option('--force', 'also delete its child branches')
    .option('--if-exists', 'a branch (or database) that does not exist is no error: a note on stderr, exit 0')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o) => {
      const { parseBranchRef } = await names();
      const ref = parseBranchRef(name);
      let deleted: string[];
      try {
        deleted = await (await engine()).deleteBranch(ref, { force: o.force });
      } catch (e) {
        if (!o.ifExists || !isNotFound(e)) throw e;
        out.log().info(`${ref.database}/${ref.branch} does not exist: nothing to delete (${describe(e)})`);
        deleted = [];
      }
      out.result(o, { deleted }, () => deleted.map((d) => `deleted branch ${d}\n`).join(''));
    });

  branch
    .command('reset <branch>')
    .description("bring a branch back to its parent's current state (port and password stay)")
    .option('--force', 'also delete its child branches and kept snapshots')
    .option('--fast', 'crash-consistent snapshot of the parent')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o) => {
      const { parseBranchRef } = await names();
      out.result(
        o,
        await (await engine()).resetBranch(parseBranchRef(name), { force: o.force, fast: o.fast }),
        branchDetail,
      );
    });

  branch
    .command('rename <branch> <new>')
    .description("rename a branch (data, port and password stay; the router's <db>@<branch> name changes)")
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (from: string, to: string, o) => {
      const { parseBranchRef } = await names();
      const ref = parseBranchRef(from);
      const b = await (await engine()).renameBranch(ref, parseBranchRef(to, ref.database));
      out.result(
        o,
        b,
        () =>
          `renamed ${from} to ${b.name}${b.connection.via === 'router' ? ` (router database ${b.connection.database})` : ''}\n`,
      );
    });

  for (const verb of ['start', 'stop', 'restart'] as const) {
    program
      .command(`${verb} <branch>`)
      .description(`${verb} a branch's PostgreSQL (port and password stay)`)
      .addOption(outputOption())
      .addOption(jsonOption())
      .action(async (name: string, o) => {
        const { parseBranchRef } = await names();
        out.result(
          o,
          await (await engine())[verb](parseBranchRef(name)),
          (b, paint) => `${b.name} ${paint.status(b.status)} ${where(b)}\n`,
        );
      });
  }
  return branch;
}

/** The seed file's SQL text (the engine checks its size). */
async function readSeedFile(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw invalid(`--seed ${path}: ${describe(e)}`);
  }
}

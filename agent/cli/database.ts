import { Option, type Command } from 'commander';
import { invalid } from '../errors.js';
import type { DatabaseView } from '../engine/view.js';
import type { Paint } from './colour.js';
import type { CliContext } from './context.js';
import { checkImportSource } from './engine.js';
import { jsonOption, outputOption } from './output.js';
import { branchDetail, branchTable, databaseTable } from './render.js';
import { cpusOption, diskOption, memoryOption, resources } from './resources.js';

/** names.js (and zod, ~50 ms) when a command runs: --help, --version and completion need not load it. */
const names = () => import('../names.js');

const databaseDetail = (d: DatabaseView, paint: Paint) =>
  `database ${d.name} (image ${d.image}, created ${d.createdAt})\n` + branchTable(d.branches, paint);

/** `bpg db create|list|get|delete|rename`: databases, each with its main branch. */
export function registerDatabaseCommands(program: Command, { out, engine }: CliContext): void {
  const db = program.command('db').description('databases (each has a main branch)');

  db.command('create <db>')
    .description('create a database and its main branch')
    .option('--image <image>', 'PostgreSQL image (default: postgres.image from the config)')
    .addOption(memoryOption())
    .addOption(cpusOption())
    .addOption(diskOption('default: none for main'))
    .option(
      '--from-url <url>',
      "import main's data from a live PostgreSQL: postgres://user[:password]@host[:port]/database",
    )
    .addOption(new Option('--method <method>', 'how to import (with --from-url)').choices(['dump', 'basebackup']))
    .option('--jobs <n>', 'parallel pg_dump/pg_restore jobs (dump method; default 1)', (v) => intArg('--jobs', v))
    .option('--roles', "also copy the source's roles, without their passwords (dump method)")
    .option('--password-env <name>', "the source's password is in this environment variable of the agent")
    .option('--password-file <path>', "the source's password is the first line of this file")
    .option('--masking-sql <file>', 'masking SQL run on the imported copy before main starts (recorded for refreshes)')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o) => {
      const { parseDatabaseName, parseImage } = await names();
      parseDatabaseName(name);
      if (o.image !== undefined) parseImage(o.image);
      const limits = resources(o);
      const importOnly = ['method', 'jobs', 'roles', 'passwordEnv', 'passwordFile'].filter((k) => o[k] !== undefined);
      if (o.fromUrl === undefined && importOnly.length)
        throw invalid('--method, --jobs, --roles, --password-env and --password-file go with --from-url');
      const from =
        o.fromUrl === undefined
          ? undefined
          : {
              url: o.fromUrl as string,
              method: o.method,
              jobs: o.jobs,
              roles: o.roles,
              passwordEnv: o.passwordEnv,
              passwordFile: o.passwordFile,
            };
      if (from) await checkImportSource(from); // one clear line before anything is looked at
      const res = await (
        await engine()
      ).createDatabase(name, {
        image: o.image,
        ...limits,
        from,
        maskingSql: o.maskingSql,
      });
      out.log().info(`created ${res.branch.name} in ${res.totalMs} ms`);
      out.result(o, res.branch, branchDetail);
    });

  db.command('refresh <db>')
    .description(
      'build a new main from the source beside the old one, mask it, swap it in (same port and password; branches keep their data)',
    )
    .option('--from-url <url>', 'the source (default: the one recorded at import, or databases.<db>.refresh.from)')
    .option('--method <method>', 'dump or basebackup (default: as recorded)')
    .option('--jobs <n>', 'parallel jobs of pg_dump/pg_restore', (v) => intArg('--jobs', v))
    .option(
      '--masking-sql <file>',
      'masking SQL run on the new copy before it becomes main (default: as configured or recorded)',
    )
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o) => {
      const { parseDatabaseName } = await names();
      if (o.method !== undefined && o.method !== 'dump' && o.method !== 'basebackup')
        throw invalid('--method must be dump or basebackup');
      const res = await (
        await engine()
      ).refreshDatabase(parseDatabaseName(name), {
        fromUrl: o.fromUrl,
        method: o.method,
        jobs: o.jobs,
        maskingSql: o.maskingSql,
      });
      out
        .log()
        .info(
          `refreshed ${name} (generation ${res.generation}${res.masked ? ', masked' : ''}) in ${res.totalMs} ms` +
            (res.interruptionMs === undefined ? '' : `; main did not answer for ${res.interruptionMs} ms`),
        );
      out.result(o, res, (r, paint) => branchDetail(r.branch, paint));
    });

  db.command('list')
    .description('list databases')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (o) => {
      out.result(o, await (await engine()).listDatabases(), databaseTable);
    });

  db.command('get <db>')
    .description('show one database and its branches')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o) => {
      const { parseDatabaseName } = await names();
      out.result(o, await (await engine()).getDatabase(parseDatabaseName(name)), databaseDetail);
    });

  db.command('delete <db>')
    .description('delete a database with its main branch')
    .option('--force', 'also delete every other branch of it')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o) => {
      const { parseDatabaseName } = await names();
      await (await engine()).deleteDatabase(parseDatabaseName(name), { force: o.force });
      out.result(o, { deleted: name }, () => `deleted database ${name}\n`);
    });

  db.command('rename <db> <new>')
    .description(
      "rename a database with all its branches (direct connection strings stay valid; the router's <db>@<branch> names change)",
    )
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (from: string, to: string, o) => {
      const { parseDatabaseName } = await names();
      const d = await (await engine()).renameDatabase(parseDatabaseName(from), parseDatabaseName(to));
      out.result(o, d, () => `renamed database ${from} to ${d.name}\n`);
    });
}

function intArg(flag: string, v: string): number {
  if (!/^\d+$/.test(v)) throw invalid(`${flag} must be a whole number, not '${v}'`);
  return Number(v);
}

import { Option, type Command } from 'commander';
import { invalid } from '../errors.js';
import type { DatabaseView } from '../engine/view.js';
import { parseDatabaseName, parseImage } from '../names.js';
import type { Paint } from './colour.js';
import type { CliContext } from './context.js';
import { checkImportSource } from './engine.js';
import { jsonOption, outputOption } from './output.js';
import { branchDetail, branchTable, databaseTable } from './render.js';
import { cpusOption, diskOption, memoryOption, resources } from './resources.js';

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
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o) => {
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
      const res = await (await engine()).createDatabase(name, { image: o.image, ...limits, from });
      out.log().info(`created ${res.branch.name} in ${res.totalMs} ms`);
      out.result(o, res.branch, branchDetail);
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
      out.result(o, await (await engine()).getDatabase(parseDatabaseName(name)), databaseDetail);
    });

  db.command('delete <db>')
    .description('delete a database with its main branch')
    .option('--force', 'also delete every other branch of it')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o) => {
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
      const d = await (await engine()).renameDatabase(parseDatabaseName(from), parseDatabaseName(to));
      out.result(o, d, () => `renamed database ${from} to ${d.name}\n`);
    });
}

function intArg(flag: string, v: string): number {
  if (!/^\d+$/.test(v)) throw invalid(`${flag} must be a whole number, not '${v}'`);
  return Number(v);
}

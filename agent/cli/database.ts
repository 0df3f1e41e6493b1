import { Option, type Command } from 'commander';
import { parseDatabaseName, parseImage } from '../names.js';
import type { CliContext } from './context.js';
import { branchDetail, branchTable, databaseTable, printJson } from './output.js';
import { cpusOption, diskOption, memoryOption, resources } from './resources.js';

/** `bpg db create|list|get|delete|rename`: databases, each with its main branch. */
export function registerDatabaseCommands(program: Command, cli: CliContext): void {
  const db = program.command('db').description('databases (each has a main branch)');

  db.command('create <db>')
    .description('create a database and its main branch')
    .option('--image <image>', 'PostgreSQL image (default: postgres.image from the config)')
    .addOption(memoryOption())
    .addOption(cpusOption())
    .addOption(diskOption('default: none for main'))
    .addOption(new Option('--json', 'print JSON on stdout'))
    .action(async (name: string, o) => {
      parseDatabaseName(name);
      if (o.image !== undefined) parseImage(o.image);
      const res = await (await cli.engine()).createDatabase(name, { image: o.image, ...resources(o) });
      cli.log().info(`created ${res.branch.name} in ${res.totalMs} ms`);
      if (o.json) printJson(res.branch);
      else process.stdout.write(branchDetail(res.branch));
    });

  db.command('list')
    .description('list databases')
    .addOption(new Option('--json', 'print JSON on stdout'))
    .action(async (o) => {
      const dbs = await (await cli.engine()).listDatabases();
      if (o.json) printJson(dbs);
      else process.stdout.write(databaseTable(dbs));
    });

  db.command('get <db>')
    .description('show one database and its branches')
    .addOption(new Option('--json', 'print JSON on stdout'))
    .action(async (name: string, o) => {
      const d = await (await cli.engine()).getDatabase(parseDatabaseName(name));
      if (o.json) printJson(d);
      else process.stdout.write(`database ${d.name} (image ${d.image}, created ${d.createdAt})\n` + branchTable(d.branches));
    });

  db.command('delete <db>')
    .description('delete a database with its main branch')
    .option('--force', 'also delete every other branch of it')
    .addOption(new Option('--json', 'print JSON on stdout'))
    .action(async (name: string, o) => {
      await (await cli.engine()).deleteDatabase(parseDatabaseName(name), { force: o.force });
      if (o.json) printJson({ deleted: name });
      else process.stdout.write(`deleted database ${name}\n`);
    });

  db.command('rename <db> <new>')
    .description('rename a database with all its branches (connection strings stay valid)')
    .option('--json', 'print JSON on stdout')
    .action(async (from: string, to: string, o) => {
      const { renameDatabase } = await import('../engine/rename.js');
      const d = await renameDatabase(await cli.engine(), parseDatabaseName(from), parseDatabaseName(to));
      if (o.json) printJson(d);
      else process.stdout.write(`renamed database ${from} to ${d.name}\n`);
    });
}

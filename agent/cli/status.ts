import { Option, type Command } from 'commander';
import type { CliContext } from './context.js';
import { printJson, statusText } from './output.js';

/** `bpg status`: the pool, counts, limits and every branch. */
export function registerStatusCommand(program: Command, cli: CliContext): void {
  program
    .command('status')
    .description('pool usage, counts by status, limits, and every branch with its size, WAL and expiry')
    .addOption(new Option('--json', 'print JSON on stdout'))
    .action(async (o) => {
      const { systemStatus } = await import('../engine/status.js');
      const s = await systemStatus(await cli.engine());
      if (o.json) printJson(s);
      else process.stdout.write(statusText(s));
    });
}

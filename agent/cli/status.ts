import type { Command } from 'commander';
import type { CliContext } from './context.js';
import { jsonOption, outputOption } from './output.js';
import { statusText } from './render.js';

/** `bpg status`: the pool, counts, limits and every branch. */
export function registerStatusCommand(program: Command, { out, engine }: CliContext): void {
  program
    .command('status')
    .description('pool usage, counts by status, limits, and every branch with its size, WAL and expiry')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (o) => {
      out.result(o, await (await engine()).status(), statusText);
    });
}

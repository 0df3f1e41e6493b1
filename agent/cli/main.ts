import { CommanderError } from 'commander';
import { describe } from '../errors.js';
import { buildProgram } from './program.js';

/** Runs `bpg` with `argv` (as process.argv: node, script, args...) and returns its exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version exit 0; usage errors were already printed on one line
      return e.exitCode === 0 ? 0 : 1;
    }
    if (program.opts().debug && e instanceof Error) process.stderr.write((e.stack ?? String(e)) + '\n');
    process.stderr.write(`error: ${describe(e)}\n`);
    return 1;
  }
}

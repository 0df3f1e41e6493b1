import { CommanderError } from 'commander';
import { exitCodeOf } from './exit-codes.js';
import { ExitWith } from './output.js';
import { buildProgram, outputOf } from './program.js';

/** Runs `bpg` with `argv` (as process.argv: node, script, args...) and returns its exit code (exit-codes.ts). */
export async function main(argv: string[]): Promise<number> {
  const program = await buildProgram(argv);
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof ExitWith) return e.exitCode; // bpg psql: psql's code, psql printed its errors
    // help and version exit 0; usage errors were already printed on one line
    if (!(e instanceof CommanderError)) outputOf(program).error(e);
    return exitCodeOf(e);
  }
}

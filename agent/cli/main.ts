import { CommanderError } from 'commander';
import { ExitWith } from './output.js';
import { buildProgram, outputOf } from './program.js';

/** Runs `bpg` with `argv` (as process.argv: node, script, args...) and returns its exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof ExitWith) return e.exitCode; // bpg psql: psql's code, psql printed its errors
    if (e instanceof CommanderError) {
      // help and version exit 0; usage errors were already printed on one line
      return e.exitCode === 0 ? 0 : 1;
    }
    outputOf(program).error(e);
    return 1;
  }
}

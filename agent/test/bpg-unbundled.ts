/**
 * `bpg` run from the module graph tsc built (build/agent/cli), as bin/bpg.js runs esbuild's bundle of
 * it: for the tests of which modules a command loads, which need the modules' own paths.
 */
import { main } from '../cli/main.js';

process.exitCode = await main(process.argv);

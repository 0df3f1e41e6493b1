#!/usr/bin/env node
// Entry point of the `bpg` CLI: runs the bundled CLI (npm install builds it: tsc, then scripts/build-cli.mjs).
import { existsSync } from 'node:fs';
const entry = new URL('../build/cli/bpg.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write("error: bpg is not built: run 'npm install' (or 'npm run build') in the checkout\n");
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv);

#!/usr/bin/env node
// build-cli.mjs — bundles the `bpg` CLI (build/agent/cli/main.js, compiled by tsc) into build/cli/ with
// esbuild: one file for what every command loads, and a chunk for each part loaded on demand (the
// engine, each command's module, the API schemas). Node then reads and compiles a few files instead
// of a hundred (the CLI's start-up is most of an on-box command's time: see docs/benchmarks.md).
//
// Bundled: our code and the small pure-JS libraries the CLI itself uses. Left to node_modules: the
// rest (the engine's Docker, PostgreSQL and HTTP-server libraries, loaded by `--local` and `serve`
// only, some with optional native parts).
//
// Run by `npm run build` (and `npm install`) after tsc; `bin/bpg.js` runs the result.
import { readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BUNDLED = new Set(['commander', 'zod', 'yaml', 'picocolors']);
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
const external = Object.keys(pkg.dependencies).filter((d) => !BUNDLED.has(d));

const out = join(ROOT, 'build', 'cli');
rmSync(out, { recursive: true, force: true });
await build({
  entryPoints: { bpg: join(ROOT, 'build', 'agent', 'cli', 'main.js') },
  outdir: out,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external,
  // commander is CommonJS: its require() calls of Node's own modules need a require in an ES module.
  banner: {
    js: "import { createRequire as __bpgRequire } from 'node:module'; const require = __bpgRequire(import.meta.url);",
  },
  logLevel: 'warning',
});

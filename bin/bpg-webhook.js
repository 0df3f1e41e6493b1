#!/usr/bin/env node
// Entry point of the webhook receiver `bpg-webhook`: runs the compiled TypeScript (npm install builds it).
import { existsSync } from 'node:fs';
const main = new URL('../build/webhook/src/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write("error: bpg-webhook is not built: run 'npm install' (or 'npm run build') in the checkout\n");
  process.exit(1);
}
await import(main.href);

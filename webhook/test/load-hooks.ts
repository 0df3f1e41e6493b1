/**
 * Module hooks (node:module `register`) that write the URL of every module resolved in the process
 * to a file, one a line: ES modules and the CommonJS packages they import. Used by
 * startup-imports.unit.test.ts through load-recorder.ts (`node --import`).
 */
import { appendFileSync } from 'node:fs';
import type { InitializeHook, ResolveHook } from 'node:module';

let file = '';

export const initialize: InitializeHook<{ file: string }> = (data) => {
  file = data.file;
};

export const resolve: ResolveHook = async (specifier, context, next) => {
  const r = await next(specifier, context);
  appendFileSync(file, `${r.url}\n`);
  return r;
};

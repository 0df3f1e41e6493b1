import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { z } from 'zod';
import { invalid } from '../errors.js';
import { jsonOption, outputOption, type FormatFlags, type Output } from './output.js';
import { table } from './render.js';
import type { TargetFlags } from './remote-target.js';
import { contextsPath } from './contexts-path.js';
import type { publicView } from './saved-contexts.js';

/** saved-contexts.ts (zod, yaml) when a context command runs: `bpg --help` need not load it. */
const saved = () => import('./saved-contexts.js');

type ContextRow = ReturnType<typeof publicView>;

const contextTable = (rows: ContextRow[]) =>
  rows.length === 0
    ? 'no contexts (bpg context add <name> --url <url> --token-file <file>)\n'
    : table([['CURRENT', 'NAME', 'URL', 'CA'], ...rows.map((c) => [c.current ? '*' : '', c.name, c.url, c.ca ?? '-'])]);

function parsed<T>(schema: z.ZodType<T>, v: unknown, what: string): T {
  const r = schema.safeParse(v);
  if (!r.success) throw invalid(`${what}: ${r.error.issues[0]?.message ?? 'invalid'}`);
  return r.data;
}

/**
 * `bpg context add|use|list|remove`: saved agents (saved-contexts.ts). The token of `add` comes from
 * the global --token-file, or --token - (standard input), or --token (which shell history and `ps`
 * see: prefer the other two).
 */
export function registerContextCommands(program: Command, out: Output): void {
  const context = program
    .command('context')
    .description(`saved agents to talk to (${contextsPath()}): bpg --context <name>, or the current one`);

  context
    .command('add <name>')
    .description('save an agent: --url, and its token from --token-file <file> or --token - (standard input)')
    .requiredOption('--url <url>', "the agent's API, e.g. https://agent.example.com:7432")
    .option('--use', 'make it the current context (the first one saved is made current anyway)')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o: { url: string; use?: boolean } & FormatFlags) => {
      const { checkedCaPath, findContext, publicView, readContexts, withContext, writeContexts } = await saved();
      const { AgentToken, AgentUrl, ContextName } = await import('./context-schemas.js');
      const g = program.opts<TargetFlags>();
      parsed(ContextName, name, 'context name');
      const url = parsed(AgentUrl, o.url, '--url');
      if (g.token !== undefined && g.tokenFile !== undefined) throw invalid('give --token or --token-file, not both');
      let token: string | undefined;
      if (g.tokenFile !== undefined)
        token = (
          await readFile(g.tokenFile, 'utf8').catch((e: NodeJS.ErrnoException) => {
            throw invalid(`--token-file: cannot read ${g.tokenFile}: ${e.code ?? e.message}`);
          })
        ).trim();
      else if (g.token === '-') token = (await (await import('./remote-target.js')).readStdin()).trim();
      else token = g.token;
      if (token === undefined)
        throw invalid('give the token: --token-file <file>, or --token - to read it from standard input');
      token = parsed(AgentToken, token, 'the token');
      const ca = g.ca === undefined ? undefined : await checkedCaPath(g.ca);
      if (ca !== undefined && !/-----BEGIN CERTIFICATE-----/.test(await readFile(ca, 'utf8')))
        throw invalid(`--ca: ${ca} does not hold a PEM certificate`);
      const path = contextsPath();
      let file = withContext(await readContexts(path), { name, url, token, ...(ca ? { ca } : {}) });
      if (o.use) file = { ...file, current: name };
      await writeContexts(file, path);
      const view = publicView(findContext(file, name), file.current);
      out.result(o, view, (v) => `saved context ${v.name} (${v.url})${v.current ? ', the current one' : ''}\n`);
    });

  context
    .command('use <name>')
    .description('make a saved context the current one')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o: FormatFlags) => {
      const { findContext, readContexts, writeContexts } = await saved();
      const path = contextsPath();
      const file = await readContexts(path);
      findContext(file, name);
      await writeContexts({ ...file, current: name }, path);
      out.result(o, { current: name }, () => `now using context ${name}\n`);
    });

  context
    .command('list')
    .description('saved contexts (never their tokens); * marks the current one')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (o: FormatFlags) => {
      const { publicView, readContexts, warnIfOpen } = await saved();
      const path = contextsPath();
      await warnIfOpen(path, (m) => out.warn(m));
      const file = await readContexts(path);
      out.result(
        o,
        file.contexts.map((c) => publicView(c, file.current)),
        contextTable,
      );
    });

  context
    .command('remove <name>')
    .description('forget a saved context (and its token)')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o: FormatFlags) => {
      const { readContexts, withoutContext, writeContexts } = await saved();
      const path = contextsPath();
      await writeContexts(withoutContext(await readContexts(path), name), path);
      out.result(o, { removed: name }, () => `removed context ${name}\n`);
    });
}

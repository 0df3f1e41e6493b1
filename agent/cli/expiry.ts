import type { Command } from 'commander';
import { parseTtl } from '../duration.js';
import type { CliContext } from './context.js';
import { parseTime } from './engine.js';
import type { HousekeepingReport } from '../engine/housekeeping.js';
import { invalid } from '../errors.js';
import { jsonOption, outputOption, type FormatFlags } from './output.js';
import { branchDetail, bytes } from './render.js';

/** names.js (and zod, ~50 ms) when a command runs: --help, --version and completion need not load it. */
const names = () => import('../names.js');

/** `--ttl 7d` in milliseconds; `--ttl none`: null (never expires). */
export function ttlOption(text: string): number | null {
  if (text === 'none') return null;
  try {
    return parseTtl(text);
  } catch (e) {
    throw invalid(`--ttl: ${(e as Error).message}; use e.g. 30m, 12h, 7d, or 'none'`);
  }
}

/** `bpg branch set` (expiry, protection) and `bpg housekeep` (one housekeeping pass by hand). */
export function registerExpiryCommands(
  program: Command,
  branch: Command,
  { out, engine, localEngine }: CliContext,
): void {
  branch
    .command('set <branch>')
    .description('change when a branch expires, or whether it is protected')
    .option('--ttl <duration>', "expire this long from now (30m, 12h, 7d; at most 365d), or 'none' for never")
    .option('--protect', 'never delete it by expiry nor stop it when idle')
    .option('--no-protect', 'expiry and the idle stop apply again')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (name: string, o: { ttl?: string; protect?: boolean } & FormatFlags) => {
      const { parseBranchRef } = await names();
      const ttlMs = o.ttl === undefined ? undefined : ttlOption(o.ttl);
      out.result(
        o,
        await (await engine()).setBranchSettings(parseBranchRef(name), { ttlMs, protect: o.protect }),
        branchDetail,
      );
    });

  program
    .command('housekeep')
    .description(
      'run one housekeeping pass now: delete expired branches, stop idle ones, take and prune scheduled snapshots, trim WAL',
    )
    .option('--dry-run', 'only say what would be done')
    .option(
      '--now <time>',
      'pretend it is this moment (ISO 8601 with a zone): with --dry-run, plans ahead, e.g. what expires by Friday',
    )
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (o: { dryRun?: boolean; now?: string } & FormatFlags) => {
      const now = o.now === undefined ? undefined : await parseTime(o.now);
      // On the agent's host only (program.ts refuses it with a remote agent set); bpg serve runs its own passes.
      const r = await (await localEngine()).housekeep({ now, dryRun: o.dryRun });
      out.result(o, r, housekeepingText);
      if (r.errors.length)
        throw new Error(
          `housekeeping: ${r.errors.length} item(s) failed: ${r.errors.map((x) => `${x.action} ${x.target}: ${x.error}`).join('; ')}`,
        );
    });
}

export function housekeepingText(r: HousekeepingReport): string {
  const would = r.dryRun ? 'would ' : '';
  const lines: string[] = [];
  for (const d of r.deleted) lines.push(`${would}delete ${d.branch} (expired ${d.expiresAt ?? 'with its parent'})`);
  for (const s of r.stopped) lines.push(`${would}stop ${s.branch} (no client since ${s.idleSince})`);
  for (const s of r.snapshots) lines.push(`${would}snapshot ${s.branch}${s.id ? ` as ${s.id}` : ''} (scheduled)`);
  for (const p of r.pruned) lines.push(`${would}prune snapshot ${p.id} of ${p.branch} (taken ${p.createdAt})`);
  for (const w of r.wal)
    lines.push(
      `${would}remove ${w.removed} WAL segment(s) of ${w.branch}, ${bytes(w.removedBytes)}${w.keptFrom ? ` (kept from ${w.keptFrom})` : ''}`,
    );
  for (const x of r.refreshed)
    lines.push(`${would}refresh ${x.database}/main${x.generation !== null ? ` (now generation ${x.generation})` : ''}`);
  for (const x of r.retired) lines.push(`${would}destroy ${x} (an old main nothing is cloned from)`);
  for (const s of r.skipped) lines.push(`skipped ${s.action} ${s.target}: ${s.reason}`);
  for (const e of r.errors) lines.push(`failed ${e.action} ${e.target}: ${e.error}`);
  if (!lines.length) lines.push('nothing to do');
  return lines.join('\n') + '\n';
}

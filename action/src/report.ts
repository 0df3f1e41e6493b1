/**
 * The pull request comment and the job summary, as Markdown. Pure: the same model gives the same
 * text, and the password only appears when the caller says it may.
 */
import type { BranchView } from '../../agent/api/schemas.js';
import type { Command } from './inputs.js';
import type { MigrationResult } from './migrate.js';

export type Report =
  | {
      kind: 'ready';
      command: Exclude<Command, 'delete'>;
      database: string;
      branch: BranchView;
      /** This run created the branch (false: it existed and was reused). */
      created: boolean;
      /** This run reset it to its parent first. */
      reset: boolean;
      /** How long the create (or reset, or lookup) call took. */
      ms: number;
      migration: MigrationResult | null;
    }
  | {
      kind: 'deleted';
      database: string;
      branchName: string;
      /** False when it was already gone. */
      deleted: boolean;
    };

export interface RenderOptions {
  /** Put the password in the text (only a private repository's comment, or show_password: true). */
  showPassword: boolean;
  /** Link to the workflow run, if known. */
  runUrl?: string;
  /** For tests; default now. */
  now?: Date;
}

/**
 * Identifies this action's comment for one database on a pull request (together with its author).
 * A hidden HTML comment: GitHub does not render it.
 */
export function marker(database: string): string {
  return `<!-- betterpg/branch database=${database} -->`;
}

const MASK = '********';

/** Inline code that survives any backticks or pipes in the value (hosts and names come from the agent). */
function code(v: string | number): string {
  const s = String(v).replace(/\|/g, '\\|').replace(/[\r\n]+/g, ' ');
  const ticks = '`'.repeat(Math.max(1, ...[...s.matchAll(/`+/g)].map((m) => m[0].length + 1)));
  const pad = s.startsWith('`') || s.endsWith('`') ? ' ' : '';
  return `${ticks}${pad}${s}${pad}${ticks}`;
}

/** A fenced block longer than any run of backticks inside. */
function fence(lines: string[], lang = ''): string {
  const body = lines.join('\n');
  const longest = Math.max(0, ...[...body.matchAll(/`+/g)].map((m) => m[0].length));
  const f = '`'.repeat(Math.max(3, longest + 1));
  return `${f}${lang}\n${body}\n${f}`;
}

export function seconds(ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

/** `2026-11-27 23:50 UTC` */
function when(iso: string | Date): string {
  const d = typeof iso === 'string' ? new Date(iso) : iso;
  return Number.isNaN(d.getTime()) ? String(iso) : `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/** The connection string with the password replaced, unless it may be shown. */
export function connectionString(b: BranchView, showPassword: boolean): string {
  if (showPassword) return b.connection.uri;
  const c = b.connection;
  return c.uri.split(`:${encodeURIComponent(c.password)}@`).join(`:${MASK}@`);
}

export function render(r: Report, o: RenderOptions): string {
  const footer = `<sub>${o.runUrl ? `[Workflow run](${o.runUrl})` : 'Updated'} · ${when(o.now ?? new Date())} · BetterPG</sub>`;
  if (r.kind === 'deleted') {
    const what = r.deleted ? 'was deleted' : 'was already gone';
    return [
      marker(r.database),
      `### 🐘 Preview database ${code(`${r.database}/${r.branchName}`)}: deleted`,
      '',
      `The branch ${code(r.branchName)} of ${code(r.database)} ${what}; its data and connection details are no longer valid.`,
      '',
      footer,
      '',
    ].join('\n');
  }

  const b = r.branch;
  const c = b.connection;
  const parent = b.parent?.split('/').pop() ?? 'none';
  const m = r.migration;
  const failed = m !== null && !m.ok;
  let created: string;
  if (r.reset) created = `reset to ${code(parent)} in ${seconds(r.ms)} by this run`;
  else if (r.created) created = `in ${seconds(r.ms)} by this run`;
  else created = `${when(b.createdAt)} (reused by this run)`;
  let migration = 'none configured';
  if (m) migration = m.ok ? `✅ succeeded in ${seconds(m.ms)}` : `❌ failed (${m.exitCode === null ? 'did not run to the end' : `exit code ${m.exitCode}`}) after ${seconds(m.ms)}`;

  const lines = [
    marker(r.database),
    `### 🐘 Preview database ${code(`${r.database}/${b.branch}`)}${failed ? ': migration failed' : ''}`,
    '',
    '| | |',
    '| --- | --- |',
    `| Branch | ${code(b.branch)} from ${code(parent)} |`,
    `| Status | ${b.status} |`,
    `| Host | ${code(c.host)} |`,
    `| Port | ${code(c.port)} |`,
    `| Database | ${code(c.database)} |`,
    `| User | ${code(c.user)} |`,
    `| Password | ${o.showPassword ? code(c.password) : `hidden (in the step's \`password\` output)`} |`,
    `| Created | ${created} |`,
    `| Migration | ${migration} |`,
    '',
    fence([connectionString(b, o.showPassword)]),
  ];
  if (m && m.tail.length) {
    const summary = m.lines > m.tail.length ? `Migration output (last ${m.tail.length} of ${m.lines} lines)` : 'Migration output';
    lines.push('', `<details${failed ? ' open' : ''}><summary>${summary}</summary>`, '', fence(m.tail), '', '</details>');
  }
  lines.push('', footer, '');
  return lines.join('\n');
}

/**
 * The sticky pull request comment: one per PR and database, the same content and password rules as
 * the GitHub Action's (branch, parent, status, host, port, database, user, connection string with the
 * password masked unless shown, creation time, migration result; "deleted" after close).
 *
 * Self-contained on purpose (only node:crypto): the Action renders the same comment, and the two
 * can share this module later. Pure functions: no I/O, nothing logged.
 */
import { createHash } from 'node:crypto';
import type { BranchView } from '../../agent/api/schemas.js';

/** A branch's connection, as the agent returns it (a type only: nothing is loaded at run time). */
export type Connection = BranchView['connection'];

export interface MigrationSummary {
  /** Folder read, or null when none is configured. */
  path: string | null;
  /** Files applied by this run, in order. */
  applied: string[];
  /** Files found already applied on the branch (not run again). */
  alreadyApplied: string[];
  /** Already-applied files whose content has changed since (not run again). */
  changed: string[];
  /** The file that failed; the files after it were not run. `timedOut`: the receiver stopped it at its time limit. */
  failed?: { name: string; output: string; timedOut?: boolean };
  /** The folder does not exist at this commit. */
  missing?: boolean;
}

export type CommentState = 'ready' | 'migration-failed' | 'refused' | 'deleted' | 'error';

export interface CommentInput {
  state: CommentState;
  /** Agent database and branch names (`api`, `pr-42`), and the parent branch (`main`). */
  database: string;
  branch: string;
  parent: string;
  /** The agent's branch status (`running`, ...). */
  branchStatus?: string;
  connection?: Connection;
  /** Show the password in the connection string. */
  showPassword: boolean;
  /** Why it is hidden, e.g. "this repository is public". */
  passwordHiddenReason?: string;
  /** This run created the branch (and took `createMs`), or found it (created at `createdAt`). */
  created?: boolean;
  createMs?: number;
  createdAt?: string;
  migrations?: MigrationSummary;
  /** Head commit the comment describes. */
  commit?: string;
  /** For `error`: what failed, one or a few lines; for `refused`: which migration limit was passed. */
  error?: string;
}

/**
 * Finds our comment among a PR's comments (together with the author check). The same marker as
 * the Action's (action/src/report.ts), so both find one comment per PR and database.
 */
export function commentMarker(database: string): string {
  return `<!-- betterpg/branch database=${database} -->`;
}

const DIGEST_RE = /<!-- betterpg:digest=([0-9a-f]+) -->/;

/** The digest a body carries, to skip updates that would change nothing. */
export function digestOf(body: string): string | null {
  return DIGEST_RE.exec(body)?.[1] ?? null;
}

const MASK = '********';

/** `postgresql://user:********@host:port/db` */
export function maskedUri(c: Connection): string {
  try {
    const u = new URL(c.uri);
    if (u.password) u.password = MASK;
    return u.toString();
  } catch {
    return `postgresql://${encodeURIComponent(c.user)}:${MASK}@${c.host}:${c.port}/${encodeURIComponent(c.database)}`;
  }
}

/** Last lines only: a comment is not a log viewer. */
export function lastLines(text: string, n = 15): string[] {
  const lines = text.replace(/\s+$/, '').split('\n');
  return lines.length > n ? ['…', ...lines.slice(-n)] : lines;
}

export function seconds(ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

/** `2026-11-27 23:50 UTC` */
function when(iso: string): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/** Inline code that survives backticks and pipes in the value (file names come from the PR). */
function code(v: string | number): string {
  const s = String(v).replace(/\|/g, '\\|').replace(/[\r\n]+/g, ' ');
  const ticks = '`'.repeat(Math.max(1, ...[...s.matchAll(/`+/g)].map((m) => m[0].length + 1)));
  const pad = s.startsWith('`') || s.endsWith('`') ? ' ' : '';
  return `${ticks}${pad}${s}${pad}${ticks}`;
}

/** For HTML (GitHub does not render Markdown inside <summary>). */
function html(v: string): string {
  return v.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A fenced block longer than any run of backticks inside. */
function fence(lines: string[]): string {
  const body = lines.join('\n');
  const longest = Math.max(0, ...[...body.matchAll(/`+/g)].map((m) => m[0].length));
  const f = '`'.repeat(Math.max(3, longest + 1));
  return `${f}\n${body}\n${f}`;
}

/**
 * The comment's Markdown. Laid out as the Action's: a title, a table (branch and parent, status,
 * host, port, database, user, password, created, migrations), the connection string, the failure's
 * output folded open. No time stamp, so that a digest of the content can tell "nothing changed".
 */
export function renderComment(i: CommentInput): string {
  const name = `${i.database}/${i.branch}`;
  const lines: string[] = [];
  if (i.state === 'deleted') {
    lines.push(`### 🐘 Preview database ${code(name)}: deleted`, '', `The pull request was closed: the branch ${code(i.branch)} of ${code(i.database)} was deleted; its data and connection details are no longer valid. Reopening the pull request makes a fresh one.`);
  } else if (i.state === 'refused') {
    lines.push(
      `### 🐘 Preview database ${code(name)}: migrations refused`,
      '',
      fence(lastLines(i.error ?? 'over a limit')),
      '',
      'Nothing was applied: the branch was not created, or was left as it was. Keep the folder within the limits, or raise them in the receiver\'s config (`migrations.maxFiles`, `maxFileSize`, `maxTotalSize`).',
    );
  } else if (i.state === 'error') {
    lines.push(`### 🐘 Preview database ${code(name)}: not ready`, '', fence(lastLines(i.error ?? 'unknown error')), '', 'Push a commit, or close and reopen the pull request, to try again.');
  } else {
    const c = i.connection;
    const m = i.migrations;
    lines.push(`### 🐘 Preview database ${code(name)}${i.state === 'migration-failed' ? ': migration failed' : ''}`, '', '| | |', '| --- | --- |');
    lines.push(`| Branch | ${code(i.branch)} from ${code(i.parent)} |`);
    if (i.branchStatus) lines.push(`| Status | ${i.branchStatus} |`);
    if (c) {
      lines.push(`| Host | ${code(c.host)} |`, `| Port | ${code(c.port)} |`, `| Database | ${code(c.database)} |`, `| User | ${code(c.user)} |`);
      const hidden = `hidden${i.passwordHiddenReason ? ` (${i.passwordHiddenReason})` : ''}: \`bpg branch get ${name}\` on the agent`;
      lines.push(`| Password | ${i.showPassword ? code(c.password) : hidden} |`);
    }
    if (i.created && i.createMs !== undefined) lines.push(`| Created | in ${seconds(i.createMs)} for this pull request |`);
    else if (i.created === false) lines.push(`| Created | ${i.createdAt ? when(i.createdAt) : 'earlier'} (reused) |`);
    if (m) lines.push(`| Migrations | ${migrationLine(m)} |`);
    if (c) lines.push('', fence([i.showPassword ? c.uri : maskedUri(c)]));
    if (m?.failed) {
      lines.push('', `${code(m.failed.name)} was rolled back and the files after it were not run; the branch is kept for debugging.`);
      lines.push('', `<details open><summary>Error from <code>${html(m.failed.name)}</code></summary>`, '', fence(lastLines(m.failed.output)), '', '</details>');
    }
    if (m?.changed.length) {
      lines.push('', `Changed since they were applied (not run again; \`resetOnPush\` re-applies from scratch): ${m.changed.map(code).join(', ')}`);
    }
  }
  lines.push('', `<sub>${i.commit ? `Commit ${i.commit.slice(0, 12)} · ` : ''}BetterPG webhook</sub>`);

  const content = lines.join('\n');
  const digest = createHash('sha256').update(content).digest('hex').slice(0, 16);
  return `${commentMarker(i.database)}\n<!-- betterpg:digest=${digest} -->\n${content}\n`;
}

function migrationLine(m: MigrationSummary): string {
  if (m.path === null) return 'none configured';
  if (m.missing) return `no folder ${code(m.path)} at this commit`;
  const applied = m.applied.length ? `${m.applied.length} applied: ${m.applied.map(code).join(', ')}` : '';
  const before = m.alreadyApplied.length ? `${m.alreadyApplied.length} applied before` : '';
  if (m.failed) return `❌ failed at ${code(m.failed.name)}` + (applied || before ? ` (${[applied, before].filter(Boolean).join('; ')})` : '');
  if (!applied && !before) return `no \`.sql\` files in ${code(m.path)}`;
  return '✅ ' + [applied || 'no new files', before].filter(Boolean).join('; ');
}

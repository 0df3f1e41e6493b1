/**
 * The sticky pull request comment: one per PR and database, the same content and password rules as
 * the GitHub Action's (branch, parent, status, host, port, database, user, connection string with the
 * password masked unless shown, creation time, migration result; "deleted" after close).
 *
 * Self-contained on purpose (only node:crypto): the Action renders the same comment, and the two
 * can share this module later. Pure functions: no I/O, nothing logged.
 */
import { createHash } from 'node:crypto';

export interface Connection {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  uri: string;
}

export interface MigrationSummary {
  /** Folder read, or null when none is configured. */
  path: string | null;
  /** Files applied by this run, in order. */
  applied: string[];
  /** Files found already applied on the branch (not run again). */
  alreadyApplied: string[];
  /** Already-applied files whose content has changed since (not run again). */
  changed: string[];
  /** The file that failed; the files after it were not run. */
  failed?: { name: string; output: string };
  /** The folder does not exist at this commit. */
  missing?: boolean;
}

export type CommentState = 'ready' | 'migration-failed' | 'deleted' | 'error';

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
  /** For `error`: what failed, one or a few lines. */
  error?: string;
}

/** Finds our comment among a PR's comments (together with the author check). */
export function commentMarker(database: string): string {
  return `<!-- betterpg:sticky database=${database} -->`;
}

const DIGEST_RE = /<!-- betterpg:digest=([0-9a-f]+) -->/;

/** The digest a body carries, to skip updates that would change nothing. */
export function digestOf(body: string): string | null {
  return DIGEST_RE.exec(body)?.[1] ?? null;
}

/** `postgresql://user:****@host:port/db` */
export function maskedUri(c: Connection): string {
  try {
    const u = new URL(c.uri);
    if (u.password) u.password = '****';
    return u.toString();
  } catch {
    return `postgresql://${encodeURIComponent(c.user)}:****@${c.host}:${c.port}/${encodeURIComponent(c.database)}`;
  }
}

/** Last lines only: a comment is not a log viewer. */
export function lastLines(text: string, n = 15): string {
  const lines = text.replace(/\s+$/, '').split('\n');
  return (lines.length > n ? ['…', ...lines.slice(-n)] : lines).join('\n');
}

export function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : ms < 60_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** Inline code, safe inside a table cell (GitHub wants `\|` there even within backticks). */
const code = (s: string) => '`' + s.replace(/`/g, "'").replace(/\|/g, '\\|') + '`';
const fence = (s: string) => '```\n' + s.replace(/```/g, "'''") + '\n```';

export function renderComment(i: CommentInput): string {
  const name = `${i.database}/${i.branch}`;
  const lines: string[] = [];
  const title = {
    ready: `### BetterPG: database branch ${code(name)} is ready`,
    'migration-failed': `### BetterPG: a migration failed on ${code(name)}`,
    deleted: `### BetterPG: database branch ${code(name)} was deleted`,
    error: `### BetterPG: could not prepare ${code(name)}`,
  }[i.state];
  lines.push(title, '');

  if (i.state === 'deleted') {
    lines.push(`The pull request was closed, so its branch of ${code(`${i.database}/${i.parent}`)} was deleted. Reopening it makes a fresh one.`);
  } else if (i.state === 'error') {
    lines.push(fence(lastLines(i.error ?? 'unknown error')), '', 'Push a commit, or close and reopen the pull request, to try again.');
  } else {
    const c = i.connection;
    lines.push('| | |', '| --- | --- |');
    lines.push(`| Branch | ${code(name)} |`, `| Parent | ${code(`${i.database}/${i.parent}`)} |`);
    if (i.branchStatus) lines.push(`| Status | ${i.branchStatus} |`);
    if (c) {
      lines.push(`| Host | ${code(c.host)} |`, `| Port | ${code(String(c.port))} |`, `| Database | ${code(c.database)} |`, `| User | ${code(c.user)} |`);
    }
    if (i.created && i.createMs !== undefined) lines.push(`| Created in | ${formatMs(i.createMs)} |`);
    else if (i.created === false) lines.push(`| Created | ${i.createdAt ? `${i.createdAt} (reused)` : 'earlier (reused)'} |`);
    if (i.migrations) lines.push(`| Migrations | ${migrationLine(i.migrations)} |`);
    lines.push('');
    if (c) {
      if (i.showPassword) {
        lines.push('Connection string:', '', fence(c.uri));
      } else {
        lines.push(`Connection string (password hidden${i.passwordHiddenReason ? `: ${i.passwordHiddenReason}` : ''}):`, '', fence(maskedUri(c)));
        lines.push('', `The password: \`bpg branch get ${name}\` on the agent, or ask its operator.`);
      }
    }
    const m = i.migrations;
    if (m?.failed) {
      lines.push('', `**${code(m.failed.name)} failed**; it was rolled back and the files after it were not run. The branch is kept for debugging.`, '', fence(lastLines(m.failed.output)));
    }
    if (m?.changed.length) {
      lines.push('', `Changed after they were applied (not run again; set \`resetOnPush\` to re-apply from scratch): ${m.changed.map(code).join(', ')}`);
    }
  }
  if (i.commit) lines.push('', `<sub>For commit ${i.commit.slice(0, 12)}.</sub>`);

  const content = lines.join('\n');
  const digest = createHash('sha256').update(content).digest('hex').slice(0, 16);
  return `${commentMarker(i.database)}\n<!-- betterpg:digest=${digest} -->\n${content}\n`;
}

function migrationLine(m: MigrationSummary): string {
  if (m.path === null) return 'none configured';
  if (m.missing) return `no folder ${code(m.path)} at this commit`;
  const applied = m.applied.length ? `${m.applied.length} applied: ${m.applied.map(code).join(', ')}` : '';
  const before = m.alreadyApplied.length ? `${m.alreadyApplied.length} applied before` : '';
  if (m.failed) return `**failed** at ${code(m.failed.name)}` + (applied ? ` (${applied})` : '');
  if (!applied && !before) return `no \`.sql\` files in ${code(m.path)}`;
  return [applied || 'no new files', before].filter(Boolean).join('; ');
}

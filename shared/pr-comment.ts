/**
 * The pull request comment of the Action and the receiver: one per pull request and database,
 * found again by its hidden marker, carrying a digest of its content so that an unchanged comment
 * is not written again. Each face says what to show (a `CommentView`); this module lays it out the
 * same way for both, masks the password unless it may be shown, and holds the one vocabulary for
 * when it may: `showPassword` / `show_password` = auto | always | never.
 *
 * Pure and light (node:crypto only): no I/O, nothing logged, nothing of the agent's engine.
 */
import { createHash } from 'node:crypto';
import type { BranchView } from '../agent/api/schemas.js';
import { scrubber } from './scrub.js';

/**
 * A branch's connection, as the agent returns it (a type only: nothing is loaded at run time):
 * through the router when the agent runs one (database `<db>@<branch>`, `sslmode` require), else
 * the branch's own port. The comment never shows `direct`: that port is for use on the agent's box.
 */
export type Connection = Pick<BranchView['connection'], 'host' | 'port' | 'user' | 'password' | 'database' | 'uri'> &
  Partial<Pick<BranchView['connection'], 'sslmode'>>;

// ---- When the password is shown ---------------------------------------------------------------

/**
 * `auto` shows the password only in a private repository (asked from GitHub each time: one that
 * went public no longer shows it); `always` and `never` say what they mean. Words rather than
 * true/false because the setting has three values, as in `--color=auto|always|never`.
 */
export const SHOW_PASSWORD = ['auto', 'always', 'never'] as const;
export type ShowPassword = (typeof SHOW_PASSWORD)[number];

/** The spellings from before the one vocabulary, still accepted: `true`/`false` (and YAML booleans). */
const OLD_SPELLINGS: Readonly<Record<string, ShowPassword>> = { true: 'always', false: 'never' };

/** `auto`, `always`, `never`, or an old spelling (`true`, `false`, a boolean); null for anything else. */
export function parseShowPassword(value: unknown): ShowPassword | null {
  if (typeof value === 'boolean') return value ? 'always' : 'never';
  if (typeof value !== 'string') return null;
  if ((SHOW_PASSWORD as readonly string[]).includes(value)) return value as ShowPassword;
  return Object.hasOwn(OLD_SPELLINGS, value) ? OLD_SPELLINGS[value]! : null;
}

/** What a bad value's error says is accepted. */
export const SHOW_PASSWORD_CHOICES = `${SHOW_PASSWORD.join(', ')} (or the older true, false)`;

/** Whether this comment shows the password, and why (for the faces to word). */
export type PasswordDecision = { show: true; why: 'always' | 'private' } | { show: false; why: 'never' | 'public' };

/** Applies the rule; `isPrivate` is asked only for `auto`. */
export async function decidePassword(rule: ShowPassword, isPrivate: () => Promise<boolean>): Promise<PasswordDecision> {
  if (rule === 'always') return { show: true, why: 'always' };
  if (rule === 'never') return { show: false, why: 'never' };
  return (await isPrivate()) ? { show: true, why: 'private' } : { show: false, why: 'public' };
}

// ---- Marker and digest ---------------------------------------------------------------------------

/** Finds our comment among a PR's comments (together with the author check). A hidden HTML comment. */
export function commentMarker(database: string): string {
  return `<!-- betterpg/branch database=${database} -->`;
}

const DIGEST_RE = /<!-- betterpg:digest=([0-9a-f]+) -->/;

/** The digest a body carries, to skip updates that would change nothing. */
export function digestOf(body: string): string | null {
  return DIGEST_RE.exec(body)?.[1] ?? null;
}

// ---- Markdown pieces -----------------------------------------------------------------------------

const MASK = '********';

/** `postgresql://user:********@host:port/db` */
export function maskedUri(c: Connection): string {
  try {
    const u = new URL(c.uri);
    if (u.password) u.password = MASK;
    return u.toString();
  } catch {
    const query = c.sslmode ? `?sslmode=${c.sslmode}` : '';
    return `postgresql://${encodeURIComponent(c.user)}:${MASK}@${c.host}:${c.port}/${encodeURIComponent(c.database)}${query}`;
  }
}

/** Inline code that survives backticks and pipes in the value (names and output come from the PR). */
export function code(v: string | number): string {
  const s = String(v)
    .replace(/\|/g, '\\|')
    .replace(/[\r\n]+/g, ' ');
  const ticks = '`'.repeat(Math.max(1, ...[...s.matchAll(/`+/g)].map((m) => m[0].length + 1)));
  const pad = s.startsWith('`') || s.endsWith('`') ? ' ' : '';
  return `${ticks}${pad}${s}${pad}${ticks}`;
}

/** For HTML (GitHub does not render Markdown inside <summary>). */
export function html(v: string): string {
  return v.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A fenced block longer than any run of backticks inside. */
export function fence(lines: string[]): string {
  const body = lines.join('\n');
  const longest = Math.max(0, ...[...body.matchAll(/`+/g)].map((m) => m[0].length));
  const f = '`'.repeat(Math.max(3, longest + 1));
  return `${f}\n${body}\n${f}`;
}

/** A folded block of output; `summary` is HTML (escape names with `html`). */
export function details(summary: string, lines: string[], open: boolean): string {
  return [`<details${open ? ' open' : ''}><summary>${summary}</summary>`, '', fence(lines), '', '</details>'].join(
    '\n',
  );
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
export function when(at: string | Date): string {
  const d = typeof at === 'string' ? new Date(at) : at;
  return Number.isNaN(d.getTime()) ? String(at) : `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

// ---- The comment ---------------------------------------------------------------------------------

/** The branch's table: Branch, Status, Host, Port, Database, SSL (through the router), User, Password, Created, Migration(s). */
export interface BranchTable {
  parent: string;
  status?: string;
  connection?: Connection;
  /** The password and the connection string are shown in full; otherwise masked. */
  showPassword: boolean;
  /** The Password cell when it is hidden (Markdown). */
  passwordHidden: string;
  /** The Created cell (Markdown), if any. */
  created?: string;
  /** The last row: the Action's one `Migration`, the receiver's `Migrations` (files). */
  migration?: { label: string; cell: string };
}

export interface CommentView {
  database: string;
  branch: string;
  /** After the title's name: `deleted`, `migration failed`, ... */
  state?: string;
  /** The table and the connection string, for a branch that is there. */
  table?: BranchTable;
  /** Markdown blocks after the table (or under the title), e.g. `details(...)` of a failure. */
  blocks?: string[];
  /** The last line's parts, joined by ` · `; a `{ stamp }` part (a time) is shown but not part of the digest. */
  footer: Array<string | { stamp: string }>;
}

/**
 * The comment's Markdown: marker, digest, title, the table with the connection string (the
 * password masked unless `showPassword`), the blocks, the footer. When the password is hidden it
 * is also scrubbed from the blocks (output printed by the pull request's code may hold it).
 */
export function renderComment(v: CommentView): string {
  const t = v.table;
  const blocks: string[] = [];
  if (t) {
    const rows = ['| | |', '| --- | --- |', `| Branch | ${code(v.branch)} from ${code(t.parent)} |`];
    if (t.status) rows.push(`| Status | ${t.status} |`);
    const c = t.connection;
    if (c) {
      rows.push(`| Host | ${code(c.host)} |`, `| Port | ${code(c.port)} |`, `| Database | ${code(c.database)} |`);
      // Through the router: TLS is required, and a client given the fields one by one must ask for it.
      if (c.sslmode) rows.push(`| SSL | ${code(`sslmode=${c.sslmode}`)} |`);
      rows.push(`| User | ${code(c.user)} |`);
      rows.push(`| Password | ${t.showPassword ? code(c.password) : t.passwordHidden} |`);
    }
    if (t.created !== undefined) rows.push(`| Created | ${t.created} |`);
    if (t.migration) rows.push(`| ${t.migration.label} | ${t.migration.cell} |`);
    blocks.push(rows.join('\n'));
    if (c) blocks.push(fence([t.showPassword ? c.uri : maskedUri(c)]));
  }
  const password = t?.connection && !t.showPassword ? t.connection.password : null;
  const scrub = password ? scrubber([password]) : (s: string) => s;
  blocks.push(...(v.blocks ?? []).map(scrub));

  const title = `### 🐘 Preview database ${code(`${v.database}/${v.branch}`)}${v.state ? `: ${v.state}` : ''}`;
  const footer = (withStamp: boolean) =>
    `<sub>${v.footer.flatMap((p) => (typeof p === 'string' ? [p] : withStamp ? [p.stamp] : [])).join(' · ')}</sub>`;
  const content = (withStamp: boolean) => [title, ...blocks, footer(withStamp)].join('\n\n');
  const digest = createHash('sha256').update(content(false)).digest('hex').slice(0, 16);
  return `${commentMarker(v.database)}\n<!-- betterpg:digest=${digest} -->\n${content(true)}\n`;
}

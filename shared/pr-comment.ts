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
import { schemaCountLines, type BranchView, type SchemaDiffSummary } from '../agent/api/schemas.js';
import type { SafetyOutcome } from './safety-watch.js';
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

/** A fenced block longer than any run of backticks inside; `lang` colours it (`diff`). */
export function fence(lines: string[], lang = ''): string {
  const body = lines.join('\n');
  const longest = Math.max(0, ...[...body.matchAll(/`+/g)].map((m) => m[0].length));
  const f = '`'.repeat(Math.max(3, longest + 1));
  return `${f}${lang}\n${body}\n${f}`;
}

/** Characters of one line of output a comment shows (a one-line SQL file or a minified dump can be megabytes). */
export const LINE_MAX_CHARS = 1000;

/** A line cut to LINE_MAX_CHARS, saying how much was left out. */
export function clip(line: string, max = LINE_MAX_CHARS): string {
  return line.length <= max ? line : `${line.slice(0, max)}… (${count(line.length - max)} more characters)`;
}

/** A folded block of output (each line clipped); `summary` is HTML (escape names with `html`). */
export function details(summary: string, lines: string[], open: boolean): string {
  return [
    `<details${open ? ' open' : ''}><summary>${summary}</summary>`,
    '',
    fence(lines.map((l) => clip(l))),
    '',
    '</details>',
  ].join('\n');
}

/** Last lines only, each clipped: a comment is not a log viewer. */
export function lastLines(text: string, n = 15): string[] {
  const lines = text
    .replace(/\s+$/, '')
    .split('\n')
    .map((l) => clip(l));
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

/**
 * Running text from our side that may carry a name from the pull request (the agent's wording of
 * a flagged lock): on one line, HTML escaped, and the Markdown punctuation that can start emphasis,
 * code, a link or a table cell mid-line. Names themselves go in `code` (no mention, link or HTML
 * is made inside a code span).
 */
export function plain(v: string): string {
  return html(v.replace(/[\r\n]+/g, ' ')).replace(/[\\`*_[\]|~]/g, '\\$&');
}

/** `1234567` → `1,234,567` */
export function count(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** `7 days`, `12 hours`, `90 minutes`, `45 seconds`: the largest whole unit. */
export function span(ms: number): string {
  for (const [unit, size] of [
    ['day', 864e5],
    ['hour', 36e5],
    ['minute', 6e4],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size} ${unit}${ms === size ? '' : 's'}`;
  }
  const s = Math.round(ms / 1000);
  return `${s} second${s === 1 ? '' : 's'}`;
}

// ---- When the branch expires ---------------------------------------------------------------------

/** The agent renews the expiry of a `pr-<n>` branch on every PUT (expiry.prBranchTtl; agent/engine/expiry.ts). */
const PR_BRANCH = /^pr-\d+$/;

/**
 * How long after a PUT the agent set the branch to expire, when this PUT renewed it and the face
 * did not say how long (the agent's expiry.prBranchTtl): the whole number of hours (else minutes)
 * that fits between the expiry seen from the request's start and from its answer. Null when the
 * branch does not expire, is not one the agent renews, or no whole span fits (then the date is shown).
 */
export function renewedSpan(
  branch: string,
  expiresAt: string | null,
  request: { startedAt: number; answeredAt: number },
): number | null {
  if (expiresAt === null || !PR_BRANCH.test(branch)) return null;
  const at = Date.parse(expiresAt);
  if (Number.isNaN(at)) return null;
  // A second of slack each side: the agent's clock and ours read at other instants.
  const lo = at - request.answeredAt - 1000;
  const hi = at - request.startedAt + 1000;
  for (const unit of [36e5, 6e4]) {
    const n = Math.ceil(lo / unit);
    if (n >= 1 && n * unit <= hi) return n * unit;
  }
  return null;
}

export interface Expiry {
  /** When the agent deletes the branch; null: never. */
  expiresAt: string | null;
  protected: boolean;
  /** Every push renews the expiry to this long from then (the faces PUT the branch on each push); null: not renewed. */
  renewedMs: number | null;
}

/** The Expires cell: `deleted 7 days after the last push (…)`, a date, or never. */
export function expiryCell(e: Expiry): string {
  if (e.protected) return 'never (protected)';
  if (e.expiresAt === null) return 'never';
  if (e.renewedMs !== null)
    return `deleted ${span(e.renewedMs)} after the last push (${when(e.expiresAt)} without one)`;
  return `deleted ${when(e.expiresAt)}`;
}

// ---- The migration safety report -----------------------------------------------------------------

/** One watched migration: the Action's `migrate` command (no file), or one of the receiver's files. */
export interface SafetyEntry {
  file?: string;
  outcome: SafetyOutcome;
}

/** Rows of the locks table, over every entry; more are counted in a note. */
const SAFETY_ROWS = 40;

/** `AccessExclusiveLock` → `ACCESS EXCLUSIVE`, as `LOCK TABLE` and PostgreSQL's docs name it. */
function modeName(mode: string): string {
  return mode
    .replace(/Lock$/, '')
    .replace(/([a-z])([A-Z])/g, '$1 $2')
    .toUpperCase();
}

type Report = Extract<SafetyOutcome, { report: unknown }>['report'];

/**
 * A flagged line of the agent (`ACCESS EXCLUSIVE on orders for 3.2 s (table rewrite): blocks …`)
 * with its table name, which the pull request chose, in code and the rest escaped; the lock mode
 * in bold. A line whose table cannot be found is shown as code, whole.
 */
function flagLine(line: string, r: Report): string {
  const names = [...new Set([...r.locks.map((l) => l.table), ...r.rewritten, ...r.rows.map((x) => x.table)])].sort(
    (a, b) => b.length - a.length,
  );
  for (const name of names) {
    const i = line.indexOf(` on ${name} for `);
    if (i <= 0) continue;
    const rest = line.slice(i + 4 + name.length);
    return `**${plain(line.slice(0, i))}** on ${code(name)}${plain(rest)}`;
  }
  return code(line);
}

/**
 * The safety report as the comment shows it: what is flagged first, in a warning box, then one
 * compact table of the tables that existed before (lock, how long, rewritten, rows), per file for
 * the receiver. Null when nothing was watched. Names from the pull request are in code spans; the
 * table has at most SAFETY_ROWS rows.
 */
export function safetySection(entries: SafetyEntry[]): string | null {
  if (entries.length === 0) return null;
  const perFile = entries.some((e) => e.file !== undefined);
  const at = (e: SafetyEntry) => (e.file !== undefined ? `${code(e.file)}: ` : '');
  const flagged: string[] = [];
  const notes: string[] = [];
  const rows: string[] = [];
  let hidden = 0;
  let interval: number | null = null;
  let threshold: number | null = null;
  for (const e of entries) {
    if ('unavailable' in e.outcome) {
      notes.push(`${at(e)}no safety report (${plain(e.outcome.unavailable)})`);
      continue;
    }
    const r = e.outcome.report;
    interval ??= r.intervalMs;
    threshold ??= r.maxLockSeconds;
    for (const f of r.flagged) flagged.push(`${at(e)}${flagLine(f, r)}`);
    if (r.incomplete) notes.push(`${at(e)}report incomplete: ${plain(r.incomplete)}`);
    if (r.dropped.length) notes.push(`${at(e)}dropped ${r.dropped.map(code).join(', ')}`);
    const rewritten = new Set(r.rewritten);
    const rowsOf = new Map(r.rows.map((x) => [x.table, x]));
    const tables = [...new Set([...r.locks.map((l) => l.table), ...r.rewritten])];
    for (const table of tables) {
      if (rows.length >= SAFETY_ROWS) {
        hidden++;
        continue;
      }
      const l = r.locks.find((x) => x.table === table);
      const flag = l !== undefined && l.blocks !== null && l.seconds > r.maxLockSeconds;
      const lock = l ? `${flag ? '⚠️ ' : ''}${modeName(l.mode)}${l.blocks ? ` (blocks ${l.blocks})` : ''}` : '';
      const n = rowsOf.get(table);
      const rowCount = n === undefined || n.rows === null ? '?' : `${n.estimated ? '~' : ''}${count(n.rows)}`;
      const cells = [
        code(table),
        lock,
        l ? `${l.seconds.toFixed(1)} s` : '',
        rewritten.has(table) ? 'yes' : '',
        rowCount,
      ];
      rows.push(`| ${[...(perFile ? [e.file === undefined ? '' : code(e.file)] : []), ...cells].join(' | ')} |`);
    }
  }

  const out: string[] = [];
  const reports = entries.filter((e) => 'report' in e.outcome).length;
  if (flagged.length) {
    out.push(`#### ⚠️ Migration safety: ${flagged.length} flagged`);
    out.push(['> [!WARNING]', ...flagged.map((f) => `> - ${f}`)].join('\n'));
  } else if (reports) {
    out.push('#### ✅ Migration safety: nothing flagged');
  } else {
    out.push('#### Migration safety: no report');
  }
  if (rows.length) {
    const head = [...(perFile ? ['File'] : []), 'Table', 'Lock', 'Held', 'Rewritten', 'Rows'];
    out.push(
      [
        `| ${head.join(' | ')} |`,
        `| ${head.map(() => '---').join(' | ')} |`,
        ...rows,
        ...(hidden ? [`\n… and ${hidden} more table${hidden === 1 ? '' : 's'}`] : []),
      ].join('\n'),
    );
  } else if (reports) {
    out.push('No lock on a table that existed before, nothing rewritten.');
  }
  if (notes.length) out.push(notes.map((n) => `- ${n}`).join('\n'));
  if (reports)
    out.push(
      `<sub>Locks on tables that existed before, sampled every ${interval} ms from a separate session; ` +
        `flagged: a lock that blocks writes held over ${threshold} s. Rows: after the migration (~ estimated).</sub>`,
    );
  return out.join('\n\n');
}

// ---- The schema diff -----------------------------------------------------------------------------

/** Characters of the SQL diff a comment shows (the agent sends up to 256 KiB); the rest is counted. */
export const SCHEMA_SQL_MAX_CHARS = 30_000;

/**
 * What the pull request changed in the schema: one line per kind (`tables: 1 added, 2 altered`)
 * and the normalised SQL diff folded in `<details>`, cut at whole lines past SCHEMA_SQL_MAX_CHARS.
 * The SQL is the branch's own (the pull request's): it only goes in a fence, with lines clipped.
 */
export function schemaDiffSection(
  outcome: { diff: SchemaDiffSummary } | { unavailable: string },
  /** Where the whole diff is when the comment shows part of it (Markdown); default `bpg branch diff`. */
  o: { fullDiff?: string } = {},
): string {
  if ('unavailable' in outcome)
    return `#### Schema changes

- no schema diff (${plain(outcome.unavailable)})`;
  const d = outcome.diff;
  const against = code(d.against);
  if (d.identical) return `#### Schema changes: none against ${against}`;
  const out = [
    `#### Schema changes against ${against}`,
    schemaCountLines(d.counts)
      .map((l) => `- ${plain(l)}`)
      .join('\n'),
  ];
  const lines = d.sql.replace(/\n+$/, '').split('\n');
  const shown: string[] = [];
  let size = 0;
  for (const line of lines) {
    size += Math.min(line.length, LINE_MAX_CHARS) + 1;
    if (size > SCHEMA_SQL_MAX_CHARS) break;
    shown.push(clip(line));
  }
  const left = lines.length - shown.length;
  const more = left ? `… ${count(left)} more line${left === 1 ? '' : 's'}` : '';
  if (left) shown.push(more);
  out.push(
    [
      `<details><summary>SQL diff${left ? ` (first ${count(shown.length - 1)} of ${count(lines.length)} lines)` : ''}</summary>`,
      '',
      fence(shown, 'diff'),
      '',
      '</details>',
    ].join('\n'),
  );
  const notes: string[] = [];
  if (d.truncated) notes.push('the agent left part of the schema out of the diff (its limits)');
  if (left || d.truncated)
    notes.push(o.fullDiff ?? `the whole diff: ${code(`bpg branch diff ${d.branch}`)} on the agent`);
  if (notes.length) out.push(`<sub>${notes.join('; ')}.</sub>`);
  return out.join('\n\n');
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
  /** The Expires cell (see expiryCell), if known. */
  expires?: string;
  /** Rows of the face's own after Expires (Markdown cells): the Action's Role. */
  rows?: Array<{ label: string; cell: string }>;
  /** The last row: the Action's one `Migration`, the receiver's `Migrations` (files). */
  migration?: { label: string; cell: string };
}

/**
 * A block after the table. Each face keeps its blocks bounded; should the comment still pass
 * GitHub's limit, the longest blocks give way to their `omitted` line, longest first.
 */
export type Block = string | { md: string; omitted: string };

/** GitHub refuses a comment longer than this many characters. */
export const COMMENT_MAX_CHARS = 65_536;

export interface CommentView {
  database: string;
  branch: string;
  /** After the title's name: `deleted`, `migration failed`, ... */
  state?: string;
  /** The table and the connection string, for a branch that is there. */
  table?: BranchTable;
  /** Markdown blocks after the table (or under the title), e.g. `details(...)` of a failure. */
  blocks?: Block[];
  /**
   * Values that must never be in the comment (tokens, a role's password): replaced by `***` in
   * every block, as the password is when hidden. Blocks carry what the pull request printed or named.
   */
  secrets?: string[];
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
  const head: string[] = [];
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
    if (t.expires !== undefined) rows.push(`| Expires | ${t.expires} |`);
    for (const r of t.rows ?? []) rows.push(`| ${r.label} | ${r.cell} |`);
    if (t.migration) rows.push(`| ${t.migration.label} | ${t.migration.cell} |`);
    head.push(rows.join('\n'));
    if (c) head.push(fence([t.showPassword ? c.uri : maskedUri(c)]));
  }
  const password = t?.connection && !t.showPassword ? [t.connection.password] : [];
  const scrub = scrubber([...password, ...(v.secrets ?? [])]);
  const blocks = (v.blocks ?? []).map((b) =>
    typeof b === 'string' ? { md: scrub(b), omitted: OMITTED } : { md: scrub(b.md), omitted: b.omitted },
  );

  const title = `### 🐘 Preview database ${code(`${v.database}/${v.branch}`)}${v.state ? `: ${v.state}` : ''}`;
  const footer = (withStamp: boolean) =>
    `<sub>${v.footer.flatMap((p) => (typeof p === 'string' ? [p] : withStamp ? [p.stamp] : [])).join(' · ')}</sub>`;
  const content = (withStamp: boolean) => [title, ...head, ...blocks.map((b) => b.md), footer(withStamp)].join('\n\n');
  const body = () => {
    const digest = createHash('sha256').update(content(false)).digest('hex').slice(0, 16);
    return `${commentMarker(v.database)}\n<!-- betterpg:digest=${digest} -->\n${content(true)}\n`;
  };
  // Over GitHub's limit: the longest blocks give way to a line saying so, one at a time.
  let out = body();
  const order = blocks.map((_, i) => i).sort((a, b) => blocks[b]!.md.length - blocks[a]!.md.length);
  for (const i of order) {
    if (out.length <= COMMENT_MAX_CHARS) break;
    blocks[i]!.md =
      `_${blocks[i]!.omitted}: left out, the comment would be longer than GitHub allows (${count(COMMENT_MAX_CHARS)} characters)._`;
    out = body();
  }
  return out.length <= COMMENT_MAX_CHARS
    ? out
    : `${out.slice(0, COMMENT_MAX_CHARS - 80)}\n\n_… cut at GitHub's limit._\n`;
}

const OMITTED = 'A section';

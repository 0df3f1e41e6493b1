/**
 * What the receiver's sticky pull request comment says: one per PR and database, laid out by the
 * shared comment module (shared/pr-comment.ts) as the GitHub Action's is (branch, parent, status,
 * host, port, database, user, connection string with the password masked unless shown, creation
 * time, migration result; "deleted" after close). Pure functions: no I/O, nothing logged.
 */
import {
  code,
  details,
  expiryCell,
  fence,
  html,
  lastLines,
  renderComment as layOut,
  safetySection,
  schemaDiffSection,
  seconds,
  when,
  type CommentView,
  type Connection,
  type Expiry,
} from '../../shared/pr-comment.js';
import type { SafetyOutcome } from '../../shared/safety-watch.js';
import type { SchemaDiffOutcome } from '../../shared/schema-diff.js';
import type { MigrationFormat } from './migration-layouts.js';

export interface MigrationSummary {
  /** Folder read, or null when none is configured. */
  path: string | null;
  /** The layout the files were read in (migration-layouts.ts), and what it was detected from if it was. */
  format?: MigrationFormat;
  detectedFrom?: string;
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
  /** Each file this run ran (applied or failed), in order: how long it took, what it did to the tables (the agent's watch; null: none). */
  runs?: Array<{ name: string; ms: number; safety: SafetyOutcome | null }>;
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
  /** When the branch goes. */
  expiry?: Expiry;
  migrations?: MigrationSummary;
  /** What the branch changed in the schema against its parent (null or absent: none to show). */
  schemaDiff?: SchemaDiffOutcome | null;
  /** Head commit the comment describes. */
  commit?: string;
  /** For `error`: what failed, one or a few lines; for `refused`: which migration limit was passed. */
  error?: string;
  /** For `refused`: not a limit but a layout its tool refuses (two migrations of one version, ...). */
  refusedLayout?: boolean;
}

/**
 * The comment's Markdown. No time stamp, so that its digest can tell "nothing changed"; the commit
 * is in it, so a push with the same result still says which commit it describes.
 */
export function renderComment(i: CommentInput): string {
  const footer = [...(i.commit ? [`Commit ${i.commit.slice(0, 12)}`] : []), 'BetterPG webhook'];
  const base = { database: i.database, branch: i.branch, footer };
  if (i.state === 'deleted') {
    return layOut({
      ...base,
      state: 'deleted',
      blocks: [
        `The pull request was closed: the branch ${code(i.branch)} of ${code(i.database)} was deleted; its data and connection details are no longer valid. Reopening the pull request makes a fresh one.`,
      ],
    });
  }
  if (i.state === 'refused') {
    return layOut({
      ...base,
      state: 'migrations refused',
      blocks: [
        fence(lastLines(i.error ?? 'over a limit')),
        i.refusedLayout
          ? 'Nothing was applied: the branch was not created, or was left as it was. The migration tool itself would refuse this folder: fix it, then push.'
          : "Nothing was applied: the branch was not created, or was left as it was. Keep the folder within the limits, or raise them in the receiver's config (`migrations.maxFiles`, `maxFileSize`, `maxTotalSize`).",
      ],
    });
  }
  if (i.state === 'error') {
    return layOut({
      ...base,
      state: 'not ready',
      blocks: [
        fence(lastLines(i.error ?? 'unknown error')),
        'Push a commit, or close and reopen the pull request, to try again.',
      ],
    });
  }

  const m = i.migrations;
  let created: string | undefined;
  if (i.created && i.createMs !== undefined) created = `in ${seconds(i.createMs)} for this pull request`;
  else if (i.created === false) created = `${i.createdAt ? when(i.createdAt) : 'earlier'} (reused)`;
  const view: CommentView = {
    ...base,
    ...(i.state === 'migration-failed' ? { state: 'migration failed' } : {}),
    table: {
      parent: i.parent,
      ...(i.branchStatus ? { status: i.branchStatus } : {}),
      ...(i.connection ? { connection: i.connection } : {}),
      showPassword: i.showPassword,
      passwordHidden: `hidden${i.passwordHiddenReason ? ` (${i.passwordHiddenReason})` : ''}: \`bpg branch get ${i.database}/${i.branch}\` on the agent`,
      ...(created !== undefined ? { created } : {}),
      ...(i.expiry ? { expires: expiryCell(i.expiry) } : {}),
      ...(m?.runs?.length ? { rows: [{ label: 'Migration time', cell: runTimes(m.runs) }] } : {}),
      ...(m ? { migration: { label: 'Migrations', cell: migrationLine(m) } } : {}),
    },
    blocks: [],
  };
  if (m?.failed) {
    view.blocks!.push(
      `${code(m.failed.name)} was rolled back and the files after it were not run; the branch is kept for debugging.`,
      details(`Error from <code>${html(m.failed.name)}</code>`, lastLines(m.failed.output), true),
    );
  }
  const watched = (m?.runs ?? []).flatMap((r) => (r.safety ? [{ file: r.name, outcome: r.safety }] : []));
  const safety = safetySection(watched);
  if (safety) view.blocks!.push({ md: safety, omitted: 'The migration safety report' });
  if (i.schemaDiff) view.blocks!.push({ md: schemaDiffSection(i.schemaDiff), omitted: 'The schema diff' });
  if (m?.changed.length) {
    view.blocks!.push(
      `Changed since they were applied (not run again; \`resetOnPush\` re-applies from scratch): ${names(m.changed)}`,
    );
  }
  return layOut(view);
}

/** Files named in a cell; the rest counted (a folder may hold 1,000). */
const CELL_FILES = 20;

function names(files: string[]): string {
  const shown = files.slice(0, CELL_FILES).map(code).join(', ');
  return files.length > CELL_FILES ? `${shown} and ${files.length - CELL_FILES} more` : shown;
}

/** `3.1 s: `001.sql` 2.9 s, `002.sql` 0.2 s` */
function runTimes(runs: NonNullable<MigrationSummary['runs']>): string {
  const total = runs.reduce((n, r) => n + r.ms, 0);
  if (runs.length === 1) return seconds(total);
  const each = runs.slice(0, CELL_FILES).map((r) => `${code(r.name)} ${seconds(r.ms)}`);
  const more = runs.length > CELL_FILES ? ` and ${runs.length - CELL_FILES} more` : '';
  return `${seconds(total)}: ${each.join(', ')}${more}`;
}

function migrationLine(m: MigrationSummary): string {
  if (m.path === null) return 'none configured';
  if (m.missing) return `no folder ${code(m.path)} at this commit`;
  const applied = m.applied.length ? `${m.applied.length} applied: ${names(m.applied)}` : '';
  const before = m.alreadyApplied.length ? `${m.alreadyApplied.length} applied before` : '';
  if (m.failed)
    return (
      `❌ failed at ${code(m.failed.name)}` +
      (applied || before ? ` (${[applied, before].filter(Boolean).join('; ')})` : '') +
      layoutNote(m)
    );
  if (!applied && !before)
    return `no ${!m.format || m.format === 'plain' ? '`.sql` files' : 'migrations'} in ${code(m.path)}${layoutNote(m)}`;
  return '✅ ' + [applied || 'no new files', before].filter(Boolean).join('; ') + layoutNote(m);
}

/** ` · layout `prisma` (detected from `migration_lock.toml`)`; plain has nothing to be detected from. */
function layoutNote(m: MigrationSummary): string {
  if (!m.format) return '';
  const how =
    m.detectedFrom === undefined
      ? ''
      : m.format === 'plain'
        ? ' (detected)'
        : ` (detected from ${code(m.detectedFrom)})`;
  return ` · layout ${code(m.format)}${how}`;
}

/**
 * What the Action's pull request comment and job summary say, laid out by the shared comment
 * module (shared/pr-comment.ts). Pure: the same model gives the same text, and the password only
 * appears when the caller says it may.
 */
import type { BranchView } from '../../agent/api/schemas.js';
import {
  code,
  details,
  expiryCell,
  renderComment,
  safetySection,
  schemaDiffSection,
  seconds,
  when,
  type CommentView,
  type Expiry,
} from '../../shared/pr-comment.js';
import type { SafetyOutcome } from '../../shared/safety-watch.js';
import type { SchemaDiffOutcome } from '../../shared/schema-diff.js';
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
      /** When the branch goes (renewed on every push when the run was a pull request's). */
      expiry: Expiry;
      /** The `role` input's name (its password is never in a comment or summary), or null. */
      role: string | null;
      /** What the migration held and rewrote (null: no migration, or an agent without watches). */
      safety: SafetyOutcome | null;
      /** What the branch changed in the schema against its parent (null: not asked, or an older agent). */
      schemaDiff: SchemaDiffOutcome | null;
    }
  | {
      kind: 'deleted';
      database: string;
      branchName: string;
      /** False when it was already gone. */
      deleted: boolean;
    };

export interface RenderOptions {
  /** Put the password in the text (only a private repository's comment, or show_password: always). */
  showPassword: boolean;
  /** Link to the workflow run, if known. */
  runUrl?: string;
  /** For tests; default now. */
  now?: Date;
  /** Never in the text (tokens, the role's password): scrubbed from what the migration printed or named. */
  secrets?: string[];
}

export function render(r: Report, o: RenderOptions): string {
  // The time is shown, but is not part of the digest: a re-run that changes nothing leaves the comment alone.
  const footer = [
    o.runUrl ? `[Workflow run](${o.runUrl})` : 'Updated',
    { stamp: when(o.now ?? new Date()) },
    'BetterPG',
  ];
  if (r.kind === 'deleted') {
    const what = r.deleted ? 'was deleted' : 'was already gone';
    return renderComment({
      database: r.database,
      branch: r.branchName,
      state: 'deleted',
      blocks: [
        `The branch ${code(r.branchName)} of ${code(r.database)} ${what}; its data and connection details are no longer valid.`,
      ],
      footer,
    });
  }

  const b = r.branch;
  const parent = b.parent?.split('/').pop() ?? 'none';
  const m = r.migration;
  const failed = m !== null && !m.ok;
  let created: string;
  if (r.command === 'get') created = when(b.createdAt);
  else if (r.reset) created = `reset to ${code(parent)} in ${seconds(r.ms)} by this run`;
  else if (r.created) created = `in ${seconds(r.ms)} by this run`;
  else created = `${when(b.createdAt)} (reused by this run)`;
  let migration = r.command === 'get' ? 'not run (command `get`)' : 'none configured';
  if (m)
    migration = m.ok
      ? `✅ succeeded in ${seconds(m.ms)}`
      : `❌ failed (${m.exitCode === null ? 'did not run to the end' : `exit code ${m.exitCode}`}) after ${seconds(m.ms)}`;

  const view: CommentView = {
    database: r.database,
    branch: b.branch,
    ...(failed ? { state: 'migration failed' } : {}),
    table: {
      parent,
      status: b.status,
      connection: b.connection,
      showPassword: o.showPassword,
      passwordHidden: "hidden (in the step's `password` output)",
      created,
      expires: expiryCell(r.expiry),
      ...(r.role
        ? {
            rows: [
              {
                label: 'Role',
                cell: `${code(r.role)}, owner of the database's objects (password in the step's \`role_password\` output)`,
              },
            ],
          }
        : {}),
      migration: { label: 'Migration', cell: migration },
    },
    blocks: [],
    footer,
    secrets: o.secrets ?? [],
  };
  const safety = r.safety ? safetySection([{ outcome: r.safety }]) : null;
  if (safety) view.blocks!.push({ md: safety, omitted: 'The migration safety report' });
  if (r.schemaDiff)
    view.blocks!.push({
      md: schemaDiffSection(r.schemaDiff, { fullDiff: "the whole diff: the step's `schema_diff` output" }),
      omitted: 'The schema diff',
    });
  if (m && m.tail.length) {
    const summary =
      m.lines > m.tail.length ? `Migration output (last ${m.tail.length} of ${m.lines} lines)` : 'Migration output';
    view.blocks!.push({ md: details(summary, m.tail, failed), omitted: 'The migration output' });
  }
  return renderComment(view);
}

/**
 * What the Action's pull request comment and job summary say, laid out by the shared comment
 * module (shared/pr-comment.ts). Pure: the same model gives the same text, and the password only
 * appears when the caller says it may.
 */
import type { BranchView } from '../../agent/api/schemas.js';
import { code, details, renderComment, seconds, when, type CommentView } from '../../shared/pr-comment.js';
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
  /** Put the password in the text (only a private repository's comment, or show_password: always). */
  showPassword: boolean;
  /** Link to the workflow run, if known. */
  runUrl?: string;
  /** For tests; default now. */
  now?: Date;
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
  if (r.reset) created = `reset to ${code(parent)} in ${seconds(r.ms)} by this run`;
  else if (r.created) created = `in ${seconds(r.ms)} by this run`;
  else created = `${when(b.createdAt)} (reused by this run)`;
  let migration = 'none configured';
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
      migration: { label: 'Migration', cell: migration },
    },
    blocks: [],
    footer,
  };
  if (m && m.tail.length) {
    const summary =
      m.lines > m.tail.length ? `Migration output (last ${m.tail.length} of ${m.lines} lines)` : 'Migration output';
    view.blocks!.push(details(summary, m.tail, failed));
  }
  return renderComment(view);
}

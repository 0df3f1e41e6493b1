import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SafetyReport } from '../../agent/api/schemas.js';
import {
  COMMENT_MAX_CHARS,
  count,
  details,
  expiryCell,
  plain,
  renderComment,
  renewedSpan,
  safetySection,
  span,
  type CommentView,
} from '../pr-comment.js';

/**
 * What the comment says about a pull request's migrations (issue 15): the safety report, the
 * expiry, and the limits on what the pull request can put in it (its names, its size).
 */

/** A report as the agent answers it (agent/engine/lock-report.ts), for one statement. */
function report(o: Partial<SafetyReport> = {}): SafetyReport {
  return {
    durationMs: 1200,
    locks: [],
    rewritten: [],
    dropped: [],
    rows: [],
    flagged: [],
    maxLockSeconds: 1,
    samples: 24,
    intervalMs: 50,
    incomplete: null,
    ...o,
  };
}

const lock = (table: string, mode: string, seconds: number, blocks: 'reads and writes' | 'writes' | null) => ({
  table,
  mode,
  seconds,
  blocks,
});

/** The statements a reviewer wants told apart, as the agent reports them on a big `orders`. */
const STATEMENTS: Record<string, SafetyReport> = {
  'ADD COLUMN ... DEFAULT 0': report({
    locks: [lock('orders', 'AccessExclusiveLock', 0.1, 'reads and writes')],
    rows: [{ table: 'orders', rows: 1_500_000, estimated: false }],
  }),
  'ADD COLUMN ... DEFAULT random()': report({
    locks: [lock('orders', 'AccessExclusiveLock', 6.5, 'reads and writes')],
    rewritten: ['orders'],
    rows: [{ table: 'orders', rows: 1_500_000, estimated: false }],
    flagged: ['ACCESS EXCLUSIVE on orders for 6.5 s (table rewrite): blocks reads and writes on production'],
  }),
  'CREATE INDEX': report({
    locks: [lock('orders', 'ShareLock', 2.3, 'writes')],
    rows: [{ table: 'orders', rows: 1_500_000, estimated: false }],
    flagged: ['SHARE on orders for 2.3 s: blocks writes on production'],
  }),
  'CREATE INDEX CONCURRENTLY': report({
    locks: [lock('orders', 'ShareUpdateExclusiveLock', 4.1, null)],
    rows: [{ table: 'orders', rows: 1_500_000, estimated: false }],
  }),
  'ALTER COLUMN TYPE': report({
    locks: [lock('orders', 'AccessExclusiveLock', 3.2, 'reads and writes')],
    rewritten: ['orders'],
    rows: [{ table: 'orders', rows: 1_500_000, estimated: false }],
    flagged: ['ACCESS EXCLUSIVE on orders for 3.2 s (table rewrite): blocks reads and writes on production'],
  }),
  'a long UPDATE': report({
    locks: [lock('orders', 'RowExclusiveLock', 9.8, null)],
    rows: [{ table: 'orders', rows: 1_500_000, estimated: false }],
  }),
};

const HEAD = '| Table | Lock | Held | Rewritten | Rows |\n| --- | --- | --- | --- | --- |';

describe('the safety report in the comment', () => {
  it('each statement: flagged ones first in a warning box, then one row per table', () => {
    const expected: Record<string, string> = {
      'ADD COLUMN ... DEFAULT 0': [
        '#### ✅ Migration safety: nothing flagged',
        `${HEAD}\n| \`orders\` | ACCESS EXCLUSIVE (blocks reads and writes) | 0.1 s |  | 1,500,000 |`,
      ].join('\n\n'),
      'ADD COLUMN ... DEFAULT random()': [
        '#### ⚠️ Migration safety: 1 flagged',
        '> [!WARNING]\n> - **ACCESS EXCLUSIVE** on `orders` for 6.5 s (table rewrite): blocks reads and writes on production',
        `${HEAD}\n| \`orders\` | ⚠️ ACCESS EXCLUSIVE (blocks reads and writes) | 6.5 s | yes | 1,500,000 |`,
      ].join('\n\n'),
      'CREATE INDEX': [
        '#### ⚠️ Migration safety: 1 flagged',
        '> [!WARNING]\n> - **SHARE** on `orders` for 2.3 s: blocks writes on production',
        `${HEAD}\n| \`orders\` | ⚠️ SHARE (blocks writes) | 2.3 s |  | 1,500,000 |`,
      ].join('\n\n'),
      'CREATE INDEX CONCURRENTLY': [
        '#### ✅ Migration safety: nothing flagged',
        `${HEAD}\n| \`orders\` | SHARE UPDATE EXCLUSIVE | 4.1 s |  | 1,500,000 |`,
      ].join('\n\n'),
      'ALTER COLUMN TYPE': [
        '#### ⚠️ Migration safety: 1 flagged',
        '> [!WARNING]\n> - **ACCESS EXCLUSIVE** on `orders` for 3.2 s (table rewrite): blocks reads and writes on production',
        `${HEAD}\n| \`orders\` | ⚠️ ACCESS EXCLUSIVE (blocks reads and writes) | 3.2 s | yes | 1,500,000 |`,
      ].join('\n\n'),
      'a long UPDATE': [
        '#### ✅ Migration safety: nothing flagged',
        `${HEAD}\n| \`orders\` | ROW EXCLUSIVE | 9.8 s |  | 1,500,000 |`,
      ].join('\n\n'),
    };
    const foot =
      '<sub>Locks on tables that existed before, sampled every 50 ms from a separate session; flagged: a lock that blocks writes held over 1 s. Rows: after the migration (~ estimated).</sub>';
    for (const [statement, r] of Object.entries(STATEMENTS)) {
      assert.equal(safetySection([{ outcome: { report: r } }]), `${expected[statement]}\n\n${foot}`, statement);
    }
  });

  it('per file for the receiver: a File column, flagged lines named by file, notes for what is missing', () => {
    const text = safetySection([
      { file: '001_rewrite.sql', outcome: { report: STATEMENTS['ADD COLUMN ... DEFAULT random()']! } },
      { file: '002_update.sql', outcome: { report: STATEMENTS['a long UPDATE']! } },
      { file: '003_drop.sql', outcome: { report: report({ dropped: ['legacy', 'audit'] }) } },
      { file: '004_gone.sql', outcome: { unavailable: 'could not get the report: the agent answered 404 not_found' } },
      {
        file: '005_cut.sql',
        outcome: { report: report({ incomplete: 'lock sampling stopped: connection terminated' }) },
      },
    ])!;
    assert.match(
      text,
      /^#### ⚠️ Migration safety: 1 flagged\n\n> \[!WARNING\]\n> - `001_rewrite.sql`: \*\*ACCESS EXCLUSIVE\*\* on `orders`/,
    );
    assert.ok(
      text.includes(
        [
          '| File | Table | Lock | Held | Rewritten | Rows |',
          '| --- | --- | --- | --- | --- | --- |',
          '| `001_rewrite.sql` | `orders` | ⚠️ ACCESS EXCLUSIVE (blocks reads and writes) | 6.5 s | yes | 1,500,000 |',
          '| `002_update.sql` | `orders` | ROW EXCLUSIVE | 9.8 s |  | 1,500,000 |',
        ].join('\n'),
      ),
      text,
    );
    assert.ok(text.includes('- `003_drop.sql`: dropped `legacy`, `audit`'));
    assert.ok(
      text.includes(
        '- `004_gone.sql`: no safety report (could not get the report: the agent answered 404 not\\_found)',
      ),
    );
    assert.ok(text.includes('- `005_cut.sql`: report incomplete: lock sampling stopped: connection terminated'));
  });

  it('no report at all, nothing locked, estimated and unknown row counts', () => {
    assert.equal(safetySection([]), null);
    assert.equal(
      safetySection([{ outcome: { unavailable: 'could not start watching the migration: 64 watches' } }]),
      '#### Migration safety: no report\n\n- no safety report (could not start watching the migration: 64 watches)',
    );
    assert.match(
      safetySection([{ outcome: { report: report() } }])!,
      /nothing flagged\n\nNo lock on a table that existed before, nothing rewritten\./,
    );
    const rows = safetySection([
      {
        outcome: {
          report: report({
            locks: [lock('a', 'RowExclusiveLock', 0.1, null), lock('b', 'RowExclusiveLock', 0.1, null)],
            rows: [
              { table: 'a', rows: 12_345_678, estimated: true },
              { table: 'b', rows: null, estimated: true },
            ],
          }),
        },
      },
    ])!;
    assert.ok(rows.includes('| `a` | ROW EXCLUSIVE | 0.1 s |  | ~12,345,678 |'));
    assert.ok(rows.includes('| `b` | ROW EXCLUSIVE | 0.1 s |  | ? |'));
  });

  it('names from the pull request cannot make Markdown, HTML, links or mentions, nor break the table', () => {
    const evil = '"x`|<img src=x onerror=alert(1)>|@octocat #1 [a](http://e.vil)\n## heading"';
    const r = report({
      locks: [lock(evil, 'AccessExclusiveLock', 2, 'reads and writes')],
      rewritten: [evil],
      rows: [{ table: evil, rows: 1, estimated: false }],
      flagged: [`ACCESS EXCLUSIVE on ${evil} for 2.0 s (table rewrite): blocks reads and writes on production`],
    });
    const text = safetySection([{ file: 'a`b|<c>.sql', outcome: { report: r } }])!;
    // The name only inside code spans (backslash-escaped pipes, no newline), never as HTML or text.
    const inCode = '``"x`\\|<img src=x onerror=alert(1)>\\|@octocat #1 [a](http://e.vil) ## heading"``';
    assert.ok(text.includes(`on ${inCode} for 2.0 s (table rewrite)`), text);
    assert.ok(text.includes(`| ${inCode} | ⚠️ ACCESS EXCLUSIVE`));
    assert.ok(text.includes('`` a`b\\|<c>.sql ``') || text.includes('``a`b\\|<c>.sql``'), text);
    for (const line of text.split('\n').filter((l) => l.startsWith('| `'))) {
      // Every row has as many cells as the header: no pipe got out of its code span.
      assert.equal(line.split(/(?<!\\)\|/).length, 8, line);
    }
    assert.ok(!text.includes('\n## heading'));
    // A flagged line whose table is not among the report's names is shown whole, as code.
    const odd = safetySection([{ outcome: { report: report({ flagged: ['something <b>odd</b>'] }) } }])!;
    assert.ok(odd.includes('> - `something <b>odd</b>`'));
    assert.equal(
      plain('a *b* _c_ `d` [e] <f> & |g| ~h~'),
      'a \\*b\\* \\_c\\_ \\`d\\` \\[e\\] &lt;f&gt; &amp; \\|g\\| \\~h\\~',
    );
  });

  it('at most 40 table rows, the rest counted', () => {
    const locks = Array.from({ length: 55 }, (_, i) => lock(`t${i}`, 'RowExclusiveLock', 0.1, null));
    const text = safetySection([{ outcome: { report: report({ locks }) } }])!;
    assert.equal(text.split('\n').filter((l) => l.startsWith('| `t')).length, 40);
    assert.ok(text.includes('\n… and 15 more tables'));
  });
});

describe('when the branch expires', () => {
  it('renewed on every push, a date, never', () => {
    const at = '2026-12-04T10:00:00.000Z';
    assert.equal(
      expiryCell({ expiresAt: at, protected: false, renewedMs: 7 * 864e5 }),
      'deleted 7 days after the last push (2026-12-04 10:00 UTC without one)',
    );
    assert.equal(expiryCell({ expiresAt: at, protected: false, renewedMs: null }), 'deleted 2026-12-04 10:00 UTC');
    assert.equal(expiryCell({ expiresAt: null, protected: false, renewedMs: null }), 'never');
    assert.equal(expiryCell({ expiresAt: at, protected: true, renewedMs: null }), 'never (protected)');
    assert.deepEqual(
      [span(864e5), span(3 * 864e5), span(36e5), span(90 * 6e4), span(45_000)],
      ['1 day', '3 days', '1 hour', '90 minutes', '45 seconds'],
    );
    assert.equal(count(1234567), '1,234,567');
  });

  it('the renewal the agent applied, read back from the expiry it set', () => {
    const start = Date.parse('2026-11-27T10:00:00.000Z');
    const at = (ms: number) => new Date(ms).toISOString();
    const week = 7 * 864e5;
    // Set while the request ran (5 s): 7 days from some instant inside it.
    assert.equal(renewedSpan('pr-7', at(start + 2_000 + week), { startedAt: start, answeredAt: start + 5_000 }), week);
    // An agent configured for 90 minutes.
    assert.equal(
      renewedSpan('pr-7', at(start + 300 + 90 * 6e4), { startedAt: start, answeredAt: start + 400 }),
      90 * 6e4,
    );
    // No whole span fits: a TTL from before, not renewed.
    assert.equal(
      renewedSpan('pr-7', at(start + 3 * 864e5 + 1234567), { startedAt: start, answeredAt: start + 100 }),
      null,
    );
    // Only pr-<n> branches are renewed by the agent; none expiring, none renewed.
    assert.equal(renewedSpan('feature', at(start + week), { startedAt: start, answeredAt: start + 100 }), null);
    assert.equal(renewedSpan('pr-7', null, { startedAt: start, answeredAt: start + 100 }), null);
  });
});

describe('the comment within GitHub limits', () => {
  const view = (blocks: CommentView['blocks'], o: Partial<CommentView> = {}): CommentView => ({
    database: 'app',
    branch: 'pr-7',
    table: {
      parent: 'main',
      showPassword: false,
      passwordHidden: 'hidden',
      connection: {
        host: 'h',
        port: 1,
        user: 'postgres',
        password: 'branch-password-123',
        database: 'app',
        uri: 'postgresql://postgres:branch-password-123@h:1/app',
      },
    },
    blocks,
    footer: ['BetterPG'],
    ...o,
  });

  it('the longest blocks give way to a line saying so; the rest stays whole', () => {
    const huge = Array.from({ length: 5000 }, (_, i) => `line ${i} ${'x'.repeat(20)}`);
    const body = renderComment(
      view([
        { md: 'the safety report', omitted: 'The migration safety report' },
        { md: details('Schema diff', huge, false), omitted: 'The schema diff' },
        { md: details('Migration output', huge.slice(0, 1000), false), omitted: 'The migration output' },
      ]),
    );
    assert.ok(body.length <= COMMENT_MAX_CHARS, `${body.length}`);
    assert.ok(body.includes('the safety report'));
    assert.ok(
      body.includes('_The schema diff: left out, the comment would be longer than GitHub allows (65,536 characters)._'),
    );
    assert.ok(body.includes('<summary>Migration output</summary>'), 'the next one fits now');
    assert.ok(body.trimEnd().endsWith('<sub>BetterPG</sub>'));
    assert.equal(body.split('<details').length, body.split('</details>').length, 'no block cut in half');
  });

  it('one block over the limit by itself is replaced; under the limit nothing changes', () => {
    const small = renderComment(view(['short']));
    assert.ok(small.includes('\n\nshort\n\n'));
    const body = renderComment(view(['y'.repeat(70_000)]));
    assert.ok(body.length <= COMMENT_MAX_CHARS);
    assert.match(body, /_A section: left out, the comment would be longer than GitHub allows/);
  });

  it('secrets are scrubbed from every block, whatever the password rule', () => {
    const token = 'ghs_abcdefghijklmnop';
    const shown = renderComment(
      view([`table "${token}" and role-password-456`], {
        secrets: [token, 'role-password-456'],
        table: { ...view([]).table!, showPassword: true },
      }),
    );
    assert.ok(!shown.includes(token) && !shown.includes('role-password-456'));
    assert.ok(shown.includes('table "***" and ***'));
    assert.ok(shown.includes('branch-password-123'), 'the branch password where the rule shows it');
  });
});

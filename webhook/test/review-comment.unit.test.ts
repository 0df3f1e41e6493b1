import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SCHEMA_KINDS, type SafetyReport, type SchemaDiff } from '../../agent/api/schemas.js';
import { renderComment, type CommentInput } from '../src/comment.js';
import { withoutOwnSchema, withoutOwnTable } from '../src/migrations.js';

/** The receiver's comment about a pull request's migrations (issue 15), without the stack. */

const report = (o: Partial<SafetyReport> = {}): SafetyReport => ({
  durationMs: 1000,
  locks: [],
  rewritten: [],
  dropped: [],
  rows: [],
  flagged: [],
  maxLockSeconds: 1,
  samples: 20,
  intervalMs: 50,
  incomplete: null,
  ...o,
});

const input = (o: Partial<CommentInput> = {}): CommentInput => ({
  state: 'ready',
  database: 'shop',
  branch: 'pr-7',
  parent: 'main',
  branchStatus: 'running',
  connection: {
    host: 'db.example',
    port: 15433,
    user: 'postgres',
    password: 'p4ssw0rd-secret',
    database: 'shop',
    uri: 'postgresql://postgres:p4ssw0rd-secret@db.example:15433/shop',
  },
  showPassword: false,
  created: true,
  createMs: 1500,
  commit: 'a'.repeat(40),
  ...o,
});

/** The SQL diff of a real run: the receiver's schema and table, made by its first file, among the PR's changes. */
const SQL = [
  '--- shop/main',
  '+++ shop/pr-7',
  '@@ added schema betterpg @@',
  '+CREATE SCHEMA betterpg;',
  '@@ added table betterpg.migrations @@',
  '+CREATE TABLE betterpg.migrations (',
  '+    name text NOT NULL',
  '+);',
  '@@ added table public.audit @@',
  '+CREATE TABLE public.audit (',
  '+    id bigint NOT NULL',
  '+);',
  '@@ added constraint migrations_pkey on betterpg.migrations @@',
  '+ALTER TABLE betterpg.migrations ADD CONSTRAINT migrations_pkey PRIMARY KEY (name);',
  '@@ added constraint audit_pkey on public.audit @@',
  '+ALTER TABLE public.audit ADD CONSTRAINT audit_pkey PRIMARY KEY (id);',
].join('\n');

function diff(): SchemaDiff {
  const counts = Object.fromEntries(
    SCHEMA_KINDS.map((k) => [k, { added: 0, dropped: 0, altered: 0 }]),
  ) as SchemaDiff['counts'];
  counts.schema.added = 1;
  counts.table.added = 2;
  counts.constraint.added = 2;
  const change = (kind: SchemaDiff['changes'][number]['kind'], name: string, table: string | null = null) => ({
    kind,
    change: 'added' as const,
    name,
    table,
    details: [],
    column: null,
  });
  return {
    branch: 'shop/pr-7',
    against: 'shop/main',
    identical: false,
    counts,
    changes: [
      change('schema', 'betterpg'),
      change('table', 'betterpg.migrations'),
      change('table', 'public.audit'),
      change('constraint', 'migrations_pkey', 'betterpg.migrations'),
      change('constraint', 'audit_pkey', 'public.audit'),
    ],
    changesOmitted: 0,
    sql: SQL,
    truncated: false,
    truncatedKinds: [],
  };
}

describe("the receiver's review comment", () => {
  it('per-file times and safety reports, the expiry, the schema diff; flagged first', () => {
    const body = renderComment(
      input({
        expiry: { expiresAt: '2026-12-04T10:00:00.000Z', protected: false, renewedMs: 7 * 864e5 },
        migrations: {
          path: 'db/migrations',
          applied: ['001_rewrite.sql', '002_touch.sql'],
          alreadyApplied: [],
          changed: [],
          runs: [
            {
              name: '001_rewrite.sql',
              ms: 6500,
              safety: {
                report: report({
                  locks: [{ table: 'orders', mode: 'AccessExclusiveLock', seconds: 6.4, blocks: 'reads and writes' }],
                  rewritten: ['orders'],
                  rows: [{ table: 'orders', rows: 2_000_000, estimated: false }],
                  flagged: [
                    'ACCESS EXCLUSIVE on orders for 6.4 s (table rewrite): blocks reads and writes on production',
                  ],
                }),
              },
            },
            { name: '002_touch.sql', ms: 800, safety: null },
          ],
        },
        schemaDiff: withoutOwnSchema({ diff: diff() }),
      }),
    );
    const rows = body.split('\n').filter((l) => /^\| (Created|Expires|Migration time|Migrations) \|/.test(l));
    assert.deepEqual(rows, [
      '| Created | in 1.5 s for this pull request |',
      '| Expires | deleted 7 days after the last push (2026-12-04 10:00 UTC without one) |',
      '| Migration time | 7.3 s: `001_rewrite.sql` 6.5 s, `002_touch.sql` 0.8 s |',
      '| Migrations | ✅ 2 applied: `001_rewrite.sql`, `002_touch.sql` |',
    ]);
    assert.ok(
      body.includes(
        '> - `001_rewrite.sql`: **ACCESS EXCLUSIVE** on `orders` for 6.4 s (table rewrite): blocks reads and writes on production',
      ),
    );
    assert.ok(
      body.includes(
        '| `001_rewrite.sql` | `orders` | ⚠️ ACCESS EXCLUSIVE (blocks reads and writes) | 6.4 s | yes | 2,000,000 |',
      ),
    );
    assert.ok(!body.includes('| `002_touch.sql` |'), 'a file without a report has no row');
    assert.ok(body.indexOf('Migration safety') < body.indexOf('#### Schema changes'));
    assert.ok(body.includes('#### Schema changes against `shop/main`\n\n- tables: 1 added\n- constraints: 1 added\n'));
    assert.ok(!body.includes('p4ssw0rd-secret'));
  });

  it("the receiver's own schema and record table are left out of the schema diff and the safety report", () => {
    const d = withoutOwnSchema({ diff: diff() });
    assert.ok(d && 'diff' in d);
    assert.deepEqual(
      d.diff.changes.map((c) => c.name),
      ['public.audit', 'audit_pkey'],
    );
    assert.deepEqual(
      [d.diff.counts.schema, d.diff.counts.table, d.diff.counts.constraint],
      [
        { added: 0, dropped: 0, altered: 0 },
        { added: 1, dropped: 0, altered: 0 },
        { added: 1, dropped: 0, altered: 0 },
      ],
    );
    assert.equal(
      d.diff.sql,
      [
        '--- shop/main',
        '+++ shop/pr-7',
        '@@ added table public.audit @@',
        '+CREATE TABLE public.audit (',
        '+    id bigint NOT NULL',
        '+);',
        '@@ added constraint audit_pkey on public.audit @@',
        '+ALTER TABLE public.audit ADD CONSTRAINT audit_pkey PRIMARY KEY (id);',
      ].join('\n'),
    );
    // Nothing but ours: identical.
    const onlyOurs = diff();
    onlyOurs.changes = onlyOurs.changes.filter((c) => c.name.startsWith('betterpg') || c.table?.startsWith('betterpg'));
    onlyOurs.counts.table.added = 1;
    onlyOurs.counts.constraint.added = 1;
    const none = withoutOwnSchema({ diff: onlyOurs });
    assert.ok(none && 'diff' in none && none.diff.identical && none.diff.sql === '');
    assert.equal(withoutOwnSchema(null), null);
    assert.deepEqual(withoutOwnSchema({ unavailable: 'x' }), { unavailable: 'x' });

    const r = withoutOwnTable({
      report: report({
        locks: [
          { table: 'betterpg.migrations', mode: 'RowExclusiveLock', seconds: 0.1, blocks: null },
          { table: 'orders', mode: 'RowExclusiveLock', seconds: 0.4, blocks: null },
        ],
        rows: [
          { table: 'betterpg.migrations', rows: 3, estimated: false },
          { table: 'orders', rows: 10, estimated: false },
        ],
      }),
    });
    assert.ok(r && 'report' in r);
    assert.deepEqual(
      r.report.locks.map((l) => l.table),
      ['orders'],
    );
    assert.deepEqual(
      r.report.rows.map((x) => x.table),
      ['orders'],
    );
  });

  it('a folder of many files: the cells name 20 and count the rest', () => {
    const files = Array.from({ length: 25 }, (_, i) => `${String(i).padStart(3, '0')}.sql`);
    const body = renderComment(
      input({
        migrations: {
          path: 'db/migrations',
          applied: files,
          alreadyApplied: [],
          changed: [],
          runs: files.map((name) => ({ name, ms: 100, safety: null })),
        },
      }),
    );
    assert.match(body, /\| Migrations \| ✅ 25 applied: `000\.sql`, .*`019\.sql` and 5 more \|/);
    assert.match(body, /\| Migration time \| 2\.5 s: `000\.sql` 0\.1 s, .*`019\.sql` 0\.1 s and 5 more \|/);
  });
});

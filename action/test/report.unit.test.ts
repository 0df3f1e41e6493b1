import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BranchView } from '../../agent/api/schemas.js';
import { commentMarker, maskedUri } from '../../shared/pr-comment.js';
import { scrubber } from '../../shared/scrub.js';
import { render, type Report } from '../src/report.js';

/** The comment's text: what it shows, and that the password only appears when allowed. */

const PW = 'p@ss/w0rd-Secret';
const branch: BranchView = {
  name: 'app/pr-7',
  database: 'app',
  branch: 'pr-7',
  parent: 'app/main',
  status: 'running',
  port: 15433,
  connection: {
    host: 'db.example.com',
    port: 15433,
    user: 'postgres',
    password: PW,
    database: 'app',
    uri: `postgresql://postgres:${encodeURIComponent(PW)}@db.example.com:15433/app`,
    via: 'direct',
    sslmode: null,
    direct: {
      host: 'db.example.com',
      port: 15433,
      user: 'postgres',
      password: PW,
      database: 'app',
      uri: `postgresql://postgres:${encodeURIComponent(PW)}@db.example.com:15433/app`,
    },
  },
  dataset: 'tank/betterpg/app/pr-7',
  container: 'bpg-app-pr-7',
  image: 'postgres:17',
  consistency: 'application',
  schemaOnly: false,
  seed: null,
  createdAt: '2026-11-27T10:00:00.000Z',
  usedBytes: 1024,
  expiresAt: '2026-12-04T10:00:00.000Z',
  protected: false,
  lastActiveAt: '2026-11-27T10:00:00.000Z',
  stoppedBy: null,
  memoryBytes: 512 * 1024 ** 2,
  cpus: 1,
  diskQuotaBytes: 20 * 1024 ** 3,
  diskFull: false,
  walBytes: 16 * 1024 ** 2,
  walQuotaBytes: 10 * 1024 ** 3,
  walFull: false,
};
const now = new Date('2026-11-27T10:05:00Z');
const ready = (o: Partial<Extract<Report, { kind: 'ready' }>> = {}): Report => ({
  kind: 'ready',
  command: 'create',
  database: 'app',
  branch,
  created: true,
  reset: false,
  ms: 1534,
  migration: { ok: true, exitCode: 0, ms: 420, tail: ['CREATE TABLE'], lines: 1 },
  expiry: { expiresAt: branch.expiresAt, protected: false, renewedMs: 7 * 864e5 },
  role: null,
  safety: null,
  schemaDiff: null,
  ...o,
});

describe('report', () => {
  it('shows every detail, and the password only when allowed', () => {
    const hidden = render(ready(), { showPassword: false, now });
    assert.ok(hidden.startsWith(commentMarker('app') + '\n'));
    for (const s of [
      '`pr-7` from `main`',
      '| Status | running |',
      '`db.example.com`',
      '`15433`',
      '| User | `postgres` |',
      'in 1.5 s by this run',
      '✅ succeeded in 0.4 s',
      '2026-11-27 10:05 UTC',
    ]) {
      assert.ok(hidden.includes(s), `shows ${s}`);
    }
    assert.ok(!hidden.includes(PW) && !hidden.includes(encodeURIComponent(PW)), 'no password, raw or encoded');
    assert.ok(hidden.includes('postgresql://postgres:********@db.example.com:15433/app'));

    const shown = render(ready(), { showPassword: true, now });
    assert.ok(shown.includes(`\`${PW}\``));
    assert.ok(shown.includes(branch.connection.uri));
  });

  it('reused, reset and failed runs say so', () => {
    assert.match(
      render(ready({ created: false }), { showPassword: false, now }),
      /2026-11-27 10:00 UTC \(reused by this run\)/,
    );
    assert.match(
      render(ready({ created: false, reset: true, command: 'reset' }), { showPassword: false, now }),
      /reset to `main` in 1\.5 s/,
    );
    const failed = render(
      ready({ migration: { ok: false, exitCode: 3, ms: 100, tail: ['x', 'ERROR: boom'], lines: 40 } }),
      { showPassword: false, now },
    );
    assert.match(failed, /: migration failed\n/);
    assert.match(failed, /❌ failed \(exit code 3\)/);
    assert.match(failed, /<details open><summary>Migration output \(last 2 of 40 lines\)/);
    assert.match(
      render(ready({ migration: null }), { showPassword: false, now }),
      /\| Migration \| none configured \|/,
    );
  });

  it('output with backticks cannot break out of its block', () => {
    const text = render(
      ready({ migration: { ok: false, exitCode: 1, ms: 1, tail: ['```', '# not a heading', '````'], lines: 3 } }),
      { showPassword: false, now },
    );
    assert.match(text, /\n`````\n```\n# not a heading\n````\n`````\n/);
  });

  it('the expiry, the role (never its password), and the safety report with the flagged lock first', () => {
    const text = render(
      ready({
        role: 'app_user',
        safety: {
          report: {
            durationMs: 6731,
            locks: [{ table: 'orders', mode: 'AccessExclusiveLock', seconds: 6.5, blocks: 'reads and writes' }],
            rewritten: ['orders'],
            dropped: [],
            rows: [{ table: 'orders', rows: 1_500_000, estimated: false }],
            flagged: ['ACCESS EXCLUSIVE on orders for 6.5 s (table rewrite): blocks reads and writes on production'],
            maxLockSeconds: 1,
            samples: 134,
            intervalMs: 50,
            incomplete: null,
          },
        },
        migration: { ok: true, exitCode: 0, ms: 6800, tail: ['ALTER TABLE'], lines: 1 },
      }),
      { showPassword: false, now },
    );
    const rows = text.split('\n').filter((l) => /^\| (Created|Expires|Role|Migration) \|/.test(l));
    assert.deepEqual(rows, [
      '| Created | in 1.5 s by this run |',
      '| Expires | deleted 7 days after the last push (2026-12-04 10:00 UTC without one) |',
      "| Role | `app_user`, owner of the database's objects (password in the step's `role_password` output) |",
      '| Migration | ✅ succeeded in 6.8 s |',
    ]);
    const safety = text.indexOf('#### ⚠️ Migration safety: 1 flagged');
    assert.ok(safety > text.indexOf('postgresql://'), 'after the connection string');
    assert.ok(safety < text.indexOf('Migration output'), 'before the output');
    assert.ok(text.includes('> - **ACCESS EXCLUSIVE** on `orders` for 6.5 s (table rewrite)'));
    assert.ok(text.includes('| `orders` | ⚠️ ACCESS EXCLUSIVE (blocks reads and writes) | 6.5 s | yes | 1,500,000 |'));
  });

  it('tokens and the role password are scrubbed from what the pull request named or printed, even when the password is shown', () => {
    const token = 'ghs_0123456789abcdef';
    const rolePw = 'Rr0le-pass-0123456789abcdefghijk';
    const text = render(
      ready({
        safety: {
          report: {
            durationMs: 1,
            locks: [{ table: `"${token}"`, mode: 'RowExclusiveLock', seconds: 0.1, blocks: null }],
            rewritten: [],
            dropped: [],
            rows: [],
            flagged: [],
            maxLockSeconds: 1,
            samples: 1,
            intervalMs: 50,
            incomplete: null,
          },
        },
        migration: { ok: true, exitCode: 0, ms: 1, tail: [`echo ${rolePw}`], lines: 1 },
      }),
      { showPassword: true, now, secrets: [token, rolePw] },
    );
    assert.ok(!text.includes(token) && !text.includes(rolePw));
    assert.ok(text.includes('| `"***"` | ROW EXCLUSIVE |'));
    assert.ok(text.includes(`\`${PW}\``), 'the branch password where show_password allows it');
  });

  it('command get: found, not migrated; the expiry as a date', () => {
    const text = render(
      ready({
        command: 'get',
        created: false,
        migration: null,
        expiry: { expiresAt: branch.expiresAt, protected: false, renewedMs: null },
      }),
      { showPassword: false, now },
    );
    assert.ok(text.includes('| Created | 2026-11-27 10:00 UTC |'));
    assert.ok(text.includes('| Expires | deleted 2026-12-04 10:00 UTC |'));
    assert.ok(text.includes('| Migration | not run (command `get`) |'));
    assert.ok(!text.includes('Migration safety'));
  });

  it('deleted', () => {
    const text = render(
      { kind: 'deleted', database: 'app', branchName: 'pr-7', deleted: true },
      { showPassword: true, now, runUrl: 'https://github.com/o/r/actions/runs/1' },
    );
    assert.ok(text.startsWith(commentMarker('app')));
    assert.match(text, /: deleted\n/);
    assert.match(text, /\[Workflow run\]\(https:\/\/github\.com\/o\/r\/actions\/runs\/1\)/);
  });

  it('connection string masking and the output scrubber', () => {
    assert.equal(maskedUri(branch.connection), 'postgresql://postgres:********@db.example.com:15433/app');
    const scrub = scrubber([PW]);
    assert.equal(
      scrub(`url ${branch.connection.uri} and ${PW}`),
      'url postgresql://postgres:***@db.example.com:15433/app and ***',
    );
  });
});

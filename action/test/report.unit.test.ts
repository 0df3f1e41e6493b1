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

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  commentMarker,
  decidePassword,
  digestOf,
  maskedUri,
  parseShowPassword,
  renderComment,
  type CommentView,
  type Connection,
} from '../pr-comment.js';
import { scrubber } from '../scrub.js';

/** The comment both faces post: layout, digest, the password rule and its masking, without GitHub. */

const PW = 'p@ss/w0rd-Secret';
const conn: Connection = {
  host: 'db.example',
  port: 15433,
  user: 'postgres',
  password: PW,
  database: 'app',
  uri: `postgresql://postgres:${encodeURIComponent(PW)}@db.example:15433/app`,
};
const view = (o: Partial<CommentView> = {}): CommentView => ({
  database: 'app',
  branch: 'pr-7',
  table: {
    parent: 'main',
    status: 'running',
    connection: conn,
    showPassword: false,
    passwordHidden: 'hidden',
    created: 'in 1.5 s',
    migration: { label: 'Migration', cell: '✅' },
  },
  footer: ['Commit abc', 'BetterPG'],
  ...o,
});

describe('the comment', () => {
  it('starts with the marker and a digest, then the title, the table in order, the connection string and the footer', () => {
    const body = renderComment(view({ state: 'migration failed', blocks: ['after the table'] }));
    const lines = body.split('\n');
    assert.equal(lines[0], commentMarker('app'));
    assert.match(lines[1]!, /^<!-- betterpg:digest=[0-9a-f]{16} -->$/);
    assert.equal(lines[2], '### 🐘 Preview database `app/pr-7`: migration failed');
    const labels = lines.filter((l) => /^\| \w/.test(l)).map((l) => l.split('|')[1]!.trim());
    assert.deepEqual(labels, [
      'Branch',
      'Status',
      'Host',
      'Port',
      'Database',
      'User',
      'Password',
      'Created',
      'Migration',
    ]);
    assert.ok(body.includes('```\npostgresql://postgres:********@db.example:15433/app\n```'));
    assert.ok(body.endsWith('after the table\n\n<sub>Commit abc · BetterPG</sub>\n'));
  });

  it('shows the password only when allowed, and scrubs it from what the blocks carry otherwise', () => {
    const printed = `the migration printed ${PW} and ${encodeURIComponent(PW)}`;
    const hidden = renderComment(view({ blocks: [printed] }));
    assert.ok(!hidden.includes(PW) && !hidden.includes(encodeURIComponent(PW)), 'no password, raw or encoded');
    assert.ok(hidden.includes('| Password | hidden |'));
    assert.ok(hidden.includes('the migration printed *** and ***'));
    const shown = renderComment(view({ table: { ...view().table!, showPassword: true }, blocks: [printed] }));
    assert.ok(shown.includes(`| Password | \`${PW}\` |`));
    assert.ok(shown.includes(conn.uri));
    assert.ok(shown.includes(printed), 'shown anyway: nothing to scrub');
  });

  it('the digest covers the content but not a time stamp in the footer', () => {
    const at = (stamp: string, footer = 'BetterPG') => renderComment(view({ footer: ['Updated', { stamp }, footer] }));
    const a = at('2026-11-27 10:05 UTC');
    assert.ok(a.includes('<sub>Updated · 2026-11-27 10:05 UTC · BetterPG</sub>'));
    assert.equal(digestOf(a), digestOf(at('2026-11-28 11:00 UTC')), 'a later run with the same content');
    assert.notEqual(digestOf(a), digestOf(at('2026-11-27 10:05 UTC', 'other')));
    assert.notEqual(
      digestOf(a),
      digestOf(
        renderComment(
          view({ footer: ['Updated', { stamp: 'x' }, 'BetterPG'], table: { ...view().table!, status: 'stopped' } }),
        ),
      ),
    );
    assert.equal(digestOf('no digest here'), null);
  });

  it('names and output from the pull request cannot break the table or the fence', () => {
    const body = renderComment(view({ branch: 'a|b', blocks: ['```\n# not a heading'] }));
    assert.ok(body.includes('| Branch | `a\\|b` from `main` |'));
    const fenced = renderComment(
      view({ table: { ...view().table!, connection: { ...conn, uri: 'x```y' }, showPassword: true } }),
    );
    assert.ok(fenced.includes('````\nx```y\n````'));
  });

  it("through the router: its host, port and `<db>@<branch>`, an SSL row, and the uri's sslmode kept when masked", () => {
    const routed: Connection = {
      host: 'pg.example.com',
      port: 6432,
      user: 'postgres',
      password: PW,
      database: 'app@pr-7',
      uri: `postgresql://postgres:${encodeURIComponent(PW)}@pg.example.com:6432/app%40pr-7?sslmode=require`,
      sslmode: 'require',
    };
    const body = renderComment(view({ table: { ...view().table!, connection: routed } }));
    const labels = body
      .split('\n')
      .filter((l) => /^\| \w/.test(l))
      .map((l) => l.split('|')[1]!.trim());
    assert.deepEqual(labels.slice(2, 7), ['Host', 'Port', 'Database', 'SSL', 'User']);
    for (const row of [
      '| Host | `pg.example.com` |',
      '| Port | `6432` |',
      '| Database | `app@pr-7` |',
      '| SSL | `sslmode=require` |',
    ])
      assert.ok(body.includes(row), row);
    assert.ok(body.includes('```\npostgresql://postgres:********@pg.example.com:6432/app%40pr-7?sslmode=require\n```'));
    assert.ok(!body.includes(PW) && !body.includes(encodeURIComponent(PW)));
    assert.equal(
      maskedUri({ ...routed, uri: 'not a uri' }),
      'postgresql://postgres:********@pg.example.com:6432/app%40pr-7?sslmode=require',
    );
    // Without the router (sslmode null) there is no SSL row.
    assert.ok(!renderComment(view()).includes('| SSL |'));
    assert.ok(
      !renderComment(view({ table: { ...view().table!, connection: { ...conn, sslmode: null } } })).includes('| SSL |'),
    );
  });

  it('masks the password of a connection string, also one that is not a URL', () => {
    assert.equal(maskedUri(conn), 'postgresql://postgres:********@db.example:15433/app');
    assert.equal(maskedUri({ ...conn, uri: 'not a uri' }), 'postgresql://postgres:********@db.example:15433/app');
    assert.equal(
      scrubber([PW])(`url ${conn.uri} and ${PW}`),
      'url postgresql://postgres:***@db.example:15433/app and ***',
    );
  });
});

describe('one password vocabulary: auto, always, never', () => {
  it('reads the words and the older spellings (true/false, YAML booleans), nothing else', () => {
    const cases: [unknown, string | null][] = [
      ['auto', 'auto'],
      ['always', 'always'],
      ['never', 'never'],
      ['true', 'always'],
      ['false', 'never'],
      [true, 'always'],
      [false, 'never'],
      ['yes', null],
      ['Always', null],
      ['constructor', null],
      ['__proto__', null],
      [1, null],
      [undefined, null],
    ];
    for (const [v, want] of cases) assert.equal(parseShowPassword(v), want, String(v));
  });

  it('asks whether the repository is private only for auto', async () => {
    let asked = 0;
    const repo = (priv: boolean) => async () => (asked++, priv);
    assert.deepEqual(await decidePassword('always', repo(false)), { show: true, why: 'always' });
    assert.deepEqual(await decidePassword('never', repo(true)), { show: false, why: 'never' });
    assert.equal(asked, 0);
    assert.deepEqual(await decidePassword('auto', repo(true)), { show: true, why: 'private' });
    assert.deepEqual(await decidePassword('auto', repo(false)), { show: false, why: 'public' });
    assert.equal(asked, 2);
  });
});

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { Config } from '../config.js';
import { progressLine } from '../engine/import-build.js';
import {
  checkSourceInput,
  maskUrl,
  parseSourceUrl,
  passfileLine,
  removeSecret,
  resolvePassword,
  scrub,
  writeSecret,
} from '../engine/import-source.js';
import { Operations } from '../api/operations.js';
import { BpgError } from '../errors.js';

/** The import's source: URL, password references, scrubbing, secrets files, the operation registry. */
describe('import source', () => {
  it('splits the password off the URL and keeps the rest', () => {
    const p = parseSourceUrl('postgres://reader:p%40ss%3Aw@db.internal:6543/app?sslmode=require');
    assert.equal(p.password, 'p@ss:w');
    assert.equal(p.url, 'postgres://reader@db.internal:6543/app?sslmode=require');
    assert.equal(p.database, 'app');
    assert.equal(parseSourceUrl('postgresql://u@h').database, 'u', 'libpq: no database means the user name');
    assert.equal(parseSourceUrl('postgres://u@h/db').password, null);
  });

  it('refuses what it cannot use, in one line that never shows the password', () => {
    for (const [url, re] of [
      ['http://u@h/db', /must start with postgres/],
      ['postgres://h/db', /names no user/],
      ['postgres:///db?host=/run', /names no host/],
      ['postgres://u@h/db?password=x', /must not set 'password'/],
      ['postgres://u@h/db?passfile=/etc/shadow', /must not set 'passfile'/],
      ['postgres://u@h/a/b', /one database/],
      ['not a url :secret@', /not a URL/],
    ] as const) {
      assert.throws(
        () => parseSourceUrl(url),
        (e: unknown) =>
          e instanceof BpgError && e.code === 'invalid' && re.test(e.message) && !e.message.includes('secret'),
        url,
      );
    }
    assert.equal(maskUrl('postgres://u:topsecret@h/db'), 'postgres://u:***@h/db');
  });

  it('checks method, jobs, roles and the one password reference', () => {
    assert.deepEqual(checkSourceInput({ url: 'postgres://u@h/d' }).ref, { kind: 'none' });
    assert.deepEqual(checkSourceInput({ url: 'postgres://u:p@h/d' }).ref, { kind: 'url' });
    assert.deepEqual(checkSourceInput({ url: 'postgres://u@h/d', passwordEnv: 'PW' }).ref, { kind: 'env', name: 'PW' });
    const bad: Array<[Parameters<typeof checkSourceInput>[0], RegExp]> = [
      [{ url: 'postgres://u@h/d', jobs: 0 }, /--jobs/],
      [{ url: 'postgres://u@h/d', jobs: 65 }, /--jobs/],
      [{ url: 'postgres://u@h/d', method: 'basebackup', jobs: 2 }, /dump method only/],
      [{ url: 'postgres://u@h/d', method: 'basebackup', roles: true }, /dump method only/],
      [{ url: 'postgres://u@h/d', method: 'copy' as never }, /dump or basebackup/],
      [{ url: 'postgres://u:p@h/d', passwordFile: '/x' }, /one way only/],
      [{ url: 'postgres://u@h/d', passwordEnv: 'A-B' }, /environment variable name/],
      [{ url: 'postgres://u@h/d', passwordFile: 'rel/path' }, /absolute/],
    ];
    for (const [input, re] of bad) assert.throws(() => checkSourceInput(input), re, JSON.stringify(input));
  });

  it('scrubs the password, URL-encoded too, and URL credentials', () => {
    const pw = 'pa:ss@w/rd';
    const text = `FATAL: password "${pw}" for postgres://x:${encodeURIComponent(pw)}@h/db and postgres://y:other@h`;
    const out = scrub(text, pw);
    assert.ok(!out.includes(pw) && !out.includes(encodeURIComponent(pw)) && !out.includes('other'), out);
  });

  it('escapes a passfile line', () => {
    assert.equal(passfileLine('a:b\\c'), '*:*:*:*:a\\:b\\\\c\n');
  });

  it('keeps a secret in a 0600 file in a 0700 folder, reads references, removes it', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'bpg-secret-'));
    const cfg = { stateDir } as Config;
    const ref = await writeSecret(cfg, 'hunter2');
    assert.equal(ref.kind, 'secret');
    if (ref.kind !== 'secret') return;
    const file = join(stateDir, 'secrets', `source-${ref.id}`);
    assert.equal(statSync(join(stateDir, 'secrets')).mode & 0o777, 0o700);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(readFileSync(file, 'utf8'), 'hunter2');
    assert.equal(await resolvePassword(cfg, ref), 'hunter2');
    const pwFile = join(stateDir, 'pw');
    writeFileSync(pwFile, 'from-file\nignored\n');
    assert.equal(await resolvePassword(cfg, { kind: 'file', path: pwFile }), 'from-file');
    process.env.BPG_UNIT_PW = 'from-env';
    assert.equal(await resolvePassword(cfg, { kind: 'env', name: 'BPG_UNIT_PW' }), 'from-env');
    await assert.rejects(resolvePassword(cfg, { kind: 'env', name: 'BPG_UNIT_UNSET_PW' }), /not set/);
    await removeSecret(cfg, ref);
    await assert.rejects(resolvePassword(cfg, ref), /cannot be read/);
  });

  it('writes progress as one line with a rate', () => {
    const line = progressLine({
      phase: 'dump',
      bytes: 300 * 1024 ** 2,
      totalBytes: 1024 ** 3,
      tables: 3,
      totalTables: 4,
      bytesPerSecond: 60 * 1024 ** 2,
      elapsedMs: 5000,
    });
    assert.equal(line, 'dump: 300.0 MB written (database ~1024.0 MB), 3 of ~4 tables, 60.0 MB/s, 5 s');
  });
});

describe('operations registry', () => {
  it('runs an operation to success or failure and keeps its progress', async () => {
    const ops = new Operations();
    const p = {
      phase: 'done' as const,
      bytes: 1,
      totalBytes: null,
      tables: 0,
      totalTables: null,
      bytesPerSecond: 0,
      elapsedMs: 0,
    };
    const view = { name: 'a', image: 'i', createdAt: 'now', branches: [] };
    const ok = ops.start('create-database', 'a', async ({ progress }) => {
      progress(p);
      return view;
    });
    assert.equal(ok.view.status, 'running');
    assert.match(ok.view.id, /^op-[a-f0-9]{16}$/);
    assert.equal(ops.runningOn('a').length, 1);
    await ok.done;
    assert.deepEqual(
      { ...ops.get(ok.view.id), startedAt: '', finishedAt: '' },
      {
        ...ok.view,
        status: 'succeeded',
        progress: p,
        result: view,
        startedAt: '',
        finishedAt: '',
      },
    );
    const bad = ops.start('create-database', 'b', async () => {
      throw new BpgError('invalid', 'no good');
    });
    await bad.done;
    assert.deepEqual(ops.get(bad.view.id)?.error, { code: 'invalid', message: 'no good' });
    assert.equal(ops.get('op-0000000000000000'), undefined);
  });
});

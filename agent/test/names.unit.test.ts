import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BpgError } from '../errors.js';
import { parseDuration, parseTtl } from '../duration.js';
import {
  nameProblem,
  parseBranchRef,
  parseDatabaseName,
  parseImage,
  parseSnapshotId,
  refName,
  shown,
} from '../names.js';
import { BranchPart, DatabaseName, ImageRef } from '../name-schemas.js';
import { parseConfig, parseSize } from '../config.js';

/** Names, durations, sizes and the config: the rules every face shares, without the stack. */
describe('names', () => {
  it('accepts letters, digits, _ and -, starting with a letter or digit', () => {
    assert.equal(parseDatabaseName('api_2-x'), 'api_2-x');
    assert.deepEqual(parseBranchRef('api/pr-12'), { database: 'api', branch: 'pr-12' });
    assert.deepEqual(parseBranchRef('pr-12', 'api'), { database: 'api', branch: 'pr-12' });
    assert.equal(refName({ database: 'a', branch: 'b' }), 'a/b');
  });

  it("the plain checks (the CLI's, without zod) and the zod schemas (the API's) give the same verdict and message", () => {
    const samples = [
      'api',
      'a',
      'A_1-x',
      '-x',
      '_x',
      '../x',
      'a;b',
      '$(id)',
      'a b',
      'ａpi',
      'a\nb',
      '',
      'x'.repeat(40),
    ];
    for (const v of [...samples, 'x'.repeat(41), 'x'.repeat(63), 'x'.repeat(64), '-', 'x'.repeat(70) + ';']) {
      for (const [kind, schema] of [
        ['database', DatabaseName],
        ['branch', BranchPart],
      ] as const) {
        const r = schema.safeParse(v);
        assert.equal(
          nameProblem(kind, v),
          r.success ? null : r.error.issues[0]!.message,
          `${kind} ${JSON.stringify(v)}`,
        );
      }
    }
    for (const v of ['postgres:17', 'r:5000/pg@sha256:ab', '-x', 'a b', '', 'x'.repeat(256)]) {
      const plain = (() => {
        try {
          return parseImage(v) === v;
        } catch {
          return false;
        }
      })();
      assert.equal(plain, ImageRef.safeParse(v).success, JSON.stringify(v));
    }
  });

  it('refuses shell, path and look-alike characters in one line that quotes the input safely', () => {
    for (const bad of ['-x', '../x', 'a;b', '$(id)', 'a b', 'ａpi', 'a\nb', '', 'x'.repeat(41)]) {
      const e = (() => {
        try {
          parseDatabaseName(bad);
        } catch (err) {
          return err;
        }
        return null;
      })();
      assert.ok(e instanceof BpgError, `refused: ${JSON.stringify(bad)}`);
      assert.equal(e.code, 'invalid');
      assert.ok(!e.message.includes('\n'), 'one line');
    }
    assert.throws(() => parseBranchRef('a/b/c'), /expected <database>\/<branch>/);
    assert.equal(shown('a\nb'), 'a\\u000ab');
    assert.ok(shown('y'.repeat(200)).length <= 81);
  });

  it('images and snapshot ids have patterns of their own', () => {
    assert.equal(parseImage('registry:5000/pg@sha256:abc'), 'registry:5000/pg@sha256:abc');
    assert.throws(() => parseImage('-v'), /invalid image/);
    assert.equal(parseSnapshotId('snap-1a2b3c4d'), 'snap-1a2b3c4d');
    assert.throws(() => parseSnapshotId('snap-x'), /ids look like/);
  });
});

describe('durations and sizes', () => {
  it('reads 30s, 15m, 1h, 7d, 2w and seconds; refuses the rest', () => {
    assert.equal(parseDuration('30s'), 30_000);
    assert.equal(parseDuration('1.5h'), 5_400_000);
    assert.equal(parseDuration('2w'), 14 * 864e5);
    assert.equal(parseDuration(90), 90_000);
    for (const bad of ['', '5', '1y', '-1d', '0s']) assert.throws(() => parseDuration(bad), /is not a duration/);
    assert.throws(() => parseDuration('40000d'), /longer than 100 years/);
    assert.throws(() => parseTtl('400d'), /longer than 365d/);
  });

  it('reads sizes with binary units', () => {
    assert.equal(parseSize('512m'), 512 * 1024 ** 2);
    assert.equal(parseSize('1.5GiB'), 1.5 * 1024 ** 3);
    assert.equal(parseSize(4096), 4096);
    assert.throws(() => parseSize('lots'), /is not a size/);
  });
});

describe('config', () => {
  it('has defaults for every key, and names the key of an invalid one', () => {
    const cfg = parseConfig({}, 'test');
    assert.equal(cfg.postgres.diskQuota, 20 * 1024 ** 3);
    assert.equal(cfg.postgres.pidsLimit, 512);
    assert.equal(cfg.postgres.egress, false);
    assert.throws(
      () => parseConfig({ postgres: { memory: 'lots' } }, 'x.yaml'),
      /invalid config x\.yaml: postgres\.memory: 'lots' is not a size/,
    );
    assert.throws(() => parseConfig({ nope: 1 }, 'x.yaml'), /invalid config x\.yaml/);
    assert.throws(
      () => parseConfig({ postgres: { diskQuota: '50g' }, limits: { maxDisk: '10g' } }, 'x'),
      /postgres\.diskQuota is above limits\.maxDisk/,
    );
  });
});

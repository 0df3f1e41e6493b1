import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import YAML from 'yaml';
import { configPath, DEFAULT_CONFIG_PATH, DEFAULT_STATE_DIR, readStateDir, scanStateDir } from '../config-file.js';
import { loadConfig, parseConfig } from '../config.js';

/**
 * The CLI finds `bpg serve`'s socket from the config's stateDir without validating the rest
 * (config-file.ts). Whatever the line scan answers must be what yaml and the config schema make
 * of the same file; where it cannot be sure it must say so, and readStateDir then asks yaml.
 */
const work = mkdtempSync(join(tmpdir(), 'bpg-config-file-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** What loadConfig makes of `text` (null: it refuses the file). */
async function validated(text: string): Promise<string | null> {
  const path = join(work, `c-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(path, text);
  return loadConfig(path).then(
    (c) => c.stateDir,
    () => null,
  );
}

const MINIMAL = 'zfs:\n  pool: bpgtest\n  datasetBase: x\npostgres:\n  image: postgres:17\n';

/** Files the scan reads itself: [text, stateDir]. */
const SCANNED: [string, string][] = [
  ['', DEFAULT_STATE_DIR],
  ['# only a comment\n', DEFAULT_STATE_DIR],
  [MINIMAL, DEFAULT_STATE_DIR],
  [`${MINIMAL}stateDir: /srv/bpg\n`, '/srv/bpg'],
  [`stateDir: /srv/bpg # where the state is\n${MINIMAL}`, '/srv/bpg'],
  [
    `zfs:\n  pool: tank\n  # stateDir: /not/this\nstateDir: /srv/a.b_c-d/e\n\napi:\n  listen: 127.0.0.1:7432\n`,
    '/srv/a.b_c-d/e',
  ],
  // a nested key of that name (here a database's) is not the top-level one
  [`${MINIMAL}databases:\n  stateDir:\n    snapshots: null\n`, DEFAULT_STATE_DIR],
  // what bpg init writes
  [
    YAML.stringify({
      zfs: { pool: 'bpgtest', datasetBase: 'b' },
      postgres: { image: 'betterpg/postgres:15-local', portRange: [37700, 37749] },
      stateDir: '/tmp/bpg-x/state',
    }),
    '/tmp/bpg-x/state',
  ],
];

/** Files the scan must leave to yaml: it cannot be certain of them. */
const UNSURE: string[] = [
  `stateDir: "/srv/quoted"\n`,
  `stateDir: '/srv/quoted'\n`,
  `stateDir: /srv/with space\n`,
  `stateDir: /srv/a\n  /b\n`, // a plain value goes on: '/srv/a /b'
  `stateDir:\n  /srv/below\n`,
  `  stateDir: /srv/indented\n`, // the whole mapping is indented
  `{stateDir: /srv/flow}\n`,
  `base: &b /srv/anchor\nstateDir: *b\n`,
  `stateDir: !!str /srv/tagged\n`,
  `stateDir: /srv/a\nstateDir: /srv/b\n`, // yaml refuses repeated keys
  `---\nstateDir: /srv/doc\n`,
  `%YAML 1.2\n---\nstateDir: /srv/doc\n`,
  `stateDir: /srv/crlf\r\n`,
  `stateDir:\t/srv/tab\n`,
  `\ufeffstateDir: /srv/bom\n`,
  `foo: "multi\nstateDir: /srv/inside-a-string"\n`,
  `? stateDir\n: /srv/complex\n`,
  `<<: {stateDir: /srv/merged}\n`,
  `stateDir: relative/path\n`,
  `stateDir: 42\n`,
  `- a list\n`,
  `api:\n  tokens: [{name: a}]\nstateDir: /srv/x\n`,
];

describe('the state folder, read without validating the config', () => {
  it('scans the block-style files bpg init writes, as yaml and the config schema read them', async () => {
    for (const [text, stateDir] of SCANNED) {
      assert.equal(scanStateDir(text), stateDir, JSON.stringify(text));
      assert.equal(await validated(text), stateDir, `loadConfig agrees: ${JSON.stringify(text)}`);
    }
  });

  it('leaves to yaml whatever it cannot be sure of, and readStateDir then answers as loadConfig does', async () => {
    for (const text of UNSURE) {
      assert.equal(scanStateDir(text), undefined, JSON.stringify(text));
      const path = join(work, `u-${Math.random().toString(36).slice(2)}.yaml`);
      writeFileSync(path, text);
      const full = await validated(text);
      const read = await readStateDir(path);
      // Where loadConfig takes the file, the same folder; where it refuses it, readStateDir may
      // only name a folder yaml itself reads there (the CLI then tries that socket, else
      // loadConfig says what is wrong).
      if (full !== null) assert.equal(read, full, JSON.stringify(text));
      else if (read !== null)
        assert.equal(read, (YAML.parse(text) as { stateDir?: string }).stateDir ?? DEFAULT_STATE_DIR);
    }
    assert.equal(await readStateDir(join(work, 'missing.yaml')), null, 'no file: null');
    writeFileSync(join(work, 'q.yaml'), `stateDir: "/srv/quoted"\n`);
    assert.equal(await readStateDir(join(work, 'q.yaml')), '/srv/quoted');
    writeFileSync(join(work, 'bad.yaml'), `stateDir: [unclosed\n`);
    assert.equal(await readStateDir(join(work, 'bad.yaml')), null, 'not YAML: null');
  });

  it('follows BPG_CONFIG as loadConfig does (unset or empty: the default path)', async () => {
    const saved = process.env.BPG_CONFIG;
    try {
      const path = join(work, 'env.yaml');
      writeFileSync(path, `stateDir: /srv/from-env\n`);
      process.env.BPG_CONFIG = path;
      assert.equal(configPath(), path);
      assert.equal(await readStateDir(), '/srv/from-env');
      assert.equal((await loadConfig()).stateDir, '/srv/from-env');
      process.env.BPG_CONFIG = '';
      assert.equal(configPath(), DEFAULT_CONFIG_PATH);
      delete process.env.BPG_CONFIG;
      assert.equal(configPath(), DEFAULT_CONFIG_PATH);
    } finally {
      if (saved === undefined) delete process.env.BPG_CONFIG;
      else process.env.BPG_CONFIG = saved;
    }
  });
});

describe('postgres.walQuota', () => {
  const raw = (walQuota: unknown) => ({
    zfs: { pool: 'bpgtest', datasetBase: 'x' },
    postgres: { image: 'postgres:17', walQuota },
  });

  it('refuses less than one WAL segment at load, naming the key (ZFS would refuse the archive at the first create)', () => {
    for (const q of ['1k', '15m', 1024])
      assert.throws(
        () => parseConfig(raw(q), 'here'),
        /invalid config here: postgres\.walQuota: must be at least 16m \(one WAL segment\), or null for no quota/,
        String(q),
      );
    assert.equal(parseConfig(raw('16m'), 'here').postgres.walQuota, 16 * 1024 ** 2);
    assert.equal(parseConfig(raw(null), 'here').postgres.walQuota, null);
    assert.equal(parseConfig(raw(undefined), 'here').postgres.walQuota, 10 * 1024 ** 3);
  });
});

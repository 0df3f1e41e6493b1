import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { MAX_SEED_BYTES, readSeedFile } from '../src/seed.js';
import { MAX_SEED_BYTES as AGENT_MAX } from '../../agent/engine/schema-only.js';

/** seed_file is the pull request's file: read from inside the workspace only, bounded, on real files. */
describe('seed_file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bpg-seed-'));
  const ws = join(dir, 'ws');
  mkdirSync(join(ws, 'db'), { recursive: true });
  writeFileSync(join(ws, 'db', 'seed.sql'), 'INSERT INTO t VALUES (1);\n');
  writeFileSync(join(dir, 'runner-secret'), 'GITHUB_TOKEN=ghs_secret\n');
  symlinkSync(join(dir, 'runner-secret'), join(ws, 'db', 'evil.sql'));
  symlinkSync('seed.sql', join(ws, 'db', 'alias.sql'));
  writeFileSync(join(ws, 'big.sql'), Buffer.alloc(MAX_SEED_BYTES + 1, 0x20));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads a file of the workspace, also through a link that stays inside', async () => {
    assert.equal(await readSeedFile('db/seed.sql', ws), 'INSERT INTO t VALUES (1);\n');
    assert.equal(await readSeedFile('db/alias.sql', ws), 'INSERT INTO t VALUES (1);\n');
  });

  it('refuses a link or a path out of the workspace, a folder, a missing or too large file', async () => {
    await assert.rejects(
      () => readSeedFile('db/evil.sql', ws),
      /^ActionError: input seed_file: db\/evil.sql is outside the workspace$/,
    );
    await assert.rejects(() => readSeedFile('../runner-secret', ws), /outside the workspace/);
    await assert.rejects(() => readSeedFile(join(dir, 'runner-secret'), ws), /outside the workspace/);
    await assert.rejects(() => readSeedFile('db', ws), /is not a regular file/);
    await assert.rejects(() => readSeedFile('nope.sql', ws), /cannot be read \(ENOENT\)/);
    await assert.rejects(() => readSeedFile('big.sql', ws), /at most 1048576 are accepted/);
  });

  it('takes what the agent takes', () => assert.equal(MAX_SEED_BYTES, AGENT_MAX));
});

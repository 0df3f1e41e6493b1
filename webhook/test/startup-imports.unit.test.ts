import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/**
 * Starting the receiver loads neither dockerode nor the agent's engine, drivers or state: it talks
 * to the agent over HTTP only. The real entry point (bin/bpg-webhook.js) runs in a child process
 * whose module resolution is recorded by hooks (load-recorder.ts); `--help` returns after every
 * static import of main.js and the modules below it has been loaded. The agent's `serve` module,
 * which the receiver once imported for its listen helper, is the control: the same recording sees
 * dockerode and the engine there.
 */

const run = promisify(execFile);
const RECORDER = fileURLToPath(new URL('./load-recorder.js', import.meta.url));
const WEBHOOK_BIN = fileURLToPath(new URL('../../../bin/bpg-webhook.js', import.meta.url));
const RECEIVER = new URL('../src/receiver.js', import.meta.url).href;
const SERVE = new URL('../../agent/api/serve.js', import.meta.url).href;
const dir = mkdtempSync(join(tmpdir(), 'bpg-imports-'));
let n = 0;

/** Runs node with the recorder and `args`; answers every module URL it resolved. */
async function loaded(args: string[]): Promise<string[]> {
  const file = join(dir, `loads-${n++}.txt`);
  await run(process.execPath, ['--import', RECORDER, ...args], { env: { ...process.env, BPG_LOAD_RECORD: file } });
  return [...new Set(readFileSync(file, 'utf8').split('\n').filter(Boolean))];
}

/** What a face that talks to the agent over HTTP must not load. */
const HEAVY = [
  /\/node_modules\/dockerode\//,
  /\/agent\/engine\//,
  /\/agent\/drivers\//,
  /\/agent\/state\//,
  /\/agent\/api\/serve\.js$/,
];
const heavy = (urls: string[]) => urls.filter((u) => HEAVY.some((re) => re.test(u)));

after(() => rmSync(dir, { recursive: true, force: true }));

describe('receiver start-up imports', () => {
  it('bpg-webhook loads its own modules and the typed client, not dockerode, the engine, the drivers or the state', async () => {
    const urls = await loaded([WEBHOOK_BIN, '--help']);
    // The recording works: the receiver, its listen helper and its own pg are there.
    for (const want of [
      /\/webhook\/src\/main\.js$/,
      /\/webhook\/src\/receiver\.js$/,
      /\/webhook\/src\/lifecycle\.js$/,
      /\/agent\/api\/listen\.js$/,
      /\/agent\/api\/client\.js$/,
      /\/node_modules\/pg\//,
    ]) {
      assert.ok(
        urls.some((u) => want.test(u)),
        `recorded ${want}`,
      );
    }
    assert.deepEqual(heavy(urls), []);
  });

  it('so does importing the receiver module itself (as the tests and an embedding program do)', async () => {
    const urls = await loaded(['--input-type=module', '-e', `await import(${JSON.stringify(RECEIVER)});`]);
    assert.ok(urls.some((u) => u.endsWith('/webhook/src/receiver.js')));
    assert.deepEqual(heavy(urls), []);
  });

  it("the check can fail: the agent's serve module loads dockerode and the engine", async () => {
    const urls = await loaded(['--input-type=module', '-e', `await import(${JSON.stringify(SERVE)});`]);
    assert.ok(
      urls.some((u) => /\/node_modules\/dockerode\//.test(u)),
      'dockerode recorded',
    );
    assert.ok(
      urls.some((u) => /\/agent\/engine\//.test(u)),
      'the engine recorded',
    );
  });
});

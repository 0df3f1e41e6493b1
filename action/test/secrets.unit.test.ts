import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { scrubber, secretForms } from '../../shared/scrub.js';
import { describeRemoved, heldSecrets, migrationEnv, scrubFile } from '../src/secrets.js';

/** What migrate gets and what our output may hold, without a runner (the bundle's tests: hostile.test.ts). */

const AGENT = 'agent/tok+en=0123456789abcdef';
const GH = 'ghs_0123456789abcdefABCDEF';
const RUNTIME = 'eyJhbGciOiJSUzI1NiJ9.runtime.token';

const runnerEnv = {
  PATH: '/usr/bin:/bin',
  HOME: '/home/runner',
  GITHUB_WORKSPACE: '/home/runner/work/r/r',
  GITHUB_REPOSITORY: 'o/r',
  GITHUB_SHA: 'abc123',
  RUNNER_TEMP: '/home/runner/work/_temp',
  NODE_ENV: 'test',
  INPUT_AGENT_TOKEN: AGENT,
  INPUT_GITHUB_TOKEN: GH,
  INPUT_DATABASE: 'app',
  'INPUT_WORKING-DIRECTORY': '.',
  input_lowercase: 'x',
  ACTIONS_RUNTIME_TOKEN: RUNTIME,
  ACTIONS_RUNTIME_URL: 'https://pipelines.actions.githubusercontent.com/x/',
  ACTIONS_ID_TOKEN_REQUEST_URL: 'https://token.actions.githubusercontent.com/x',
  ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'oidc-request-token-123',
  ACTIONS_RESULTS_URL: 'https://results-receiver.actions.githubusercontent.com/',
  GITHUB_TOKEN: GH,
  GH_TOKEN: 'another-token-the-workflow-set',
  GITHUB_OUTPUT: '/home/runner/work/_temp/_runner_file_commands/set_output_1',
  GITHUB_ENV: '/home/runner/work/_temp/_runner_file_commands/set_env_1',
  GITHUB_PATH: '/home/runner/work/_temp/_runner_file_commands/add_path_1',
  GITHUB_STATE: '/home/runner/work/_temp/_runner_file_commands/save_state_1',
  GITHUB_STEP_SUMMARY: '/home/runner/work/_temp/_runner_file_commands/step_summary_1',
  BETTERPG_TOKEN: AGENT,
  NPM_CONFIG_REGISTRY_AUTH: `//registry/:_authToken=${encodeURIComponent(AGENT)}`,
};

describe('secrets', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bpg-secrets-test-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("the secrets held: the tokens from the inputs and the runner's own credentials", () => {
    assert.deepEqual(
      heldSecrets([AGENT, GH], runnerEnv).sort(),
      [AGENT, GH, RUNTIME, 'oidc-request-token-123', 'another-token-the-workflow-set'].sort(),
    );
    assert.deepEqual(heldSecrets([AGENT, ''], { PATH: '/bin' }), [AGENT], 'an empty github_token is no secret');
  });

  it("migrate's environment: no input, no runner credential, no file command, no value holding a secret; the rest kept", () => {
    const { env, removed } = migrationEnv(runnerEnv, heldSecrets([AGENT, GH], runnerEnv));
    assert.deepEqual(env, {
      PATH: '/usr/bin:/bin',
      HOME: '/home/runner',
      GITHUB_WORKSPACE: '/home/runner/work/r/r',
      GITHUB_REPOSITORY: 'o/r',
      GITHUB_SHA: 'abc123',
      RUNNER_TEMP: '/home/runner/work/_temp',
      NODE_ENV: 'test',
    });
    assert.equal(removed.get('INPUT_DATABASE'), 'input');
    assert.equal(removed.get('input_lowercase'), 'input');
    assert.equal(removed.get('ACTIONS_RESULTS_URL'), 'runner');
    assert.equal(removed.get('GITHUB_TOKEN'), 'runner');
    assert.equal(removed.get('GITHUB_STEP_SUMMARY'), 'file-command');
    assert.equal(removed.get('BETTERPG_TOKEN'), 'holds-secret');
    assert.equal(removed.get('NPM_CONFIG_REGISTRY_AUTH'), 'holds-secret', 'URL-encoded inside a longer value');
    const line = describeRemoved(removed);
    assert.match(
      line,
      /^migrate runs without the action's secrets: 5 INPUT_\* variables, ACTIONS_ID_TOKEN_REQUEST_TOKEN, .*BETTERPG_TOKEN, .*GITHUB_TOKEN, .* removed from its environment$/,
    );
    for (const secret of [AGENT, GH, RUNTIME]) assert.ok(!line.includes(secret), 'names only');
  });

  it('scrubs every form: as is, URL-encoded, base64, and the .git/config header actions/checkout writes', () => {
    const scrub = scrubber([AGENT, GH]);
    const header = `AUTHORIZATION: basic ${Buffer.from(`x-access-token:${GH}`).toString('base64')}`;
    assert.equal(
      scrub(`token ${AGENT} url ${encodeURIComponent(AGENT)} b64 ${Buffer.from(AGENT).toString('base64')}`),
      'token *** url *** b64 ***',
    );
    assert.equal(scrub(`\textraheader = ${header}`), '\textraheader = AUTHORIZATION: basic ***');
    assert.equal(
      scrub(`INPUT_AGENT_TOKEN=${AGENT}\0INPUT_GITHUB_TOKEN=${GH}\0`),
      'INPUT_AGENT_TOKEN=***\0INPUT_GITHUB_TOKEN=***\0',
    );
    assert.equal(scrub('nothing secret here'), 'nothing secret here');
    // Values too short to be secrets would blank out ordinary words.
    assert.deepEqual(secretForms(['abc']), []);
  });

  it('scrubs the job summary file in place; a link planted there is not followed', () => {
    const summary = join(dir, 'summary.md');
    writeFileSync(summary, `### ok\nwritten behind our back: ${GH}\n`);
    assert.equal(scrubFile(summary, scrubber([GH])), true);
    assert.equal(readFileSync(summary, 'utf8'), '### ok\nwritten behind our back: ***\n');
    assert.equal(scrubFile(summary, scrubber([GH])), false, 'nothing left to replace');

    const elsewhere = join(dir, 'elsewhere');
    writeFileSync(elsewhere, `not ours: ${GH}\n`);
    const link = join(dir, 'summary-link.md');
    symlinkSync(elsewhere, link);
    assert.equal(scrubFile(link, scrubber([GH])), false);
    assert.equal(readFileSync(elsewhere, 'utf8'), `not ours: ${GH}\n`, 'the link target is untouched');
    assert.equal(scrubFile(undefined, scrubber([GH])), false);
    assert.equal(scrubFile(join(dir, 'missing'), scrubber([GH])), false);
  });
});

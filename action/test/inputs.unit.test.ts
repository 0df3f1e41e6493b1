import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import YAML from 'yaml';
import { ActionError } from '../src/errors.js';
import { eventInfo } from '../src/event.js';
import { getInputs, type EventInfo } from '../src/inputs.js';

/** The input rules without a runner: defaults that depend on the event, and one clear error each. */

const pr = (action: string, n = 7): EventInfo => ({
  name: 'pull_request',
  action,
  pullRequest: n,
  fromFork: false,
  owner: 'o',
  repo: 'r',
});
const dispatch: EventInfo = {
  name: 'workflow_dispatch',
  action: '',
  pullRequest: null,
  fromFork: false,
  owner: 'o',
  repo: 'r',
};
const base = {
  agent_url: 'https://db.example.com:7432/',
  agent_token: 'secret-token-123456',
  database: 'app',
  github_token: 'ghs_x',
};
const reader = (inputs: Record<string, string>) => (name: string) => inputs[name] ?? '';
const fails = (inputs: Record<string, string>, event: EventInfo, message: RegExp) =>
  assert.throws(
    () => getInputs(reader({ ...base, ...inputs }), event),
    (e: unknown) => e instanceof ActionError && message.test(e.message),
  );

describe('inputs', () => {
  it('defaults: branch pr-<n>, parent main, create, comment on, auto password', () => {
    const s = getInputs(reader(base), pr('opened', 42));
    assert.deepEqual(
      { ...s },
      {
        agentUrl: 'https://db.example.com:7432',
        agentToken: base.agent_token,
        agentCa: null,
        database: 'app',
        branch: 'pr-42',
        parent: 'main',
        command: 'create',
        ttl: null,
        role: null,
        fast: false,
        schemaOnly: false,
        seedFile: null,
        migrate: null,
        allowPullRequestTarget: false,
        workingDirectory: '.',
        comment: true,
        githubToken: 'ghs_x',
        showPassword: 'auto',
        pullRequest: 42,
        owner: 'o',
        repo: 'r',
      },
    );
  });

  it('a closed pull request deletes, unless command says otherwise', () => {
    assert.equal(getInputs(reader(base), pr('closed')).command, 'delete');
    assert.equal(getInputs(reader(base), { ...pr('closed'), name: 'pull_request_target' }).command, 'delete');
    assert.equal(getInputs(reader({ ...base, command: 'create' }), pr('closed')).command, 'create');
    assert.equal(getInputs(reader(base), pr('synchronize')).command, 'create');
  });

  it('booleans as core.getBooleanInput reads them', () => {
    const s = getInputs(reader({ ...base, fast: 'TRUE', comment: 'False', show_password: 'true' }), pr('opened'));
    assert.equal(s.fast, true);
    assert.equal(s.comment, false);
    assert.equal(s.showPassword, 'always', 'the older show_password: true still works');
    fails({ fast: 'yes' }, pr('opened'), /^input fast must be true or false, not 'yes'$/);
  });

  it('schema_only and seed_file: a seed needs schema_only, and fast does not go with it', () => {
    const s = getInputs(reader({ ...base, schema_only: 'true', seed_file: 'db/seed.sql' }), pr('opened'));
    assert.equal(s.schemaOnly, true);
    assert.equal(s.seedFile, 'db/seed.sql');
    fails({ seed_file: 'db/seed.sql' }, pr('opened'), /^input seed_file needs schema_only: true$/);
    fails({ schema_only: 'true', fast: 'true' }, pr('opened'), /^inputs schema_only and fast do not go together/);
    fails({ schema_only: 'maybe' }, pr('opened'), /^input schema_only must be true or false, not 'maybe'$/);
  });

  it('show_password: auto, always, never; the older true and false still work', () => {
    for (const [v, want] of [
      ['auto', 'auto'],
      ['always', 'always'],
      ['never', 'never'],
      ['true', 'always'],
      ['false', 'never'],
      ['', 'auto'],
    ] as const) {
      assert.equal(getInputs(reader({ ...base, show_password: v }), pr('opened')).showPassword, want, v);
    }
  });

  it('one clear message for each bad input', () => {
    fails({ agent_url: '' }, pr('opened'), /^input agent_url is required and was not supplied$/);
    fails({ agent_url: 'db:7432' }, pr('opened'), /^input agent_url must start with http:\/\/ or https:\/\//);
    fails(
      { agent_url: 'http://db:7432', agent_ca: '-----BEGIN CERTIFICATE-----' },
      pr('opened'),
      /^input agent_ca is only used with an https:\/\/ agent_url/,
    );
    fails({ agent_url: 'not a url' }, pr('opened'), /^input agent_url must be a URL/);
    fails({ database: 'app; drop' }, pr('opened'), /^input database: database name may only use/);
    fails({ branch: '../x' }, pr('opened'), /^input branch: branch name may only use/);
    fails({ branch: 'main' }, pr('opened'), /must not be 'main'/);
    fails({ branch: 'dev', parent: 'dev' }, pr('opened'), /branch and parent are both 'dev'/);
    fails({ command: 'drop' }, pr('opened'), /^input command must be one of create, delete, reset, get, not 'drop'$/);
    fails(
      { show_password: 'maybe' },
      pr('opened'),
      /^input show_password must be one of auto, always, never \(or the older true, false\), not 'maybe'$/,
    );
    fails({}, dispatch, /^input branch is required when the event \(workflow_dispatch\) has no pull request$/);
    fails({ github_token: '' }, pr('opened'), /github_token is empty/);
  });

  it('ttl: a duration as the agent takes it, or none', () => {
    assert.deepEqual(getInputs(reader({ ...base, ttl: '3d' }), pr('opened')).ttl, { text: '3d', ms: 3 * 864e5 });
    assert.deepEqual(getInputs(reader({ ...base, ttl: '12h' }), pr('opened')).ttl, { text: '12h', ms: 12 * 36e5 });
    assert.deepEqual(getInputs(reader({ ...base, ttl: 'none' }), pr('opened')).ttl, { text: 'none', ms: null });
    fails({ ttl: 'soon' }, pr('opened'), /^input ttl: 'soon' is not a duration .* \(use e\.g\. 3d, 12h, or none\)$/);
    fails({ ttl: '400d' }, pr('opened'), /^input ttl: '400d' is longer than 365d/);
    fails({ ttl: '0s' }, pr('opened'), /^input ttl: /);
  });

  it('role: a plain PostgreSQL name that is not reserved', () => {
    assert.equal(getInputs(reader({ ...base, role: 'app_user2' }), pr('opened')).role, 'app_user2');
    for (const bad of ['App', '1app', 'app-user', 'a"b', 'app user', 'x'.repeat(64), "app'; DROP ROLE x; --"])
      fails({ role: bad }, pr('opened'), /^input role must be a PostgreSQL role name of lower-case letters/);
    for (const reserved of ['pg_monitor', 'public', 'none', 'current_user', 'session_user'])
      fails({ role: reserved }, pr('opened'), new RegExp(`^input role: '${reserved}' is reserved by PostgreSQL$`));
  });

  it('command get: migrate is not run, so pull_request_target does not refuse it', () => {
    const s = getInputs(reader({ ...base, command: 'get', migrate: 'npm run migrate' }), {
      ...pr('synchronize'),
      name: 'pull_request_target',
    });
    assert.equal(s.command, 'get');
    fails(
      { migrate: 'npm run migrate' },
      { ...pr('synchronize'), name: 'pull_request_target' },
      /^refusing to run migrate/,
    );
  });

  it("a fork's pull request without the secret is explained", () => {
    fails({ agent_token: '' }, { ...pr('opened'), fromFork: true }, /pull requests from forks get no secrets/);
  });

  it("pull_request_target: migrate (the pull request's code) is refused unless allow_pull_request_target says so", () => {
    const target = (action: string): EventInfo => ({ ...pr(action), name: 'pull_request_target', fromFork: true });
    const why =
      /^refusing to run migrate on pull_request_target: that event runs with the base repository's secrets and a write token, so running the pull request's code there hands them \(agent_token, github_token\) to the pull request's author; use the pull_request event, or set allow_pull_request_target: true/;
    fails({ migrate: 'npm run migrate' }, target('opened'), why);
    fails({ migrate: 'npm run migrate', command: 'reset' }, target('synchronize'), why);
    fails({ migrate: 'npm run migrate', allow_pull_request_target: 'false' }, target('opened'), why);
    fails(
      { migrate: 'x', allow_pull_request_target: 'yes' },
      target('opened'),
      /^input allow_pull_request_target must be true or false, not 'yes'$/,
    );
    // Opted in: runs; nothing to run (no migrate, or a delete): nothing to refuse.
    assert.equal(
      getInputs(reader({ ...base, migrate: 'npm run migrate', allow_pull_request_target: 'true' }), target('opened'))
        .allowPullRequestTarget,
      true,
    );
    assert.equal(getInputs(reader(base), target('opened')).command, 'create');
    assert.equal(getInputs(reader({ ...base, migrate: 'npm run migrate' }), target('closed')).command, 'delete');
    // The pull_request event runs no secrets past a fork: migrate is the repository's own business there.
    assert.equal(getInputs(reader({ ...base, migrate: 'npm run migrate' }), pr('opened')).migrate, 'npm run migrate');
  });

  it('workflow_dispatch with a branch: no pull request, no comment target', () => {
    const s = getInputs(reader({ ...base, branch: 'pr-9', command: 'reset' }), dispatch);
    assert.equal(s.pullRequest, null);
    assert.equal(s.command, 'reset');
  });
});

describe('event', () => {
  const repository = { full_name: 'o/r' };
  it('reads the pull request and whether it comes from a fork', () => {
    const ctx = (payload: Record<string, unknown>, eventName = 'pull_request') =>
      eventInfo({ eventName, payload, repo: { owner: 'o', repo: 'r' } });
    assert.deepEqual(ctx({ action: 'opened', repository, pull_request: { number: 3, head: { repo: repository } } }), {
      name: 'pull_request',
      action: 'opened',
      pullRequest: 3,
      fromFork: false,
      owner: 'o',
      repo: 'r',
    });
    assert.equal(
      ctx({ action: 'opened', repository, pull_request: { number: 3, head: { repo: { full_name: 'x/r' } } } }).fromFork,
      true,
    );
    assert.equal(
      ctx({ action: 'opened', repository, pull_request: { number: 3, head: { repo: null } } }).fromFork,
      true,
      'a deleted fork',
    );
    assert.equal(
      ctx({ action: 'created', repository, issue: { number: 5, pull_request: {} } }, 'issue_comment').pullRequest,
      5,
    );
    assert.equal(
      ctx({ action: 'created', repository, issue: { number: 5 } }, 'issue_comment').pullRequest,
      null,
      'an issue is not a pull request',
    );
    assert.equal(ctx({ inputs: {}, repository }, 'workflow_dispatch').pullRequest, null);
  });
});

describe('action.yml', () => {
  const yml = YAML.parse(readFileSync(new URL('../../../action.yml', import.meta.url), 'utf8')) as {
    inputs: Record<string, { required: boolean; default?: string }>;
    outputs: Record<string, unknown>;
    runs: { using: string; main: string };
  };

  it('declares exactly the inputs getInputs reads, with the documented defaults', () => {
    const read = new Set<string>();
    getInputs((name) => (read.add(name), (base as Record<string, string>)[name] ?? ''), pr('opened'));
    assert.deepEqual(Object.keys(yml.inputs).sort(), [...read].sort());
    for (const name of ['agent_url', 'agent_token', 'database']) assert.equal(yml.inputs[name]!.required, true, name);
    assert.equal(yml.inputs.github_token!.default, '${{ github.token }}');
    // The defaults in action.yml give the same settings as no input at all.
    const defaults = Object.fromEntries(Object.entries(yml.inputs).map(([k, v]) => [k, v.default ?? '']));
    const viaYml = getInputs(reader({ ...defaults, ...base }), pr('closed'));
    assert.deepEqual(viaYml, getInputs(reader(base), pr('closed')));
  });

  it('runs the committed ESM bundle on node24 and declares the outputs', () => {
    assert.deepEqual(yml.runs, { using: 'node24', main: 'action/dist/index.js' });
    assert.deepEqual(JSON.parse(readFileSync(new URL('../../../action/dist/package.json', import.meta.url), 'utf8')), {
      type: 'module',
    });
    assert.deepEqual(Object.keys(yml.outputs), [
      'connection_string',
      'host',
      'port',
      'user',
      'password',
      'database_name',
      'sslmode',
      'branch',
      'created',
      'expires_at',
      'schema_diff',
      'comment_url',
      'role_user',
      'role_password',
      'role_connection_string',
    ]);
  });
});

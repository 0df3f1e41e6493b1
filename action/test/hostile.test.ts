import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BpgApiError, BpgClient } from '../../agent/api/client.js';
import type { BranchView } from '../../agent/api/schemas.js';
import { serve, type RunningServer } from '../../agent/api/serve.js';
import { silentLogger } from '../../agent/log.js';
import { config, uniqueDb } from '../../agent/test/helpers.js';
import { commentMarker } from '../../shared/pr-comment.js';
import { errorLines, node24, payload, runBundle, type Run } from './bundle.js';
import { ACTIONS_BOT, FakeGitHub } from '../../shared/test/fake-github.js';

/**
 * A hostile pull request against the committed bundle (action/dist/index.js), on Node 20 and on
 * Node 24 (as GitHub runs `node24` actions), with the real agent and the fake GitHub API. Its
 * `migrate` is what a PR author would write to steal the workflow's secrets: it dumps its
 * environment, reads its parent's (/proc/$PPID/environ) and the checkout's credentials
 * (.git/config), prints every secret it finds in every form, writes them into the job summary
 * behind the action's back, and forges a workflow command.
 *
 * What must hold: its own environment has no INPUT_* variable and no secret; nothing the action
 * publishes (its log, the job summary, the PR comment) holds a secret; on pull_request_target it
 * does not run at all unless the workflow opted in.
 */

// Base64 characters in the agent token, so that its URL-encoded form differs from it.
const AGENT_TOKEN = `bpg+${randomBytes(18).toString('base64')}/end=`;
const GH_TOKEN = `ghs_${randomBytes(18).toString('hex')}`;
const RUNTIME_TOKEN = `eyJ0eXAiOiJKV1QifQ.${randomBytes(24).toString('hex')}`;
const OIDC_TOKEN = `oidc-${randomBytes(16).toString('hex')}`;
const OWNER = 'octo-org';
const REPO = `hostile-${randomBytes(3).toString('hex')}`;
const FULL = `${OWNER}/${REPO}`;
const db = uniqueDb('ah');
const work = mkdtempSync(join(tmpdir(), 'bpg-action-hostile-'));

/** Every form a secret may be printed in: as is, URL-encoded, base64, and in actions/checkout's header. */
function forms(secret: string): string[] {
  return [
    secret,
    encodeURIComponent(secret),
    Buffer.from(secret).toString('base64'),
    Buffer.from(`x-access-token:${secret}`).toString('base64'),
  ];
}

/** The PR author's migration. `dump`: where it leaves its exact environment (`env -0`) for the test. */
function hostileMigrate(dump: string): string {
  return String.raw`echo "hostile migration on $PGHOST:$PGPORT"
env -0 > '${dump}'
echo "--- my environment"
env
echo "--- my parent's environment"
tr '\0' '\n' < /proc/$PPID/environ
echo "--- the checkout's credentials"
cat .git/config
from_parent() { tr '\0' '\n' < /proc/$PPID/environ | sed -n "s/^$1=//p"; }
t=$(from_parent INPUT_AGENT_TOKEN)
g=$(from_parent INPUT_GITHUB_TOKEN)
r=$(from_parent ACTIONS_RUNTIME_TOKEN)
o=$(from_parent ACTIONS_ID_TOKEN_REQUEST_TOKEN)
s=$(from_parent GITHUB_STEP_SUMMARY)
[ -n "$s" ] && printf 'leaked into the summary: %s %s %s\n' "$PGPASSWORD" "$t" "$g" >> "$s"
echo "::error::forged by the migration"
echo "INPUT_AGENT_TOKEN in my own environment: [$INPUT_AGENT_TOKEN] GITHUB_TOKEN: [$GITHUB_TOKEN]"
echo "password: $PGPASSWORD url: $DATABASE_URL"
echo "agent token: $t encoded: $(node -e 'process.stdout.write(encodeURIComponent(process.argv[1]))' "$t")"
echo "github token: $g base64: $(printf %s "$g" | base64 -w0)"
echo "runtime token: $r oidc token: $o"
exit 7`;
}

let srv: RunningServer;
let client: BpgClient;
let gh: FakeGitHub;

interface Runtime {
  name: string;
  node: () => string;
  /** Pull requests: one through pull_request, one through pull_request_target. */
  prs: { plain: number; target: number };
}

const runtimes: Runtime[] = [
  { name: 'Node 20', node: () => process.execPath, prs: { plain: 5101, target: 5102 } },
  { name: 'Node 24', node: node24, prs: { plain: 5201, target: 5202 } },
];

describe('a hostile pull request against the Action (the committed bundle, a real agent, a fake GitHub API)', () => {
  before(async () => {
    const cfg = await config();
    srv = await serve(
      { ...cfg, api: { ...cfg.api, tokens: [{ name: 'hostile-action-tests', token: AGENT_TOKEN }] } },
      { listen: '127.0.0.1:0', log: silentLogger, handleSignals: false, env: {} },
    );
    client = new BpgClient({ baseUrl: srv.url, token: AGENT_TOKEN });
    await client.createDatabase({ name: db });
    gh = new FakeGitHub(GH_TOKEN, { as: ACTIONS_BOT, userForbidden: true });
    await gh.start();
    gh.repo(FULL, { private: false });
  });

  after(async () => {
    await client?.deleteDatabase(db, { force: true }).catch(() => {});
    await srv?.close();
    await gh?.close();
    rmSync(work, { recursive: true, force: true });
  });

  for (const rt of runtimes) {
    describe(rt.name, () => {
      let node = '';
      let dir = '';
      const dumps = { plain: '', refused: '', allowed: '' };

      before(() => {
        node = rt.node();
        dir = join(work, rt.name.replace(/\W+/g, '-'));
        // The workspace as actions/checkout leaves it (persist-credentials: true): the token in .git/config.
        mkdirSync(join(dir, '.git'), { recursive: true });
        const header = Buffer.from(`x-access-token:${GH_TOKEN}`).toString('base64');
        writeFileSync(
          join(dir, '.git', 'config'),
          `[core]\n\tbare = false\n[http "https://github.com/"]\n\textraheader = AUTHORIZATION: basic ${header}\n`,
        );
        for (const k of Object.keys(dumps) as Array<keyof typeof dumps>) dumps[k] = join(dir, `env-${k}`);
      });

      /** One step of the workflow: the runner's environment with its credentials, the workflow's `env:`, the inputs. */
      const step = (
        label: string,
        eventName: string,
        pr: number,
        action: string,
        inputs: Record<string, string>,
      ): Promise<Run> =>
        runBundle({
          label: `${rt.name} ${label}`,
          work: dir,
          node,
          eventName,
          event: payload({ owner: OWNER, repo: REPO, pr }, 'pull_request', action, {
            fork: eventName === 'pull_request_target',
          }),
          inputs: { agent_url: srv.url, agent_token: AGENT_TOKEN, database: db, github_token: GH_TOKEN, ...inputs },
          env: {
            GITHUB_REPOSITORY: FULL,
            GITHUB_API_URL: gh.url,
            // What the runner gives a JavaScript action.
            ACTIONS_RUNTIME_TOKEN: RUNTIME_TOKEN,
            ACTIONS_RUNTIME_URL: 'https://pipelines.actions.example/runtime/',
            ACTIONS_RESULTS_URL: 'https://results.actions.example/',
            ACTIONS_ID_TOKEN_REQUEST_TOKEN: OIDC_TOKEN,
            ACTIONS_ID_TOKEN_REQUEST_URL: 'https://token.actions.example/oidc',
            // What a workflow's `env:` may add: the GitHub token, the agent token under a name of its own, a harmless setting.
            GITHUB_TOKEN: GH_TOKEN,
            BETTERPG_AGENT_TOKEN: AGENT_TOKEN,
            APP_SETTING: 'kept-for-the-migration',
          },
        });

      it('runs on the Node it is meant to', () => {
        const v = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();
        assert.match(v, rt.name === 'Node 24' ? /^v24\./ : /^v20\./);
      });

      it('pull_request: migrate runs without the secrets, and nothing the action publishes holds one', async () => {
        const r = await step('pull_request (hostile migrate)', 'pull_request', rt.prs.plain, 'opened', {
          migrate: hostileMigrate(dumps.plain),
        });
        const b = await client.getBranch(db, `pr-${rt.prs.plain}`);
        assertHostileRun(r, b, dumps.plain, rt.prs.plain, 5);
      });

      it('pull_request_target without allow_pull_request_target: refused in one line, nothing created, migrate not run', async () => {
        const r = await step('pull_request_target (refused)', 'pull_request_target', rt.prs.target, 'opened', {
          migrate: hostileMigrate(dumps.refused),
        });
        assert.equal(r.code, 1, r.stdout + r.stderr);
        const errors = errorLines(r);
        assert.equal(errors.length, 1, r.stdout);
        assert.match(
          errors[0]!,
          /^::error::refusing to run migrate on pull_request_target: that event runs with the base repository's secrets and a write token, so running the pull request's code there hands them \(agent_token, github_token\) to the pull request's author; use the pull_request event, or set allow_pull_request_target: true/,
        );
        assert.equal(existsSync(dumps.refused), false, 'migrate did not run');
        await assert.rejects(
          client.getBranch(db, `pr-${rt.prs.target}`),
          (e: BpgApiError) => e.status === 404,
          'no branch',
        );
        assert.deepEqual(gh.commentsOf(FULL, rt.prs.target), [], 'no comment');
        assert.deepEqual(r.outputs, {});
        assertNothingPublished(r, []);
      });

      it('pull_request_target with allow_pull_request_target: true runs, with the same protections', async () => {
        const r = await step('pull_request_target (allowed)', 'pull_request_target', rt.prs.target, 'opened', {
          migrate: hostileMigrate(dumps.allowed),
          allow_pull_request_target: 'true',
        });
        const b = await client.getBranch(db, `pr-${rt.prs.target}`);
        assertHostileRun(r, b, dumps.allowed, rt.prs.target, 6);
      });

      it('pull_request_target closing the pull request deletes the branch without the opt-in (nothing of the PR runs)', async () => {
        const r = await step('pull_request_target (closed)', 'pull_request_target', rt.prs.target, 'closed', {
          migrate: hostileMigrate(dumps.refused),
        });
        assert.equal(r.code, 0, r.stdout + r.stderr);
        await assert.rejects(client.getBranch(db, `pr-${rt.prs.target}`), (e: BpgApiError) => e.status === 404);
        assert.equal(existsSync(dumps.refused), false);
        assertNothingPublished(r, comments(rt.prs.target));
      });
    });
  }
});

function comments(pr: number): string[] {
  return gh.commentsOf(FULL, pr).map((c) => c.body);
}

/**
 * No secret in any form in the log (but on the `::add-mask::` lines, which the runner swallows),
 * the job summary, or a comment. `password`: the branch's, when there is one.
 */
function assertNothingPublished(r: Run, bodies: string[], password?: string): void {
  const secrets = [AGENT_TOKEN, GH_TOKEN, RUNTIME_TOKEN, OIDC_TOKEN, ...(password ? [password] : [])];
  const all = secrets.flatMap(forms);
  const masks = new Set(all.map((f) => `::add-mask::${f}`));
  const places: Array<[string, string]> = [
    [
      'the log (stdout)',
      r.stdout
        .split('\n')
        .filter((l) => !masks.has(l))
        .join('\n'),
    ],
    ['the log (stderr)', r.stderr],
    ['the job summary', r.summary],
    ...bodies.map((b, i): [string, string] => [`comment ${i + 1}`, b]),
  ];
  for (const [where, text] of places) {
    for (const f of all) assert.ok(!text.includes(f), `a secret (${f.slice(0, 6)}…) is in ${where}`);
  }
}

/** The lines the runner takes as workflow commands: none between `::stop-commands::T` and `::T::`. */
function commandLines(stdout: string): string[] {
  const out: string[] = [];
  let stop: string | null = null;
  for (const l of stdout.split('\n')) {
    if (stop !== null) {
      if (l === `::${stop}::`) stop = null;
      continue;
    }
    const m = /^::stop-commands::(.+)$/.exec(l);
    if (m) stop = m[1]!;
    else if (l.startsWith('::')) out.push(l);
  }
  return out;
}

/** `inputs`: how many inputs the step was given (INPUT_* variables). */
function assertHostileRun(r: Run, b: BranchView, dump: string, pr: number, inputs: number): void {
  const pw = b.connection.password;
  // The migration ran to its end (exit 7) against this branch; the branch is kept.
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.equal(b.status, 'running');

  // Its own environment: exactly what it may have.
  const env = new Map(
    readFileSync(dump, 'utf8')
      .split('\0')
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as const),
  );
  const names = [...env.keys()];
  assert.deepEqual(
    names.filter((k) => /^INPUT_/i.test(k)),
    [],
    'no INPUT_* variable',
  );
  assert.deepEqual(
    names.filter((k) => /^ACTIONS_/.test(k)),
    [],
    "none of the runner's service credentials",
  );
  for (const k of [
    'GITHUB_TOKEN',
    'BETTERPG_AGENT_TOKEN',
    'GITHUB_OUTPUT',
    'GITHUB_ENV',
    'GITHUB_PATH',
    'GITHUB_STATE',
    'GITHUB_STEP_SUMMARY',
  ])
    assert.ok(!env.has(k), `no ${k}`);
  for (const secret of [AGENT_TOKEN, GH_TOKEN, RUNTIME_TOKEN, OIDC_TOKEN]) {
    for (const f of forms(secret))
      assert.deepEqual(
        names.filter((k) => env.get(k)!.includes(f)),
        [],
        `no variable holds a token (${f.slice(0, 6)}…)`,
      );
  }
  // What it should have: the branch, and the rest of the runner's environment.
  assert.equal(env.get('PGPASSWORD'), pw);
  assert.equal(env.get('DATABASE_URL'), b.connection.uri);
  assert.equal(env.get('APP_SETTING'), 'kept-for-the-migration');
  assert.equal(env.get('GITHUB_REPOSITORY'), FULL);

  // It did find the secrets where they can be found (its parent's /proc/<pid>/environ, .git/config)
  // and print them: they arrive scrubbed.
  assert.match(r.stdout, /^INPUT_AGENT_TOKEN=\*\*\*$/m);
  assert.match(r.stdout, /^\textraheader = AUTHORIZATION: basic \*\*\*$/m);
  assert.match(r.stdout, /^INPUT_AGENT_TOKEN in my own environment: \[\] GITHUB_TOKEN: \[\]$/m);
  assert.match(r.stdout, /^password: \*\*\* url: postgresql:\/\/[^:]+:\*\*\*@/m);
  assert.match(r.stdout, /^agent token: \*\*\* encoded: \*\*\*$/m);
  assert.match(r.stdout, /^github token: \*\*\* base64: \*\*\*$/m);
  assert.match(r.stdout, /^runtime token: \*\*\* oidc token: \*\*\*$/m);
  // The log names (only) what it runs without.
  const removed =
    /^migrate runs without the action's secrets: (\d+) INPUT_\* variables, (.*) removed from its environment$/m.exec(
      r.stdout,
    );
  assert.ok(removed, r.stdout);
  assert.equal(Number(removed[1]), inputs, 'every input the step was given');
  assert.deepEqual(removed[2]!.split(', '), [
    'ACTIONS_ID_TOKEN_REQUEST_TOKEN',
    'ACTIONS_ID_TOKEN_REQUEST_URL',
    'ACTIONS_RESULTS_URL',
    'ACTIONS_RUNTIME_TOKEN',
    'ACTIONS_RUNTIME_URL',
    'BETTERPG_AGENT_TOKEN',
    'GITHUB_OUTPUT',
    'GITHUB_STEP_SUMMARY',
    'GITHUB_TOKEN',
  ]);

  // What it wrote into the job summary behind the action's back was scrubbed, and said so.
  assert.match(r.summary, /^leaked into the summary: \*\*\* \*\*\* \*\*\*$/m);
  assert.match(
    r.stdout,
    /^::warning::the job summary held a secret that the migration wrote into it behind the action's back: replaced by \*\*\*$/m,
  );

  // Its forged `::error::` is not a workflow command; the step's one error is the action's.
  assert.ok(r.stdout.includes('\n::error::forged by the migration\n'), 'the forged line is in the log');
  const commands = commandLines(r.stdout);
  assert.ok(!commands.includes('::error::forged by the migration'), 'inside ::stop-commands::');
  const errors = commands.filter((l) => l.startsWith('::error::'));
  assert.equal(errors.length, 1, r.stdout);
  assert.ok(
    errors[0]!.startsWith(
      `::error::migration failed: it exited with code 7; branch ${db}/pr-${pr} is kept for debugging`,
    ),
    errors[0],
  );
  assert.match(errors[0]!, /runtime token: \*\*\* oidc token: \*\*\*/);

  // The outputs are the action's own: the password there is for the workflow's next steps.
  assert.equal(r.outputs.password, pw);
  assert.equal(r.outputs.connection_string, b.connection.uri);

  // The comment shows the failure and the scrubbed output.
  const ours = gh
    .commentsOf(FULL, pr)
    .filter((c) => c.user.login === ACTIONS_BOT.login && c.body.includes(commentMarker(db)));
  assert.equal(ours.length, 1);
  assert.match(ours[0]!.body, /migration failed/);
  assert.match(ours[0]!.body, /agent token: \*\*\* encoded: \*\*\*/);

  assertNothingPublished(r, comments(pr), pw);
}

import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startReceiver, type Receiver } from '../src/receiver.js';
import { MAX_BODY_BYTES } from '../src/server.js';
import { FakeGitHub } from '../../shared/test/fake-github.js';
import {
  deliver,
  prPayload,
  queuedIds,
  receiverConfig,
  recorder,
  sha,
  sign,
  uniqueName,
  waitFor,
  type Reply,
} from './helpers.js';

/**
 * The receiver's one entry point, attacked: wrong, missing and prefixed signatures and oversize
 * bodies are refused before the payload is looked at; signed deliveries with hostile repository,
 * action, number, sha and header values are refused or ignored; hostile text in fields the receiver
 * does not route on never reaches the agent or GitHub. Nothing may reach the queue journal, the
 * agent or GitHub unless it is a real pull request of a configured repository. The agent here is a
 * recorder (every call is refused with 503), so "nothing created" means "nothing was asked".
 */

const OWNER = uniqueName('org');
const REPO = `${OWNER}/shop`;
const GH_TOKEN = `ghs_${uniqueName('t')}${uniqueName('t')}`;

interface AgentCall {
  method: string;
  path: string;
  body: string;
}

const agentCalls: AgentCall[] = [];
let agent: Server;
let gh: FakeGitHub;
let receiver: Receiver;
let secret: string;
let stateDir: string;
let hook: string;
const log = recorder();

function startRecorder(): Promise<string> {
  agent = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      agentCalls.push({ method: req.method ?? '', path: req.url ?? '', body });
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'unavailable', message: 'recorder: no agent here' } }));
    });
  });
  return new Promise((r) =>
    agent.listen(0, '127.0.0.1', () => r(`http://127.0.0.1:${(agent.address() as AddressInfo).port}`)),
  );
}

/** A refusal or an acknowledgement: a JSON object with `error` (4xx) or `status` (200). */
function assertClean(r: Reply, status: number, what: string, reason?: RegExp): void {
  assert.equal(r.status, status, `${what}: ${JSON.stringify(r.body)}`);
  assert.equal(typeof r.body, 'object', what);
  if (status >= 400) {
    assert.equal(typeof r.body.error, 'string', what);
    assert.doesNotMatch(r.body.error, /\n|\bat .*\.js:\d+/, `${what}: one line`);
  } else {
    assert.equal(r.body.status, 'ignored', `${what}: ${JSON.stringify(r.body)}`);
    if (reason) assert.match(r.body.reason, reason, what);
  }
}

/** Nothing queued, journaled or asked of the agent or GitHub. */
function assertNothingDone(what: string): void {
  assert.equal(receiver.queue.size, 0, `${what}: queue`);
  assert.deepEqual(queuedIds(stateDir), [], `${what}: journal`);
  assert.deepEqual(agentCalls, [], `${what}: agent calls`);
  assert.deepEqual(gh.requests, [], `${what}: GitHub calls`);
}

/** POSTs `raw` with a correct signature but own headers. */
async function post(headers: Record<string, string>, raw: string): Promise<Reply> {
  const res = await fetch(hook, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: raw,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined, ms: 0 };
}

describe('webhook receiver: hostile deliveries', () => {
  before(async () => {
    const agentUrl = await startRecorder();
    gh = new FakeGitHub(GH_TOKEN);
    await gh.start();
    gh.repo(REPO, { private: false });
    const r = await receiverConfig({
      githubUrl: gh.url,
      githubToken: GH_TOKEN,
      agentUrl,
      agentToken: 't'.repeat(24),
      repos: { [REPO]: { database: 'shop' } },
      queue: { attempts: 1 },
    });
    secret = r.secret;
    stateDir = r.stateDir;
    receiver = await startReceiver(r.cfg, { log, listen: '127.0.0.1:0' });
    hook = `${receiver.url}/webhook`;
  });

  after(async () => {
    await receiver?.close(5000);
    await gh?.close();
    agent?.closeAllConnections();
    await new Promise((r) => agent?.close(() => r(undefined)));
  });

  it('missing, malformed, wrong and prefixed signatures get 401 and oversize bodies 413, before anything is parsed', async () => {
    const payload = prPayload('opened', REPO, 7, sha());
    const body = JSON.stringify(payload);
    const good = sign(secret, body);
    const hex = good.slice('sha256='.length);
    const signatures: Array<[string | null, string]> = [
      [null, 'missing'],
      ['', 'empty'],
      ['sha256=', 'no digest'],
      [`sha1=${createHmac('sha1', secret).update(body).digest('hex')}`, 'sha1'],
      [`SHA256=${hex}`, 'upper-case scheme'],
      [`sha256=${hex.toUpperCase()}`, 'upper-case hex'],
      [sign(`${secret}x`, body), 'another secret'],
      [sign(secret.slice(1), body), 'a shorter secret'],
      [sign(secret, `${body} `), 'another body'],
      [`${good}00`, 'digest with a suffix'],
      [good.slice(0, -2), 'truncated digest'],
      [`${good},${good}`, 'two digests'],
      [`sha256=${'0'.repeat(64)}`, 'zeros'],
      [`sha256=$(id)${hex.slice(5)}`, 'shell in the digest'],
    ];
    for (const [signature, what] of signatures) {
      assertClean(await deliver(hook, secret, 'pull_request', payload, { signature }), 401, what);
    }
    // A body over the cap: 413 when signed (read up to the cap, never parsed), 401 when not.
    const huge = JSON.stringify({ ...payload, pad: 'x'.repeat(MAX_BODY_BYTES) });
    assertClean(await deliver(hook, secret, 'pull_request', null, { raw: huge }), 413, 'oversize, signed');
    assertClean(
      await deliver(hook, secret, 'pull_request', null, { raw: huge, signature: null }),
      401,
      'oversize, unsigned',
    );
    assertNothingDone('bad signatures');
    // Nothing of a payload is logged.
    assert.ok(!JSON.stringify(log.lines).includes(payload.pull_request.title), 'no payload in the log');
  });

  it('signed deliveries with hostile repository, action, number, sha or headers are refused or ignored: nothing queued or called', async () => {
    const variants: Array<[string, (p: any) => void, RegExp]> = [];
    for (const name of [
      `${REPO};id`,
      `${REPO}/../../etc/passwd`,
      '../../etc/passwd',
      'constructor',
      '__proto__',
      'toString',
      `${OWNER}/shоp` /* Cyrillic о */,
      `${REPO}\u0000`,
      `${OWNER}/$(id)`,
    ]) {
      variants.push([
        `repository ${JSON.stringify(name)}`,
        (p) => (p.repository.full_name = name),
        /repository not configured/,
      ]);
    }
    for (const action of ['constructor', '__proto__', 'toString', 'opened; id', 'opened\nclosed']) {
      variants.push([`action ${JSON.stringify(action)}`, (p) => (p.action = action), /^action /]);
    }
    for (const number of [-1, 0, 1.5, '7', 1e20, Number.MAX_SAFE_INTEGER + 2, '$(id)', null]) {
      variants.push([`number ${JSON.stringify(number)}`, (p) => (p.number = number), /not a pull_request payload/]);
    }
    for (const head of ['$(id)', '../../../../etc/passwd', 'A'.repeat(40), `${sha()};id`, '']) {
      variants.push([
        `head sha ${JSON.stringify(head)}`,
        (p) => (p.pull_request.head.sha = head),
        /not a pull_request payload/,
      ]);
    }
    variants.push(
      ['no pull_request', (p) => delete p.pull_request, /not a pull_request payload/],
      ['installation id as text', (p) => (p.installation = { id: '1; id' }), /not a pull_request payload/],
      ['repository owner as an array', (p) => (p.repository.owner = [{ login: 'x' }]), /not a pull_request payload/],
      ['a fork', (p) => (p.pull_request.head.repo.full_name = 'evil/shop'), /fork/],
    );
    let n = 100;
    for (const [what, change, reason] of variants) {
      const p = prPayload('opened', REPO, n++, sha());
      change(p);
      assertClean(await deliver(hook, secret, 'pull_request', p), 200, what, reason);
    }

    // Signed, but headers or body the receiver cannot take.
    const p = prPayload('opened', REPO, 99, sha());
    const raw = JSON.stringify(p);
    const signed = (extra: Record<string, string>, body = raw) =>
      post(
        {
          'x-hub-signature-256': sign(secret, body),
          'x-github-event': 'pull_request',
          'x-github-delivery': randomUUID(),
          ...extra,
        },
        body,
      );
    assertClean(await signed({ 'x-github-event': 'pull_request;id' }), 400, 'event header with shell');
    assertClean(await signed({ 'x-github-event': '../pull_request' }), 400, 'event header with a path');
    assertClean(await signed({ 'x-github-delivery': '../../queue.jsonl' }), 400, 'delivery id with a path');
    assertClean(await signed({ 'x-github-delivery': 'a'.repeat(200) }), 400, 'delivery id too long');
    assertClean(await signed({ 'x-github-delivery': '' }), 400, 'no delivery id');
    assertClean(await signed({}, '{"action":'), 400, 'not JSON');
    assertClean(
      await signed({ 'content-type': 'application/x-www-form-urlencoded' }, 'payload=%7Bnope'),
      400,
      'form body, not JSON',
    );
    assertClean(
      await signed({ 'content-type': 'application/x-www-form-urlencoded' }, 'nothing=1'),
      400,
      'form body without payload',
    );
    const deep = `{"action":"opened","number":1,"pull_request":${'['.repeat(200_000)}${']'.repeat(200_000)}}`;
    assertClean(await signed({}, deep), 200, 'deeply nested JSON');
    const other = await signed({ 'x-github-event': 'push' });
    assert.equal(other.status, 200);
    assert.equal(other.body.status, 'ignored');

    assertNothingDone('hostile signed deliveries');
  });

  it('hostile text in fields the receiver does not route on reaches neither the agent nor GitHub', async () => {
    const p = prPayload('opened', REPO, 4242, sha());
    const nasty = ['$(id); rm -rf / #', '../../main', "'; DROP TABLE accounts; --", '`id`', 'ＭＡＩＮ'];
    p.pull_request.head.ref = nasty[0];
    p.pull_request.base.ref = nasty[1];
    p.pull_request.title = nasty[2];
    p.pull_request.body = nasty.join('\n');
    p.pull_request.user.login = nasty[3];
    p.sender.login = nasty[4];
    const r = await deliver(hook, secret, 'pull_request', p);
    assert.equal(r.status, 202, JSON.stringify(r.body));

    // One attempt (the recorder answers 503), then the failure is reported on the pull request.
    await waitFor('the failure report', () => gh.statusesOf(REPO).find((s) => s.state === 'error'));
    await receiver.queue.idle();
    assert.deepEqual(agentCalls, [
      { method: 'PUT', path: '/v1/databases/shop/branches/pr-4242', body: '{"from":"main"}' },
    ]);
    assert.ok(gh.requests.length > 0);
    for (const q of gh.requests)
      assert.ok(q.path.startsWith(`/repos/${REPO}/`) || q.path === '/user', `GitHub path ${q.path}`);
    const journal = readFileSync(join(stateDir, 'queue.jsonl'), 'utf8');
    const everything = [
      journal,
      JSON.stringify(agentCalls),
      JSON.stringify(gh.requests),
      JSON.stringify(log.lines),
    ].join('\n');
    for (const s of nasty) assert.ok(!everything.includes(s), `${JSON.stringify(s)} went somewhere`);
  });
});

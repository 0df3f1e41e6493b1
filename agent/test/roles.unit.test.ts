import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TokenChecker, collectTokens } from '../api/auth.js';
import { openapi } from '../api/openapi.js';
import { LOCAL_PRINCIPAL, allows, routeRole } from '../api/roles.js';
import { parseConfig } from '../config.js';
import { BpgError } from '../errors.js';

/** Token roles and database lists: the rules, without the stack (api-remote.test.ts runs them over HTTPS). */
describe('API roles', () => {
  it('read < write < admin', () => {
    assert.ok(allows('admin', 'write') && allows('admin', 'read') && allows('write', 'read'));
    assert.ok(!allows('read', 'write') && !allows('write', 'admin') && !allows('read', 'admin'));
    for (const r of ['read', 'write', 'admin'] as const) assert.ok(allows(r, r));
  });

  it('GET needs read, every other method write, the doctor admin, health nothing', () => {
    assert.equal(routeRole('GET', '/v1/databases'), 'read');
    assert.equal(routeRole('GET', '/metrics'), 'read');
    assert.equal(routeRole('GET', '/v1/status'), 'read');
    assert.equal(routeRole('PUT', '/v1/databases/{db}/branches/{branch}'), 'write');
    assert.equal(routeRole('DELETE', '/v1/databases/{db}'), 'write');
    assert.equal(routeRole('post', '/v1/databases'), 'write');
    assert.equal(routeRole('GET', '/v1/doctor'), 'admin');
    assert.equal(routeRole('POST', '/v1/doctor/fix'), 'admin');
    assert.equal(routeRole('GET', '/v1/health'), 'none');
  });

  it('openapi.json states the role of every operation, as the server enforces it', () => {
    const paths = openapi().paths as Record<string, Record<string, Record<string, unknown>>>;
    let n = 0;
    for (const [path, ops] of Object.entries(paths))
      for (const [method, op] of Object.entries(ops)) {
        n++;
        const role = routeRole(method, path);
        assert.equal(op['x-betterpg-role'], role, `${method} ${path}`);
        assert.match(String(op.description), new RegExp(`Role: ${role}\\b`), `${method} ${path} says it`);
      }
    assert.ok(n >= 30, `${n} operations`);
  });

  it('a token is admin unless it says otherwise; its databases come with it; the local socket is admin', () => {
    const t = new TokenChecker([
      { name: 'old', token: 'o'.repeat(20) },
      { name: 'ci', token: 'c'.repeat(20), role: 'write', databases: ['app'] },
      { name: 'ro', token: 'r'.repeat(20), role: 'read' },
    ]);
    assert.deepEqual(t.check(`Bearer ${'o'.repeat(20)}`), { name: 'old', role: 'admin', databases: null });
    const ci = t.check(`bearer ${'c'.repeat(20)}`)!;
    assert.equal(ci.role, 'write');
    assert.deepEqual([...ci.databases!], ['app']);
    assert.equal(t.check(`Bearer ${'r'.repeat(20)}`)?.role, 'read');
    assert.equal(t.check(`Bearer ${'x'.repeat(20)}`), null);
    assert.equal(t.check(undefined), null);
    assert.deepEqual(LOCAL_PRINCIPAL, { name: 'local', role: 'admin', databases: null });
    assert.ok(Object.isFrozen(LOCAL_PRINCIPAL));
    const env = collectTokens([], { BPG_API_TOKEN: 'e'.repeat(20) });
    assert.deepEqual(env, [{ name: 'env', token: 'e'.repeat(20), role: 'admin' }]);
  });

  it('api.tokens[].role and databases in the config: checked, one clear line', () => {
    const cfg = (tokens: unknown) => parseConfig({ api: { tokens } }, 'test.yaml');
    const ok = cfg([
      { name: 'a', token: 'a'.repeat(16) },
      { name: 'b', token: 'b'.repeat(16), role: 'read', databases: ['app', 'web_2'] },
    ]);
    assert.equal(ok.api.tokens[0]!.role, undefined, 'absent: admin (TokenChecker)');
    assert.deepEqual(ok.api.tokens[1], { name: 'b', token: 'b'.repeat(16), role: 'read', databases: ['app', 'web_2'] });
    for (const [bad, why] of [
      [{ role: 'owner' }, /role/],
      [{ databases: [] }, /at least one database/],
      [{ databases: ['../x'] }, /databases/],
      [{ databases: 'app' }, /databases/],
    ] as const) {
      assert.throws(
        () => cfg([{ name: 'x', token: 'x'.repeat(16), ...bad }]),
        (e: unknown) => e instanceof BpgError && why.test(e.message) && !e.message.includes('\n'),
        JSON.stringify(bad),
      );
    }
  });
});

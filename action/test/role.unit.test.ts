import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { roleCredentials, rolePassword, type BranchConnection } from '../src/role.js';

/** The role's password and connection string, without a server (the stack test logs in with them). */

const conn = (uri: string): BranchConnection => ({
  host: 'db.example.com',
  port: 6432,
  user: 'postgres',
  password: 'Branch-Pass_0123456789abcdefghij',
  database: 'api@pr-1',
  uri,
  via: 'router',
  sslmode: 'require',
  direct: {
    host: '127.0.0.1',
    port: 15433,
    user: 'postgres',
    password: 'Branch-Pass_0123456789abcdefghij',
    database: 'api',
    uri: 'postgresql://postgres:Branch-Pass_0123456789abcdefghij@127.0.0.1:15433/api',
  },
});

describe('role credentials', () => {
  it('the password: 32 URL-safe characters, the same for the same branch and role, another for another', () => {
    const pw = rolePassword('Branch-Pass_0123456789abcdefghij', 'app');
    assert.match(pw, /^[A-Za-z0-9_-]{32}$/);
    assert.equal(rolePassword('Branch-Pass_0123456789abcdefghij', 'app'), pw);
    assert.notEqual(rolePassword('Branch-Pass_0123456789abcdefghij', 'app2'), pw);
    assert.notEqual(rolePassword('another-branch-password-00000000', 'app'), pw);
    assert.ok(!pw.includes('Branch-Pass'));
  });

  it("the connection string is the branch's with the role's user and password, whatever form the agent wrote it in", () => {
    const pw = rolePassword('Branch-Pass_0123456789abcdefghij', 'app');
    for (const [uri, want] of [
      [
        'postgresql://postgres:Branch-Pass_0123456789abcdefghij@db.example.com:6432/api@pr-1?sslmode=require',
        `postgresql://app:${pw}@db.example.com:6432/api@pr-1?sslmode=require`,
      ],
      [
        'postgresql://postgres:Branch-Pass_0123456789abcdefghij@db.example.com:6432/api%40pr-1?sslmode=require',
        `postgresql://app:${pw}@db.example.com:6432/api%40pr-1?sslmode=require`,
      ],
      [
        'postgresql://postgres:Branch-Pass_0123456789abcdefghij@[::1]:15433/api',
        `postgresql://app:${pw}@[::1]:15433/api`,
      ],
    ] as const) {
      assert.deepEqual(roleCredentials(conn(uri), 'app'), { user: 'app', password: pw, uri: want });
    }
  });
});

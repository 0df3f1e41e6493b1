import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { effectiveRequireTls, parseConfig } from '../config.js';
import { branchView } from '../engine/view.js';
import * as S from '../api/schemas.js';
import {
  CANCEL_REQUEST,
  GSSENC_REQUEST,
  MessageFramer,
  ProtocolError,
  SSL_REQUEST,
  errorFields,
  errorResponse,
  parseFirstPacket,
  startupPacket,
} from '../proxy/protocol.js';
import { readPacket } from '../proxy/read-packet.js';
import { routeOf } from '../proxy/routing.js';

/** The router's pure parts: the packets it reads and writes, routing, its config and the views. */

const word = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const packet = (code: number, body = Buffer.alloc(0)) => Buffer.concat([word(8 + body.length), word(code), body]);
const V3 = 3 << 16;

describe('router protocol', () => {
  it('reads the four first packets', () => {
    assert.deepEqual(parseFirstPacket(packet(SSL_REQUEST)), { kind: 'ssl' });
    assert.deepEqual(parseFirstPacket(packet(GSSENC_REQUEST)), { kind: 'gssenc' });
    const key = Buffer.from('0000303900abcdef', 'hex');
    const cancel = parseFirstPacket(packet(CANCEL_REQUEST, key));
    assert.equal(cancel.kind, 'cancel');
    assert.equal(cancel.kind === 'cancel' && cancel.key, key.toString('hex'));
    const s = parseFirstPacket(
      startupPacket(
        V3,
        new Map([
          ['user', 'postgres'],
          ['database', 'api@pr-1'],
        ]),
      ),
    );
    assert.equal(s.kind, 'startup');
    assert.equal(s.kind === 'startup' && s.params.get('database'), 'api@pr-1');
    assert.equal(s.kind === 'startup' && s.version, V3);
  });

  it('writes the startup packet back byte for byte, in the client protocol version', () => {
    const params = new Map([
      ['user', 'u'],
      ['database', 'd'],
      ['application_name', 'ünï'],
    ]);
    const p = startupPacket((3 << 16) | 2, params);
    const back = parseFirstPacket(p);
    assert.ok(back.kind === 'startup');
    assert.equal(back.version, (3 << 16) | 2);
    assert.deepEqual([...back.params], [...params]);
    assert.deepEqual(startupPacket(back.version, back.params), p);
  });

  it('refuses malformed packets with a protocol error', () => {
    const bad = [
      Buffer.from([0, 0, 0, 4, 0, 0, 0, 0]), // length says 4
      packet(2 << 16, Buffer.from('user\0x\0\0')), // protocol 2
      packet(V3, Buffer.from('user\0x\0')), // no terminator
      packet(V3, Buffer.from('user\0x')), // unterminated value
      packet(V3, Buffer.from('database\0x\0\0')), // no user
      packet(V3, Buffer.from('user\0x\0\0junk')), // data after the terminator
      packet(SSL_REQUEST, Buffer.from('x')),
      packet(CANCEL_REQUEST, Buffer.from('ab')),
    ];
    for (const p of bad) assert.throws(() => parseFirstPacket(p), ProtocolError, p.toString('hex'));
  });

  it('writes ErrorResponses clients understand and frames backend messages', () => {
    const e = errorResponse('3D000', 'branch "a/b" does not exist', { hint: 'h' });
    assert.equal(e[0], 'E'.charCodeAt(0));
    const framer = new MessageFramer();
    // Split anywhere: the framer waits for whole messages.
    const msgs = [...framer.push(e.subarray(0, 3)), ...framer.push(e.subarray(3))];
    assert.equal(msgs.length, 1);
    const f = errorFields(msgs[0]!.body);
    assert.equal(f.get('S'), 'FATAL');
    assert.equal(f.get('C'), '3D000');
    assert.equal(f.get('M'), 'branch "a/b" does not exist');
    assert.equal(f.get('H'), 'h');
    // A message too long for a startup is refused from its length, before it is buffered.
    const huge = Buffer.alloc(5);
    huge.write('N', 0, 'latin1');
    huge.writeInt32BE(0x7fffffff, 1);
    assert.throws(() => new MessageFramer().push(huge), ProtocolError);
    assert.throws(() => new MessageFramer(100).push(Buffer.concat([e.subarray(0, 1), word(101)])), ProtocolError);
  });

  it('reads one packet off a stream, pushes back what follows, and stops an oversized one at its length', async () => {
    const s = new PassThrough();
    const p = startupPacket(V3, new Map([['user', 'u']]));
    s.write(Buffer.concat([p.subarray(0, 5)]));
    const got = readPacket(s, 10_000);
    s.write(Buffer.concat([p.subarray(5), Buffer.from('rest')]));
    assert.deepEqual(await got, p);
    assert.equal(s.read()?.toString(), 'rest');

    const big = new PassThrough();
    big.write(word(1_000_000)); // nothing else: refused from the length alone
    await assert.rejects(readPacket(big, 10_000), /larger than this router accepts/);

    const gone = new PassThrough();
    gone.write(Buffer.from([0, 0]));
    const r = readPacket(gone, 100);
    gone.end();
    await assert.rejects(r, /went away/);
  });
});

describe('router routing', () => {
  it('takes the branch from <db>@<branch>, from SNI, or main', () => {
    assert.deepEqual(routeOf('api@pr-1', null, null), { ok: true, ref: { database: 'api', branch: 'pr-1' } });
    assert.deepEqual(routeOf('api', null, 'db.example.com'), { ok: true, ref: { database: 'api', branch: 'main' } });
    assert.deepEqual(routeOf('api', 'pr-2.api.db.example.com', 'db.example.com'), {
      ok: true,
      ref: { database: 'api', branch: 'pr-2' },
    });
    // An explicit branch in the name wins over the host name; a host name outside the domain is ignored.
    assert.deepEqual(routeOf('api@x', 'pr-2.api.db.example.com', 'db.example.com'), {
      ok: true,
      ref: { database: 'api', branch: 'x' },
    });
    assert.deepEqual(routeOf('api', 'pr-2.api.other.com', 'db.example.com'), {
      ok: true,
      ref: { database: 'api', branch: 'main' },
    });
    // SNI is ignored without proxy.domain.
    assert.deepEqual(routeOf('api', 'pr-2.api.db.example.com', null), {
      ok: true,
      ref: { database: 'api', branch: 'main' },
    });
  });

  it('refuses names that cannot be branches, in one printable line', () => {
    for (const bad of ['api@', '@x', 'api@a/b', 'a@b@c', '../x', 'api@$(id)', 'x'.repeat(41)]) {
      const r = routeOf(bad, null, null);
      assert.equal(r.ok, false, bad);
    }
    const r = routeOf('api\n@x', null, null);
    assert.ok(!r.ok && !r.message.includes('\n'));
    const clash = routeOf('web', 'pr-2.api.db.example.com', 'db.example.com');
    assert.ok(!clash.ok && /names database "api"/.test(clash.message));
  });
});

describe('router config and connection strings', () => {
  it('needs a certificate beyond the loopback interface, unless told otherwise', () => {
    const base = { proxy: { enabled: true } };
    assert.equal(effectiveRequireTls(parseConfig(base, 't').proxy), false);
    assert.throws(() => parseConfig({ proxy: { enabled: true, listen: '0.0.0.0:6432' } }, 't'), /proxy.tls/);
    const open = parseConfig({ proxy: { enabled: true, listen: '0.0.0.0:6432', requireTls: false } }, 't');
    assert.equal(effectiveRequireTls(open.proxy), false);
    const tls = parseConfig(
      { proxy: { enabled: true, listen: '0.0.0.0:6432', tls: { cert: '/c.pem', key: '/k.pem' } } },
      't',
    );
    assert.equal(effectiveRequireTls(tls.proxy), true);
    assert.throws(() => parseConfig({ proxy: { listen: 'nope' } }, 't'), /proxy.listen/);
  });

  it('connection strings go through the router when it is on, and keep the direct port', () => {
    const cfg = parseConfig(
      {
        postgres: { publicHost: 'box.internal' },
        proxy: {
          enabled: true,
          listen: '0.0.0.0:6432',
          publicHost: 'pg.example.com',
          tls: { cert: '/c.pem', key: '/k.pem' },
        },
      },
      't',
    );
    const db = { pgDatabase: 'api' } as Parameters<typeof branchView>[1];
    const b = {
      database: 'api',
      branch: 'pr-1',
      port: 15433,
      password: 'p@ss',
      parent: null,
      origin: null,
      expiresAt: null,
      stoppedBy: null,
    } as unknown as Parameters<typeof branchView>[2];
    const v = branchView(cfg, db, b, { status: 'running', disk: null, wal: null });
    assert.equal(v.connection.via, 'router');
    assert.equal(v.connection.uri, 'postgresql://postgres:p%40ss@pg.example.com:6432/api@pr-1?sslmode=require');
    assert.equal(v.connection.database, 'api@pr-1');
    assert.equal(v.connection.direct.uri, 'postgresql://postgres:p%40ss@box.internal:15433/api');
    const off = branchView(parseConfig({}, 't'), db, b, { status: 'running', disk: null, wal: null });
    assert.equal(off.connection.via, 'direct');
    assert.equal(off.connection.uri, off.connection.direct.uri);
  });

  it('a newer client (the Action) reads an older agent, whose connection has no via/sslmode/direct', () => {
    const old = { host: 'h', port: 15433, user: 'postgres', password: 'p', database: 'api', uri: 'postgresql://x' };
    const c = S.Connection.parse(old);
    assert.equal(c.via, 'direct');
    assert.equal(c.sslmode, null);
    assert.deepEqual(c.direct, old);
  });
});

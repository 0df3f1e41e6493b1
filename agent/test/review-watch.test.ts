import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { BpgApiError, BpgClient } from '../api/client.js';
import { serve, type RunningServer } from '../api/serve.js';
import type { BranchView } from '../engine/view.js';
import { config, query, recorder, uniqueDb } from './helpers.js';

/**
 * The migration safety report on the real stack: a watch started through the API samples the
 * branch's pg_locks from the agent's own session while SQL runs on another connection (as the
 * Action's migrate command or the receiver's files do), and the stop answers what the SQL held,
 * rewrote and touched. Each case is a statement a reviewer wants told apart from its safe twin.
 */

const TOKEN = `tok-${randomBytes(16).toString('hex')}`;
const db = uniqueDb('rw');
const log = recorder();
let server: RunningServer;
let client: BpgClient;
let branch: BranchView;

async function run(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: branch.connection.uri });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

async function watched(sql: string, maxLockSeconds?: number) {
  const w = await client.startWatch(db, 'pr-1', maxLockSeconds === undefined ? {} : { maxLockSeconds });
  await run(sql);
  return client.stopWatch(db, 'pr-1', w.id);
}

describe('migration watch (safety report)', { timeout: 300_000 }, () => {
  before(async () => {
    const cfg = await config();
    server = await serve(
      { ...cfg, api: { ...cfg.api, listen: '127.0.0.1:0', tokens: [{ name: 'tests', token: TOKEN }] } },
      { listen: '127.0.0.1:0', log, handleSignals: false, env: {} },
    );
    client = new BpgClient({ baseUrl: server.url, token: TOKEN });
    await client.createDatabase({ name: db });
    branch = (await client.putBranch(db, 'pr-1', { fast: true })).branch;
    // Big enough that a rewrite or an index build holds its lock for well over 0.05 s.
    await run(
      'CREATE TABLE orders (id serial PRIMARY KEY, v int NOT NULL); INSERT INTO orders (v) SELECT g FROM generate_series(1, 300000) g; CREATE TABLE users (id int)',
    );
  });

  after(async () => {
    await client?.deleteDatabase(db, { force: true }).catch(() => {});
    await server?.close();
  });

  it('ADD COLUMN with a constant default is not a rewrite; a volatile default is, under ACCESS EXCLUSIVE', async () => {
    const quick = await watched('ALTER TABLE orders ADD COLUMN a int DEFAULT 0');
    assert.deepEqual(quick.rewritten, []);
    assert.deepEqual(quick.flagged, []);

    const slow = await watched('ALTER TABLE orders ADD COLUMN r float DEFAULT random()', 0.05);
    assert.deepEqual(slow.rewritten, ['orders']);
    const lock = slow.locks.find((l) => l.table === 'orders');
    assert.equal(lock?.mode, 'AccessExclusiveLock');
    assert.equal(lock?.blocks, 'reads and writes');
    assert.equal(slow.flagged.length, 1);
    assert.match(
      slow.flagged[0]!,
      /^ACCESS EXCLUSIVE on orders for \d+\.\d s \(table rewrite\): blocks reads and writes on production$/,
    );
    assert.deepEqual(slow.rows, [{ table: 'orders', rows: 300000, estimated: false }]);
    assert.ok(slow.durationMs > 0 && slow.samples > 0);
  });

  it('CREATE INDEX blocks writes; CREATE INDEX CONCURRENTLY does not', async () => {
    const plain = await watched('CREATE INDEX orders_v ON orders (v)', 0.05);
    assert.equal(plain.locks.find((l) => l.table === 'orders')?.mode, 'ShareLock');
    assert.match(plain.flagged.join('\n'), /^SHARE on orders for .*: blocks writes on production$/);
    assert.deepEqual(plain.rewritten, []);

    const conc = await watched('CREATE INDEX CONCURRENTLY orders_id_v ON orders (id, v)', 0.05);
    assert.equal(conc.locks.find((l) => l.table === 'orders')?.mode, 'ShareUpdateExclusiveLock');
    assert.deepEqual(conc.flagged, []);
  });

  it('ALTER COLUMN TYPE rewrites; a long UPDATE takes row locks only; new tables are not reported', async () => {
    const type = await watched('ALTER TABLE orders ALTER COLUMN v TYPE bigint', 0.05);
    assert.deepEqual(type.rewritten, ['orders']);
    assert.equal(type.locks.find((l) => l.table === 'orders')?.mode, 'AccessExclusiveLock');

    const update = await watched(
      'UPDATE orders SET v = v + 1; CREATE TABLE made_here (x int); LOCK TABLE made_here',
      0.05,
    );
    assert.equal(update.locks.find((l) => l.table === 'orders')?.mode, 'RowExclusiveLock');
    assert.deepEqual(update.flagged, []);
    assert.deepEqual(update.rewritten, []);
    assert.equal(
      update.locks.some((l) => l.table === 'made_here'),
      false,
    );

    const drop = await watched('DROP TABLE users');
    assert.deepEqual(drop.dropped, ['users']);
  });

  it('a hostile table name is quoted, and a watch answers only on its own branch', async () => {
    await run(`CREATE TABLE "x; DROP TABLE orders; --" (id int); INSERT INTO "x; DROP TABLE orders; --" VALUES (1)`);
    const r = await watched(`ALTER TABLE "x; DROP TABLE orders; --" ALTER COLUMN id TYPE bigint`);
    assert.deepEqual(r.rewritten, ['"x; DROP TABLE orders; --"']);
    assert.deepEqual(r.rows, [{ table: '"x; DROP TABLE orders; --"', rows: 1, estimated: false }]);
    assert.deepEqual(await query(branch, "SELECT to_regclass('orders') IS NOT NULL AS ok"), [{ ok: true }]);

    const w = await client.startWatch(db, 'pr-1');
    await assert.rejects(client.stopWatch(db, 'main', w.id), (e) => e instanceof BpgApiError && e.status === 404);
    await assert.rejects(
      client.stopWatch(db, 'pr-1', 'watch-000000000000'),
      (e) => e instanceof BpgApiError && e.status === 404,
    );
    await client.stopWatch(db, 'pr-1', w.id);
    await assert.rejects(client.stopWatch(db, 'pr-1', w.id), (e) => e instanceof BpgApiError && e.status === 404);
  });

  it('a stopped branch cannot be watched (409)', async () => {
    await client.putBranch(db, 'pr-2', { fast: true });
    await client.stopBranch(db, 'pr-2');
    await assert.rejects(client.startWatch(db, 'pr-2'), (e) => e instanceof BpgApiError && e.status === 409);
  });
});

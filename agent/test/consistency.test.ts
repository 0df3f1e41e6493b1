import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import type { BranchView } from '../engine/view.js';
import { cli, ok, okJson, query, queryOne, uniqueDb } from './helpers.js';

const db = uniqueDb('cs');
let main: BranchView;

/**
 * Commits single-row transactions with increasing ids on one connection until stopped. Because
 * commits are sequential, a consistent copy must hold exactly ids 1..K with no holes.
 */
function startWriter(b: BranchView, table: string) {
  let stop = false;
  let committed = 0;
  let failed: unknown = null;
  const done = (async () => {
    const c = new pg.Client({ connectionString: b.connection.uri });
    await c.connect();
    try {
      while (!stop) {
        await c.query(`INSERT INTO ${table} (id, payload) VALUES ($1, repeat('x', 200))`, [committed + 1]);
        committed++;
      }
    } finally {
      await c.end();
    }
  })().catch((e) => {
    failed = e;
  });
  return {
    committed: () => {
      if (failed) throw failed;
      return committed;
    },
    stop: async () => ((stop = true), await done),
  };
}

async function checkCopy(branch: BranchView, table: string, committedBefore: number, committedAfter: number) {
  const { n, max, min } = await queryOne<{ n: number; max: number; min: number }>(
    branch,
    `SELECT count(*)::int AS n, coalesce(max(id),0)::int AS max, coalesce(min(id),0)::int AS min FROM ${table}`,
  );
  assert.ok(n >= committedBefore, `branch has ${n} rows, ${committedBefore} were committed before the command started`);
  assert.ok(max <= committedAfter, `branch has id ${max}, only ${committedAfter} were committed when it returned`);
  assert.equal(n, max, 'no holes: the copy is a prefix of the commit sequence');
  assert.equal(min, 1);
  // amcheck: heap and every btree index, including that every heap tuple is indexed
  await query(branch, 'CREATE EXTENSION IF NOT EXISTS amcheck');
  const heap = await query(branch, `SELECT * FROM verify_heapam('${table}')`);
  assert.deepEqual(heap, [], 'verify_heapam found corruption');
  const idx = await query<{ c: string }>(
    branch,
    "SELECT bt_index_check(c.oid, true)::text AS c FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND c.relpersistence = 'p' AND c.relnamespace = 'public'::regnamespace",
  );
  assert.ok(idx.length >= 2, 'indexes checked');
}

describe('snapshot consistency under concurrent writes', () => {
  before(async () => {
    main = await okJson(['db', 'create', db]);
    for (const t of ['ledger_fast', 'ledger_application']) {
      await query(main, `CREATE TABLE ${t} (id int PRIMARY KEY, payload text NOT NULL, at timestamptz DEFAULT now())`);
      await query(main, `CREATE INDEX ${t}_at ON ${t} (at)`);
    }
  });
  after(async () => {
    await cli(['db', 'delete', db, '--force']);
  });

  for (const mode of ['fast', 'application'] as const) {
    it(`a ${mode} branch taken while rows are being committed holds every earlier row and passes amcheck`, async () => {
      const table = `ledger_${mode}`;
      const w = startWriter(main, table);
      while (w.committed() < 300) await new Promise((r) => setTimeout(r, 20));
      const before = w.committed();
      const args = ['branch', 'create', `${db}/${mode}`, ...(mode === 'fast' ? ['--fast'] : [])];
      const r = await ok([...args, '--json']);
      const afterCount = w.committed();
      await w.stop();
      if (mode === 'fast') assert.match(r.stderr, /warning: .*crash-consistent/);
      const branch = JSON.parse(r.stdout) as BranchView;
      assert.ok(afterCount > before, 'the writer kept committing during the create');
      await checkCopy(branch, table, before, afterCount);
    });
  }
});

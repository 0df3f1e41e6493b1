import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../config.js';
import { Layout } from '../engine/layout.js';
import { parseBranchRef } from '../names.js';

describe('names that cannot collide', () => {
  const layout = new Layout(parseConfig({ zfs: { pool: 'tank', datasetBase: 'betterpg' } }, 'test'));

  it('maps a-b/c and a/b-c to different datasets and containers', () => {
    const x = parseBranchRef('a-b/c');
    const y = parseBranchRef('a/b-c');
    assert.notEqual(layout.branchDataset(x.database, x.branch), layout.branchDataset(y.database, y.branch));
    assert.notEqual(layout.container(x.database, x.branch), layout.container(y.database, y.branch));
    assert.equal(layout.branchDataset('a-b', 'c'), 'tank/betterpg/a-b/c');
    assert.equal(layout.container('a', 'b-c'), 'bpg-a.b-c.8b9968f6');
  });

  it('is injective over every pair of short names', () => {
    const names = ['a', 'b', 'a-b', 'b-c', 'c', 'a_b', 'a-b-c', 'ab'];
    const seen = new Map<string, string>();
    for (const db of names) {
      for (const br of names) {
        for (const key of [layout.branchDataset(db, br), layout.container(db, br)]) {
          const prev = seen.get(key);
          assert.ok(prev === undefined || prev === `${db}/${br}`, `${key} for both ${prev} and ${db}/${br}`);
          seen.set(key, `${db}/${br}`);
        }
      }
    }
  });
});

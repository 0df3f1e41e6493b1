import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { inspect, type Inventory, type PlannedFinding } from '../engine/doctor-inspect.js';
import { newOperation } from '../state/operation.js';
import { branch, fs, ROOT, snap, state, zfsFor } from './fixtures.js';

/** Reconcile's judgement on recorded inventories: what differs, and what --fix would do. */

const walDataset = (id: string) => `${ROOT}/_wal/${id}`;

function inventory(o: Partial<Inventory> & Pick<Inventory, 'zfs'>): Inventory {
  return {
    root: ROOT,
    walRoot: `${ROOT}/_wal`,
    walMount: '/var/lib/betterpg/wal',
    tmpDir: '/var/lib/betterpg/tmp',
    containers: [],
    walFolders: [],
    tmpFiles: [],
    liveBranchOps: [],
    liveDatabaseOps: [],
    takenPorts: [],
    firewall: null,
    ...o,
  };
}

const running = (b: ReturnType<typeof branch>) => ({
  name: b.container,
  labels: { 'io.betterpg.id': b.id, 'io.betterpg.database': b.database },
  state: 'running',
  hostPort: b.port,
});
const summary = (fs: PlannedFinding[]) => fs.map((f) => `${f.kind} ${f.subject} -> ${f.repair?.do ?? 'none'}`).sort();

describe('doctor: inspection of an inventory against the state', () => {
  const main = branch('api', 'main');
  const dev = branch('api', 'dev');
  const s = state([main, dev]);
  const healthy = () =>
    inventory({ zfs: zfsFor([main, dev]), containers: [running(main), running(dev)], walFolders: [main.id, dev.id] });

  it('a healthy host: nothing found', () => {
    assert.deepEqual(inspect(healthy(), s, { fix: false, walDataset }), []);
  });

  it('every kind of drift, with the repair --fix would run', () => {
    const inv = healthy();
    inv.containers = [
      { ...running(main), state: 'exited' },
      { name: 'bpg-api.ghost', labels: { 'io.betterpg.id': 'ffffffffffffffff' }, state: 'exited', hostPort: null },
    ];
    inv.zfs = inv.zfs.filter((z) => z.name !== dev.dataset && z.name !== walDataset(main.id));
    inv.zfs.push(
      fs(`${ROOT}/api/dev-moved`, { id: dev.id }),
      fs(`${ROOT}/api/leftover`),
      fs(`${ROOT}/api/not-ours`, { managed: false }),
      snap(`${main.dataset}@bpg-0000000000000000`),
      fs(walDataset('dddddddddddddddd'), { wal: 'dddddddddddddddd' }),
    );
    inv.walFolders.push('eeeeeeeeeeeeeeee');
    inv.tmpFiles = ['pw-eeeeeeeeeeeeeeee'];
    inv.firewall = { network: 'bpg-isolated', missing: ['DOCKER-USER'] };
    assert.deepEqual(
      summary(inspect(inv, s, { fix: true, walDataset })),
      [
        `foreign-dataset ${ROOT}/api/not-ours -> none`,
        'missing-firewall-rule network bpg-isolated -> restore-firewall',
        'missing-wal-folder api/main -> create-wal',
        'moved-dataset api/dev -> rename-dataset',
        'not-running api/main -> start-branch',
        `orphan-container bpg-api.ghost -> remove-container`,
        `orphan-dataset ${ROOT}/api/leftover -> destroy-dataset`,
        `orphan-snapshot ${main.dataset}@bpg-0000000000000000 -> destroy-snapshot`,
        'orphan-temp-file /var/lib/betterpg/tmp/pw-eeeeeeeeeeeeeeee -> remove-path',
        `orphan-wal-folder ${walDataset('dddddddddddddddd')} -> destroy-wal-dataset`,
        'orphan-wal-folder /var/lib/betterpg/wal/eeeeeeeeeeeeeeee -> remove-path',
      ].sort(),
    );
  });

  it('never offers to forget main, nor a branch with children', () => {
    const inv = healthy();
    inv.zfs = inv.zfs.filter((z) => z.name !== main.dataset);
    const f = inspect(inv, s, { fix: true, walDataset }).find((x) => x.kind === 'missing-dataset')!;
    assert.equal(f.subject, 'api/main');
    assert.equal(f.repair, null);
    assert.match(f.detail, /not removed automatically: it is the main branch/);
  });

  it('leaves alone whatever has an operation in flight; reports an interrupted one when not fixing', () => {
    const busy = { ...dev, operation: newOperation('reset') };
    const inv = healthy();
    inv.containers = [running(main)]; // dev's container is gone mid-reset
    inv.liveBranchOps = [busy.id];
    assert.deepEqual(inspect(inv, state([main, busy]), { fix: true, walDataset }), []);
    inv.liveBranchOps = [];
    assert.deepEqual(summary(inspect(inv, state([main, busy]), { fix: false, walDataset })), [
      'interrupted-operation api/dev -> none',
    ]);
  });

  it('a clone is destroyed before the leftover it was cloned from; a leftover a branch was cloned from is kept', () => {
    const inv = healthy();
    inv.zfs.push(
      fs(`${ROOT}/api/old`),
      snap(`${ROOT}/api/old@s`),
      fs(`${ROOT}/api/old-child`, { origin: `${ROOT}/api/old@s` }),
    );
    const order = inspect(inv, s, { fix: true, walDataset })
      .filter((f) => f.kind === 'orphan-dataset')
      .map((f) => f.subject);
    assert.deepEqual(order, [`${ROOT}/api/old-child`, `${ROOT}/api/old`]);
    const keep = healthy();
    keep.zfs.push(fs(`${ROOT}/api/base`), snap(`${ROOT}/api/base@s`));
    keep.zfs = keep.zfs.map((z) => (z.name === dev.dataset ? { ...z, origin: `${ROOT}/api/base@s` } : z));
    const f = inspect(keep, s, { fix: true, walDataset }).find((x) => x.subject === `${ROOT}/api/base`)!;
    assert.equal(f.repair, null);
    assert.match(f.detail, /kept: .*api\/dev was cloned from it/);
  });

  it('a state that knows no database while branch datasets exist: nothing is destroyed on its word', () => {
    const found = inspect(healthy(), state([]), { fix: true, walDataset });
    assert.ok(
      found.some((f) => f.kind === 'orphan-dataset'),
      'the datasets are reported',
    );
    for (const f of found) assert.equal(f.repair, null, `${f.kind} ${f.subject}`);
    assert.ok(found.every((f) => /was state.json lost or replaced\?/.test(f.detail)));
  });

  it('an install from before WAL datasets is reported with its migration', () => {
    const legacy = { ...s, walOnZfs: false };
    const inv = healthy();
    inv.zfs = inv.zfs.filter((z) => !z.name.startsWith(`${ROOT}/_wal`));
    assert.deepEqual(summary(inspect(inv, legacy, { fix: false, walDataset })), [
      'legacy-wal /var/lib/betterpg/wal -> migrate-wal',
    ]);
  });

  it('a port taken by another program is a warning with no fix; a container on the wrong port is made again', () => {
    const stopped = { ...dev, status: 'stopped' as const };
    const inv = healthy();
    inv.containers = [running(main), { ...running(dev), state: 'exited' }];
    inv.takenPorts = [dev.port];
    assert.deepEqual(summary(inspect(inv, state([main, stopped]), { fix: true, walDataset })), [
      'port-taken api/dev -> none',
    ]);
    inv.containers = [{ ...running(main), hostPort: 1 }, running(dev)];
    assert.deepEqual(summary(inspect(inv, s, { fix: true, walDataset })), [
      'port-mismatch api/main -> recreate-container',
    ]);
  });
});

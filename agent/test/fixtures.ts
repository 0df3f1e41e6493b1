import type { BranchRecord, SnapshotRecord, State } from '../state/schema.js';
import type { ZfsEntry } from '../drivers/zfs.js';

/** Records for unit tests of the engine's pure rules: a state as the agent writes it, without a stack. */

export const ROOT = 'tank/betterpg';

let n = 0;
const id = () => (++n).toString(16).padStart(16, '0');

export function branch(database: string, name: string, o: Partial<BranchRecord> = {}): BranchRecord {
  const i = o.id ?? id();
  return {
    id: i,
    database,
    branch: name,
    parent: name === 'main' ? null : `${database}/main`,
    status: 'running',
    port: 15432 + n,
    password: 'pw',
    image: 'postgres:17',
    dataset: `${ROOT}/${database}/${name}`,
    container: `bpg-${database}.${name}.deadbeef`,
    origin: name === 'main' ? null : { snapshot: `${ROOT}/${database}/main@bpg-${i}`, consistency: 'application' },
    createdAt: '2026-11-01T00:00:00.000Z',
    operation: null,
    expiresAt: null,
    protected: name === 'main',
    lastActiveAt: null,
    stoppedBy: null,
    memory: null,
    cpus: null,
    disk: null,
    schemaOnly: false,
    seed: null,
    generation: 0,
    ...o,
  };
}

export function state(branches: BranchRecord[], snapshots: SnapshotRecord[] = []): State {
  const databases: State['databases'] = {};
  for (const b of branches)
    databases[b.database] ??= {
      name: b.database,
      image: 'postgres:17',
      createdAt: '2026-11-01T00:00:00.000Z',
      pgDatabase: b.database,
      operation: null,
      generation: 0,
      refreshedAt: null,
      retired: [],
      masking: null,
    };
  return {
    version: 1,
    databases,
    branches: Object.fromEntries(branches.map((b) => [`${b.database}/${b.branch}`, b])),
    snapshots: Object.fromEntries(snapshots.map((k) => [k.id, k])),
    walOnZfs: true,
  };
}

export function fs(name: string, o: Partial<ZfsEntry> = {}): ZfsEntry {
  return { name, type: 'filesystem', managed: true, id: null, wal: null, mounted: true, origin: null, ...o };
}

export function snap(name: string): ZfsEntry {
  return { name, type: 'snapshot', managed: false, id: null, wal: null, mounted: false, origin: null };
}

/** What ZFS holds for these branches when everything is in order: datasets, origins, WAL archives. */
export function zfsFor(branches: BranchRecord[]): ZfsEntry[] {
  const out: ZfsEntry[] = [fs(ROOT, { managed: false }), fs(`${ROOT}/_wal`, { wal: 'root' })];
  for (const db of new Set(branches.map((b) => b.database))) out.push(fs(`${ROOT}/${db}`));
  for (const b of branches) {
    out.push(fs(b.dataset, { id: b.id, origin: b.origin?.snapshot ?? null }));
    if (b.origin) out.push(snap(b.origin.snapshot));
    out.push(fs(`${ROOT}/_wal/${b.id}`, { wal: b.id }));
  }
  return out;
}

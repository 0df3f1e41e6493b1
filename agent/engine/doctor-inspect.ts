import { join } from 'node:path';
import { LABEL_DATABASE, LABEL_ID } from '../drivers/docker.js';
import type { ZfsEntry } from '../drivers/zfs.js';
import { refName } from '../names.js';
import type { BranchRecord, State } from '../state/schema.js';
import { snapshotInUse } from './rules.js';

/**
 * Reconcile's judgement, as a pure function: an inventory of what ZFS, Docker and the state folder
 * hold (doctor.ts lists it) held against the state. It says what differs and what a repair would
 * do (doctor-repair.ts does it). No I/O here: tested on recorded inventories in the unit tier.
 *
 * The rules that keep it safe:
 *  - resources are listed BEFORE the state is read: every operation records its intent before it
 *    makes anything, so a resource made meanwhile is never mistaken for an orphan;
 *  - everything belonging to a branch or database with an operation in flight is left alone;
 *  - a dataset that holds a branch the state knows is never destroyed (at most renamed back);
 *  - datasets without our `betterpg:managed` property are reported, never touched.
 */

export type FindingKind =
  | 'interrupted-operation'
  | 'orphan-container'
  | 'orphan-dataset'
  | 'orphan-snapshot'
  | 'orphan-wal-folder'
  | 'orphan-temp-file'
  | 'foreign-dataset'
  | 'moved-dataset'
  | 'missing-dataset'
  | 'unmounted-dataset'
  | 'not-running'
  | 'running-but-stopped'
  | 'port-mismatch'
  | 'port-taken'
  | 'missing-wal-folder'
  | 'missing-snapshot'
  | 'legacy-wal'
  | 'missing-firewall-rule';

/** What a repair does: one of a closed set, carried out by doctor-repair.ts. */
export type Repair =
  | { do: 'migrate-wal' }
  | { do: 'rename-dataset'; branch: BranchRecord; from: string }
  | { do: 'forget-branch'; branch: BranchRecord }
  | { do: 'mount'; dataset: string }
  | { do: 'mount-wal'; id: string }
  | { do: 'recreate-container'; branch: BranchRecord }
  | { do: 'start-branch'; branch: BranchRecord }
  | { do: 'record-running'; branch: BranchRecord }
  | { do: 'create-wal'; branch: BranchRecord }
  | { do: 'create-legacy-wal-folder'; id: string }
  | { do: 'remove-container'; name: string }
  | { do: 'destroy-dataset'; name: string }
  | { do: 'destroy-snapshot'; name: string }
  | { do: 'forget-snapshot'; id: string }
  | { do: 'destroy-wal-dataset'; name: string }
  | { do: 'remove-path'; path: string }
  | { do: 'restore-firewall' };

export interface PlannedFinding {
  kind: FindingKind;
  /** What it is about: a branch (`db/branch`), dataset, snapshot, container or path. */
  subject: string;
  detail: string;
  /** What --fix does, in words; null when there is no safe automatic fix. */
  action: string | null;
  repair: Repair | null;
}

/** What is really there, listed before the state was read. */
export interface Inventory {
  /** `<pool>/<datasetBase>`, and the WAL archives' root dataset under it. */
  root: string;
  walRoot: string;
  /** Where the WAL root is mounted, and the folder of temporary files. */
  walMount: string;
  tmpDir: string;
  zfs: ZfsEntry[];
  /** This agent's containers, with the host port of each that belongs to a branch's name. */
  containers: Array<{ name: string; labels: Record<string, string>; state: string; hostPort: number | null }>;
  /** Names in the WAL mount folder and in the temporary folder. */
  walFolders: string[];
  tmpFiles: string[];
  /** Branch ids and database names whose operation's process still runs. */
  liveBranchOps: string[];
  liveDatabaseOps: string[];
  /** Ports of stopped branches that another program holds. */
  takenPorts: number[];
  /** The no-egress network's missing firewall rules (chains), or null when there is nothing to check. */
  firewall: { network: string; missing: string[] } | null;
}

const datasetOf = (b: BranchRecord) => b.dataset;

/** Every difference between the state and the inventory, in the order a repair should go. */
export function inspect(
  inv: Inventory,
  state: State,
  o: { fix: boolean; walDataset: (id: string) => string },
): PlannedFinding[] {
  const out: PlannedFinding[] = [];
  const add = (f: PlannedFinding) => out.push(f);
  /** A dataset under our base that we did not make: reported, never touched. */
  const addForeign = (subject: string) =>
    add({
      kind: 'foreign-dataset',
      subject,
      detail: 'not made by BetterPG (no betterpg:managed property); left alone',
      action: null,
      repair: null,
    });
  const root = inv.root;
  const walPrefix = `${inv.walRoot}/`;
  const walById = new Map(
    inv.zfs
      .filter(
        (z) => z.type === 'filesystem' && z.name.startsWith(walPrefix) && !z.name.slice(walPrefix.length).includes('/'),
      )
      .map((z) => [z.name.slice(walPrefix.length), z]),
  );
  const migrated = state.walOnZfs;
  const liveBranch = new Set(inv.liveBranchOps);
  const liveDb = new Set(inv.liveDatabaseOps);

  if (!migrated) {
    add({
      kind: 'legacy-wal',
      subject: inv.walMount,
      detail:
        "WAL archives are folders on the host's disk (an install from before WAL datasets): one branch could fill it",
      action: `move them onto ZFS datasets under ${inv.walRoot} (running branches restart once)`,
      repair: { do: 'migrate-wal' },
    });
  }

  // Branches and databases with an operation in flight (or interrupted, when not fixing: with --fix,
  // doctor.ts recovered those before it listed anything) are left alone.
  const busy = new Set<string>();
  const busyDbs = new Set<string>();
  const busySnapshots = new Set<string>();
  for (const b of Object.values(state.branches)) {
    if (!b.operation) continue;
    const alive = liveBranch.has(b.id);
    if (alive || !o.fix) {
      busy.add(b.id);
      if (b.operation.data?.snapshot) busySnapshots.add(b.operation.data.snapshot);
    }
    if (!alive && !o.fix) {
      add({
        kind: 'interrupted-operation',
        subject: refName(b),
        detail: `'${b.operation.kind}' was interrupted (its process, pid ${b.operation.pid}, is gone)`,
        action: 'finish or undo it',
        repair: null,
      });
    }
  }
  for (const db of Object.values(state.databases)) {
    if (!db.operation) continue;
    const alive = liveDb.has(db.name);
    if (alive || !o.fix) busyDbs.add(db.name);
    if (!alive && !o.fix) {
      add({
        kind: 'interrupted-operation',
        subject: db.name,
        detail: `'${db.operation.kind}' was interrupted (its process, pid ${db.operation.pid}, is gone)`,
        action: 'finish or undo it',
        repair: null,
      });
    }
  }
  const isBusy = (b: BranchRecord) => busy.has(b.id) || busyDbs.has(b.database);
  const branches = Object.values(state.branches);
  const byDataset = new Map(branches.map((b) => [datasetOf(b), b]));
  const byId = new Map(branches.map((b) => [b.id, b]));
  const fsByName = new Map(inv.zfs.filter((z) => z.type === 'filesystem').map((z) => [z.name, z]));
  const childrenOf = (key: string) => branches.filter((x) => x.parent === key);
  const taken = new Set(inv.takenPorts);

  // 1. Each branch the state knows: its dataset, container, port and WAL archive.
  for (const b of branches) {
    if (isBusy(b) || (b.status !== 'running' && b.status !== 'stopped')) continue;
    const key = refName(b);
    const ds = fsByName.get(b.dataset);
    if (!ds) {
      const moved = inv.zfs.find(
        (z) => z.type === 'filesystem' && z.id === b.id && z.name !== b.dataset && !byDataset.has(z.name),
      );
      if (moved) {
        add({
          kind: 'moved-dataset',
          subject: key,
          detail: `its dataset is at ${moved.name}, not ${b.dataset}`,
          action: `rename ${moved.name} to ${b.dataset}`,
          repair: { do: 'rename-dataset', branch: b, from: moved.name },
        });
      } else {
        const kids = childrenOf(key);
        const blocked =
          b.branch === 'main'
            ? 'it is the main branch (delete the database)'
            : kids.length
              ? `it has child branches (${kids.map(refName).join(', ')})`
              : null;
        add({
          kind: 'missing-dataset',
          subject: key,
          detail: `dataset ${b.dataset} does not exist: the branch's data is gone${blocked ? `; not removed automatically: ${blocked}` : ''}`,
          action: blocked ? null : 'forget the branch (remove its container, WAL folder and record)',
          repair: blocked ? null : { do: 'forget-branch', branch: b },
        });
      }
      continue;
    }
    if (!ds.mounted)
      add({
        kind: 'unmounted-dataset',
        subject: key,
        detail: `${b.dataset} is not mounted`,
        action: 'mount it',
        repair: { do: 'mount', dataset: b.dataset },
      });
    const c = inv.containers.find((x) => x.name === b.container);
    if (c && (c.labels[LABEL_ID] !== b.id || c.hostPort !== b.port)) {
      const why =
        c.labels[LABEL_ID] !== b.id
          ? `container ${b.container} belongs to another branch id (${c.labels[LABEL_ID] ?? 'none'})`
          : `container publishes port ${c.hostPort ?? 'none'}, the state says ${b.port}`;
      add({
        kind: 'port-mismatch',
        subject: key,
        detail: why,
        action:
          b.status === 'running' ? 're-create and start the container' : 'remove the container (re-created on start)',
        repair: { do: 'recreate-container', branch: b },
      });
    } else if (b.status === 'running' && c?.state !== 'running') {
      add({
        kind: 'not-running',
        subject: key,
        detail: c ? `its container is ${c.state}` : 'its container does not exist',
        action: c ? 'start it' : 're-create and start it',
        repair: { do: 'start-branch', branch: b },
      });
    } else if (b.status === 'stopped' && c?.state === 'running') {
      add({
        kind: 'running-but-stopped',
        subject: key,
        detail: 'recorded as stopped but its container runs (started by hand?)',
        action: 'record it as running',
        repair: { do: 'record-running', branch: b },
      });
    }
    if (b.status === 'stopped' && c?.state !== 'running' && taken.has(b.port)) {
      add({
        kind: 'port-taken',
        subject: key,
        detail: `port ${b.port} is in use by another program: the branch cannot start until it is freed`,
        action: null,
        repair: null,
      });
    }
    const walDs = walById.get(b.id);
    if (migrated && !walDs) {
      add({
        kind: 'missing-wal-folder',
        subject: key,
        detail: `its WAL archive dataset ${o.walDataset(b.id)} does not exist (archiving fails)`,
        action: 'create it (empty)',
        repair: { do: 'create-wal', branch: b },
      });
    } else if (walDs && !walDs.mounted) {
      add({
        kind: 'unmounted-dataset',
        subject: key,
        detail: `its WAL archive ${walDs.name} is not mounted`,
        action: 'mount it',
        repair: { do: 'mount-wal', id: b.id },
      });
    } else if (!migrated && !inv.walFolders.includes(b.id)) {
      add({
        kind: 'missing-wal-folder',
        subject: key,
        detail: `${join(inv.walMount, b.id)} does not exist (archiving fails)`,
        action: 'create it',
        repair: { do: 'create-legacy-wal-folder', id: b.id },
      });
    }
  }

  // 2. Containers nobody owns.
  for (const c of inv.containers) {
    const owner = byId.get(c.labels[LABEL_ID] ?? '');
    if (owner && isBusy(owner)) continue;
    if (owner && owner.container === c.name) continue;
    if (!owner && [...busyDbs].some((d) => c.labels[LABEL_DATABASE] === d)) continue;
    add({
      kind: 'orphan-container',
      subject: c.name,
      detail: owner ? `named for no branch of id ${owner.id}` : 'belongs to no branch in the state',
      action: 'remove it',
      repair: { do: 'remove-container', name: c.name },
    });
  }

  // 3. Datasets and snapshots nobody owns, children (and clones) before what they came from. The
  // plan counts on each planned destroy: what goes with a destroyed dataset is not reported again.
  const dbDatasets = new Set(Object.keys(state.databases).map((d) => `${root}/${d}`));
  const orphans: ZfsEntry[] = [];
  for (const z of inv.zfs) {
    if (z.type !== 'filesystem' || z.name === root) continue;
    if (z.name === inv.walRoot || z.name.startsWith(walPrefix)) continue; // WAL archives: see 4.
    if (orphans.some((x) => z.name.startsWith(`${x.name}/`))) continue; // goes with its parent
    const rel = z.name.slice(root.length + 1);
    if (busyDbs.has(rel.split('/')[0]!)) continue;
    if (!rel.includes('/') ? dbDatasets.has(z.name) : byDataset.has(z.name)) continue;
    const owner = z.id ? byId.get(z.id) : undefined;
    if (owner && isBusy(owner)) continue;
    if (owner && !fsByName.has(owner.dataset)) continue; // it is that branch's data, under another name (see moved-dataset)
    if (!z.managed) {
      addForeign(z.name);
      continue;
    }
    orphans.push(z);
  }
  const destroyed = new Set<string>();
  const clonedFrom = (ds: string) =>
    inv.zfs.filter(
      (z) =>
        z.type === 'filesystem' &&
        !destroyed.has(z.name) &&
        z.origin?.startsWith(`${ds}@`) &&
        !z.name.startsWith(`${ds}/`),
    );
  for (let progress = true; progress && orphans.length;) {
    progress = false;
    for (const z of [...orphans]) {
      const inOtherOrphan = (u: ZfsEntry) =>
        orphans.some((x) => x !== z && (u.name === x.name || u.name.startsWith(`${x.name}/`)));
      const clones = clonedFrom(z.name);
      if (clones.some(inOtherOrphan)) continue; // those go first; what remains belongs to known branches
      orphans.splice(orphans.indexOf(z), 1);
      progress = true;
      const owner = z.id ? byId.get(z.id) : undefined;
      const detail = owner
        ? `a leftover copy of branch ${refName(owner)}'s data (its dataset is ${owner.dataset})`
        : 'belongs to no database or branch in the state';
      if (clones.length) {
        add({
          kind: 'orphan-dataset',
          subject: z.name,
          detail: `${detail}; kept: ${clones.map((u) => u.name).join(', ')} was cloned from it`,
          action: null,
          repair: null,
        });
        continue;
      }
      add({
        kind: 'orphan-dataset',
        subject: z.name,
        detail,
        action: 'destroy it (with its snapshots)',
        repair: { do: 'destroy-dataset', name: z.name },
      });
      if (o.fix)
        for (const x of inv.zfs)
          if (x.name === z.name || x.name.startsWith(`${z.name}/`) || x.name.startsWith(`${z.name}@`))
            destroyed.add(x.name);
    }
  }
  for (const z of orphans)
    add({
      kind: 'orphan-dataset',
      subject: z.name,
      detail: 'cloned from by other leftovers in a cycle',
      action: null,
      repair: null,
    });

  for (const z of inv.zfs) {
    if (z.type !== 'snapshot' || destroyed.has(z.name)) continue;
    const [ds, snap] = z.name.split('@') as [string, string];
    if (!snap.startsWith('bpg-') || !byDataset.has(ds)) continue; // ours only, on branches the state knows
    const owner = byDataset.get(ds)!;
    if (isBusy(owner) || busySnapshots.has(z.name)) continue;
    if ([...busy].some((id) => snap.startsWith(`bpg-${id}`))) continue; // a create or reset in flight
    if (snapshotInUse(state, z.name)) continue;
    const clones = inv.zfs.filter((x) => x.type === 'filesystem' && x.origin === z.name && !destroyed.has(x.name));
    if (clones.length) {
      add({
        kind: 'orphan-snapshot',
        subject: z.name,
        detail: `no branch or kept snapshot uses it, but ${clones.map((x) => x.name).join(', ')} was cloned from it`,
        action: null,
        repair: null,
      });
      continue;
    }
    add({
      kind: 'orphan-snapshot',
      subject: z.name,
      detail: 'no branch was cloned from it and it is not a kept snapshot',
      action: 'destroy it',
      repair: { do: 'destroy-snapshot', name: z.name },
    });
  }
  const snapshotNames = new Set(inv.zfs.filter((z) => z.type === 'snapshot').map((z) => z.name));
  for (const k of Object.values(state.snapshots)) {
    const owner = byId.get(k.branchId);
    if (!owner || isBusy(owner) || !fsByName.has(owner.dataset)) continue;
    const full = `${owner.dataset}@${k.name}`;
    if (snapshotNames.has(full)) continue;
    add({
      kind: 'missing-snapshot',
      subject: k.id,
      detail: `kept snapshot ${full} does not exist in ZFS`,
      action: 'forget it',
      repair: { do: 'forget-snapshot', id: k.id },
    });
  }

  // 4. WAL archives of no branch (or set aside by a reset that is over), folders in their place
  // that are no dataset, and temporary files (initdb password files) left behind.
  for (const [name, z] of walById) {
    const id = name.slice(0, 16);
    const owner = byId.get(id);
    if (owner && (isBusy(owner) || name === id)) continue;
    if (!z.managed) {
      addForeign(z.name);
      continue;
    }
    const detail = owner ? `an old WAL archive of branch ${refName(owner)}` : 'a WAL archive of no branch in the state';
    add({
      kind: 'orphan-wal-folder',
      subject: z.name,
      detail,
      action: 'destroy it',
      repair: { do: 'destroy-wal-dataset', name: z.name },
    });
  }
  for (const name of inv.walFolders) {
    if (migrated && walById.has(name)) continue; // a dataset's mount point
    const id = name.slice(0, 16);
    const owner = byId.get(id);
    // A known branch's folder is its archive's mount point (or where it is mounted again): never removed.
    if (owner && (isBusy(owner) || name === id)) continue;
    const path = join(inv.walMount, name);
    const what = migrated
      ? 'a folder where only WAL archive datasets belong'
      : owner
        ? `an old WAL folder of branch ${refName(owner)}`
        : 'belongs to no branch in the state';
    add({
      kind: 'orphan-wal-folder',
      subject: path,
      detail: what,
      action: 'remove it',
      repair: { do: 'remove-path', path },
    });
  }
  for (const name of inv.tmpFiles) {
    const id = /^(?:pw|import)-([a-f0-9]{16})$/.exec(name)?.[1];
    const owner = id ? byId.get(id) : undefined;
    if (owner && isBusy(owner)) continue;
    const path = join(inv.tmpDir, name);
    add({
      kind: 'orphan-temp-file',
      subject: path,
      detail: 'a temporary file of an operation that is over',
      action: 'remove it',
      repair: { do: 'remove-path', path },
    });
  }

  // A state with no database while datasets of branches are there is a lost or replaced state file
  // far more often than a host full of leftovers: nothing is destroyed or removed on its word.
  const branchDatasets = inv.zfs.filter(
    (z) => z.type === 'filesystem' && z.managed && z.id !== null && !z.name.startsWith(walPrefix),
  );
  if (Object.keys(state.databases).length === 0 && branchDatasets.length > 0) {
    const why = `the state knows no database, but ${branchDatasets.length} dataset(s) of branches are under ${root}: was state.json lost or replaced? Restore it from a backup (docs/operations/upgrade-and-backup.md); remove them by hand if they are really leftovers`;
    for (const f of out) {
      if (
        f.repair &&
        ['destroy-dataset', 'destroy-snapshot', 'destroy-wal-dataset', 'remove-container', 'remove-path'].includes(
          f.repair.do,
        )
      ) {
        f.repair = null;
        f.action = null;
        f.detail += `; not removed: ${why}`;
      }
    }
  }

  // 5. The no-egress network's firewall (a reboot or a firewall reload loses it; starts re-apply it too).
  if (inv.firewall && inv.firewall.missing.length) {
    const detail = `the iptables rules that keep branch containers from reaching out are missing (${inv.firewall.missing.join(', ')})`;
    add({
      kind: 'missing-firewall-rule',
      subject: `network ${inv.firewall.network}`,
      detail,
      action: 're-apply them',
      repair: { do: 'restore-firewall' },
    });
  }
  return out;
}

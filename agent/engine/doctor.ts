import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe } from '../errors.js';
import { refName } from '../names.js';
import { LABEL_DATABASE, LABEL_ID, LABEL_ROOT } from '../drivers/docker.js';
import { hardening } from '../drivers/hardening.js';
import type { ZfsEntry } from '../drivers/zfs.js';
import type { BranchRecord } from '../state/schema.js';
import { mkdirOwned } from './datadir.js';
import { migrateLegacyWal } from './wal-migration.js';
import { snapshotInUse, type Engine } from './engine.js';
import { operationAlive } from '../state/operation.js';
import { portIsFree } from './ports.js';

/**
 * Reconcile: compares the state with what ZFS, Docker and the state folder really hold, and
 * reports (or with `fix`, repairs) every difference. The rules that keep it safe:
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

export interface Finding {
  kind: FindingKind;
  /** What it is about: a branch (`db/branch`), dataset, snapshot, container or path. */
  subject: string;
  detail: string;
  /** What --fix does (or did); null when there is no safe automatic fix. */
  action: string | null;
  /** found: not fixed (no --fix); fixed; failed: the fix was tried and failed; left: no safe fix. */
  status: 'found' | 'fixed' | 'failed' | 'left';
  /** warnings are reported but do not make the report unhealthy. */
  severity: 'error' | 'warning';
  error?: string;
}

export interface DoctorReport {
  /** True when nothing needing attention remains. */
  healthy: boolean;
  fix: boolean;
  findings: Finding[];
  checked: { databases: number; branches: number; datasets: number; snapshots: number; containers: number; walFolders: number };
}

const WARNINGS = new Set<FindingKind>(['foreign-dataset', 'port-taken']);

export async function doctor(e: Engine, o: { fix?: boolean } = {}): Promise<DoctorReport> {
  const fix = !!o.fix;
  await e.preflight();
  const findings: Finding[] = [];
  const add = async (f: Omit<Finding, 'status' | 'severity'>, repair?: () => Promise<void>): Promise<void> => {
    const severity = WARNINGS.has(f.kind) ? 'warning' : 'error';
    if (!fix || f.action === null || !repair) {
      findings.push({ ...f, severity, status: f.action === null || !repair ? (fix ? 'left' : 'found') : 'found' });
      return;
    }
    try {
      await repair();
      findings.push({ ...f, severity, status: 'fixed' });
      e.log.info(`doctor: fixed ${f.kind} ${f.subject}: ${f.action}`);
    } catch (err) {
      findings.push({ ...f, severity, status: 'failed', error: describe(err) });
      e.log.warn(`doctor: could not fix ${f.kind} ${f.subject}: ${describe(err)}`);
    }
  };

  // 1. Operations whose process died: finished or undone (with --fix), else reported. Then WAL
  // folders of an install from before WAL datasets are moved onto datasets.
  if (fix) {
    for (const name of await e.recoverInterrupted()) {
      findings.push({ kind: 'interrupted-operation', subject: name, detail: 'an operation was interrupted (its process died)', action: 'finished or undone', status: 'fixed', severity: 'error' });
    }
  }
  if (!(await e.store.read()).walOnZfs) {
    const subject = e.layout.walMount();
    const detail = 'WAL archives are folders on the host\'s disk (an install from before WAL datasets): one branch could fill it';
    await add({ kind: 'legacy-wal', subject, detail, action: `move them onto ZFS datasets under ${e.layout.walRoot} (running branches restart once)` }, async () => {
      await migrateLegacyWal(e);
    });
  }

  // 2. What is really there, listed before the state is read.
  const root = e.layout.root;
  const zfs = await e.zfs.inventory(root);
  const containers = (await e.docker.listManaged({ [LABEL_ROOT]: root })).filter((c) => c.labels[LABEL_ROOT] === root);
  const walRoot = e.layout.walMount();
  const walFolders = await readdir(walRoot).catch(() => [] as string[]);
  const walPrefix = `${e.layout.walRoot}/`;
  const walDatasets = zfs.filter((z) => z.type === 'filesystem' && z.name.startsWith(walPrefix) && !z.name.slice(walPrefix.length).includes('/'));
  const walById = new Map(walDatasets.map((z) => [z.name.slice(walPrefix.length), z]));
  const migrated = (await e.store.read()).walOnZfs;
  const tmpFiles = await readdir(e.layout.tmpDir()).catch(() => [] as string[]);
  const state = await e.store.read();

  // Branches and databases with an operation in flight (or interrupted, when not fixing) are left alone.
  const busy = new Set<string>();
  const busyDbs = new Set<string>();
  const busySnapshots = new Set<string>();
  for (const b of Object.values(state.branches)) {
    if (!b.operation) continue;
    if (operationAlive(b.operation) || !fix) {
      busy.add(b.id);
      if (b.operation.data?.snapshot) busySnapshots.add(b.operation.data.snapshot);
    }
    if (!fix && !operationAlive(b.operation)) {
      findings.push({ kind: 'interrupted-operation', subject: refName(b), detail: `'${b.operation.kind}' was interrupted (its process, pid ${b.operation.pid}, is gone)`, action: 'finish or undo it', status: 'found', severity: 'error' });
    }
  }
  for (const db of Object.values(state.databases)) {
    if (!db.operation) continue;
    if (operationAlive(db.operation) || !fix) busyDbs.add(db.name);
    if (!fix && !operationAlive(db.operation)) {
      findings.push({ kind: 'interrupted-operation', subject: db.name, detail: `'${db.operation.kind}' was interrupted (its process, pid ${db.operation.pid}, is gone)`, action: 'finish or undo it', status: 'found', severity: 'error' });
    }
  }
  const isBusy = (b: BranchRecord) => busy.has(b.id) || busyDbs.has(b.database);
  const branches = Object.values(state.branches);
  const byDataset = new Map(branches.map((b) => [b.dataset, b]));
  const byId = new Map(branches.map((b) => [b.id, b]));
  const fsByName = new Map(zfs.filter((z) => z.type === 'filesystem').map((z) => [z.name, z]));
  const childrenOf = (key: string) => branches.filter((x) => x.parent === key);

  // 3. Each branch the state knows: its dataset, container, port and WAL folder.
  for (const b of branches) {
    if (isBusy(b) || (b.status !== 'running' && b.status !== 'stopped')) continue;
    const key = refName(b);
    const ds = fsByName.get(b.dataset);
    if (!ds) {
      const moved = zfs.find((z) => z.type === 'filesystem' && z.id === b.id && z.name !== b.dataset && !byDataset.has(z.name));
      if (moved) {
        await add({ kind: 'moved-dataset', subject: key, detail: `its dataset is at ${moved.name}, not ${b.dataset}`, action: `rename ${moved.name} to ${b.dataset}` }, async () => {
          await e.docker.remove(b.container);
          await e.zfs.rename(moved.name, b.dataset);
          fsByName.set(b.dataset, { ...moved, name: b.dataset });
          fsByName.delete(moved.name);
          if (b.status === 'running') await e.startBranchContainer(b);
        });
      } else {
        const blocked = b.branch === 'main' ? 'it is the main branch (delete the database)' : childrenOf(key).length ? `it has child branches (${childrenOf(key).map(refName).join(', ')})` : null;
        await add(
          { kind: 'missing-dataset', subject: key, detail: `dataset ${b.dataset} does not exist: the branch's data is gone`, action: blocked ? null : 'forget the branch (remove its container, WAL folder and record)' },
          blocked ? undefined : () => e.destroyBranch(b),
        );
        if (blocked) findings[findings.length - 1]!.detail += `; not removed automatically: ${blocked}`;
      }
      continue;
    }
    if (!ds.mounted) {
      await add({ kind: 'unmounted-dataset', subject: key, detail: `${b.dataset} is not mounted`, action: 'mount it' }, () => e.zfs.mount(b.dataset));
    }
    const c = containers.find((x) => x.name === b.container);
    const bind = c ? await e.docker.binding(b.container) : null;
    if (c && (c.labels[LABEL_ID] !== b.id || bind?.hostPort !== b.port)) {
      const why = c.labels[LABEL_ID] !== b.id ? `container ${b.container} belongs to another branch id (${c.labels[LABEL_ID] ?? 'none'})` : `container publishes port ${bind?.hostPort ?? 'none'}, the state says ${b.port}`;
      await add({ kind: 'port-mismatch', subject: key, detail: why, action: b.status === 'running' ? 're-create and start the container' : 'remove the container (re-created on start)' }, async () => {
        await e.docker.remove(b.container);
        if (b.status === 'running') await e.startBranchContainer(b);
      });
    } else if (b.status === 'running' && c?.state !== 'running') {
      await add({ kind: 'not-running', subject: key, detail: c ? `its container is ${c.state}` : 'its container does not exist', action: c ? 'start it' : 're-create and start it' }, () => e.startBranchContainer(b));
    } else if (b.status === 'stopped' && c?.state === 'running') {
      await add({ kind: 'running-but-stopped', subject: key, detail: 'recorded as stopped but its container runs (started by hand?)', action: 'record it as running' }, () =>
        e.store.update((s) => {
          const cur = s.branches[key];
          if (cur && cur.id === b.id) {
            cur.status = 'running';
            cur.stoppedBy = null;
          }
        }),
      );
    }
    if (b.status === 'stopped' && c?.state !== 'running' && !(await portIsFree(e.cfg.postgres.bindAddress, b.port))) {
      await add({ kind: 'port-taken', subject: key, detail: `port ${b.port} is in use by another program: the branch cannot start until it is freed`, action: null });
    }
    const walDs = walById.get(b.id);
    if (migrated && !walDs) {
      await add({ kind: 'missing-wal-folder', subject: key, detail: `its WAL archive dataset ${e.layout.walDataset(b.id)} does not exist (archiving fails)`, action: 'create it (empty)' }, async () => {
        await e.wal.create(b.id);
        if (b.status === 'running') {
          await e.docker.remove(b.container); // its archive bind pointed at what is gone
          await e.startBranchContainer(b);
        }
      });
    } else if (walDs && !walDs.mounted) {
      await add({ kind: 'unmounted-dataset', subject: key, detail: `its WAL archive ${walDs.name} is not mounted`, action: 'mount it' }, () => e.wal.mount(b.id));
    } else if (!migrated && !walFolders.includes(b.id)) {
      await add({ kind: 'missing-wal-folder', subject: key, detail: `${e.layout.walDir(b.id)} does not exist (archiving fails)`, action: 'create it' }, () =>
        mkdirOwned(e.layout.walDir(b.id), { uid: e.cfg.postgres.uid, gid: e.cfg.postgres.gid }),
      );
    }
  }

  // 4. Containers nobody owns.
  for (const c of containers) {
    const owner = byId.get(c.labels[LABEL_ID] ?? '');
    if (owner && isBusy(owner)) continue;
    if (owner && owner.container === c.name) continue;
    if (!owner && busyDbs.size && [...busyDbs].some((d) => c.labels[LABEL_DATABASE] === d)) continue;
    await add({ kind: 'orphan-container', subject: c.name, detail: owner ? `named for no branch of id ${owner.id}` : 'belongs to no branch in the state', action: 'remove it' }, () => e.docker.remove(c.name));
  }

  // 5. Datasets and snapshots nobody owns, children (and clones) before what they came from.
  const dbDatasets = new Set(Object.keys(state.databases).map((d) => e.layout.databaseDataset(d)));
  const orphans: ZfsEntry[] = [];
  for (const z of zfs) {
    if (z.type !== 'filesystem' || z.name === root) continue;
    if (z.name === e.layout.walRoot || z.name.startsWith(walPrefix)) continue; // WAL archives: see 6.
    if (orphans.some((o) => z.name.startsWith(`${o.name}/`))) continue; // goes with its parent
    const rel = z.name.slice(root.length + 1);
    const dbName = rel.split('/')[0]!;
    if (busyDbs.has(dbName)) continue;
    if (!rel.includes('/') ? dbDatasets.has(z.name) : byDataset.has(z.name)) continue;
    const owner = z.id ? byId.get(z.id) : undefined;
    if (owner && isBusy(owner)) continue;
    if (owner && !fsByName.has(owner.dataset)) continue; // it is that branch's data, under another name (see moved-dataset)
    if (!z.managed) {
      await add({ kind: 'foreign-dataset', subject: z.name, detail: 'not made by BetterPG (no betterpg:managed property); left alone', action: null });
      continue;
    }
    orphans.push(z);
  }
  const destroyed = new Set<string>();
  const clonedFrom = (ds: string) => zfs.filter((z) => z.type === 'filesystem' && !destroyed.has(z.name) && z.origin?.startsWith(`${ds}@`) && !z.name.startsWith(`${ds}/`));
  for (let progress = true; progress && orphans.length; ) {
    progress = false;
    for (const z of [...orphans]) {
      const inOtherOrphan = (u: ZfsEntry) => orphans.some((o) => o !== z && (u.name === o.name || u.name.startsWith(`${o.name}/`)));
      const clones = clonedFrom(z.name);
      if (clones.some(inOtherOrphan)) continue; // those go first; what remains belongs to known branches
      orphans.splice(orphans.indexOf(z), 1);
      progress = true;
      const owner = z.id ? byId.get(z.id) : undefined;
      const detail = owner ? `a leftover copy of branch ${refName(owner)}'s data (its dataset is ${owner.dataset})` : 'belongs to no database or branch in the state';
      if (clones.length) {
        await add({ kind: 'orphan-dataset', subject: z.name, detail: `${detail}; kept: ${clones.map((u) => u.name).join(', ')} was cloned from it`, action: null });
        continue;
      }
      await add({ kind: 'orphan-dataset', subject: z.name, detail, action: 'destroy it (with its snapshots)' }, async () => {
        await e.zfs.destroy(z.name, { recursive: true });
        for (const x of zfs) if (x.name === z.name || x.name.startsWith(`${z.name}/`) || x.name.startsWith(`${z.name}@`)) destroyed.add(x.name);
      });
    }
  }
  for (const z of orphans) await add({ kind: 'orphan-dataset', subject: z.name, detail: 'cloned from by other leftovers in a cycle', action: null });

  for (const z of zfs) {
    if (z.type !== 'snapshot' || destroyed.has(z.name)) continue;
    const [ds, snap] = z.name.split('@') as [string, string];
    if (!snap.startsWith('bpg-') || !byDataset.has(ds)) continue; // ours only, on branches the state knows
    const owner = byDataset.get(ds)!;
    if (isBusy(owner) || busySnapshots.has(z.name)) continue;
    if ([...busy].some((id) => snap.startsWith(`bpg-${id}`))) continue; // a create or reset in flight
    if (snapshotInUse(state, z.name)) continue;
    const clones = zfs.filter((x) => x.type === 'filesystem' && x.origin === z.name && !destroyed.has(x.name));
    if (clones.length) {
      await add({ kind: 'orphan-snapshot', subject: z.name, detail: `no branch or kept snapshot uses it, but ${clones.map((x) => x.name).join(', ')} was cloned from it`, action: null });
      continue;
    }
    await add({ kind: 'orphan-snapshot', subject: z.name, detail: 'no branch was cloned from it and it is not a kept snapshot', action: 'destroy it' }, () => e.zfs.destroy(z.name));
  }
  const snapshotNames = new Set(zfs.filter((z) => z.type === 'snapshot').map((z) => z.name));
  for (const k of Object.values(state.snapshots)) {
    const owner = byId.get(k.branchId);
    if (!owner || isBusy(owner) || !fsByName.has(owner.dataset)) continue;
    const full = `${owner.dataset}@${k.name}`;
    if (snapshotNames.has(full)) continue;
    await add({ kind: 'missing-snapshot', subject: k.id, detail: `kept snapshot ${full} does not exist in ZFS`, action: 'forget it' }, () =>
      e.store.update((s) => {
        delete s.snapshots[k.id];
      }),
    );
  }

  // 6. WAL archives of no branch (or set aside by a reset that is over), folders in their place
  // that are no dataset, and temporary files (initdb password files) left behind.
  for (const [name, z] of walById) {
    const id = name.slice(0, 16);
    const owner = byId.get(id);
    if (owner && (isBusy(owner) || name === id)) continue;
    if (!z.managed) {
      await add({ kind: 'foreign-dataset', subject: z.name, detail: 'not made by BetterPG (no betterpg:managed property); left alone', action: null });
      continue;
    }
    const detail = owner ? `an old WAL archive of branch ${refName(owner)}` : 'a WAL archive of no branch in the state';
    await add({ kind: 'orphan-wal-folder', subject: z.name, detail, action: 'destroy it' }, () => e.wal.destroyDataset(z.name));
  }
  for (const name of walFolders) {
    if (migrated && walById.has(name)) continue; // a dataset's mount point
    const id = name.slice(0, 16);
    const owner = byId.get(id);
    if (owner && (isBusy(owner) || (!migrated && name === id))) continue;
    const path = join(walRoot, name);
    const what = migrated ? 'a folder where only WAL archive datasets belong' : owner ? `an old WAL folder of branch ${refName(owner)}` : 'belongs to no branch in the state';
    await add({ kind: 'orphan-wal-folder', subject: path, detail: what, action: 'remove it' }, () => rm(path, { recursive: true, force: true }));
  }
  for (const name of tmpFiles) {
    const id = /^pw-([a-f0-9]{16})$/.exec(name)?.[1];
    const owner = id ? byId.get(id) : undefined;
    if (owner && isBusy(owner)) continue;
    const path = join(e.layout.tmpDir(), name);
    await add({ kind: 'orphan-temp-file', subject: path, detail: 'a temporary file of an operation that is over', action: 'remove it' }, () => rm(path, { recursive: true, force: true }));
  }

  // 7. The no-egress network's firewall (a reboot or a firewall reload loses it; starts re-apply it too).
  const net = hardening(e.cfg).network;
  if (branches.length && net && net !== 'none') {
    const missing = await e.docker.networks.missingRules(net);
    if (missing.length) {
      const detail = `the iptables rules that keep branch containers from reaching out are missing (${missing.map((r) => r.chain).join(', ')})`;
      await add({ kind: 'missing-firewall-rule', subject: `network ${net.name}`, detail, action: 're-apply them' }, () => e.docker.networks.ensure(net, { recheck: true }));
    }
  }

  return {
    healthy: findings.every((f) => f.severity === 'warning' || f.status === 'fixed'),
    fix,
    findings,
    checked: {
      databases: Object.keys(state.databases).length,
      branches: branches.length,
      datasets: zfs.filter((z) => z.type === 'filesystem').length,
      snapshots: zfs.filter((z) => z.type === 'snapshot').length,
      containers: containers.length,
      walFolders: walFolders.length,
    },
  };
}

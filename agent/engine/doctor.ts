import { readdir } from 'node:fs/promises';
import { describe } from '../errors.js';
import { hardening } from '../drivers/hardening.js';
import { operationAlive } from '../state/operation.js';
import type { State } from '../state/schema.js';
import { preflight } from './preflight.js';
import type { EngineContext } from './context.js';
import { inspect, type FindingKind, type Inventory } from './doctor-inspect.js';
import { repair } from './doctor-repair.js';
import { LABEL_SLOT, slotName } from './port-slots.js';
import { portIsFree } from './ports.js';
import { recoverInterrupted } from './recovery.js';
import { migrateLegacyWal } from './wal-migration.js';

export type { FindingKind } from './doctor-inspect.js';

/**
 * Reconcile (`bpg doctor [--fix]`, and `bpg serve` when it starts): list what ZFS, Docker and the
 * state folder hold (the inventory), hold it against the state (doctor-inspect.ts, pure), and with
 * `fix` repair what is safe (doctor-repair.ts). With `fix`, interrupted operations are finished or
 * undone and WAL folders of an older install migrated first, so the inventory shows the result.
 */

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
  checked: {
    databases: number;
    branches: number;
    datasets: number;
    snapshots: number;
    containers: number;
    walFolders: number;
  };
}

const WARNINGS = new Set<FindingKind>(['foreign-dataset', 'port-taken']);
const severityOf = (k: FindingKind) => (WARNINGS.has(k) ? 'warning' : 'error');

/** What is really there. Listed before the state is read (see doctor-inspect.ts). */
export async function takeInventory(ctx: EngineContext): Promise<Inventory> {
  const root = ctx.layout.root;
  const zfs = await ctx.zfs.inventory(root);
  const listed = await ctx.docker.listManaged();
  const walFolders = await readdir(ctx.layout.walMount()).catch(() => [] as string[]);
  const tmpFiles = await readdir(ctx.layout.tmpDir()).catch(() => [] as string[]);
  const state = await ctx.store.read();
  const branchNames = new Set(Object.values(state.branches).map((b) => b.container));
  // Port slots (port-slots.ts) of a branch's port, or spares in the range, are in order; any other is an orphan.
  const heldPorts = new Set(Object.values(state.branches).map((b) => b.port));
  const [lo, hi] = ctx.cfg.postgres.portRange;
  const slotInOrder = (c: { name: string; labels: Record<string, string> }) => {
    const port = Number(c.labels[LABEL_SLOT]);
    return c.name === slotName(ctx, port) && (heldPorts.has(port) || (port >= lo && port <= hi));
  };
  const containers = await Promise.all(
    listed
      .filter((c) => !slotInOrder(c))
      .map(async (c) => ({
        name: c.name,
        labels: c.labels,
        state: c.state,
        hostPort: branchNames.has(c.name) ? ((await ctx.docker.binding(c.name))?.hostPort ?? null) : null,
      })),
  );
  const running = new Set(listed.filter((c) => c.state === 'running').map((c) => c.name));
  const takenPorts: number[] = [];
  for (const b of Object.values(state.branches)) {
    if (
      b.status === 'stopped' &&
      !running.has(b.container) &&
      !running.has(slotName(ctx, b.port)) && // its slot holds it, for the branch
      !(await portIsFree(ctx.cfg.postgres.bindAddress, b.port))
    )
      takenPorts.push(b.port);
  }
  const net = hardening(ctx.cfg).network;
  const firewall =
    Object.keys(state.branches).length && net && net !== 'none'
      ? { network: net.name, missing: (await ctx.docker.missingFirewallRules(net)).map((r) => r.chain) }
      : null;
  return {
    root,
    walRoot: ctx.layout.walRoot,
    walMount: ctx.layout.walMount(),
    tmpDir: ctx.layout.tmpDir(),
    zfs,
    containers,
    walFolders,
    tmpFiles,
    ...liveOperations(state),
    takenPorts,
    firewall,
  };
}

/** Which recorded operations' processes still run (the rest were interrupted). */
function liveOperations(state: State): Pick<Inventory, 'liveBranchOps' | 'liveDatabaseOps'> {
  return {
    liveBranchOps: Object.values(state.branches)
      .filter((b) => b.operation && operationAlive(b.operation))
      .map((b) => b.id),
    liveDatabaseOps: Object.values(state.databases)
      .filter((d) => d.operation && operationAlive(d.operation))
      .map((d) => d.name),
  };
}

export async function doctor(ctx: EngineContext, o: { fix?: boolean } = {}): Promise<DoctorReport> {
  const fix = !!o.fix;
  await preflight(ctx);
  const findings: Finding[] = [];
  if (fix) {
    for (const name of await recoverInterrupted(ctx)) {
      findings.push({
        kind: 'interrupted-operation',
        subject: name,
        detail: 'an operation was interrupted (its process died)',
        action: 'finished or undone',
        status: 'fixed',
        severity: 'error',
      });
    }
    if (!(await ctx.store.read()).walOnZfs) {
      const f = {
        kind: 'legacy-wal' as const,
        subject: ctx.layout.walMount(),
        detail: "WAL archives were folders on the host's disk (an install from before WAL datasets)",
        action: `moved onto ZFS datasets under ${ctx.layout.walRoot}`,
      };
      try {
        await migrateLegacyWal(ctx);
        findings.push({ ...f, status: 'fixed', severity: 'error' });
      } catch (err) {
        findings.push({ ...f, status: 'failed', severity: 'error', error: describe(err) });
      }
    }
  }
  const inv = await takeInventory(ctx);
  // The state read last, and the liveness of its operations taken from that same read.
  const state = await ctx.store.read();
  Object.assign(inv, liveOperations(state));
  for (const p of inspect(inv, state, { fix, walDataset: (id) => ctx.layout.walDataset(id) })) {
    const f = {
      kind: p.kind,
      subject: p.subject,
      detail: p.detail,
      action: p.action,
      severity: severityOf(p.kind),
    } as const;
    if (!fix || !p.repair) {
      findings.push({ ...f, status: fix ? 'left' : 'found' });
      continue;
    }
    try {
      await repair(ctx, p.repair);
      findings.push({ ...f, status: 'fixed' });
      ctx.log.info(`doctor: fixed ${p.kind} ${p.subject}: ${p.action}`);
    } catch (err) {
      findings.push({ ...f, status: 'failed', error: describe(err) });
      ctx.log.warn(`doctor: could not fix ${p.kind} ${p.subject}: ${describe(err)}`);
    }
  }
  return {
    healthy: findings.every((f) => f.severity === 'warning' || f.status === 'fixed'),
    fix,
    findings,
    checked: {
      databases: Object.keys(state.databases).length,
      branches: Object.keys(state.branches).length,
      datasets: inv.zfs.filter((z) => z.type === 'filesystem').length,
      snapshots: inv.zfs.filter((z) => z.type === 'snapshot').length,
      containers: inv.containers.length,
      walFolders: state.walOnZfs
        ? inv.zfs.filter((z) => z.type === 'filesystem' && z.name.startsWith(`${inv.walRoot}/`)).length
        : inv.walFolders.length,
    },
  };
}

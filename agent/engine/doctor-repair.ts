import { rm } from 'node:fs/promises';
import { refName } from '../names.js';
import { hardening } from '../drivers/hardening.js';
import { ownerOf, startBranchContainer } from './containers.js';
import type { EngineContext } from './context.js';
import { mkdirOwned } from './datadir.js';
import { destroyBranch } from './destroy.js';
import type { Repair } from './doctor-inspect.js';
import { migrateLegacyWal } from './wal-migration.js';

/** Carries out one repair that doctor-inspect.ts planned. Each is safe to run again. */
export async function repair(ctx: EngineContext, r: Repair): Promise<void> {
  switch (r.do) {
    case 'migrate-wal':
      await migrateLegacyWal(ctx);
      return;
    case 'rename-dataset':
      await ctx.docker.remove(r.branch.container);
      await ctx.zfs.rename(r.from, r.branch.dataset);
      if (r.branch.status === 'running') await startBranchContainer(ctx, r.branch);
      return;
    case 'forget-branch':
      await destroyBranch(ctx, r.branch);
      return;
    case 'mount':
      await ctx.zfs.mount(r.dataset);
      return;
    case 'mount-wal':
      await ctx.wal.mount(r.id);
      return;
    case 'recreate-container':
      await ctx.docker.remove(r.branch.container);
      if (r.branch.status === 'running') await startBranchContainer(ctx, r.branch);
      return;
    case 'start-branch':
      await startBranchContainer(ctx, r.branch);
      return;
    case 'record-running': {
      const key = refName(r.branch);
      await ctx.store.update((s) => {
        const cur = s.branches[key];
        if (cur && cur.id === r.branch.id) {
          cur.status = 'running';
          cur.stoppedBy = null;
        }
      });
      return;
    }
    case 'create-wal':
      await ctx.wal.create(r.branch.id);
      if (r.branch.status === 'running') {
        await ctx.docker.remove(r.branch.container); // its archive bind pointed at what is gone
        await startBranchContainer(ctx, r.branch);
      }
      return;
    case 'create-legacy-wal-folder':
      await mkdirOwned(ctx.layout.walDir(r.id), ownerOf(ctx));
      return;
    case 'remove-container':
      await ctx.docker.remove(r.name);
      return;
    case 'destroy-dataset':
      await ctx.zfs.destroy(r.name, { recursive: true });
      return;
    case 'destroy-snapshot':
      await ctx.zfs.destroy(r.name);
      return;
    case 'forget-snapshot':
      await ctx.store.update((s) => {
        delete s.snapshots[r.id];
      });
      return;
    case 'destroy-wal-dataset':
      await ctx.wal.destroyDataset(r.name);
      return;
    case 'remove-path':
      await rm(r.path, { recursive: true, force: true });
      return;
    case 'restore-firewall': {
      const net = hardening(ctx.cfg).network;
      if (net && net !== 'none') await ctx.docker.ensureNetwork(net);
      return;
    }
    default: {
      const never: never = r;
      throw new Error(`unknown repair ${JSON.stringify(never)}`);
    }
  }
}

import type { Config } from '../config.js';
import { DockerDriver } from '../drivers/docker.js';
import type { ContainerRuntime, DatasetStore, Postgres } from '../drivers/interfaces.js';
import { postgresClients } from '../drivers/postgres.js';
import { ZfsDriver } from '../drivers/zfs.js';
import type { Logger } from '../log.js';
import { StateStore } from '../state/store.js';
import { Layout } from './layout.js';
import type { SpareKeeper } from './port-slots.js';
import { WalArchives } from './wal-archive.js';

/**
 * What every operation works with, passed explicitly: the config, where things live, the state,
 * the drivers (behind the interfaces in drivers/interfaces.ts) and the log. Operations are modules
 * of functions taking this context; the Engine class (engine.ts) is a thin facade over them.
 */
export interface EngineContext {
  readonly cfg: Config;
  readonly layout: Layout;
  readonly store: StateStore;
  readonly zfs: DatasetStore;
  readonly docker: ContainerRuntime;
  readonly pg: Postgres;
  readonly wal: WalArchives;
  readonly log: Logger;
  /** Set by `bpg serve`: refills spare port slots after a create takes one (port-slots.ts). */
  spares?: SpareKeeper;
}

export interface EngineDeps {
  zfs?: DatasetStore;
  /** A DockerDriver is bound to this agent's root; another runtime is used as it is. */
  docker?: ContainerRuntime;
  pg?: Postgres;
  log: Logger;
}

export function createContext(cfg: Config, deps: EngineDeps): EngineContext {
  const layout = new Layout(cfg);
  const zfs = deps.zfs ?? new ZfsDriver();
  const docker = deps.docker ?? new DockerDriver();
  return {
    cfg,
    layout,
    store: new StateStore(cfg.stateDir),
    zfs,
    // never touches another root's containers
    docker: docker instanceof DockerDriver ? docker.forRoot(layout.root) : docker,
    pg: deps.pg ?? postgresClients,
    wal: new WalArchives(cfg, layout, zfs),
    log: deps.log,
  };
}

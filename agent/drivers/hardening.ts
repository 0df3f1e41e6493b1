import type { Config } from '../config.js';
import type { ContainerSpec, NetworkPlan } from './interfaces.js';
import { networkName } from './network.js';

/** The container spec fields that confine a branch's PostgreSQL (and the initdb one-shot). */
export type Hardening = Pick<
  ContainerSpec,
  'pidsLimit' | 'capDrop' | 'securityOpt' | 'readOnlyRootfs' | 'tmpfs' | 'log'
> & {
  network?: NetworkPlan | 'none';
};

/**
 * What the `postgres.*` hardening keys say, as container spec fields. PR SQL runs shell commands
 * in the container as uid 999 (`COPY ... TO PROGRAM`); these bound what that shell can do.
 *
 * - No capability is kept: the agent runs `postgres` and `initdb` directly as uid 999 (no
 *   entrypoint script that starts as root and switches user), so the process has no capabilities
 *   to begin with; dropping them all empties the bounding set, so nothing (a setuid file in an
 *   image) can get one back. Checked with the local image and the official layout.
 * - With a read-only root filesystem, the only writable places are the bind mounts (data
 *   directory, WAL archive), /dev/shm, and these tmpfs: /tmp (shells, COPY ... TO PROGRAM) and
 *   the socket directory, /var/run/postgresql in the official images (Debian's compiled-in
 *   default; /var/run links to /run there, and the local image has both paths, so both are
 *   mounted: on an image where they are one folder, the second mount covers the first).
 * - The one-shot (initdb) has no network at all.
 */
export function hardening(cfg: Config, o: { oneShot?: boolean } = {}): Hardening {
  const p = cfg.postgres;
  const owned = `uid=${p.uid},gid=${p.gid}`;
  return {
    pidsLimit: p.pidsLimit ?? undefined,
    capDrop: p.dropCapabilities ? ['ALL'] : undefined,
    securityOpt: p.noNewPrivileges ? ['no-new-privileges'] : undefined,
    readOnlyRootfs: p.readOnlyRootfs ? true : undefined,
    tmpfs: p.readOnlyRootfs
      ? { '/tmp': 'mode=1777', '/var/run/postgresql': `${owned},mode=2775`, '/run/postgresql': `${owned},mode=2775` }
      : undefined,
    log: p.logMaxSize === null ? undefined : { maxSizeBytes: p.logMaxSize, maxFiles: p.logMaxFiles },
    network: o.oneShot
      ? 'none'
      : p.network === null
        ? undefined
        : { name: networkName(p.network, p.egress), egress: p.egress },
  };
}

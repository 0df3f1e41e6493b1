import { mkdir } from 'node:fs/promises';
import type Docker from 'dockerode';
import lockfile from 'proper-lockfile';
import { BpgError, conflict, unavailable } from '../errors.js';
import { CommandError, run } from './exec.js';
import type { FirewallRule, NetworkPlan } from './interfaces.js';
export type { FirewallRule, NetworkPlan } from './interfaces.js';

/**
 * The Docker networks branch containers live on, and the firewall that keeps them from reaching
 * out. One network per egress mode, shared by every agent on the host (Docker's default address
 * pools hold ~30 networks: never one per agent or per test), created on demand and never removed
 * by the agent. The bridge is named like the network, so the iptables rules can name it.
 *
 * Every network disables container-to-container traffic (`enable_icc=false`). A no-egress
 * network also disables masquerading and gets two iptables rules on its bridge, so its containers
 * only ever answer: nothing they start leaves the bridge (DOCKER-USER: forwarded traffic, to other
 * hosts and other Docker networks) or reaches the host itself (INPUT: the host's services, and
 * other branches through the docker-proxy that publishes their ports). Published ports keep
 * working: clients' connections come in, and only their replies (ESTABLISHED, RELATED) go out.
 * A Docker `--internal` network would drop the published ports too.
 */

export const LABEL_NETWORK_MANAGED = 'io.betterpg.managed';
export const LABEL_EGRESS = 'io.betterpg.egress';

export function networkName(prefix: string, egress: boolean): string {
  return `${prefix}-${egress ? 'egress' : 'isolated'}`;
}

/** The rules of a no-egress bridge: only replies leave it, nothing new. */
export function firewallRules(bridge: string): FirewallRule[] {
  const rule = [
    '-i',
    bridge,
    '-m',
    'conntrack',
    '!',
    '--ctstate',
    'RELATED,ESTABLISHED',
    '-m',
    'comment',
    '--comment',
    'betterpg: no egress',
    '-j',
    'DROP',
  ];
  return [
    { chain: 'DOCKER-USER', rule },
    { chain: 'INPUT', rule },
  ];
}

/** Checked at most this often per process (a reboot, or a firewall reload, loses the rules). */
const RECHECK_MS = 60_000;
/** Network name -> when it and its rules were last seen complete by this process. */
const verified = new Map<string, number>();
/** Creating networks and inserting rules: one process on the host at a time (no duplicates). */
const HOST_LOCK = '/run/lock/betterpg-network';

const iptables = (args: string[]) => run('iptables', ['-w', '10', ...args], { timeoutMs: 30_000 });

export class BranchNetworks {
  constructor(private readonly docker: Docker) {}

  /** Makes sure the network exists as planned and, without egress, that its rules are in place. */
  async ensure(plan: NetworkPlan, o: { recheck?: boolean } = {}): Promise<void> {
    const seen = verified.get(plan.name);
    if (!o.recheck && seen !== undefined && Date.now() - seen < RECHECK_MS) return;
    const ready = async () => (await this.inspect(plan)) !== null && (await this.missingRules(plan)).length === 0;
    if (!(await ready())) {
      await this.withHostLock(async () => {
        if ((await this.inspect(plan)) === null) await this.create(plan);
        for (const r of await this.missingRules(plan)) {
          try {
            await iptables(['-I', r.chain, '1', ...r.rule]);
          } catch (e) {
            throw unavailable(
              `could not add the firewall rule that keeps branch containers from reaching out (iptables ${r.chain}): ${firstLine(e)}; is dockerd running with its iptables rules (the DOCKER-USER chain)? Or set postgres.egress: true`,
            );
          }
        }
      });
    }
    verified.set(plan.name, Date.now());
  }

  /** The rules a no-egress network should have and does not (checked with `iptables -C`). */
  async missingRules(plan: NetworkPlan): Promise<FirewallRule[]> {
    if (plan.egress) return [];
    const present = await Promise.all(
      firewallRules(plan.name).map((r) =>
        iptables(['-C', r.chain, ...r.rule]).then(
          () => true,
          (e) => {
            if (e instanceof CommandError && e.exitCode === 1) return false; // no such rule (or chain)
            throw unavailable(`could not check the firewall (iptables -C ${r.chain}): ${firstLine(e)}`);
          },
        ),
      ),
    );
    return firewallRules(plan.name).filter((_, i) => !present[i]);
  }

  /** The plan of a network a container is on, when it is one of ours (null: Docker's own, or none). */
  async planOf(name: string | undefined): Promise<NetworkPlan | null> {
    if (!name || ['default', 'bridge', 'host', 'none'].includes(name) || name.startsWith('container:')) return null;
    try {
      const n = (await this.docker.getNetwork(name).inspect()) as NetworkInfo;
      if (n.Labels?.[LABEL_NETWORK_MANAGED] !== 'true') return null;
      return { name: n.Name, egress: n.Labels?.[LABEL_EGRESS] === 'true' };
    } catch (e) {
      if ((e as { statusCode?: number }).statusCode === 404) return null;
      throw e;
    }
  }

  /** The network as it is, or null when missing; refuses one that is not what the plan says. */
  private async inspect(plan: NetworkPlan): Promise<NetworkInfo | null> {
    let n: NetworkInfo;
    try {
      n = (await this.docker.getNetwork(plan.name).inspect()) as NetworkInfo;
    } catch (e) {
      if ((e as { statusCode?: number }).statusCode === 404) return null;
      throw e;
    }
    const o = n.Options ?? {};
    const ours =
      n.Name === plan.name &&
      n.Driver === 'bridge' &&
      n.Labels?.[LABEL_NETWORK_MANAGED] === 'true' &&
      n.Labels?.[LABEL_EGRESS] === String(plan.egress) &&
      o['com.docker.network.bridge.name'] === plan.name &&
      o['com.docker.network.bridge.enable_icc'] === 'false';
    if (!ours) {
      throw conflict(
        `Docker network ${plan.name} exists but is not BetterPG's ${plan.egress ? 'egress' : 'no-egress'} network for branches ` +
          `(labels, bridge name or enable_icc differ): remove it, or set postgres.network to another prefix`,
      );
    }
    return n;
  }

  private async create(plan: NetworkPlan): Promise<void> {
    try {
      await this.docker.createNetwork({
        Name: plan.name,
        Driver: 'bridge',
        CheckDuplicate: true,
        Labels: { [LABEL_NETWORK_MANAGED]: 'true', [LABEL_EGRESS]: String(plan.egress) },
        Options: {
          'com.docker.network.bridge.name': plan.name,
          'com.docker.network.bridge.enable_icc': 'false',
          'com.docker.network.bridge.enable_ip_masquerade': String(plan.egress),
        },
      });
    } catch (e) {
      // Made meanwhile by another process on the host (outside our lock: an older agent)?
      if ((await this.inspect(plan)) !== null) return;
      throw new BpgError(
        'unavailable',
        `could not create the Docker network ${plan.name} for branch containers: ${firstLine(e)}`,
        { cause: e },
      );
    }
  }

  private async withHostLock<T>(fn: () => Promise<T>): Promise<T> {
    await mkdir('/run/lock', { recursive: true });
    const release = await lockfile.lock(HOST_LOCK, {
      realpath: false,
      lockfilePath: `${HOST_LOCK}.lock`,
      stale: 30_000,
      retries: { retries: 100, minTimeout: 50, maxTimeout: 500 },
    });
    try {
      return await fn();
    } finally {
      await release().catch(() => {});
    }
  }
}

interface NetworkInfo {
  Name: string;
  Driver: string;
  Labels?: Record<string, string>;
  Options?: Record<string, string>;
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
}

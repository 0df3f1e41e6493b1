import Docker from 'dockerode';
import { BpgError, conflict, unavailable } from '../errors.js';
import { BranchNetworks } from './network.js';
import type { ContainerRuntime, ContainerSpec, ContainerState, FirewallRule, NetworkPlan } from './interfaces.js';
export type { ContainerSpec, ContainerState } from './interfaces.js';

export const LABEL_MANAGED = 'io.betterpg.managed';
export const LABEL_DATABASE = 'io.betterpg.database';
export const LABEL_BRANCH = 'io.betterpg.branch';
export const LABEL_ID = 'io.betterpg.id';
/** `<pool>/<datasetBase>` of the agent that made it: several agents (or a test run) can share a host. */
export const LABEL_ROOT = 'io.betterpg.root';
/** A digest of the spec a container was made from: one made from another spec is made again. */
export const LABEL_SPEC = 'io.betterpg.spec';

/** Docker reports a never-started container as 0001-01-01T00:00:00Z. */
const startedAt = (t: string | undefined): string | null =>
  t && !t.startsWith('0001-') ? new Date(t).toISOString() : null;
const isStatus = (e: unknown, code: number) => (e as { statusCode?: number })?.statusCode === code;

/**
 * Thin wrapper over dockerode: containers for branches and one-shot helpers. Bound to an agent's
 * root (`forRoot`), it touches a container by name only when the container carries that root's
 * label: several agents (and test runs) share a host, and a container made by another one (or by
 * anyone else) under a name we expect is refused in one line, never reused, started, stopped,
 * renamed or removed. Each by-name operation inspects first, then acts on the inspected id.
 */
export class DockerDriver implements ContainerRuntime {
  readonly docker: Docker;
  readonly networks: BranchNetworks;

  constructor(
    socketPath: string | Docker = process.env.DOCKER_SOCKET ?? '/var/run/docker.sock',
    /** `<pool>/<datasetBase>` whose containers this driver may touch by name; null: unbound (no check). */
    readonly root: string | null = null,
  ) {
    this.docker = typeof socketPath === 'string' ? new Docker({ socketPath }) : socketPath;
    this.networks = new BranchNetworks(this.docker);
  }

  /** The same engine connection, touching only containers labelled for `root`. */
  forRoot(root: string): DockerDriver {
    return new DockerDriver(this.docker, root);
  }

  /** Inspects a container by name; null when there is none; refuses one that is not this root's. */
  private async owned(name: string, action: string): Promise<Docker.ContainerInspectInfo | null> {
    let i: Docker.ContainerInspectInfo;
    try {
      i = await this.docker.getContainer(name).inspect();
    } catch (e) {
      if (isStatus(e, 404)) return null;
      throw e;
    }
    const theirs = i.Config?.Labels?.[LABEL_ROOT];
    if (this.root !== null && theirs !== this.root) {
      const whose =
        theirs === undefined
          ? "is not one of this agent's (no io.betterpg.root label)"
          : `belongs to another agent (io.betterpg.root=${JSON.stringify(theirs)})`;
      throw conflict(
        `container ${name} ${whose}, this agent's root is ${this.root}: refusing to ${action} it (remove or rename it by hand if it is stale)`,
      );
    }
    return i;
  }

  async ping(): Promise<void> {
    try {
      await this.docker.ping();
    } catch {
      throw unavailable('the Docker engine is not reachable (is dockerd running? scripts/setup-host.sh starts it)');
    }
  }

  /** Makes sure the image is present (pulling it if a registry is reachable) and returns its PGDATA. */
  async ensureImage(image: string): Promise<{ pgdata: string }> {
    let info: Docker.ImageInspectInfo;
    try {
      info = await this.docker.getImage(image).inspect();
    } catch (e) {
      if (!isStatus(e, 404)) throw e;
      await this.pull(image);
      info = await this.docker.getImage(image).inspect();
    }
    const env = info.Config?.Env ?? [];
    const pgdata = env.find((e) => e.startsWith('PGDATA='))?.slice(7) || '/var/lib/postgresql/data';
    return { pgdata };
  }

  private async pull(image: string): Promise<void> {
    const hint =
      `image '${image}' is not present and could not be pulled; ` +
      `build the local one with scripts/build-local-image.sh (betterpg/postgres:15-local) and set postgres.image, or pass --image`;
    try {
      const stream = await withTimeout(this.docker.pull(image), 60_000);
      await withTimeout(
        new Promise<void>((resolve, reject) => {
          this.docker.modem.followProgress(
            stream,
            (err) => (err ? reject(err) : resolve()),
            (ev: { error?: string }) => {
              if (ev.error) reject(new Error(ev.error));
            },
          );
        }),
        600_000,
      );
    } catch (e) {
      throw new BpgError('unavailable', hint, { cause: e });
    }
  }

  async create(spec: ContainerSpec): Promise<string> {
    if (spec.network && spec.network !== 'none' && !('container' in spec.network))
      await this.networks.ensure(spec.network);
    const c = await this.docker.createContainer({
      name: spec.name,
      Image: spec.image,
      User: spec.user,
      Entrypoint: spec.entrypoint,
      Cmd: spec.cmd,
      Labels: { [LABEL_MANAGED]: 'true', ...spec.labels },
      Env: [],
      StopSignal: spec.stopSignal ?? 'SIGINT',
      StopTimeout: spec.stopTimeoutSeconds,
      ExposedPorts: spec.publish ? { '5432/tcp': {} } : undefined,
      HostConfig: {
        Binds: spec.binds,
        PortBindings: spec.publish
          ? { '5432/tcp': [{ HostIp: spec.publish.hostIp, HostPort: String(spec.publish.hostPort) }] }
          : undefined,
        Memory: spec.memoryBytes,
        MemorySwap: spec.memoryBytes,
        NanoCpus: spec.nanoCpus,
        ShmSize: spec.shmSizeBytes,
        RestartPolicy: { Name: spec.restartPolicy ?? 'no' },
        Init: false,
        PidsLimit: spec.pidsLimit,
        CapDrop: spec.capDrop,
        SecurityOpt: spec.securityOpt,
        ReadonlyRootfs: spec.readOnlyRootfs,
        Tmpfs: spec.tmpfs,
        LogConfig: spec.log
          ? {
              Type: 'json-file',
              Config: { 'max-size': String(spec.log.maxSizeBytes), 'max-file': String(spec.log.maxFiles) },
            }
          : undefined,
        NetworkMode:
          spec.network === 'none'
            ? 'none'
            : spec.network && 'container' in spec.network
              ? `container:${spec.network.container}`
              : spec.network?.name,
      },
    });
    return c.id;
  }

  /** Starts a container; on one of our no-egress networks, its firewall rules are checked (and restored) first. */
  async start(name: string): Promise<void> {
    const i = await this.owned(name, 'start');
    if (!i) throw new BpgError('failed', `container ${name} does not exist`);
    // A container in another one's network namespace (a branch in its port slot) lives on that one's network.
    const plan = await this.networks.planOf((await this.networkHolder(i)).HostConfig?.NetworkMode);
    if (plan) await this.networks.ensure(plan);
    try {
      await this.docker.getContainer(i.Id).start();
    } catch (e) {
      if (isStatus(e, 304)) return; // already running
      throw e;
    }
  }

  async stop(name: string, timeoutSeconds: number): Promise<void> {
    const i = await this.owned(name, 'stop');
    if (!i) return;
    try {
      await this.docker.getContainer(i.Id).stop({ t: timeoutSeconds });
    } catch (e) {
      if (isStatus(e, 304) || isStatus(e, 404)) return;
      throw e;
    }
  }

  /** Removes a container; gone already counts as done. */
  async remove(name: string): Promise<void> {
    const i = await this.owned(name, 'remove');
    if (!i) return;
    try {
      await this.docker.getContainer(i.Id).remove({ force: true, v: true });
    } catch (e) {
      if (isStatus(e, 404)) return;
      if (isStatus(e, 409)) return; // removal already in progress
      throw e;
    }
  }

  async rename(from: string, to: string): Promise<void> {
    const i = await this.owned(from, 'rename');
    if (!i) throw new BpgError('failed', `container ${from} does not exist`);
    await this.docker.getContainer(i.Id).rename({ name: to });
  }

  /**
   * The container whose network namespace `i` uses: `i` itself, or the one its NetworkMode
   * `container:<id>` names (a branch's port slot: engine/port-slots.ts), which publishes the port
   * and sits on the network. Only ever one of this root's (or `i` when that one is gone).
   */
  private async networkHolder(i: Docker.ContainerInspectInfo): Promise<Docker.ContainerInspectInfo> {
    const mode = i.HostConfig?.NetworkMode ?? '';
    if (!mode.startsWith('container:')) return i;
    return (await this.owned(mode.slice('container:'.length), 'inspect').catch(() => null)) ?? i;
  }

  /** A container's state (null: none by that name); refuses another root's container, so it is never reused. */
  async state(name: string): Promise<ContainerState | null> {
    const i = await this.owned(name, 'use');
    if (!i) return null;
    return {
      id: i.Id,
      running: i.State.Running,
      restarts: i.RestartCount,
      status: i.State.Status,
      exitCode: i.State.ExitCode,
      startedAt: startedAt(i.State.StartedAt),
      labels: i.Config.Labels ?? {},
    };
  }

  /** A running container's IP address on its (first) Docker network, and when it started. */
  async address(name: string): Promise<{ ip: string; startedAt: string | null } | null> {
    const i = await this.owned(name, 'inspect');
    if (!i || !i.State.Running) return null;
    const net = await this.networkHolder(i);
    const ip = Object.values(net.NetworkSettings?.Networks ?? {})
      .map((n) => n.IPAddress)
      .find((x) => !!x);
    return ip ? { ip, startedAt: startedAt(i.State.StartedAt) } : null;
  }

  /** The host port a container publishes 5432 on (from its configuration, running or not), and its labels. */
  async binding(name: string): Promise<{
    hostPort: number | null;
    hostIp: string | null;
    labels: Record<string, string>;
    memory: number;
    nanoCpus: number;
  } | null> {
    const i = await this.owned(name, 'inspect');
    if (!i) return null;
    const b = (await this.networkHolder(i)).HostConfig.PortBindings?.['5432/tcp']?.[0];
    return {
      hostPort: b?.HostPort ? Number(b.HostPort) : null,
      hostIp: b?.HostIp ?? null,
      labels: i.Config.Labels ?? {},
      memory: i.HostConfig.Memory ?? 0,
      nanoCpus: i.HostConfig.NanoCpus ?? 0,
    };
  }

  async logsTail(name: string, lines = 20, sinceSeconds?: number): Promise<string> {
    try {
      const i = await this.owned(name, 'read the log of');
      if (!i) return '';
      const since = sinceSeconds === undefined ? {} : { since: Math.floor(sinceSeconds) };
      const buf = (await this.docker
        .getContainer(i.Id)
        .logs({ stdout: true, stderr: true, tail: lines, ...since })) as unknown as Buffer;
      return demux(buf);
    } catch {
      return '';
    }
  }

  /** Runs a one-shot container to completion; returns its exit code and output, and removes it. */
  async runOnce(spec: ContainerSpec, timeoutMs = 300_000): Promise<{ exitCode: number; output: string }> {
    await this.remove(spec.name);
    const id = await this.create(spec);
    const c = this.docker.getContainer(id);
    try {
      await c.start();
      const res = (await withTimeout(c.wait(), timeoutMs)) as { StatusCode: number };
      const output = await this.logsTail(id, 200);
      return { exitCode: res.StatusCode, output };
    } finally {
      await c.remove({ force: true, v: true }).catch((e) => {
        if (!isStatus(e, 404) && !isStatus(e, 409)) throw e;
      });
    }
  }

  async missingFirewallRules(plan: NetworkPlan): Promise<FirewallRule[]> {
    return this.networks.missingRules(plan);
  }

  async ensureNetwork(plan: NetworkPlan): Promise<void> {
    await this.networks.ensure(plan, { recheck: true });
  }

  /** Containers carrying our managed label (optionally filtered by more labels); bound to a root, that root's only. */
  async listManaged(
    labels: Record<string, string> = {},
  ): Promise<Array<{ id: string; name: string; labels: Record<string, string>; state: string }>> {
    const all = this.root === null ? labels : { ...labels, [LABEL_ROOT]: this.root };
    const filters = [`${LABEL_MANAGED}=true`, ...Object.entries(all).map(([k, v]) => `${k}=${v}`)];
    const list = await this.docker.listContainers({ all: true, filters: { label: filters } });
    return list.map((c) => ({
      id: c.Id,
      name: (c.Names[0] ?? '').replace(/^\//, ''),
      labels: c.Labels,
      state: c.State,
    }));
  }
}

/** Docker's multiplexed log stream (8-byte frame headers) to text. */
function demux(buf: Buffer): string {
  if (!Buffer.isBuffer(buf)) return String(buf);
  const parts: Buffer[] = [];
  let i = 0;
  while (i + 8 <= buf.length) {
    const len = buf.readUInt32BE(i + 4);
    parts.push(buf.subarray(i + 8, i + 8 + len));
    i += 8 + len;
  }
  return i === buf.length ? Buffer.concat(parts).toString('utf8') : buf.toString('utf8');
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

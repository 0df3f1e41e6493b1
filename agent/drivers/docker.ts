import Docker from 'dockerode';
import { BpgError, unavailable } from '../errors.js';

export const LABEL_MANAGED = 'io.betterpg.managed';
export const LABEL_DATABASE = 'io.betterpg.database';
export const LABEL_BRANCH = 'io.betterpg.branch';
export const LABEL_ID = 'io.betterpg.id';
/** `<pool>/<datasetBase>` of the agent that made it: several agents (or a test run) can share a host. */
export const LABEL_ROOT = 'io.betterpg.root';
/** A digest of the spec a container was made from: one made from another spec is made again. */
export const LABEL_SPEC = 'io.betterpg.spec';

export interface ContainerSpec {
  name: string;
  image: string;
  user: string;
  entrypoint: string[];
  cmd: string[];
  binds: string[];
  labels: Record<string, string>;
  /** Publish 5432 on this host address and port; omitted for one-shot containers. */
  publish?: { hostIp: string; hostPort: number };
  memoryBytes?: number;
  nanoCpus?: number;
  shmSizeBytes?: number;
  stopTimeoutSeconds?: number;
  restartPolicy?: 'no' | 'unless-stopped';
}

export interface ContainerState {
  id: string;
  running: boolean;
  /** Docker restarted it under its restart policy since it was created: it crashed. */
  restarts: number;
  status: string;
  exitCode: number;
  /** When the container last started (ISO), null if never. */
  startedAt: string | null;
  labels: Record<string, string>;
}

/** Docker reports a never-started container as 0001-01-01T00:00:00Z. */
const startedAt = (t: string | undefined): string | null => (t && !t.startsWith('0001-') ? new Date(t).toISOString() : null);
const isStatus = (e: unknown, code: number) => (e as { statusCode?: number })?.statusCode === code;

/** Thin wrapper over dockerode: containers for branches and one-shot helpers. */
export class DockerDriver {
  readonly docker: Docker;

  constructor(socketPath = process.env.DOCKER_SOCKET ?? '/var/run/docker.sock') {
    this.docker = new Docker({ socketPath });
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
    const c = await this.docker.createContainer({
      name: spec.name,
      Image: spec.image,
      User: spec.user,
      Entrypoint: spec.entrypoint,
      Cmd: spec.cmd,
      Labels: { [LABEL_MANAGED]: 'true', ...spec.labels },
      Env: [],
      StopSignal: 'SIGINT',
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
      },
    });
    return c.id;
  }

  async start(name: string): Promise<void> {
    try {
      await this.docker.getContainer(name).start();
    } catch (e) {
      if (isStatus(e, 304)) return; // already running
      throw e;
    }
  }

  async stop(name: string, timeoutSeconds: number): Promise<void> {
    try {
      await this.docker.getContainer(name).stop({ t: timeoutSeconds });
    } catch (e) {
      if (isStatus(e, 304) || isStatus(e, 404)) return;
      throw e;
    }
  }

  /** Removes a container; gone already counts as done. */
  async remove(name: string): Promise<void> {
    try {
      await this.docker.getContainer(name).remove({ force: true, v: true });
    } catch (e) {
      if (isStatus(e, 404)) return;
      if (isStatus(e, 409)) return; // removal already in progress
      throw e;
    }
  }

  async rename(from: string, to: string): Promise<void> {
    await this.docker.getContainer(from).rename({ name: to });
  }

  async state(name: string): Promise<ContainerState | null> {
    try {
      const i = await this.docker.getContainer(name).inspect();
      return {
        id: i.Id,
        running: i.State.Running,
        restarts: i.RestartCount,
        status: i.State.Status,
        exitCode: i.State.ExitCode,
        startedAt: startedAt(i.State.StartedAt),
        labels: i.Config.Labels ?? {},
      };
    } catch (e) {
      if (isStatus(e, 404)) return null;
      throw e;
    }
  }

  /** The host port a container publishes 5432 on (from its configuration, running or not), and its labels. */
  async binding(name: string): Promise<{ hostPort: number | null; hostIp: string | null; labels: Record<string, string>; memory: number; nanoCpus: number } | null> {
    try {
      const i = await this.docker.getContainer(name).inspect();
      const b = i.HostConfig.PortBindings?.['5432/tcp']?.[0];
      return {
        hostPort: b?.HostPort ? Number(b.HostPort) : null,
        hostIp: b?.HostIp ?? null,
        labels: i.Config.Labels ?? {},
        memory: i.HostConfig.Memory ?? 0,
        nanoCpus: i.HostConfig.NanoCpus ?? 0,
      };
    } catch (e) {
      if (isStatus(e, 404)) return null;
      throw e;
    }
  }

  async logsTail(name: string, lines = 20, sinceSeconds?: number): Promise<string> {
    try {
      const since = sinceSeconds === undefined ? {} : { since: Math.floor(sinceSeconds) };
      const buf = (await this.docker.getContainer(name).logs({ stdout: true, stderr: true, tail: lines, ...since })) as unknown as Buffer;
      return demux(buf);
    } catch {
      return '';
    }
  }

  /** Runs a one-shot container to completion; returns its exit code and output, and removes it. */
  async runOnce(spec: ContainerSpec, timeoutMs = 300_000): Promise<{ exitCode: number; output: string }> {
    await this.remove(spec.name);
    await this.create(spec);
    const c = this.docker.getContainer(spec.name);
    try {
      await c.start();
      const res = (await withTimeout(c.wait(), timeoutMs)) as { StatusCode: number };
      const output = await this.logsTail(spec.name, 200);
      return { exitCode: res.StatusCode, output };
    } finally {
      await this.remove(spec.name);
    }
  }

  /** Containers carrying our managed label (optionally filtered by more labels). */
  async listManaged(labels: Record<string, string> = {}): Promise<Array<{ id: string; name: string; labels: Record<string, string>; state: string }>> {
    const filters = [`${LABEL_MANAGED}=true`, ...Object.entries(labels).map(([k, v]) => `${k}=${v}`)];
    const list = await this.docker.listContainers({ all: true, filters: { label: filters } });
    return list.map((c) => ({ id: c.Id, name: (c.Names[0] ?? '').replace(/^\//, ''), labels: c.Labels, state: c.State }));
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

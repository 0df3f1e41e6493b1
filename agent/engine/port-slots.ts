import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { describe } from '../errors.js';
import { LABEL_ROOT, LABEL_SPEC } from '../drivers/docker.js';
import { hardening } from '../drivers/hardening.js';
import type { ContainerSpec } from '../drivers/interfaces.js';
import type { EngineContext } from './context.js';
import { preflight } from './preflight.js';
import { portIsFree } from './ports.js';

/**
 * Port slots. Setting up a container's network on Docker (a namespace, a veth pair on the branch
 * bridge, the NAT rules of a published port) is most of a container start: measured on the
 * reference host, ~0.3 s for a container on the branch network with a published port against
 * ~0.1 s for the same container joining a network namespace that already exists.
 *
 * So every branch's port belongs to a slot: a small container (`sleep`, no capabilities, a
 * read-only root, a few MiB) that sits on the branch network and publishes the port. The branch's
 * PostgreSQL joins the slot's namespace (`container:<slot>`) and answers on that port; the slot
 * outlives restarts of the branch's container and goes when the branch is deleted. `bpg serve`
 * keeps `postgres.warmSlots` spare slots started on free ports of `postgres.portRange`: a new
 * branch takes a spare one (its port is preferred when the port is reserved), and the spares are
 * refilled in the background. Without a spare (or without a daemon), the slot is started while the
 * snapshot and clone are made.
 *
 * A slot is named for its port, so a port has one slot whoever asks for it. A slot is never handed
 * from one branch to another: its namespace held a branch's untrusted processes (which could not
 * change it: no capabilities), and a fresh one costs nothing on the request path.
 */

export const LABEL_SLOT = 'io.betterpg.slot';

/** PID 1 of a slot: sleeps (and dies at SIGKILL: PID 1 ignores SIGTERM without a handler). */
const SLOT_COMMAND = ['sleep', '2147483647'];
const SLOT_MEMORY = 16 * 1024 ** 2;

export function slotName(ctx: EngineContext, port: number): string {
  return `bpg-slot-${port}.${ctx.layout.rootTag}`;
}

/** A slot's container spec; its spec label hashes everything but the image (any image with `sleep` will do). */
export function slotSpec(ctx: EngineContext, port: number, image: string): ContainerSpec {
  const p = ctx.cfg.postgres;
  const h = hardening(ctx.cfg);
  const spec: ContainerSpec = {
    name: slotName(ctx, port),
    image,
    user: `${p.uid}:${p.gid}`,
    entrypoint: [SLOT_COMMAND[0]!],
    cmd: SLOT_COMMAND.slice(1),
    binds: [],
    labels: { [LABEL_ROOT]: ctx.layout.root, [LABEL_SLOT]: String(port) },
    publish: { hostIp: p.bindAddress, hostPort: port },
    memoryBytes: SLOT_MEMORY,
    stopSignal: 'SIGKILL',
    restartPolicy: 'unless-stopped',
    pidsLimit: 8,
    capDrop: ['ALL'],
    securityOpt: ['no-new-privileges'],
    readOnlyRootfs: true,
    log: h.log,
    network: h.network,
  };
  const { image: _image, ...hashed } = spec;
  spec.labels[LABEL_SPEC] = createHash('sha256').update(JSON.stringify(hashed)).digest('hex').slice(0, 16);
  return spec;
}

/**
 * Makes sure the slot of `port` exists and runs (made from `image` when it has to be made). Safe to
 * call twice at once for one port: a name conflict means the other call made it.
 */
export async function ensureSlot(ctx: EngineContext, port: number, image: string): Promise<string> {
  const spec = slotSpec(ctx, port, image);
  const name = spec.name;
  // A spare can be going away as a create takes its port (trimmed by housekeeping a moment before
  // the port was reserved): then it is made again.
  for (let attempt = 1; ; attempt++) {
    try {
      let st = await ctx.docker.state(name);
      if (st && !st.running && st.labels[LABEL_SPEC] !== spec.labels[LABEL_SPEC]) {
        await ctx.docker.remove(name); // made from another config, and nothing is in it
        st = null;
      }
      if (st?.running) return name;
      if (!st) {
        try {
          await ctx.docker.create(spec);
        } catch (e) {
          if ((e as { statusCode?: number }).statusCode !== 409) throw e; // 409: made by another call, or being removed
        }
      }
      await ctx.docker.start(name);
      return name;
    } catch (e) {
      if (attempt >= 5 || !GOING_AWAY.test(describe(e))) throw e;
      await new Promise((r) => setTimeout(r, 100 * attempt));
    }
  }
}

/** What Docker answers about a container that is being removed, or was removed a moment ago. */
const GOING_AWAY = /does not exist|no such container|removal .*in progress|marked for removal|is dead/i;

/** Removes the slot of `port` unless another branch in the state holds that port. */
export async function removeSlot(ctx: EngineContext, port: number, exceptId: string): Promise<void> {
  const s = await ctx.store.read();
  if (Object.values(s.branches).some((b) => b.port === port && b.id !== exceptId)) return;
  await ctx.docker.remove(slotName(ctx, port));
}

/** Undo of a create's start: the new container, then its port slot (once the slot's start has settled). */
export async function dropSlot(
  ctx: EngineContext,
  record: { container: string; port: number; id: string },
  slotStarting: Promise<unknown> = Promise.resolve(),
): Promise<void> {
  await ctx.docker.remove(record.container);
  await slotStarting;
  await removeSlot(ctx, record.port, record.id);
}

export interface SlotInfo {
  name: string;
  port: number;
  state: string;
}

/** This root's slots, from one Docker list. */
export async function listSlots(ctx: EngineContext): Promise<SlotInfo[]> {
  const listed = await ctx.docker.listManaged();
  return listed
    .filter((c) => c.labels[LABEL_SLOT] !== undefined && c.name === slotName(ctx, Number(c.labels[LABEL_SLOT])))
    .map((c) => ({ name: c.name, port: Number(c.labels[LABEL_SLOT]), state: c.state }));
}

/** Running slots no branch holds: the ports a create should take first (`listed`: a listing the caller has). */
export async function sparePorts(ctx: EngineContext, listed?: SlotInfo[]): Promise<number[]> {
  const [slots, s] = await Promise.all([listed ?? listSlots(ctx).catch(() => []), ctx.store.read()]);
  const held = new Set(Object.values(s.branches).map((b) => b.port));
  return slots
    .filter((x) => x.state === 'running' && !held.has(x.port))
    .map((x) => x.port)
    .sort((a, b) => a - b);
}

/**
 * Brings the spare slots up to `postgres.warmSlots` on the lowest free ports. With `trim`
 * (housekeeping) it first removes spares that are stopped, outside the port range or too many,
 * checked under the state lock so a port a create has reserved keeps its slot. Returns what it did.
 */
export async function fillSpares(
  ctx: EngineContext,
  o: { trim?: boolean } = {},
): Promise<{ started: number[]; removed: number[] }> {
  const want = ctx.cfg.postgres.warmSlots;
  const [lo, hi] = ctx.cfg.postgres.portRange;
  const done = { started: [] as number[], removed: [] as number[] };
  const slots = await listSlots(ctx);
  const removed = !o.trim
    ? []
    : await ctx.store.update(async (s) => {
        const held = new Set(Object.values(s.branches).map((b) => b.port));
        const spares = slots.filter((x) => !held.has(x.port)).sort((a, b) => a.port - b.port);
        let kept = 0;
        const gone: number[] = [];
        for (const x of spares) {
          const keep = x.state === 'running' && x.port >= lo && x.port <= hi && kept < want;
          if (keep) kept++;
          else {
            await ctx.docker.remove(x.name);
            gone.push(x.port);
          }
        }
        return gone;
      });
  done.removed.push(...removed);
  const left = slots.filter((x) => !removed.includes(x.port));
  const have = left.map((x) => x.port);
  let spare = (await sparePorts(ctx, left)).length;
  if (spare >= want) return done;
  await preflight(ctx); // no spares for an agent whose pool or Docker is missing
  const { image } = ctx.cfg.postgres;
  await ctx.docker.ensureImage(image);
  while (spare < want) {
    const port = await ctx.store.update(async (s) => {
      const taken = new Set([...Object.values(s.branches).map((b) => b.port), ...have]);
      for (let p = lo; p <= hi; p++) {
        if (taken.has(p)) continue;
        if (await portIsFree(ctx.cfg.postgres.bindAddress, p)) return p;
      }
      return null;
    });
    if (port === null) break; // the range is full: branches come first
    have.push(port);
    await ensureSlot(ctx, port, image);
    done.started.push(port);
    spare++;
  }
  return done;
}

/**
 * Keeps the spares filled in the background of a long-running agent. A pass runs at start and
 * after each create of this process (`poke()`), and whenever another process changes the state
 * (`watchState`: a `bpg --local` create takes a spare too); housekeeping asks for a trim
 * (`poke({ trim: true })`). Passes never overlap; a poke during a pass runs one more after it.
 */
export class SpareKeeper {
  private running: Promise<void> | null = null;
  private again = false;
  private trim = false;
  private watcher: FSWatcher | null = null;
  private soon: NodeJS.Timeout | null = null;
  private lastWarning = '';
  private closed = false;

  constructor(private readonly ctx: EngineContext) {}

  poke(o: { trim?: boolean } = {}): void {
    if (this.closed) return;
    if (o.trim) this.trim = true;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        const trim = this.trim;
        this.trim = false;
        try {
          const r = await fillSpares(this.ctx, { trim });
          if (r.started.length || r.removed.length)
            this.ctx.log.debug('spare port slots', { started: r.started, removed: r.removed });
          this.lastWarning = '';
        } catch (e) {
          const msg = `could not keep spare port slots: ${describe(e)}`;
          if (msg !== this.lastWarning) this.ctx.log.warn(msg); // once, not at every state change
          this.lastWarning = msg;
        }
      } while (this.again);
    })().finally(() => {
      this.running = null;
    });
  }

  /** Pokes (at most every 100 ms) when state.json in `dir` is replaced, by this process or another. */
  watchState(dir: string): void {
    try {
      this.watcher = watch(dir, { persistent: false }, (_event, file) => {
        if (file !== 'state.json' || this.soon) return;
        this.soon = setTimeout(() => {
          this.soon = null;
          this.poke();
        }, 100);
        this.soon.unref();
      });
      this.watcher.on('error', () => this.watcher?.close());
    } catch (e) {
      this.ctx.log.warn(`not watching ${dir} for creates by other processes: ${describe(e)}`);
    }
  }

  /** Stops watching, and waits for the pass in progress, if any. */
  async close(): Promise<void> {
    this.closed = true;
    this.watcher?.close();
    if (this.soon) clearTimeout(this.soon);
    while (this.running) await this.running;
  }
}

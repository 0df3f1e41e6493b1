import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import YAML from 'yaml';
import type { BranchView } from '../engine/view.js';
import { BPG, cli, ownStateConfig, query, sh, uniqueDb } from './helpers.js';

/**
 * Port slots (engine/port-slots.ts), on the real engine, Docker and PostgreSQL, with a state of
 * its own (slot 36, 20 ports):
 * - each branch's PostgreSQL is in the network namespace of its port's slot, which publishes the
 *   port on the branch network; clients reach the branch through it; deleting the branch removes it;
 * - a create that fails after its slot started removes that slot too;
 * - `bpg serve` keeps postgres.warmSlots spares started; a create takes one (the same container,
 *   not a new one), and the spares are refilled behind it, after a `--local` create too;
 * - housekeeping and doctor: spares beyond warmSlots or outside the port range are removed; a
 *   stopped branch's port, held by its slot, is not reported as taken by another program.
 */

const CONFIG = ownStateConfig('slots', 36, (raw) => {
  raw.housekeeping = { interval: '1h' };
});
const db = uniqueDb('ps');
const root = (() => {
  const raw = YAML.parse(readFileSync(CONFIG, 'utf8'));
  return `${raw.zfs.pool}/${raw.zfs.datasetBase}`;
})();
const BOX = { BPG_CONFIG: CONFIG };
const local = (args: string[], env: Record<string, string> = {}) => cli(['--local', ...args], { ...BOX, ...env });
const viaSocket = (args: string[]) => cli(args, BOX);

async function json<T = BranchView>(p: ReturnType<typeof cli>): Promise<T> {
  const r = await p;
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as T;
}

const inspect = (name: string) => JSON.parse(sh('docker', ['inspect', name]))[0];
/** This root's slot containers: port -> {id, running}. */
function slots(): Map<number, { id: string; running: boolean }> {
  const out = sh('docker', [
    'ps',
    '-a',
    '--filter',
    `label=io.betterpg.root=${root}`,
    '--filter',
    'label=io.betterpg.slot',
    '--format',
    '{{.ID}} {{.Label "io.betterpg.slot"}} {{.State}}',
  ]);
  const m = new Map<number, { id: string; running: boolean }>();
  for (const line of out.split('\n').filter(Boolean)) {
    const [id, port, state] = line.split(' ');
    m.set(Number(port), { id: id!, running: state === 'running' });
  }
  return m;
}
const heldPorts = (): number[] =>
  Object.values(
    (
      JSON.parse(readFileSync(`${YAML.parse(readFileSync(CONFIG, 'utf8')).stateDir}/state.json`, 'utf8')) as {
        branches: Record<string, { port: number }>;
      }
    ).branches,
  ).map((b) => b.port);
const spares = () => [...slots()].filter(([p, s]) => s.running && !heldPorts().includes(p)).map(([p]) => p);

async function until(what: string, cond: () => boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function setConfig(change: (raw: Record<string, any>) => void): void {
  const raw = YAML.parse(readFileSync(CONFIG, 'utf8'));
  change(raw);
  writeFileSync(CONFIG, YAML.stringify(raw), { mode: 0o600 });
}

describe('port slots: a branch in its port slot; spares kept by bpg serve', { concurrency: 1 }, () => {
  let main: BranchView;
  let daemon: ChildProcess | null = null;

  before(async () => {
    main = await json(local(['db', 'create', db, '--json']));
    await query(main, 'CREATE TABLE t AS SELECT 1 AS id');
  });

  after(async () => {
    if (daemon && daemon.exitCode === null) {
      const exited = new Promise((r) => daemon!.once('exit', r));
      daemon.kill('SIGTERM');
      await exited;
    }
    await local(['db', 'delete', db, '--force']);
    const left = [...slots().keys()];
    for (const p of left) sh('docker', ['rm', '-f', `bpg-slot-${p}.${main.container.split('.').pop()}`]);
  });

  it('a branch is in its slot: the slot publishes the port, clients reach PostgreSQL; delete removes the slot', async () => {
    const b = await json(local(['branch', 'create', `${db}/b1`, '--fast', '--json']));
    const slot = inspect(`bpg-slot-${b.port}.${b.container.split('.').pop()}`);
    const pgc = inspect(b.container);
    assert.equal(pgc.HostConfig.NetworkMode, `container:${slot.Id}`);
    assert.ok(
      !pgc.HostConfig.PortBindings || Object.keys(pgc.HostConfig.PortBindings).length === 0,
      'no port of its own',
    );
    assert.deepEqual(slot.HostConfig.PortBindings['5432/tcp'], [{ HostIp: '127.0.0.1', HostPort: String(b.port) }]);
    assert.equal(slot.Config.Labels['io.betterpg.slot'], String(b.port));
    assert.equal(slot.HostConfig.Memory, 16 * 1024 ** 2);
    assert.deepEqual(slot.HostConfig.CapDrop, ['ALL']);
    // one namespace: PostgreSQL's process sees the slot's address
    const nsOf = (c: { State: { Pid: number } }) => sh('readlink', [`/proc/${c.State.Pid}/ns/net`]).trim();
    assert.equal(nsOf(inspect(b.container)), nsOf(slot));
    assert.deepEqual(await query(b, 'SELECT count(*)::int AS n FROM t'), [{ n: 1 }]);
    // stop and start: the slot stays and keeps the port; doctor does not call the port taken
    assert.equal((await local(['stop', `${db}/b1`])).code, 0);
    assert.equal(slots().get(b.port)?.running, true);
    const doc = await local(['doctor', '--json']);
    assert.equal(doc.code, 0, doc.stdout + doc.stderr);
    assert.doesNotMatch(doc.stdout, /port-taken|orphan-container/);
    assert.equal((await local(['start', `${db}/b1`])).code, 0);
    assert.deepEqual(await query(b, 'SELECT 1 AS one'), [{ one: 1 }]);
    assert.equal(slots().get(b.port)?.id, slot.Id.slice(0, 12), 'the same slot');
    assert.equal((await local(['branch', 'delete', `${db}/b1`])).code, 0);
    assert.equal(slots().has(b.port), false, 'the slot went with the branch');
  });

  it('a create that fails after its slot started removes the slot', async () => {
    const before = [...slots().keys()].sort();
    const r = await local(['branch', 'create', `${db}/bad`, '--fast'], {
      BPG_FAULT_FAIL_AFTER: 'branch create:zfs clone',
    });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /injected failure/);
    assert.deepEqual([...slots().keys()].sort(), before);
  });

  it('bpg serve keeps warmSlots spares; a create through it takes one and they are refilled', async () => {
    daemon = spawn(process.execPath, [BPG, 'serve', '--listen', '127.0.0.1:0'], {
      env: { ...process.env, ...BOX, BPG_API_TOKEN: `slots-${randomBytes(16).toString('hex')}` },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    process.once('exit', () => daemon?.kill('SIGKILL'));
    let log = '';
    daemon.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    await until('bpg serve to listen', () => /"msg":"listening"/.test(log), 120_000);
    await until('2 spare slots', () => spares().length === 2);
    const before = spares();
    const ids = new Map(before.map((p) => [p, slots().get(p)!.id]));
    const b = await json(viaSocket(['branch', 'create', `${db}/b2`, '--fast', '--json']));
    assert.ok(before.includes(b.port), `the branch took a spare's port (${b.port}; spares were ${before.join(', ')})`);
    assert.equal(slots().get(b.port)?.id, ids.get(b.port), 'the spare itself, not a new container');
    assert.match(log, /"branch created"/, 'the create ran in the daemon');
    await until('the spares refilled to 2', () => spares().length === 2 && !spares().includes(b.port));
    assert.deepEqual(await query(b, 'SELECT count(*)::int AS n FROM t'), [{ n: 1 }]);
    // A create by another process (--local) takes a spare too; the daemon sees the state change and refills.
    const before2 = spares();
    const c = await json(local(['branch', 'create', `${db}/b3`, '--fast', '--json']));
    assert.ok(before2.includes(c.port), `--local took a spare's port (${c.port}; spares were ${before2.join(', ')})`);
    await until(
      'the daemon refilled after the --local create',
      () => spares().length === 2 && !spares().includes(c.port),
    );
    assert.equal((await local(['branch', 'delete', `${db}/b3`])).code, 0);
  });

  it('housekeeping removes spares beyond warmSlots and outside the port range', async () => {
    const exited = new Promise((r) => daemon!.once('exit', r));
    daemon!.kill('SIGTERM');
    await exited;
    daemon = null;
    assert.equal(spares().length, 2);
    setConfig((raw) => (raw.postgres.warmSlots = 1));
    let r = await local(['housekeep', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(spares().length, 1, 'one spare kept');
    // the range moves: a spare outside it goes, one inside it is started; branches keep theirs
    const [lo] = YAML.parse(readFileSync(CONFIG, 'utf8')).postgres.portRange as [number, number];
    const held = heldPorts();
    setConfig((raw) => (raw.postgres.portRange = [lo, Math.max(...held)]));
    const outside = spares().filter((p) => p > Math.max(...held));
    r = await local(['housekeep', '--json']);
    assert.equal(r.code, 0, r.stderr);
    for (const p of outside) assert.equal(slots().has(p), false, `spare ${p} outside the range removed`);
    for (const p of held) assert.equal(slots().get(p)?.running, true, `branch slot ${p} kept`);
    setConfig((raw) => (raw.postgres.warmSlots = 0));
    r = await local(['housekeep', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(spares(), [], 'warmSlots 0: no spare');
    const doc = await local(['doctor', '--json']);
    assert.equal(doc.code, 0, doc.stdout + doc.stderr);
  });
});

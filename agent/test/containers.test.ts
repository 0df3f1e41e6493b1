import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import pg from 'pg';
import YAML from 'yaml';
import type { DoctorReport } from '../engine/doctor.js';
import type { BranchView } from '../engine/view.js';
import { firewallRules } from '../drivers/network.js';
import type { State } from '../state/schema.js';
import {
  cli,
  containerName,
  leftovers,
  ok,
  okJson,
  ownStateConfig,
  query,
  queryOne,
  sh,
  TEST_PORT_BASE,
  uniqueDb,
} from './helpers.js';

/**
 * Hardened branch containers and two agents on one host, on the real stack. PR SQL is hostile: it
 * runs shell commands in its container (`COPY ... TO PROGRAM`, as uid 999). Each part runs on
 * agent states of their own (ownStateConfig slots 20-24):
 *  - A (defaults, hardened) and B (a second agent): the same database and branch names side by side;
 *  - E: egress on; U: every hardening key off (so each check here could fail);
 *  - F: a network prefix of its own, whose firewall rules the test deletes by hand (the default
 *    network is shared by every agent and test run on the host: its rules are never touched here).
 * Network reachability is tested from inside a container's network namespace with host binaries
 * (`nsenter --net=/proc/<pid>/ns/net node ...`): the local image has no network tools.
 */

const execFileP = promisify(execFile);
const BASE = TEST_PORT_BASE;
const MiB = 1024 ** 2;

// A and E publish on 0.0.0.0, so a branch could reach another one's port through the host's
// docker-proxy (published on 127.0.0.1, a port is out of a container's reach anyway).
const A = on(ownStateConfig('ctr-a', 20, (raw) => (raw.postgres.bindAddress = '0.0.0.0')));
const B = on(ownStateConfig('ctr-b', 21));
const E = on(
  ownStateConfig('ctr-e', 22, (raw) => Object.assign(raw.postgres, { egress: true, bindAddress: '0.0.0.0' })),
);
const F = on(ownStateConfig('ctr-f', 23, (raw) => (raw.postgres.network = `t${BASE}`.slice(0, 6))));
const U = on(
  ownStateConfig('ctr-u', 24, (raw) =>
    Object.assign(raw.postgres, {
      pidsLimit: null,
      dropCapabilities: false,
      noNewPrivileges: false,
      readOnlyRootfs: false,
      logMaxSize: null,
      network: null,
      egress: true,
    }),
  ),
);
const db = uniqueDb('ct'); // the same database name in every agent

/** The CLI on one agent config. */
function on(path: string) {
  const env = { BPG_CONFIG: path };
  const raw = YAML.parse(readFileSync(path, 'utf8'));
  return {
    path,
    root: `${raw.zfs.pool}/${raw.zfs.datasetBase}` as string,
    run: (args: string[]) => cli(args, env),
    ok: (args: string[]) => ok(args, env),
    json: <T = BranchView>(args: string[]) => okJson<T>(args, env),
    state: (): State => JSON.parse(readFileSync(join(dirname(path), 'state.json'), 'utf8')),
  };
}

after(async () => {
  for (const x of [A, B, E, F, U]) await x.run(['db', 'delete', db, '--force']);
});

/** psql on the host, through the published port (the password in the environment, not in argv). */
function psql(b: BranchView, sql: string): string {
  const c = b.connection;
  return execFileSync(
    '/usr/lib/postgresql/15/bin/psql',
    ['-X', '-At', '-h', c.host, '-p', String(c.port), '-U', c.user, '-d', c.database, '-c', sql],
    {
      encoding: 'utf8',
      env: { ...process.env, PGPASSWORD: c.password, PGCONNECT_TIMEOUT: '10' },
    },
  );
}

const inspect = (name: string) => JSON.parse(sh('docker', ['inspect', name]))[0];
/** The container whose network namespace `name` is in: a branch's port slot (engine/port-slots.ts), or itself. */
const netHolder = (name: string): string => {
  const mode = inspect(name).HostConfig.NetworkMode as string;
  return mode.startsWith('container:') ? mode.slice('container:'.length) : name;
};
/** The Docker network mode of the namespace a container is in. */
const networkOf = (name: string): string => inspect(netHolder(name)).HostConfig.NetworkMode;
const pidOf = (name: string) => Number(sh('docker', ['inspect', '-f', '{{.State.Pid}}', name]).trim());
const ipOf = (name: string) =>
  sh('docker', ['inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', netHolder(name)]).trim();
const gatewayOf = (network: string) =>
  JSON.parse(sh('docker', ['network', 'inspect', network]))[0].IPAM.Config[0].Gateway as string;
const procStatus = (name: string) => readFileSync(`/proc/${pidOf(name)}/status`, 'utf8');

/** A TCP connect from inside a container's network namespace: 'open', 'timeout' or an error code. */
async function probeFrom(container: string, host: string, port: number): Promise<string> {
  const script =
    "const [h, p] = process.argv.slice(1); const s = require('net').connect({ host: h, port: +p });" +
    "s.setTimeout(8000, () => { console.log('timeout'); process.exit(0); });" +
    "s.on('connect', () => { console.log('open'); process.exit(0); });" +
    "s.on('error', (e) => { console.log(e.code || 'error'); process.exit(0); });";
  const { stdout } = await execFileP('nsenter', [
    `--net=/proc/${pidOf(container)}/ns/net`,
    process.execPath,
    '-e',
    script,
    host,
    String(port),
  ]);
  return stdout.trim();
}

/** A listener on the host, on every address. */
async function hostListener(): Promise<{ server: Server; port: number }> {
  const server = createServer((s) => s.end());
  await new Promise<void>((r) => server.listen(0, '0.0.0.0', r));
  return { server, port: (server.address() as { port: number }).port };
}

/** A query that cannot hang the test: connect and query time limits. */
async function bounded<T extends pg.QueryResultRow = Record<string, unknown>>(
  b: BranchView,
  sql: string,
): Promise<T[]> {
  const c = new pg.Client({
    connectionString: b.connection.uri,
    connectionTimeoutMillis: 15_000,
    query_timeout: 30_000,
  });
  c.on('error', () => {});
  await c.connect();
  try {
    return (await c.query<T>(sql)).rows;
  } finally {
    await c.end().catch(() => {});
  }
}

const iptablesHas = (chain: string, rule: string[]) => {
  try {
    sh('iptables', ['-w', '10', '-C', chain, ...rule]);
    return true;
  } catch {
    return false;
  }
};
const deleteRules = (bridge: string) => {
  for (const r of firewallRules(bridge))
    while (iptablesHas(r.chain, r.rule)) sh('iptables', ['-w', '10', '-D', r.chain, ...r.rule]);
};

/** The pids cgroup of a container's main process (cgroup v1 `pids` controller, or v2). */
function pidsCgroup(container: string): string {
  const lines = readFileSync(`/proc/${pidOf(container)}/cgroup`, 'utf8').split('\n');
  const v1 = lines.find((l) => /^\d+:pids:/.test(l));
  if (v1) return join('/sys/fs/cgroup/pids', v1.split(':')[2]!);
  return join('/sys/fs/cgroup', lines.find((l) => l.startsWith('0::'))!.slice(3));
}

/**
 * A host outside this one, for egress through the forwarding path: a network namespace behind a
 * veth pair (198.18.x.0/30, a benchmarking range) with a listener. Packets from a branch go to it
 * through the host's FORWARD chain, as they would to the internet.
 */
class OutsideHost {
  readonly ns = `bpgt-out-${BASE}`;
  readonly hostIf = `bpo${BASE}h`;
  readonly nsIf = `bpo${BASE}o`;
  readonly net = `198.18.${(BASE % 250) + 1}`;
  readonly ip = `${this.net}.2`;
  readonly port = 8080;
  private listener: ChildProcess | null = null;

  /**
   * Inside the namespace only through `nsenter --net`: `ip netns exec` and `ip -n` also make a
   * mount namespace, a copy of every mount of the moment, zfs-fuse datasets included, which then
   * stay busy (no destroy) for as long as the process lives.
   */
  private inside(args: string[]): string[] {
    return [`--net=/run/netns/${this.ns}`, ...args];
  }

  async up(): Promise<void> {
    this.down();
    sh('ip', ['netns', 'add', this.ns]);
    sh('ip', ['link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', this.nsIf]);
    sh('ip', ['link', 'set', this.nsIf, 'netns', this.ns]);
    sh('ip', ['addr', 'add', `${this.net}.1/30`, 'dev', this.hostIf]);
    sh('ip', ['link', 'set', this.hostIf, 'up']);
    sh('nsenter', this.inside(['ip', 'addr', 'add', `${this.ip}/30`, 'dev', this.nsIf]));
    sh('nsenter', this.inside(['ip', 'link', 'set', this.nsIf, 'up']));
    sh('nsenter', this.inside(['ip', 'link', 'set', 'lo', 'up']));
    sh('nsenter', this.inside(['ip', 'route', 'add', 'default', 'via', `${this.net}.1`]));
    // It ends with this process (its stdin closes) or after ten minutes, whatever happens to the test.
    const script =
      `require('net').createServer((s) => s.end()).listen(${this.port}, '0.0.0.0', () => console.log('listening'));` +
      `process.stdin.on('end', () => process.exit(0)).resume(); setTimeout(() => process.exit(0), 600000).unref();`;
    const child = spawn('nsenter', this.inside([process.execPath, '-e', script]), {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    this.listener = child;
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d) => String(d).includes('listening') && resolve());
      child.on('exit', (code) => reject(new Error(`the outside listener exited (${code})`)));
    });
  }

  down(): void {
    this.listener?.kill('SIGKILL');
    this.listener = null;
    for (const args of [
      ['netns', 'del', this.ns],
      ['link', 'del', this.hostIf],
    ]) {
      try {
        sh('ip', args);
      } catch {
        // not there
      }
    }
  }
}

describe('hardened branch containers', { concurrency: 1 }, () => {
  let mainA: BranchView;
  let b1: BranchView;
  let b2: BranchView;
  /** Networks the initdb one-shot of A's database was connected to, from Docker's event stream. */
  let initdbNetworks: string[] = [];
  let mainNetworks: string[] = [];

  before(async () => {
    // Docker's events name every network a container joins, `none` included: watch A's db create.
    const docker = new Docker();
    const events = (await docker.getEvents({
      filters: { type: ['container', 'network'] },
    })) as NodeJS.ReadableStream & { destroy(): void };
    const seen: Array<{ Type: string; Action: string; Actor: { ID: string; Attributes: Record<string, string> } }> = [];
    let buf = '';
    events.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (line) seen.push(JSON.parse(line));
      }
    });
    mainA = await A.json(['db', 'create', db]);
    events.destroy();
    const created = seen.filter(
      (e) => e.Type === 'container' && e.Action === 'create' && e.Actor.Attributes['io.betterpg.root'] === A.root,
    );
    const idOf = (prefix: string) => created.find((e) => e.Actor.Attributes.name!.startsWith(prefix))?.Actor.ID;
    const joined = (id: string | undefined) =>
      seen
        .filter((e) => e.Type === 'network' && e.Action === 'connect' && e.Actor.Attributes.container === id)
        .map((e) => e.Actor.Attributes.name!);
    initdbNetworks = joined(idOf('bpg-initdb-'));
    mainNetworks = joined(idOf(`bpg-slot-${mainA.port}.`)); // main's port slot: main is in its namespace
    await query(mainA, 'CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g');
    b1 = await A.json(['branch', 'create', `${db}/b1`, '--fast']);
    b2 = await A.json(['branch', 'create', `${db}/b2`, '--fast']);
  });

  it('docker inspect shows the limits on main and branches; initdb ran with no network', () => {
    for (const b of [mainA, b1]) {
      const hc = inspect(b.container).HostConfig;
      assert.equal(hc.PidsLimit, 512, 'pids limit');
      assert.deepEqual(hc.CapDrop, ['ALL']);
      assert.deepEqual(hc.SecurityOpt, ['no-new-privileges']);
      assert.deepEqual(hc.LogConfig, { Type: 'json-file', Config: { 'max-size': String(10 * MiB), 'max-file': '3' } });
      assert.equal(hc.ReadonlyRootfs, true);
      assert.deepEqual(Object.keys(hc.Tmpfs).sort(), ['/run/postgresql', '/tmp', '/var/run/postgresql']);
      // PostgreSQL is in its port slot's namespace; the slot is on the isolated network and publishes the port.
      const slot = inspect(netHolder(b.container));
      assert.equal(hc.NetworkMode, `container:${slot.Id}`);
      assert.equal(slot.Name, `/bpg-slot-${b.port}.${b.container.split('.').pop()}`);
      assert.equal(slot.HostConfig.NetworkMode, 'bpg-isolated');
      assert.deepEqual(Object.keys(slot.NetworkSettings.Networks), ['bpg-isolated']);
      assert.equal(slot.HostConfig.PortBindings['5432/tcp'][0].HostPort, String(b.port));
      assert.deepEqual(slot.HostConfig.CapDrop, ['ALL']);
      assert.equal(slot.HostConfig.ReadonlyRootfs, true);
    }
    const net = JSON.parse(sh('docker', ['network', 'inspect', 'bpg-isolated']))[0];
    assert.equal(net.Options['com.docker.network.bridge.name'], 'bpg-isolated');
    assert.equal(net.Options['com.docker.network.bridge.enable_icc'], 'false');
    assert.equal(net.Options['com.docker.network.bridge.enable_ip_masquerade'], 'false');
    assert.equal(net.Internal, false, 'an internal network would drop the published ports');
    assert.deepEqual(initdbNetworks, ['none'], 'the initdb one-shot joined no network');
    assert.deepEqual(mainNetworks, ['bpg-isolated'], 'the event stream was read (main joined its network)');
  });

  it('the running postgres has no capabilities, cannot gain any, and writes only where it must', async () => {
    const st = procStatus(b1.container);
    assert.match(st, /^CapBnd:\s+0000000000000000$/m, 'empty bounding set');
    assert.match(st, /^CapEff:\s+0000000000000000$/m);
    assert.match(st, /^NoNewPrivs:\s+1$/m);
    // The root filesystem is read-only for PR SQL's shell; /tmp and the data directory are not.
    await assert.rejects(
      query(b1, `COPY (SELECT 1) TO PROGRAM 'cat > /var/lib/postgresql/planted'`),
      /program .* failed/,
    );
    await query(b1, `COPY (SELECT 1) TO PROGRAM 'cat > /tmp/fine'`);
    await query(b1, `COPY (SELECT 'x') TO '/var/lib/postgresql/data/fine.txt'`);
  });

  it('with every hardening key off, the container is as Docker makes it (the checks above can fail)', async () => {
    const u = await U.json(['db', 'create', db]);
    const hc = inspect(u.container).HostConfig;
    assert.ok(!hc.PidsLimit, `no pids limit: ${hc.PidsLimit}`);
    assert.equal(hc.CapDrop, null);
    assert.equal(hc.SecurityOpt, null);
    assert.equal(hc.ReadonlyRootfs, false);
    assert.equal(hc.LogConfig.Config['max-size'], undefined);
    assert.ok(['default', 'bridge'].includes(networkOf(u.container)), networkOf(u.container));
    assert.doesNotMatch(procStatus(u.container), /^CapBnd:\s+0000000000000000$/m);
    assert.match(procStatus(u.container), /^NoNewPrivs:\s+0$/m);
    await query(u, `COPY (SELECT 1) TO PROGRAM 'cat > /var/lib/postgresql/planted'`);
  });

  it('a fork bomb from SQL stops at the pids limit; main, other branches and the agent keep answering', async () => {
    const bomb = await A.json(['branch', 'create', `${db}/bomb`, '--fast']);
    // Whatever happens below, the bomb does not outlive this test by long (it loads the host).
    const watchdog = setTimeout(() => execFile('docker', ['rm', '-f', bomb.container], () => {}), 180_000);
    const cg = pidsCgroup(bomb.container);
    assert.equal(readFileSync(join(cg, 'pids.max'), 'utf8').trim(), '512');
    // pids.events counts the forks the kernel refused at the limit.
    const refused = () => Number(/max (\d+)/.exec(readFileSync(join(cg, 'pids.events'), 'utf8'))?.[1] ?? 0);
    const others = async () => {
      assert.deepEqual(await bounded(mainA, 'SELECT count(*)::int AS n FROM t'), [{ n: 100 }]);
      assert.deepEqual(await bounded(b2, 'SELECT count(*)::int AS n FROM t'), [{ n: 100 }]);
    };
    let copy: Promise<unknown> | undefined;
    try {
      assert.equal(refused(), 0);
      // A shell function that forks itself twice, forever. Each copy exits 0 when it cannot fork
      // (the trap): PostgreSQL, the container's PID 1, reaps orphans and would take a non-zero exit
      // for a crashed backend and restart, ending the bomb early. This one holds the container at
      // the limit until the container goes; its COPY never returns (the query times out).
      copy = bounded(
        bomb,
        `COPY (SELECT 1) TO PROGRAM 'f() { trap "exit 0" EXIT; while :; do f | f; done; }; f'`,
      ).catch(() => null);
      const deadline = Date.now() + 60_000;
      while (refused() === 0) {
        assert.ok(Date.now() < deadline, 'the fork bomb never reached the pids limit');
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(Number(readFileSync(join(cg, 'pids.current'), 'utf8')) <= 512);
      // While it runs: new connections (a fork each, in their own containers) and queries elsewhere.
      await others();
      assert.equal((await A.json(['branch', 'get', `${db}/b1`])).status, 'running');
      assert.ok(Number(readFileSync(join(cg, 'pids.current'), 'utf8')) > 100, 'the bomb was still running');
      assert.equal(inspect(bomb.container).RestartCount, 0);
    } finally {
      clearTimeout(watchdog);
      await A.ok(['branch', 'delete', `${db}/bomb`]); // removing the container ends the bomb
    }
    await copy;
    assert.equal((await leftovers(db, A.path)).containers.includes(bomb.container), false);
    await others();
  });

  describe('network: no egress, no neighbours, published ports still answer', { concurrency: 1 }, () => {
    const outside = new OutsideHost();
    let listener: { server: Server; port: number };
    let e: BranchView;

    before(async () => {
      listener = await hostListener();
      await outside.up();
      e = await E.json(['db', 'create', db]);
    });
    after(() => {
      listener?.server.close();
      outside.down();
    });

    it('the probe works: from inside, a branch reaches its own server', async () => {
      assert.equal(await probeFrom(b1.container, ipOf(b1.container), 5432), 'open');
      assert.equal(await probeFrom(b1.container, '127.0.0.1', 5432), 'open');
    });

    it("another branch's container (same network, and another network) is unreachable", async () => {
      const results = await Promise.all([
        probeFrom(b1.container, ipOf(b2.container), 5432),
        probeFrom(b1.container, ipOf(e.container), 5432),
        probeFrom(e.container, ipOf(b1.container), 5432),
      ]);
      assert.deepEqual(
        results.map((r) => r === 'open'),
        [false, false, false],
        results.join(', '),
      );
    });

    it('egress off: the host (0.0.0.0 listener, docker-proxy) and a host outside are unreachable', async () => {
      const gw = gatewayOf('bpg-isolated');
      const results = await Promise.all([
        probeFrom(b1.container, gw, listener.port),
        probeFrom(b1.container, gw, b2.port), // another branch's port, through the host's docker-proxy
        probeFrom(b1.container, gw, b1.port), // its own published port, the same way
        probeFrom(b1.container, outside.ip, outside.port),
      ]);
      assert.deepEqual(
        results.map((r) => r === 'open'),
        [false, false, false, false],
        results.join(', '),
      );
    });

    it('egress on: the same listeners are reachable (so the checks above can fail)', async () => {
      assert.equal(networkOf(e.container), 'bpg-egress');
      const net = JSON.parse(sh('docker', ['network', 'inspect', 'bpg-egress']))[0];
      assert.equal(net.Options['com.docker.network.bridge.enable_icc'], 'false');
      const gw = gatewayOf('bpg-egress');
      const results = await Promise.all([
        probeFrom(e.container, gw, listener.port),
        probeFrom(e.container, gw, e.port),
        probeFrom(e.container, outside.ip, outside.port),
      ]);
      assert.deepEqual(results, ['open', 'open', 'open']);
    });

    it('clients reach every branch through its published port (psql and node-postgres)', async () => {
      for (const b of [mainA, b1, e]) {
        assert.equal(psql(b, 'SELECT 40 + 2').trim(), '42');
        assert.deepEqual(await queryOne(b, 'SELECT 42 AS n'), { n: 42 });
      }
    });
  });

  it('firewall rules deleted by hand: doctor reports them, --fix and the next start restore them', async () => {
    const f = await F.json(['db', 'create', db]);
    const bridge = `${`t${BASE}`.slice(0, 6)}-isolated`;
    assert.equal(networkOf(f.container), bridge);
    const present = () => firewallRules(bridge).map((r) => iptablesHas(r.chain, r.rule));
    try {
      assert.deepEqual(present(), [true, true]);
      deleteRules(bridge);
      assert.deepEqual(present(), [false, false]);

      const seen = await F.run(['doctor', '--json']);
      assert.equal(seen.code, 1, seen.stderr);
      const report = JSON.parse(seen.stdout) as DoctorReport;
      assert.deepEqual(
        report.findings.map((x) => [x.kind, x.subject, x.status]),
        [['missing-firewall-rule', `network ${bridge}`, 'found']],
      );
      assert.match(report.findings[0]!.detail, /DOCKER-USER, INPUT/);
      assert.deepEqual(present(), [false, false], 'looking changed nothing');
      const fixed = await F.run(['doctor', '--fix', '--json']);
      assert.equal(fixed.code, 0, fixed.stderr);
      assert.deepEqual(present(), [true, true]);

      deleteRules(bridge);
      await F.ok(['restart', `${db}/main`]);
      assert.deepEqual(present(), [true, true], 'a start re-applies them');
      const listener = await hostListener();
      try {
        assert.notEqual(await probeFrom(f.container, gatewayOf(bridge), listener.port), 'open');
      } finally {
        listener.server.close();
      }
      assert.deepEqual(await queryOne(await F.json(['branch', 'get', `${db}/main`]), 'SELECT 1 AS n'), { n: 1 });
    } finally {
      await F.run(['db', 'delete', db, '--force']);
      try {
        sh('docker', ['network', 'rm', bridge]);
      } catch {
        // in use by a leftover: test.sh's clean-up removes the containers
      }
      deleteRules(bridge);
    }
  });
});

describe('two agents on one host', { concurrency: 1 }, () => {
  let a: BranchView;
  let b: BranchView;

  before(async () => {
    if (!A.state().databases[db]) await A.ok(['db', 'create', db]); // made above unless run alone
    await B.ok(['db', 'create', db]);
    a = await A.json(['branch', 'create', `${db}/feat`, '--fast']);
    b = await B.json(['branch', 'create', `${db}/feat`, '--fast']);
    await query(a, 'CREATE TABLE mine AS SELECT 1 AS agent');
    await query(b, 'CREATE TABLE mine AS SELECT 2 AS agent');
  });

  it('the same database and branch names get containers of their own, each labelled with its root', () => {
    assert.notEqual(a.container, b.container);
    assert.equal(inspect(a.container).Config.Labels['io.betterpg.root'], A.root);
    assert.equal(inspect(b.container).Config.Labels['io.betterpg.root'], B.root);
    assert.ok(a.container.startsWith(`bpg-${db}.feat.`) && b.container.startsWith(`bpg-${db}.feat.`));
  });

  it("each agent's stop, start and delete touch only its own branch", async () => {
    await B.ok(['stop', `${db}/feat`]);
    assert.deepEqual(await queryOne(a, 'SELECT agent FROM mine'), { agent: 1 });
    await B.ok(['start', `${db}/feat`]);
    assert.deepEqual(await queryOne(b, 'SELECT agent FROM mine'), { agent: 2 });
    await B.ok(['branch', 'delete', `${db}/feat`]);
    assert.deepEqual(await queryOne(a, 'SELECT agent FROM mine'), { agent: 1 });
    assert.equal(inspect(a.container).State.Running, true);
    assert.equal((await A.run(['doctor'])).code, 0);
  });

  it("a container planted under our expected name with another root's label is neither reused nor removed", async () => {
    const name = await containerName(db, 'planted', A.path);
    const planted = sh('docker', [
      'create',
      '--name',
      name,
      '--label',
      'io.betterpg.managed=true',
      '--label',
      `io.betterpg.root=${B.root}`,
      '--label',
      `io.betterpg.database=${db}`,
      'betterpg/postgres:15-local',
    ]).trim();
    try {
      const r = await A.run(['branch', 'create', `${db}/planted`, '--fast']);
      assert.equal(r.code, 4);
      const errors = r.stderr
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('error:'));
      assert.equal(errors.length, 1, r.stderr);
      assert.match(
        errors[0]!,
        new RegExp(
          `^error: container ${name.replace(/\./g, '\\.')} belongs to another agent \\(io\\.betterpg\\.root="${B.root}"\\)`,
        ),
      );
      assert.equal(A.state().branches[`${db}/planted`], undefined, 'no state entry');
      assert.ok(!(await leftovers(db, A.path)).datasets.some((d) => d.endsWith('/planted')), 'no dataset');
      assert.equal((await A.run(['doctor', '--fix'])).code, 0);
      const after = inspect(name);
      assert.equal(after.Id, planted, 'the same container');
      assert.equal(after.State.Status, 'created', 'never started');
    } finally {
      sh('docker', ['rm', '-f', planted]);
    }
  });

  it("a branch whose container was replaced by another root's: start, stop, restart and doctor --fix refuse it", async () => {
    const name = a.container;
    sh('docker', ['rm', '-f', name]);
    const planted = sh('docker', [
      'create',
      '--name',
      name,
      '--label',
      'io.betterpg.managed=true',
      '--label',
      `io.betterpg.root=${B.root}`,
      'betterpg/postgres:15-local',
    ]).trim();
    try {
      // The agent sees no container of its own there (not someone else's, stopped).
      assert.equal((await A.json(['branch', 'get', `${db}/feat`])).status, 'missing');
      for (const cmd of ['stop', 'start', 'restart']) {
        const r = await A.run([cmd, `${db}/feat`]);
        assert.equal(r.code, 4, `${cmd}: ${r.stderr}`);
        assert.match(r.stderr, /^error: container \S+ belongs to another agent .*: refusing to (stop|use) it/m, cmd);
      }
      const fix = await A.run(['doctor', '--fix', '--json']);
      assert.equal(fix.code, 1);
      const f = (JSON.parse(fix.stdout) as DoctorReport).findings.find((x) => x.subject === `${db}/feat`);
      assert.equal(f?.status, 'failed');
      assert.match(f?.error ?? '', /belongs to another agent/);
      assert.equal(inspect(name).Id, planted);
      assert.equal(inspect(name).State.Status, 'created');
    } finally {
      sh('docker', ['rm', '-f', planted]);
    }
    // Once it is gone, reconcile brings the branch back with its data.
    assert.equal((await A.run(['doctor', '--fix'])).code, 0);
    assert.deepEqual(await queryOne(a, 'SELECT agent FROM mine'), { agent: 1 });
  });
});

/**
 * A hostile pull request's attacks as the migration SQL a PR would carry, and the checks run after
 * each, shared by the two ways a PR's migrations reach a branch: the webhook receiver
 * (webhook/test/hostile-pr.test.ts: files served by the fake GitHub's contents API, applied by the
 * receiver) and the committed Action bundle (action/test/hostile-sql.test.ts: `migrate` runs psql -f
 * on the checked-out files). Not a test file: nothing here runs on import.
 *
 * The stack is real: `bpg serve` as a process of its own (so a hang in the agent fails a bounded
 * request instead of freezing the test), on an agent state of its own with a small disk quota per
 * branch, real ZFS, Docker and PostgreSQL. A branch's superuser runs shell commands in its container
 * with `COPY ... TO PROGRAM`, as uid 999; the local image has coreutils (ln, mv, mkfifo, dd, sleep),
 * as the official images do.
 *
 * After each attack: the root-owned canary on the host that planted links point at is untouched
 * (content, owner, mode); main and another branch answer with their data; the agent's API answers;
 * and the attacked branch is reported in one line (the PR's migration failure, or the one-line
 * error of the agent's next operation on that branch).
 */
import assert from 'node:assert/strict';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chownSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { BpgClient } from '../api/client.js';
import type { BranchView } from '../api/schemas.js';
import { BPG, ownStateConfig, query, queryOne, sh, uniqueDb } from './helpers.js';

export const PGDATA = '/var/lib/postgresql/data';

/** An SQL string literal. */
export function literal(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/** A shell command run in the branch's container as its PostgreSQL user: what a PR's SQL can do. */
export function shellSql(command: string): string {
  // The program reads what COPY writes first: one that exits before PostgreSQL has written its row
  // makes COPY fail with "Broken pipe", depending on which process the machine ran first.
  return `COPY (SELECT 1) TO PROGRAM ${literal(`cat >/dev/null; ${command}`)};\n`;
}

/** Paths and addresses put into shell commands and connection strings: plain characters only. */
function plain(s: string): string {
  assert.match(s, /^[\w/.:-]+$/, `not a plain path or address: ${s}`);
  return s;
}

/** The file whose existence ends the fork bomb (see forkBomb). */
export const BOMB_STOP = 'bomb.stop';

/** The settings a PR tries to move with ALTER SYSTEM (archiving away from its folder, another port). */
const ALTER_SYSTEM = [
  `archive_command = 'cp %p /tmp/%f'`,
  `archive_library = ''`,
  `port = 5433`,
  `listen_addresses = 'localhost'`,
];

/** A PR's migrations, as SQL text. */
export const attacks = {
  /** (a) The agent's settings file replaced by a link to a file on the host. */
  linkAtSettings: (target: string): string =>
    `-- replace the agent's settings file by a link to a host file\n${shellSql(`ln -sfn ${plain(target)} ${PGDATA}/betterpg.conf`)}`,

  /** (b) PG_VERSION, which the agent reads before a start, replaced by a FIFO (a blocking open would hang it). */
  fifoAtPgVersion: (): string =>
    `-- a FIFO where the agent reads\n${shellSql(`mv ${PGDATA}/PG_VERSION ${PGDATA}/PG_VERSION.real && mkfifo ${PGDATA}/PG_VERSION`)}`,

  /**
   * (c) A fork bomb, bounded for the sake of the shared test machine: every copy stops forking once
   * `<data>/bomb.stop` exists (the test creates it from the host; `[` is a shell builtin, so the
   * check needs no fork). Each copy exits 0 when it cannot fork (the trap): PostgreSQL, the
   * container's PID 1, reaps orphans and would take a non-zero exit for a crashed backend. The
   * COPY's own shell never forks after starting the bomb (it spins on the builtin), so it returns
   * exactly when the bomb is told to stop, not when one of its forks happens to fail.
   */
  forkBomb: (): string =>
    `-- a fork bomb (it ends when ${BOMB_STOP} appears in the data directory: see hostile-kit.ts)\n` +
    shellSql(
      `stop=${PGDATA}/${BOMB_STOP}; f() { trap "exit 0" EXIT; while [ ! -e $stop ]; do f | f; done; }; f & while [ ! -e $stop ]; do :; done; wait; exit 0`,
    ),

  /**
   * (d) Incompressible rows (the datasets are compressed) until the disk is full: ~20 MiB a round,
   * up to 800 MiB, far above the test's quota. One statement, so that what it wrote goes with it
   * whether a transaction wraps the file (the receiver) or not (psql). UNLOGGED: the rows need no
   * WAL, so the first write to fail is the backend's own and the file gets PostgreSQL's error.
   * With logged rows the WAL writer may hit the quota first, which is a PANIC, and the server then
   * cannot even write postmaster.pid to start again (seen on this stack): the branch stays down.
   */
  fillDisk: (): string => `CREATE EXTENSION IF NOT EXISTS pgcrypto;
DO $$
BEGIN
  CREATE UNLOGGED TABLE fill (b bytea);
  FOR i IN 1..40 LOOP
    INSERT INTO fill SELECT gen_random_bytes(1024) FROM generate_series(1, 20000);
  END LOOP;
END $$;
`,

  /**
   * (e) ALTER SYSTEM on archiving and the port. `statements`: as psql runs a file (autocommit).
   * `dblink`: the receiver runs each file in a transaction, where ALTER SYSTEM is refused, so the PR
   * sends it over a loopback connection of its own (a superuser, trusted on its own socket).
   */
  alterSystem: (how: 'statements' | 'dblink'): string =>
    how === 'statements'
      ? ALTER_SYSTEM.map((s) => `ALTER SYSTEM SET ${s};\n`).join('')
      : `CREATE EXTENSION IF NOT EXISTS dblink;
SELECT dblink_exec('host=/var/run/postgresql user=postgres dbname=' || current_database(), s)
  FROM unnest(ARRAY[${ALTER_SYSTEM.map((s) => literal(`ALTER SYSTEM SET ${s}`)).join(', ')}]) s;
`,

  /**
   * (f) Connections from SQL (dblink) to another branch's container and to a listener on the host,
   * each within `connectTimeout` seconds (libpq's connect_timeout), and two controls: the branch
   * itself through its own socket (connects) and through its own address (reached: the password is
   * refused), so that a broken probe cannot pass for isolation. The file ends with an error carrying
   * every outcome in one line, `reach: name=outcome (ms) | ...`.
   */
  reach: (t: { neighbour: string; host: string; hostPort: number; connectTimeout: number }): string => {
    const tcp = (host: string, port: number) =>
      literal(
        `host=${plain(host)} port=${port} user=postgres dbname=postgres password=wrong connect_timeout=${t.connectTimeout}`,
      );
    return `CREATE EXTENSION IF NOT EXISTS dblink;
DO $$
DECLARE
  targets text[] := ARRAY[
    'self-socket', 'host=/var/run/postgresql user=postgres dbname=' || current_database(),
    'self-tcp', 'host=' || host(inet_server_addr()) || ' port=5432 user=postgres dbname=postgres password=wrong connect_timeout=${t.connectTimeout}',
    'neighbour', ${tcp(t.neighbour, 5432)},
    'host', ${tcp(t.host, t.hostPort)}];
  outcome text[] := '{}';
  detail text;
  t0 timestamptz;
BEGIN
  IF inet_server_addr() IS NULL THEN
    RAISE EXCEPTION 'reach: run it over TCP (its own address is the control)';
  END IF;
  FOR i IN 1..array_length(targets, 1) / 2 LOOP
    t0 := clock_timestamp();
    BEGIN
      PERFORM dblink_connect('reach', targets[2 * i]);
      PERFORM dblink_disconnect('reach');
      detail := 'connected';
    EXCEPTION WHEN others THEN
      GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
      detail := regexp_replace(regexp_replace(detail, '^.* failed: ', ''), '\\s+', ' ', 'g');
    END;
    outcome := outcome || format('%s=%s (%s ms)', targets[2 * i - 1], trim(detail), round(extract(epoch FROM clock_timestamp() - t0) * 1000));
  END LOOP;
  RAISE EXCEPTION 'reach: %', array_to_string(outcome, ' | ');
END $$;
`;
  },
};

/** `reach: a=x (n ms) | b=y (m ms)` (as the reach attack reports it) -> { a: {outcome: 'x', ms: n}, ... } */
export function parseReach(text: string): Record<string, { outcome: string; ms: number }> {
  const line = /reach: (.*)$/m.exec(text)?.[1];
  assert.ok(line, `no reach line in:\n${text}`);
  const out: Record<string, { outcome: string; ms: number }> = {};
  for (const part of line.replace(/ \(SQLSTATE \w+\)$/, '').split(' | ')) {
    const m = /^([\w-]+)=(.*) \((\d+) ms\)$/.exec(part.trim());
    assert.ok(m, `unexpected reach outcome: ${part}`);
    out[m[1]!] = { outcome: m[2]!, ms: Number(m[3]) };
  }
  return out;
}

/**
 * The reach attack's outcomes (`text`: where its error line is, e.g. the PR comment or the step's
 * log): the controls connected or were reached, the other branch and the host were not, each
 * ended by connect_timeout (without it a dropped SYN is retried for about two minutes), and the
 * host's listener accepted nothing.
 */
export function assertReachBlocked(text: string, listener: HostListener): void {
  const reach = parseReach(text);
  assert.equal(reach['self-socket']?.outcome, 'connected', 'the control: its own socket');
  assert.match(
    reach['self-tcp']?.outcome ?? '',
    /password authentication failed/,
    'the control: reached over TCP (its own address)',
  );
  assert.equal(reach.neighbour?.outcome, 'timeout expired', "another branch's container");
  assert.equal(reach.host?.outcome, 'timeout expired', 'a listener on the host');
  for (const t of ['neighbour', 'host'])
    assert.ok(reach[t]!.ms < 30_000, `${t}: given up after ${reach[t]!.ms} ms, at connect_timeout`);
  assert.equal(listener.accepted, 0, 'the host listener saw no connection');
}

export interface ApiAnswer {
  status: number;
  body: any;
}

/**
 * The real agent (`bpg serve` in a process of its own) on a state of its own, a database with data
 * on main and on one more branch, and the canary. `slot`: ownStateConfig's port slice.
 */
export class HostileStack {
  readonly token = `tok-${randomBytes(16).toString('hex')}`;
  readonly db = uniqueDb('hp');
  readonly configPath: string;
  readonly stateDir: string;
  /** A root-owned host file (0600) every planted link points at; it must never change. */
  readonly canary: string;
  readonly canaryText = `root-only ${randomBytes(8).toString('hex')}\n`;
  url = '';
  client!: BpgClient;
  log = '';
  private serve: ChildProcess | null = null;
  private exited: Promise<number | null> = Promise.resolve(null);

  /** `diskQuota`: every branch's ZFS quota (main has none). */
  constructor(name: string, slot: number, diskQuota = '64m') {
    this.configPath = ownStateConfig(name, slot, (raw) => {
      raw.postgres.diskQuota = diskQuota;
      raw.api = { tokens: [{ name: 'hostile-pr', token: this.token }] };
    });
    this.stateDir = dirname(this.configPath);
    this.canary = join(mkdtempSync(join(tmpdir(), 'bpg-hostile-canary-')), 'host-secret');
  }

  /** Starts `bpg serve`, makes the database: main with 1000 rows in t, `other` with its own table too. */
  async start(): Promise<void> {
    writeFileSync(this.canary, this.canaryText, { mode: 0o600 });
    chownSync(this.canary, 0, 0);
    const child = spawn(process.execPath, [BPG, 'serve', '--listen', '127.0.0.1:0'], {
      env: { ...process.env, BPG_CONFIG: this.configPath },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.serve = child;
    this.exited = new Promise((r) => child.on('exit', (code) => r(code)));
    // Should the test process end without stop() (a failed hook, a timeout), the daemon goes too.
    process.once('exit', () => child.kill('SIGKILL'));
    this.url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`bpg serve did not listen within 90 s:\n${this.log}`)), 90_000);
      child.stderr!.on('data', (d: Buffer) => {
        this.log += d.toString();
        const m = /"msg":"listening","url":"([^"]+)"/.exec(this.log);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
      void this.exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`bpg serve exited (${code}):\n${this.log}`));
      });
    });
    this.client = new BpgClient({ baseUrl: this.url, token: this.token });
    await this.client.createDatabase({ name: this.db });
    await query(
      await this.branch('main'),
      'CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g',
    );
    await this.client.putBranch(this.db, 'other', { fast: true });
    await query(await this.branch('other'), 'CREATE TABLE mine AS SELECT g AS id FROM generate_series(1, 500) g');
  }

  /** Deletes the database (every branch), stops `bpg serve`, removes the canary. */
  async stop(): Promise<void> {
    try {
      if (this.client) await this.client.deleteDatabase(this.db, { force: true }).catch(() => {});
    } finally {
      if (this.serve && this.serve.exitCode === null) {
        this.serve.kill('SIGTERM');
        await this.exited;
      }
      rmSync(dirname(this.canary), { recursive: true, force: true });
    }
  }

  branch(name: string): Promise<BranchView> {
    return this.client.getBranch(this.db, name);
  }

  /** A call to the agent's API that cannot hang the test: one answer within `timeoutMs`. */
  async api(method: string, path: string, timeoutMs = 60_000): Promise<ApiAnswer> {
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.token}` },
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  }

  restart(branch: string): Promise<ApiAnswer> {
    return this.api('POST', `/v1/databases/${this.db}/branches/${branch}/restart`);
  }

  /** The branch's data directory on the host. */
  dataDir(b: BranchView): string {
    return join(sh('zfs', ['get', '-H', '-o', 'value', 'mountpoint', b.dataset]).trim(), 'data');
  }

  /** The branch's WAL archive folder on the host. */
  walDir(branch: string): string {
    const state = JSON.parse(readFileSync(join(this.stateDir, 'state.json'), 'utf8'));
    return join(this.stateDir, 'wal', state.branches[`${this.db}/${branch}`].id);
  }

  // ------------------------------------------------------------- the checks after each attack

  /** The host file planted links point at: same content, still root's, still 0600. */
  assertCanaryUntouched(): void {
    assert.equal(readFileSync(this.canary, 'utf8'), this.canaryText, 'the host file was not written');
    const st = statSync(this.canary);
    assert.equal(st.uid, 0, 'the host file still belongs to root (uid)');
    assert.equal(st.gid, 0, 'the host file still belongs to root (gid)');
    assert.equal(st.mode & 0o7777, 0o600, 'the host file keeps its mode');
  }

  /**
   * Shows that assertCanaryUntouched notices what the agent did before issue 11 (followed a link at
   * betterpg.conf as root: wrote settings text through it and chowned it to 999): done here through
   * a link of the test's own, then undone.
   */
  proveCanaryCheck(): void {
    const link = join(dirname(this.canary), 'betterpg.conf');
    symlinkSync(this.canary, link);
    try {
      writeFileSync(link, 'port = 5432\n');
      assert.throws(() => this.assertCanaryUntouched(), /the host file was not written/);
      writeFileSync(link, this.canaryText);
      chownSync(link, 999, 999);
      assert.throws(() => this.assertCanaryUntouched(), /still belongs to root \(uid\)/);
    } finally {
      writeFileSync(this.canary, this.canaryText);
      chownSync(this.canary, 0, 0);
      rmSync(link);
    }
    this.assertCanaryUntouched();
  }

  /** main and `other` answer with their data (new connections: a fork in their own containers). */
  async assertOthersAnswer(): Promise<void> {
    const count = async (b: BranchView, table: string) =>
      (await queryOne<{ n: number }>(b, `SELECT count(*)::int AS n FROM ${table}`)).n;
    const [main, other] = await Promise.all([this.branch('main'), this.branch('other')]);
    assert.equal(await count(main, 't'), 1000, 'main answers with its rows');
    assert.equal(await count(other, 't'), 1000, "other answers with main's rows");
    assert.equal(await count(other, 'mine'), 500, 'other answers with its own rows');
  }

  /** The agent's API answers and lists (at least) these branches. Returns the list. */
  async assertAgentAnswers(expect: string[] = ['main', 'other']): Promise<BranchView[]> {
    const r = await this.api('GET', `/v1/databases/${this.db}/branches`, 30_000);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const names = (r.body as BranchView[]).map((b) => b.branch);
    for (const n of expect) assert.ok(names.includes(n), `the agent lists ${n}: ${names.join(', ')}`);
    return r.body as BranchView[];
  }

  /** Everything that must hold after any attack. */
  async assertContained(expect?: string[]): Promise<void> {
    this.assertCanaryUntouched();
    await this.assertOthersAnswer();
    await this.assertAgentAnswers(expect);
  }

  /** The agent's one-line refusal of an operation on the attacked branch, naming the planted file. */
  assertRefused(r: ApiAnswer, file: string, kind: 'a symbolic link' | 'a FIFO'): string {
    assert.equal(r.status, 500, JSON.stringify(r.body));
    assert.equal(r.body?.error?.code, 'failed');
    const msg = String(r.body.error.message);
    assert.ok(!msg.includes('\n'), `one line: ${msg}`);
    assert.match(
      msg,
      new RegExp(`/data/${file.replace(/\./g, '\\.')} is ${kind}, not a regular file: refusing to use it`),
    );
    return msg;
  }

  /**
   * After ALTER SYSTEM and a restart: the settings the agent depends on come from its command line,
   * the branch answers on the port it was given, and a new WAL segment lands in its own archive.
   */
  async assertSettingsHeld(branch: string): Promise<void> {
    const b = await this.branch(branch);
    const rows = await query<{ name: string; setting: string; source: string }>(
      b,
      "SELECT name, setting, source FROM pg_settings WHERE name IN ('archive_command', 'archive_library', 'port', 'listen_addresses') ORDER BY name",
    );
    assert.deepEqual(
      rows.map((r) => [r.name, r.setting, r.source]),
      [
        ['archive_command', '', 'command line'],
        ['archive_library', 'basic_archive', 'command line'],
        ['listen_addresses', '*', 'command line'],
        ['port', '5432', 'command line'],
      ],
    );
    assert.match(
      readFileSync(join(this.dataDir(b), 'postgresql.auto.conf'), 'utf8'),
      /archive_command = 'cp %p \/tmp\/%f'/,
      'the ALTER SYSTEM did land',
    );
    await query(b, 'CREATE TABLE IF NOT EXISTS wal_probe AS SELECT g FROM generate_series(1, 1000) g');
    await query(b, 'SELECT txid_current()');
    const seg = (await queryOne<{ f: string }>(b, 'SELECT pg_walfile_name(pg_current_wal_insert_lsn()) AS f')).f;
    await query(b, 'SELECT pg_switch_wal()');
    const file = join(this.walDir(branch), seg);
    const deadline = Date.now() + 60_000;
    while (!existsSync(file) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    assert.ok(existsSync(file), `${seg} archived into the branch's own folder`);
  }
}

// ---------------------------------------------------------------- reach targets

/** A container's address on its network, and that network's gateway (the host, as a branch sees it). */
export function addressesOf(container: string): { ip: string; gateway: string } {
  // A branch is in its port slot's network namespace (engine/port-slots.ts): the slot has the address.
  const mode = sh('docker', ['inspect', '-f', '{{.HostConfig.NetworkMode}}', container]).trim();
  const holder = mode.startsWith('container:') ? mode.slice('container:'.length) : container;
  const nets = JSON.parse(sh('docker', ['inspect', '-f', '{{json .NetworkSettings.Networks}}', holder])) as Record<
    string,
    { IPAddress: string; Gateway: string }
  >;
  const [net] = Object.values(nets);
  assert.ok(net?.IPAddress && net.Gateway, `${container} has an address: ${JSON.stringify(nets)}`);
  return { ip: net.IPAddress, gateway: net.Gateway };
}

/** A TCP listener on every address of the host that counts the connections it accepted. */
export class HostListener {
  accepted = 0;
  port = 0;
  private readonly sockets = new Set<Socket>();
  private readonly server: Server = createServer((s: Socket) => {
    this.accepted++;
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    s.end();
  });

  async open(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, '0.0.0.0', r));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  /** Closes it, and any connection it accepted (when the isolation did not hold). */
  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}

// ---------------------------------------------------------------- the fork bomb's bounds

/** The pids cgroup of a container's main process (cgroup v1 `pids` controller, or v2). */
function pidsCgroup(container: string): string {
  const pid = Number(sh('docker', ['inspect', '-f', '{{.State.Pid}}', container]).trim());
  const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n');
  const v1 = lines.find((l) => /^\d+:pids:/.test(l));
  if (v1) return join('/sys/fs/cgroup/pids', v1.split(':')[2]!);
  return join('/sys/fs/cgroup', lines.find((l) => l.startsWith('0::'))!.slice(3));
}

/**
 * Watches a branch where the fork bomb runs, and bounds it: `stop()` (the test's finally, a few
 * seconds in), a watchdog that creates the stop file after `stopAfterMs` (default 2 minutes), one
 * that kills the container after `killAfterMs` (2.5 minutes) should the bomb ignore it, and the
 * test file's clean-up, which deletes the database. Through the receiver, its per-file limit too.
 */
export class BombWatch {
  readonly cgroup: string;
  private readonly stopFile: string;
  private readonly timers: NodeJS.Timeout[];

  constructor(
    stack: HostileStack,
    readonly branch: BranchView,
    o: { stopAfterMs?: number; killAfterMs?: number } = {},
  ) {
    this.cgroup = pidsCgroup(branch.container);
    this.stopFile = join(stack.dataDir(branch), BOMB_STOP);
    this.timers = [
      setTimeout(() => this.touchStop(), o.stopAfterMs ?? 120_000),
      setTimeout(() => execFile('docker', ['kill', branch.container], () => {}), o.killAfterMs ?? 150_000),
    ];
  }

  limit(): number {
    return Number(readFileSync(join(this.cgroup, 'pids.max'), 'utf8').trim());
  }

  current(): number {
    return Number(readFileSync(join(this.cgroup, 'pids.current'), 'utf8').trim());
  }

  /** Forks the kernel refused at the limit (pids.events). */
  refused(): number {
    return Number(/max (\d+)/.exec(readFileSync(join(this.cgroup, 'pids.events'), 'utf8'))?.[1] ?? 0);
  }

  /** Waits until forks are refused at the limit (the bomb is contained, and still running). */
  async atLimit(timeoutMs = 90_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.refused() === 0) {
      assert.ok(Date.now() < deadline, `the fork bomb never reached the pids limit (${this.current()} processes)`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private touchStop(): void {
    try {
      writeFileSync(this.stopFile, '');
    } catch {
      // the branch is gone already
    }
  }

  /** Ends the bomb; resolves once the container is back to a handful of processes. */
  async stop(): Promise<void> {
    this.touchStop();
    for (const t of this.timers) clearTimeout(t);
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      let n: number;
      try {
        n = this.current();
      } catch {
        break; // the container is gone
      }
      if (n <= 20) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    // The stop file stays: a copy still finishing would start forking again without it.
  }
}

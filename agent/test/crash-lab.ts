import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import type { DoctorReport } from '../engine/doctor.js';
import type { BranchView } from '../engine/view.js';
import { State } from '../state/schema.js';
import { cli, ok, okJson, ownStateConfig, query, queryOne, sh, uniqueDb, type CliResult } from './helpers.js';

/**
 * The crash-test harness: an agent state of its own (interrupted work is left behind on purpose),
 * a database whose main branch and one more branch hold data with known checksums, and the checks
 * every crash test makes after reconcile: the state is valid, nothing is orphaned or missing, no
 * session of the agent (so no backup mode) is left on any branch, and the data of every branch
 * that existed before is intact.
 */
export class CrashLab {
  readonly env: { BPG_CONFIG: string };
  readonly db: string;
  private readonly raw: {
    stateDir: string;
    zfs: { pool: string; datasetBase: string };
    postgres: { portRange: [number, number] };
  };
  private sums = new Map<string, string>();

  constructor(name: string, slot: number) {
    this.env = { BPG_CONFIG: ownStateConfig(name, slot) };
    this.raw = YAML.parse(readFileSync(this.env.BPG_CONFIG, 'utf8'));
    this.db = uniqueDb('cr');
  }

  get root(): string {
    return `${this.raw.zfs.pool}/${this.raw.zfs.datasetBase}`;
  }

  run(args: string[], extra: Record<string, string> = {}): Promise<CliResult> {
    return cli(args, { ...this.env, ...extra });
  }
  ok(args: string[]): Promise<CliResult> {
    return ok(args, this.env);
  }
  json<T = BranchView>(args: string[]): Promise<T> {
    return okJson<T>(args, this.env);
  }
  branch(name: string): Promise<BranchView> {
    return this.json(['branch', 'get', `${this.db}/${name}`]);
  }

  /** main with 2000 rows, `keep` (a branch of main) with a table of its own. */
  async setup(): Promise<void> {
    await this.ok(['db', 'create', this.db]);
    const main = await this.branch('main');
    await query(main, 'CREATE TABLE t (id int PRIMARY KEY, v text)');
    await query(main, 'INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g');
    await this.ok(['branch', 'create', `${this.db}/keep`]);
    const keep = await this.branch('keep');
    await query(keep, 'CREATE TABLE k AS SELECT g AS id FROM generate_series(1, 500) g');
    await this.remember('main', 't');
    await this.remember('keep', 'k');
  }

  async teardown(): Promise<void> {
    await this.run(['doctor', '--fix']);
    await this.run(['db', 'delete', this.db, '--force']);
  }

  async checksum(branch: string | BranchView, table: string): Promise<string> {
    const view = typeof branch === 'string' ? await this.branch(branch) : branch;
    const r = await queryOne<{ s: string }>(
      view,
      `SELECT count(*) || ':' || md5(string_agg(x::text, ',' ORDER BY x::text)) AS s FROM ${table} x`,
    );
    return r.s;
  }
  async remember(branch: string, table: string): Promise<void> {
    this.sums.set(`${branch}.${table}`, await this.checksum(branch, table));
  }

  /** Runs a command with the fault switch set: it must die by SIGKILL right after `step`. */
  async kill(args: string[], operation: string, step: string): Promise<void> {
    const r = await this.run(['-q', ...args], { BPG_FAULT_KILL_AFTER: `${operation}:${step}` });
    assert.equal(
      r.code,
      128,
      `expected '${args.join(' ')}' to be killed after '${step}', it exited ${r.code}: ${r.stderr.trim()}`,
    );
    assert.equal(r.stdout, '', 'a killed command prints no result');
  }

  /** `bpg doctor --fix`, then `bpg doctor` must find nothing. */
  async reconcile(): Promise<DoctorReport> {
    const fixed = await this.run(['doctor', '--fix', '--json']);
    const report = JSON.parse(fixed.stdout) as DoctorReport;
    assert.equal(fixed.code, 0, `doctor --fix: ${fixed.stderr.trim()}\n${JSON.stringify(report.findings, null, 1)}`);
    assert.ok(report.healthy);
    const again = await this.run(['doctor', '--json']);
    const clean = JSON.parse(again.stdout) as DoctorReport;
    assert.deepEqual(clean.findings, [], 'a second doctor finds nothing');
    assert.equal(again.code, 0);
    return report;
  }

  /**
   * Every check a crash test makes after reconcile. `templates`: a schema-only create ran, so the
   * empty template clusters it keeps for the next one (`<root>/_template/...`) may be there too.
   */
  async assertConsistent(o: { spares?: boolean; templates?: boolean } = {}): Promise<void> {
    const state = this.state();
    // Nothing orphaned, nothing missing: ZFS, Docker and the state folder hold exactly what the state says.
    const expected = new Set([this.root, ...Object.keys(state.databases).map((d) => `${this.root}/${d}`)]);
    // old mains a refresh keeps while branches are cloned from them
    for (const d of Object.values(state.databases)) for (const r of d.retired) expected.add(r.dataset);
    for (const b of Object.values(state.branches)) {
      expected.add(b.dataset);
      if (b.origin) expected.add(b.origin.snapshot);
      assert.ok(b.status === 'running' || b.status === 'stopped', `${b.database}/${b.branch} is ${b.status}`);
      assert.equal(b.operation, null, `${b.database}/${b.branch} still has an operation marker`);
    }
    for (const k of Object.values(state.snapshots)) {
      const owner = Object.values(state.branches).find((b) => b.id === k.branchId)!;
      expected.add(`${owner.dataset}@${k.name}`);
    }
    // every branch's WAL archive is a dataset of its own under <root>/_wal
    for (const b of Object.values(state.branches)) expected.add(`${this.root}/_wal/${b.id}`);
    const zfs = sh('zfs', ['list', '-H', '-o', 'name', '-t', 'filesystem,snapshot', '-r', this.root])
      .split('\n')
      .filter((n) => n && n !== `${this.root}/_wal`) // the WAL root stays once made
      .filter((n) => !(o.templates && (n === `${this.root}/_template` || n.startsWith(`${this.root}/_template/`))));
    assert.deepEqual([...zfs].sort(), [...expected].sort(), 'ZFS holds exactly what the state says');
    const containers = sh('docker', [
      'ps',
      '-a',
      '--filter',
      `label=io.betterpg.root=${this.root}`,
      '--format',
      '{{.Names}} {{.State}}',
    ])
      .split('\n')
      .filter(Boolean);
    // and each branch's port slot (engine/port-slots.ts), which runs while its branch is stopped too
    const want = Object.values(state.branches).flatMap((b) => [
      `${b.container} ${b.status === 'running' ? 'running' : 'exited'}`,
      `bpg-slot-${b.port}.${b.container.split('.').pop()} running`,
    ]);
    // After a `bpg serve` ran (o.spares): up to postgres.warmSlots spare slots on free ports of the range too.
    const held = new Set(Object.values(state.branches).map((b) => b.port));
    const [lo, hi] = this.raw.postgres.portRange;
    const spares = containers.filter((c) => {
      const m = /^bpg-slot-(\d+)\.\S+ running$/.exec(c);
      return !!o.spares && m !== null && !held.has(Number(m[1])) && Number(m[1]) >= lo && Number(m[1]) <= hi;
    });
    assert.ok(spares.length <= 2, `at most postgres.warmSlots (2) spares: ${spares.join(', ')}`);
    assert.deepEqual(
      containers
        .filter((c) => !spares.includes(c))
        .map((c) => c.replace(/ created$/, ' exited'))
        .sort(),
      want.sort(),
      "Docker holds exactly the branches' containers (running as recorded) and their port slots",
    );
    const wal = readdirSync(join(this.raw.stateDir, 'wal'));
    assert.deepEqual(
      wal.sort(),
      Object.values(state.branches)
        .map((b) => b.id)
        .sort(),
      'one WAL folder per branch',
    );
    let tmp: string[] = [];
    try {
      tmp = readdirSync(join(this.raw.stateDir, 'tmp'));
    } catch {}
    assert.deepEqual(tmp, [], 'no temporary files');
    // No agent session left on any branch: backup mode ends with the session that started it.
    const views = new Map((await this.json<BranchView[]>(['branch', 'list', this.db])).map((v) => [v.branch, v]));
    for (const b of Object.values(state.branches).filter((x) => x.status === 'running')) {
      const view = views.get(b.branch)!;
      const { n } = await queryOne<{ n: number }>(
        view,
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'betterpg'",
      );
      assert.equal(n, 0, `agent sessions left on ${view.name}`);
    }
    // The data of every branch that existed before is intact.
    for (const [key, sum] of this.sums) {
      const [branch, table] = key.split('.') as [string, string];
      assert.equal(await this.checksum(views.get(branch)!, table), sum, `${branch}'s data changed`);
    }
  }

  /** The state file, parsed by the agent's own schema (throws when it is not valid). */
  state(): State {
    return State.parse(JSON.parse(readFileSync(join(this.raw.stateDir, 'state.json'), 'utf8')));
  }

  /** The steps an operation really runs, from its --debug log, to prove each one has a crash test. */
  async stepsOf(args: string[], operation: string): Promise<string[]> {
    const r = await this.ok(['--debug', ...args]);
    const steps: string[] = [];
    const re = new RegExp(`^${operation}: ([a-zA-Z ]+?) ms=`);
    for (const line of r.stderr.split('\n')) {
      const m = re.exec(line);
      if (m && !steps.includes(m[1]!)) steps.push(m[1]!);
    }
    return steps;
  }
}

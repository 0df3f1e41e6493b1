import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { BpgApiError, BpgClient } from '../api/client.js';
import { serve, type RunningServer } from '../api/serve.js';
import { loadConfig } from '../config.js';
import type { HousekeepingReport } from '../engine/housekeeping.js';
import type { SnapshotView } from '../engine/snapshots.js';
import type { BranchView } from '../engine/view.js';
import { silentLogger } from '../log.js';
import type { State } from '../state/schema.js';
import { BPG, cli, leftovers, ok, okJson, ownStateConfig, query, uniqueDb } from './helpers.js';

/**
 * Expiry, idle stop and scheduled snapshots, against the real stack. Each part runs on a state of
 * its own (ownStateConfig, slots 5-8): a pass works over the whole state, and other test files
 * must not see their branches deleted or stopped. Passes get an explicit `--now`, so nothing waits
 * out a TTL or an idle period, except the daemon test, which waits a few seconds on purpose.
 */

const HOUR = 3_600_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const iso = (ms: number) => new Date(ms).toISOString();

function oneLine(stderr: string, pattern: RegExp) {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${stderr}`);
  assert.match(lines[0]!, /^error: /);
  assert.match(lines[0]!, pattern);
}

/** The CLI on one config. */
function on(configPath: string) {
  const env = { BPG_CONFIG: configPath };
  return {
    env,
    ok: (args: string[]) => ok(args, env),
    json: <T = BranchView>(args: string[]) => okJson<T>(args, env),
    run: (args: string[]) => cli(args, env),
    housekeep: (...args: string[]) => okJson<HousekeepingReport>(['housekeep', ...args], env),
    state: (): State => JSON.parse(readFileSync(join(dirname(configPath), 'state.json'), 'utf8')),
  };
}

/** A branch as created, with its stable id (which names its WAL folder and origin snapshot). */
async function create(c: ReturnType<typeof on>, args: string[]): Promise<BranchView & { id: string }> {
  const b = await c.json(['branch', 'create', ...args]);
  return { ...b, id: c.state().branches[b.name]!.id };
}

/** Nothing of these branches is left: no dataset, origin snapshot, container, WAL folder or record. */
async function assertGone(
  c: ReturnType<typeof on>,
  configPath: string,
  db: string,
  gone: Array<BranchView & { id: string }>,
) {
  const left = await leftovers(db, configPath);
  for (const b of gone) {
    const mine = left.datasets.filter(
      (d) => d === b.dataset || d.startsWith(`${b.dataset}@`) || d.endsWith(`@bpg-${b.id}`),
    );
    assert.deepEqual(mine, [], `ZFS left of ${b.name}`);
    assert.ok(!left.containers.includes(b.container), `container of ${b.name} left`);
    assert.ok(!existsSync(join(dirname(configPath), 'wal', b.id)), `WAL folder of ${b.name} left`);
    assert.ok(!c.state().branches[b.name], `record of ${b.name} left`);
  }
}

// The four parts have states of their own: they run side by side (the tests inside each, in order).
describe('housekeeping', { concurrency: 4 }, () => {
  // ------------------------------------------------------------------------------------------ TTL

  describe('branch TTL and protection: CLI, API, expiry pass', { concurrency: 1 }, () => {
    const path = ownStateConfig('exp', 5);
    const c = on(path);
    const db = uniqueDb('hx');
    const TOKEN = `tok-${randomBytes(16).toString('hex')}`;
    let srv: RunningServer;
    let api: BpgClient;

    before(async () => {
      await c.ok(['db', 'create', db]);
    });
    after(async () => {
      await srv?.close();
      await c.run(['db', 'delete', db, '--force']);
    });

    it('bpg branch create --ttl/--protect stores the expiry and shows it; pr-<n> gets the config default', async () => {
      const t0 = Date.now();
      const t1 = await c.json(['branch', 'create', `${db}/t1`, '--fast', '--ttl', '90m']);
      const at = Date.parse(t1.expiresAt!);
      assert.ok(at >= t0 + 90 * 60_000 && at <= Date.now() + 90 * 60_000, t1.expiresAt!);
      assert.equal(t1.protected, false);
      const shown = (await c.ok(['branch', 'get', `${db}/t1`])).stdout;
      assert.match(shown, new RegExp(`expires\\s+${t1.expiresAt!.replace(/[.]/g, '\\.')} \\(in 1h (29|30)m\\)`));
      assert.match(shown, /protected\s+no/);
      const list = (await c.ok(['branch', 'list', db])).stdout;
      assert.match(list, /EXPIRES/);
      assert.match(list, new RegExp(`${db}/main .*never \\(protected\\)`));
      assert.match(list, new RegExp(`${db}/t1 .*in 1h (29|30)m`));

      const pr = await c.json(['branch', 'create', `${db}/pr-7`, '--fast']);
      assert.ok(
        Math.abs(Date.parse(pr.expiresAt!) - (Date.now() + 7 * 24 * HOUR)) < 60_000,
        `pr default: ${pr.expiresAt}`,
      );
      const prot = await c.json(['branch', 'create', `${db}/pr-8`, '--fast', '--protect']);
      assert.equal(prot.protected, true);
      assert.equal(prot.expiresAt, null, 'a protected branch gets no default TTL');
      const none = await c.json(['branch', 'create', `${db}/pr-9`, '--fast', '--ttl', 'none']);
      assert.equal(none.expiresAt, null, '--ttl none overrides the pr-<n> default');
    });

    it('bpg branch set changes ttl and protection; main cannot expire; bad input is one line', async () => {
      const off = await c.json(['branch', 'set', `${db}/t1`, '--ttl', 'none']);
      assert.equal(off.expiresAt, null);
      const on2 = await c.json(['branch', 'set', `${db}/t1`, '--ttl', '2h', '--protect']);
      assert.ok(Math.abs(Date.parse(on2.expiresAt!) - (Date.now() + 2 * HOUR)) < 60_000);
      assert.equal(on2.protected, true);
      assert.match((await c.ok(['branch', 'get', `${db}/t1`])).stdout, /expires\s+never \(protected\)/);
      assert.equal((await c.json(['branch', 'set', `${db}/t1`, '--no-protect'])).protected, false);
      assert.equal(c.state().branches[`${db}/t1`]!.expiresAt, on2.expiresAt, '--no-protect leaves the ttl alone');

      let r = await c.run(['branch', 'set', `${db}/main`, '--ttl', '1d']);
      assert.equal(r.code, 2);
      oneLine(r.stderr, /'main' cannot expire/);
      r = await c.run(['branch', 'set', `${db}/main`, '--no-protect']);
      oneLine(r.stderr, /'main' is always protected/);
      r = await c.run(['branch', 'set', `${db}/t1`, '--ttl', '7 days']);
      oneLine(r.stderr, /--ttl: '7 days' is not a duration/);
      r = await c.run(['branch', 'set', `${db}/t1`, '--ttl', '400d']);
      oneLine(r.stderr, /365d/);
      r = await c.run(['branch', 'set', `${db}/t1`]);
      oneLine(r.stderr, /nothing to change/);
      r = await c.run(['branch', 'set', `${db}/nosuch`, '--ttl', '1h']);
      oneLine(r.stderr, /does not exist/);
      assert.equal(c.state().branches[`${db}/main`]!.expiresAt, null);
    });

    it('API: PUT ttl/protected, PUT again renews, PATCH sets and clears; main refuses a ttl', async () => {
      const cfg = await loadConfig(path);
      srv = await serve(
        { ...cfg, api: { ...cfg.api, tokens: [{ name: 't', token: TOKEN }] } },
        { listen: '127.0.0.1:0', log: silentLogger, handleSignals: false, env: {} },
      );
      api = new BpgClient({ baseUrl: srv.url, token: TOKEN });
      const a1 = await api.putBranch(db, 'a1', { fast: true, ttl: '2h' });
      assert.equal(a1.created, true);
      assert.ok(Math.abs(Date.parse(a1.branch.expiresAt!) - (Date.now() + 2 * HOUR)) < 60_000);
      const again = await api.putBranch(db, 'a1', { ttl: '3h' });
      assert.equal(again.created, false);
      assert.ok(Math.abs(Date.parse(again.branch.expiresAt!) - (Date.now() + 3 * HOUR)) < 60_000, 'renewed from now');
      assert.equal(again.branch.port, a1.branch.port);

      const cleared = await api.setBranch(db, 'a1', { ttl: null });
      assert.equal(cleared.expiresAt, null);
      assert.equal((await api.setBranch(db, 'a1', { protected: true })).protected, true);
      const viaCli = await c.json(['branch', 'get', `${db}/a1`]);
      assert.equal(viaCli.protected, true);

      // pr-<n>: the Action and the webhook PUT on every push without a ttl; the default renews it.
      await api.putBranch(db, 'pr-10', { fast: true });
      await api.setBranch(db, 'pr-10', { ttl: '1h' });
      const renewed = await api.putBranch(db, 'pr-10', { fast: true });
      assert.ok(
        Math.abs(Date.parse(renewed.branch.expiresAt!) - (Date.now() + 7 * 24 * HOUR)) < 60_000,
        `renewed: ${renewed.branch.expiresAt}`,
      );
      assert.equal(c.state().branches[`${db}/pr-10`]!.expiresAt, renewed.branch.expiresAt);
      await api.setBranch(db, 'pr-10', { ttl: null });
      assert.equal(
        (await api.putBranch(db, 'pr-10', {})).branch.expiresAt,
        null,
        'a branch made permanent stays permanent',
      );

      const bad = async (p: Promise<unknown>, status: number, re: RegExp) =>
        assert.rejects(p, (e: BpgApiError) => e.status === status && re.test(e.message));
      await bad(api.setBranch(db, 'main', { ttl: '1d' }), 400, /'main' cannot expire/);
      await bad(api.putBranch(db, 'main', { ttl: '1d' }), 400, /'main' cannot expire/);
      await bad(api.setBranch(db, 'a1', {}), 400, /give ttl or protected/);
      await bad(api.setBranch(db, 'a1', { ttl: '5 days' }), 400, /ttl/);
      await bad(api.setBranch(db, 'a1', { ttl: '366d' }), 400, /365d/);
      await bad(api.setBranch(db, 'nosuch', { ttl: '1h' }), 404, /does not exist/);
      const doc = (await api.openapi()) as { paths: Record<string, Record<string, unknown>> };
      assert.ok(doc.paths['/v1/databases/{db}/branches/{branch}']!.patch, 'PATCH documented');
      await srv.close();
    });

    it('a pass deletes expired branches (children first), keeps protected ones, main, and parents of live children', async (t) => {
      const mk = (name: string, ...extra: string[]) => create(c, [`${db}/${name}`, '--fast', '--ttl', '1h', ...extra]);
      const exp = await mk('exp');
      const expChild = await mk('exp-child', '--from', `${db}/exp`);
      const par = await mk('par');
      await c.json(['branch', 'create', `${db}/par-live`, '--from', `${db}/par`, '--fast']);
      await mk('prot', '--protect');
      // Past these 1h TTLs, before t1's 2h one.
      const later = iso(Date.now() + 1.5 * HOUR);

      const plan = await c.housekeep('--dry-run', '--now', later);
      assert.equal(plan.dryRun, true);
      assert.deepEqual(
        plan.deleted.map((d) => d.branch),
        [`${db}/exp-child`, `${db}/exp`],
      );
      assert.ok(c.state().branches[`${db}/exp`], 'a dry run deletes nothing');
      const planText = (await c.ok(['housekeep', '--dry-run', '--now', later])).stdout;
      assert.match(planText, new RegExp(`would delete ${db}/exp-child`));

      const r = await c.housekeep('--now', later);
      t.diagnostic(`dry-run pass: ${plan.ms} ms; pass deleting 2 expired branches: ${r.ms} ms`);
      assert.deepEqual(r.errors, []);
      assert.deepEqual(
        r.deleted.map((d) => d.branch),
        [`${db}/exp-child`, `${db}/exp`],
      );
      const skipped = Object.fromEntries(
        r.skipped.filter((s) => s.action === 'expire').map((s) => [s.target, s.reason]),
      );
      assert.match(
        skipped[`${db}/par`] ?? '',
        new RegExp(`child branches that stay: ${db}/par-live \\(not expired\\)`),
      );
      assert.equal(skipped[`${db}/prot`], 'expired but protected');
      const names = (await c.json<BranchView[]>(['branch', 'list', db])).map((b) => b.branch).sort();
      assert.deepEqual(names, ['a1', 'main', 'par', 'par-live', 'pr-10', 'pr-7', 'pr-8', 'pr-9', 'prot', 't1']);
      await assertGone(c, path, db, [exp, expChild]);

      // Once its child is gone too, the parent goes at the next pass.
      await c.ok(['branch', 'delete', `${db}/par-live`]);
      const r2 = await c.housekeep('--now', later);
      assert.deepEqual(
        r2.deleted.map((d) => d.branch),
        [`${db}/par`],
      );
      await assertGone(c, path, db, [par]);
    });

    it('deleting the database leaves nothing', async () => {
      await c.ok(['db', 'delete', db, '--force']);
      assert.deepEqual(await leftovers(db, path), { datasets: [], containers: [] });
    });
  });

  // ------------------------------------------------------------------------------------- idle stop

  describe('idle stop', { concurrency: 1 }, () => {
    const path = ownStateConfig('idle', 6, (raw) => {
      raw.expiry = { idleStopAfter: '1h' };
    });
    const c = on(path);
    const db = uniqueDb('hi');
    let idle: BranchView;
    let busy: BranchView;
    let held: pg.Client;

    before(async () => {
      await c.ok(['db', 'create', db]);
      idle = await c.json(['branch', 'create', `${db}/idle`, '--fast']);
      busy = await c.json(['branch', 'create', `${db}/busy`, '--fast']);
      await c.json(['branch', 'create', `${db}/keep`, '--fast', '--protect']);
      await query(idle, 'CREATE TABLE t (x int); INSERT INTO t VALUES (42)');
      held = new pg.Client({ connectionString: busy.connection.uri });
      await held.connect();
    });
    after(async () => {
      await held?.end().catch(() => {});
      await c.run(['db', 'delete', db, '--force']);
    });

    it('nothing is stopped before idleStopAfter has passed', async (t) => {
      const r = await c.housekeep();
      t.diagnostic(`pass polling 2 running branches for clients: ${r.ms} ms`);
      assert.deepEqual(r.stopped, []);
      assert.deepEqual(r.active, [`${db}/busy`]);
    });

    it('a branch with no client is stopped (stoppedBy idle), one with a client, main and protected ones are not', async (t) => {
      const later = iso(Date.now() + 2 * HOUR);
      const plan = await c.housekeep('--dry-run', '--now', later);
      assert.deepEqual(
        plan.stopped.map((s) => s.branch),
        [`${db}/idle`],
      );
      assert.equal((await c.json(['branch', 'get', `${db}/idle`])).status, 'running', 'a dry run stops nothing');

      const before = c.state().branches[`${db}/busy`]!.lastActiveAt!;
      const r = await c.housekeep('--now', later);
      t.diagnostic(`pass stopping 1 idle branch: ${r.ms} ms`);
      assert.deepEqual(r.errors, []);
      assert.deepEqual(
        r.stopped.map((s) => s.branch),
        [`${db}/idle`],
      );
      assert.deepEqual(r.active, [`${db}/busy`]);
      assert.ok(c.state().branches[`${db}/busy`]!.lastActiveAt! > before, 'lastActiveAt updated when a client is seen');

      const views = Object.fromEntries((await c.json<BranchView[]>(['branch', 'list', db])).map((b) => [b.branch, b]));
      assert.equal(views.idle!.status, 'stopped');
      assert.equal(views.idle!.stoppedBy, 'idle');
      assert.equal(views.idle!.port, idle.port);
      assert.equal(views.idle!.connection.uri, idle.connection.uri, 'port and password kept');
      for (const b of ['busy', 'keep', 'main']) assert.equal(views[b]!.status, 'running', b);
      assert.match((await c.ok(['branch', 'list', db])).stdout, new RegExp(`${db}/idle\\s+stopped \\(idle\\)`));
      assert.deepEqual((await held.query('SELECT 1 AS ok')).rows, [{ ok: 1 }], 'the client on busy was not disturbed');
    });

    it('bpg start brings the idle branch back with the same connection string working', async () => {
      const started = await c.json(['start', `${db}/idle`]);
      assert.equal(started.status, 'running');
      assert.equal(started.stoppedBy, null);
      assert.equal(started.connection.uri, idle.connection.uri);
      assert.deepEqual(await query(idle, 'SELECT x FROM t'), [{ x: 42 }]);
      // Its idle time counts from the start: a pass at the real time leaves it running.
      assert.deepEqual((await c.housekeep()).stopped, []);
    });
  });

  // ---------------------------------------------------------------------------- scheduled snapshots

  describe('scheduled snapshots, retention, WAL retention', { concurrency: 1 }, () => {
    const path = ownStateConfig('snap', 7, (raw) => {
      raw.snapshots = { every: '1h', keep: 2 };
    });
    const c = on(path);
    const db = uniqueDb('hs');
    let main: BranchView;
    const taken: string[] = [];
    let tPitr = '';

    const snaps = () => c.json<SnapshotView[]>(['snapshot', 'list', `${db}/main`]);
    const createdAt = (id: string) => Date.parse(c.state().snapshots[id]!.createdAt);
    const walDir = () => join(dirname(path), 'wal', c.state().branches[`${db}/main`]!.id);
    const segments = () =>
      readdirSync(walDir())
        .filter((f) => /^[0-9A-F]{24}$/.test(f))
        .sort();
    /** Some WAL between snapshots, so retention has something to remove. */
    const churn = async (n: number) => {
      for (let i = 0; i < 2; i++)
        await query(main, `INSERT INTO ev VALUES (${n * 10 + i}, 'churn'); SELECT pg_switch_wal()`);
    };

    before(async () => {
      main = await c.json(['db', 'create', db]);
      await query(main, 'CREATE TABLE ev (id int PRIMARY KEY, what text)');
    });
    after(async () => {
      await c.run(['db', 'delete', db, '--force']);
    });

    it('takes a snapshot when due, not when not due', async (t) => {
      const r1 = await c.housekeep();
      assert.deepEqual(r1.errors, []);
      assert.equal(r1.snapshots.length, 1);
      taken.push(r1.snapshots[0]!.id!);
      const list = await snaps();
      assert.deepEqual(
        list.map((s) => [s.id, s.scheduled, s.label]),
        [[taken[0], true, 'scheduled']],
      );

      const r2 = await c.housekeep('--now', iso(createdAt(taken[0]!) + 10 * 60_000));
      t.diagnostic(`pass taking a scheduled snapshot: ${r1.ms} ms; pass with none due: ${r2.ms} ms`);
      assert.deepEqual(r2.snapshots, []);
      assert.match(r2.skipped.find((s) => s.action === 'snapshot')?.reason ?? '', /not due until/);
      assert.equal((await snaps()).length, 1);
    });

    it('prunes scheduled snapshots beyond keep, oldest first, but never one a branch was cloned from, nor a manual one', async () => {
      await churn(1);
      const r2 = await c.housekeep('--now', iso(createdAt(taken[0]!) + HOUR));
      assert.equal(r2.snapshots.length, 1, JSON.stringify(r2));
      taken.push(r2.snapshots[0]!.id!);
      const from1 = await c.json(['branch', 'create', `${db}/from1`, '--from-snapshot', taken[0]!]);
      assert.equal(from1.parent, `${db}/main`);

      await churn(2);
      const r3 = await c.housekeep('--now', iso(createdAt(taken[1]!) + HOUR));
      taken.push(r3.snapshots[0]!.id!);
      assert.deepEqual(r3.pruned, [], 'the oldest is in use');
      assert.match(
        r3.skipped.find((s) => s.action === 'prune' && s.target === taken[0])?.reason ?? '',
        new RegExp(`${db}/from1`),
      );

      // A row after the third snapshot and a moment to recover to, before the fourth.
      await query(main, "INSERT INTO ev VALUES (100, 'after s3')");
      await sleep(1100);
      tPitr = new Date().toISOString();
      await sleep(1100);
      await query(main, "INSERT INTO ev VALUES (101, 'after target')");
      const manual = await c.json<SnapshotView>(['snapshot', 'create', `${db}/main`, '--label', 'by hand']);
      assert.equal(manual.scheduled, false);

      await churn(3);
      const r4 = await c.housekeep('--now', iso(createdAt(taken[2]!) + HOUR));
      taken.push(r4.snapshots[0]!.id!);
      assert.deepEqual(
        r4.pruned.map((p) => p.id),
        [taken[1]],
        'the oldest unused one beyond keep',
      );
      const ids = (await snaps()).map((s) => s.id);
      assert.deepEqual(ids.sort(), [taken[0], taken[2], manual.id, taken[3]].sort());
    });

    it("removes main's WAL older than the oldest kept snapshot needs; PITR from a kept snapshot still works", async () => {
      // While from1 exists, the oldest kept snapshot is the first one: nothing before it to remove yet
      // beyond what earlier passes removed.
      await c.ok(['branch', 'delete', `${db}/from1`]);
      const s = c.state();
      const firstOf = (id: string) => s.snapshots[id]!.backup!.firstSegment;
      const before = segments();
      assert.ok(
        before.some((f) => f < firstOf(taken[2]!)),
        `there is WAL before the third snapshot: ${before.join(' ')}`,
      );

      const plan = await c.housekeep('--dry-run', '--now', iso(createdAt(taken[3]!) + 10 * 60_000));
      assert.deepEqual(
        plan.pruned.map((p) => p.id),
        [taken[0]],
      );
      assert.equal(plan.wal.length, 1, JSON.stringify(plan));
      assert.deepEqual(segments(), before, 'a dry run removes nothing');

      const r = await c.housekeep('--now', iso(createdAt(taken[3]!) + 10 * 60_000));
      assert.deepEqual(r.errors, []);
      assert.deepEqual(r.snapshots, []);
      assert.deepEqual(
        r.pruned.map((p) => p.id),
        [taken[0]],
      );
      assert.equal(r.wal.length, 1);
      assert.equal(r.wal[0]!.keptFrom, firstOf(taken[2]!));
      const after = segments();
      assert.equal(r.wal[0]!.removed, before.length - after.length);
      assert.ok(after.length > 0);
      assert.ok(
        after.every((f) => f >= firstOf(taken[2]!)),
        `only WAL from the oldest kept snapshot on: ${after.join(' ')}`,
      );
      assert.equal(plan.wal[0]!.removed, r.wal[0]!.removed, 'the dry run said the same');

      const past = await c.json(['branch', 'create', `${db}/past`, '--pitr', tPitr]);
      const rows = await query<{ id: number }>(past, 'SELECT id FROM ev WHERE id >= 100 ORDER BY id');
      assert.deepEqual(rows, [{ id: 100 }], 'recovered from the third snapshot plus the WAL after it');
    });
  });

  // ---------------------------------------------------------------------------------------- daemon

  describe('WAL age: every branch, except what kept snapshots need', { concurrency: 1 }, () => {
    const path = ownStateConfig('walage', 9, (raw) => {
      raw.housekeeping = { walMaxAge: '1d' };
    });
    const c = on(path);
    const db = uniqueDb('hw');
    after(async () => {
      await c.run(['db', 'delete', db, '--force']);
    });
    const segs = (id: string) =>
      readdirSync(join(dirname(path), 'wal', id))
        .filter((f) => /^[0-9A-F]{24}$/.test(f))
        .sort();
    /** Two archived segments of new WAL on a branch. */
    const churn = async (b: BranchView, id: string) => {
      const before = segs(id).length;
      await query(b, 'CREATE TABLE IF NOT EXISTS w (n int)');
      for (let i = 0; i < 2; i++) await query(b, 'INSERT INTO w VALUES (1); SELECT pg_switch_wal()');
      for (let i = 0; segs(id).length < before + 2; i++) {
        if (i > 300) assert.fail(`WAL of ${b.name} was not archived: ${segs(id).join(' ')}`);
        await sleep(100);
      }
    };

    it('removes archived WAL older than walMaxAge, keeping what a kept snapshot needs', async () => {
      const main = await c.json(['db', 'create', db]);
      const dev = await create(c, [`${db}/dev`, '--fast']);
      const mainId = c.state().branches[`${db}/main`]!.id;
      await churn(main, mainId);
      await churn(dev, dev.id);
      const snap = await c.json<SnapshotView>(['snapshot', 'create', `${db}/dev`]);
      await churn(dev, dev.id);
      const first = c.state().snapshots[snap.id]!.backup!.firstSegment;
      const devBefore = segs(dev.id);
      assert.ok(
        devBefore.some((f) => f < first),
        `WAL before the snapshot: ${devBefore.join(' ')}`,
      );

      const soon = await c.housekeep('--now', iso(Date.now() + HOUR));
      assert.deepEqual(soon.wal, [], 'nothing is a day old yet');

      const r = await c.housekeep('--now', iso(Date.now() + 2 * 24 * HOUR));
      assert.deepEqual(r.errors, []);
      const by = new Map(r.wal.map((w) => [w.branch, w]));
      assert.ok((by.get(`${db}/main`)?.removed ?? 0) > 0, JSON.stringify(r.wal));
      assert.deepEqual(segs(mainId), [], "main's WAL is all older than a day and no snapshot needs it");
      const devAfter = segs(dev.id);
      assert.equal(by.get(`${db}/dev`)?.removed, devBefore.length - devAfter.length);
      assert.ok(
        devAfter.length > 0 && devAfter.every((f) => f >= first),
        `dev keeps what its snapshot needs: ${devAfter.join(' ')}`,
      );
    });
  });

  describe('the daemon runs housekeeping passes', { concurrency: 1 }, () => {
    const path = ownStateConfig('daemon', 8, (raw) => {
      raw.housekeeping = { interval: '1s' };
    });
    const c = on(path);
    const db = uniqueDb('hd');
    const TOKEN = `tok-${randomBytes(16).toString('hex')}`;

    before(async () => {
      await c.ok(['db', 'create', db]);
    });
    after(async () => {
      await c.run(['db', 'delete', db, '--force']);
    });

    it('bpg serve deletes a branch with a 3s TTL within seconds, logs it, and stops cleanly on SIGTERM', async () => {
      const child = spawn(process.execPath, [BPG, 'serve', '--listen', '127.0.0.1:0'], {
        env: { ...process.env, ...c.env, BPG_API_TOKEN: TOKEN },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let log = '';
      child.stderr.on('data', (d) => (log += d));
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      try {
        // Start-up is ~1 s on a quiet machine; allow for a loaded one.
        let exitedEarly = false;
        void exited.then(() => (exitedEarly = true));
        for (const t = Date.now(); Date.now() - t < 90_000 && !exitedEarly && !log.includes('"listening"');)
          await sleep(100);
        assert.match(log, /"listening"/);
        const short = await create(c, [`${db}/short`, '--fast', '--ttl', '3s']);
        const t0 = Date.now();
        let gone = false;
        while (!gone && Date.now() - t0 < 60_000) {
          await sleep(250);
          gone = !(await c.json<BranchView[]>(['branch', 'list', db])).some((b) => b.branch === 'short');
        }
        assert.ok(gone, `not deleted within 60 s; log:\n${log}`);
        await assertGone(c, path, db, [short]);
        const line = log.split('\n').find((l) => l.includes('"housekeeping"') && l.includes(`${db}/short`));
        assert.ok(line, `a housekeeping line names the branch:\n${log}`);
        const entry = JSON.parse(line!);
        assert.deepEqual(entry.deleted, [`${db}/short`]);
        assert.ok(
          entry.time >= short.expiresAt!,
          `deleted at ${entry.time}, not before it expired at ${short.expiresAt}`,
        );
        // A pass a second plus the delete itself: a few seconds, more on a loaded machine.
        assert.ok(Date.parse(entry.time) - Date.parse(short.expiresAt!) < 30_000, 'soon after it expired');
        assert.ok(!log.includes(short.connection.password) && !log.includes(TOKEN), 'no password or token in the log');
      } finally {
        child.kill('SIGTERM');
      }
      assert.equal(await exited, 0, log);
      assert.match(log, /"stopped"/);
    });
  });
});

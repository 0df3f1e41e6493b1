import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runMigration, sslEnv, type MigrationTarget } from '../src/migrate.js';

/** What `migrate` is pointed at, through the router and directly (bash only: no runner, no database). */

const PW = 'pw/with@odd+chars-0123';
const direct = {
  host: '127.0.0.1',
  port: 15433,
  user: 'postgres',
  password: PW,
  database: 'app',
  uri: `postgresql://postgres:${encodeURIComponent(PW)}@127.0.0.1:15433/app`,
};
const routed: MigrationTarget = {
  host: 'pg.example.com',
  port: 6432,
  user: 'postgres',
  password: PW,
  database: 'app@pr-7',
  uri: `postgresql://postgres:${encodeURIComponent(PW)}@pg.example.com:6432/app%40pr-7?sslmode=require`,
  via: 'router',
  sslmode: 'require',
  direct,
};
const plain: MigrationTarget = { ...direct, via: 'direct', sslmode: null, direct };

/** Runs `migrate` printing its PG* variables; returns them. */
async function envSeen(target: MigrationTarget, env: Record<string, string> = {}): Promise<Map<string, string>> {
  const lines: string[] = [];
  const r = await runMigration(
    'for v in DATABASE_URL PGHOST PGPORT PGUSER PGDATABASE PGSSLMODE; do echo "$v=${!v-<unset>}"; done',
    '.',
    target,
    (l) => lines.push(l),
    { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, secrets: [] },
  );
  assert.equal(r.ok, true, lines.join('\n'));
  return new Map(lines.map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

describe("migrate's connection", () => {
  it("through the router: the router's host and port, PGDATABASE <db>@<branch>, PGSSLMODE require (password scrubbed)", async () => {
    const env = await envSeen(routed);
    assert.equal(env.get('PGHOST'), 'pg.example.com');
    assert.equal(env.get('PGPORT'), '6432');
    assert.equal(env.get('PGDATABASE'), 'app@pr-7');
    assert.equal(env.get('PGSSLMODE'), 'require');
    assert.equal(env.get('DATABASE_URL'), 'postgresql://postgres:***@pg.example.com:6432/app%40pr-7?sslmode=require');
  });

  it("directly: no PGSSLMODE of ours; the job's own stays as it is", async () => {
    const env = await envSeen(plain);
    assert.equal(env.get('PGPORT'), '15433');
    assert.equal(env.get('PGDATABASE'), 'app');
    assert.equal(env.get('PGSSLMODE'), '<unset>');
    assert.equal((await envSeen(plain, { PGSSLMODE: 'prefer' })).get('PGSSLMODE'), 'prefer');
  });

  it("a stricter PGSSLMODE in the job's env (verify-ca, verify-full) is kept; a weaker one becomes require", () => {
    assert.deepEqual(sslEnv(routed, {}), { PGSSLMODE: 'require' });
    assert.deepEqual(sslEnv(routed, { PGSSLMODE: 'verify-full' }), { PGSSLMODE: 'verify-full' });
    assert.deepEqual(sslEnv(routed, { PGSSLMODE: 'verify-ca' }), { PGSSLMODE: 'verify-ca' });
    for (const weak of ['disable', 'allow', 'prefer', 'require', 'nonsense'])
      assert.deepEqual(sslEnv(routed, { PGSSLMODE: weak }), { PGSSLMODE: 'require' }, weak);
    assert.deepEqual(sslEnv(plain, { PGSSLMODE: 'disable' }), {});
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { silentLogger } from '../../agent/log.js';
import { FakeGitHub } from '../../shared/test/fake-github.js';
import { renderComment, type MigrationSummary } from '../src/comment.js';
import { parseWebhookConfig, repoSettings } from '../src/config.js';
import { GitHub, type RepoApi } from '../src/github.js';
import { fetchMigrations, type MigrationLimits } from '../src/migration-files.js';
import {
  compareVersions,
  DBMATE_ERRORS,
  dbmateUpSections,
  detectFormat,
  flywayVersion,
  looksLikeDbmate,
  planFiles,
  prismaFolders,
  supabaseSeedPath,
  type Entry,
  type Plan,
} from '../src/migration-layouts.js';
import { sha } from './fixtures.js';

/**
 * The migration layouts of real tools (migration-layouts.ts): which files run, in which order, and
 * which part of each, on file names as those tools write them; then the same read through real
 * Octokit from the fake GitHub's contents API (migration-files.ts), with the limits; the config key;
 * and what the comment says of the layout.
 */

const files = (...names: string[]): Entry[] => names.map((name) => ({ name, type: 'file' }));
const dirs = (...names: string[]): Entry[] => names.map((name) => ({ name, type: 'dir' }));
const order = (p: Plan): string[] => {
  assert.ok('migrations' in p, JSON.stringify(p));
  return p.migrations.map((m) => m.name);
};
const refusal = (p: Plan): string => {
  assert.ok('invalid' in p, `expected a refusal, got ${JSON.stringify(p)}`);
  return p.invalid;
};

describe('layouts: which files run, in which order', () => {
  it('plain: every .sql file of the folder in name order, as before', () => {
    assert.deepEqual(
      order(planFiles('plain', ['002_orders.sql', 'README.md', '001_accounts.sql', '010_invoices.SQL', 'seed.csv'])),
      ['001_accounts.sql', '002_orders.sql', '010_invoices.SQL'],
    );
  });

  it('prisma: the <timestamp>_<name> folders in name order; files beside them are not migrations', () => {
    assert.deepEqual(
      prismaFolders([
        ...files('migration_lock.toml', 'README.md'),
        ...dirs('20230523102203_post_published_default', '20210409122838_init', '20220124135419_add_profile'),
      ]),
      ['20210409122838_init', '20220124135419_add_profile', '20230523102203_post_published_default'],
    );
  });

  it('golang-migrate: *.up.sql by numeric version; *.down.sql never', () => {
    // migrate create -seq (padded) and hand-numbered files (not padded): numbers, not names, decide.
    const seq = [
      '000001_create_users_table.down.sql',
      '000001_create_users_table.up.sql',
      '000002_add_email_to_users.down.sql',
      '000002_add_email_to_users.up.sql',
      '000010_create_orders.down.sql',
      '000010_create_orders.up.sql',
    ];
    assert.deepEqual(order(planFiles('golang-migrate', seq)), [
      '000001_create_users_table.up.sql',
      '000002_add_email_to_users.up.sql',
      '000010_create_orders.up.sql',
    ]);
    const loose = ['10_add_index.up.sql', '2_add_email.up.sql', '1_initial.up.sql', '2_add_email.down.sql'];
    assert.deepEqual(order(planFiles('golang-migrate', loose)), [
      '1_initial.up.sql',
      '2_add_email.up.sql',
      '10_add_index.up.sql',
    ]);
    assert.deepEqual(order(planFiles('golang-migrate', ['0002_x.up.sql', '0010_y.up.sql', '0001_x.down.sql'])), [
      '0002_x.up.sql',
      '0010_y.up.sql',
    ]);
    // Unix-time versions (migrate create's default) and files golang-migrate does not read.
    assert.deepEqual(
      order(
        planFiles('golang-migrate', [
          '1681294530_create_orders.up.sql',
          '1681294530_create_orders.down.sql',
          '1681290000_init.up.sql',
          'README.md',
          'schema.sql',
          '3_notes.up.txt',
        ]),
      ),
      ['1681290000_init.up.sql', '1681294530_create_orders.up.sql'],
    );
  });

  it('golang-migrate: two up files of one version are refused, as migrate refuses them', () => {
    assert.match(
      refusal(planFiles('golang-migrate', ['1_init.up.sql', '01_other.up.sql'])),
      /01_other\.up\.sql and 1_init\.up\.sql have the same version 1; golang-migrate applies one migration per version/,
    );
  });

  it('dbmate: <version>*.sql by version; other files ignored', () => {
    assert.deepEqual(
      order(
        planFiles('dbmate', [
          '20230412101530_create_orders.sql',
          '20151129054053_test_migration.sql',
          'schema.sql',
          '20230101000000_create_users.sql',
        ]),
      ),
      ['20151129054053_test_migration.sql', '20230101000000_create_users.sql', '20230412101530_create_orders.sql'],
    );
    assert.deepEqual(order(planFiles('dbmate', ['10_c.sql', '2_b.sql', '1_a.sql'])), [
      '1_a.sql',
      '2_b.sql',
      '10_c.sql',
    ]);
  });

  it('flyway: V<version>__ by numeric version (V2 < V10, V1.1 < V1.2 < V2), then R__ by description; U and B never', () => {
    const names = [
      'V10__Add_orders_index.sql',
      'V2__Add_people.sql',
      'V1__Create_person_table.sql',
      'V1.2__Add_email.sql',
      'V1_1__Add_nickname.sql', // 1_1 is 1.1
      'R__People_view.sql',
      'R__Audit_function.sql',
      'U2__Add_people.sql',
      'U10__Add_orders_index.sql',
      'B5__Baseline.sql',
      'afterMigrate.sql', // a callback, not a migration
      'README.md',
    ];
    const plan = planFiles('flyway', names);
    assert.deepEqual(order(plan), [
      'V1__Create_person_table.sql',
      'V1_1__Add_nickname.sql',
      'V1.2__Add_email.sql',
      'V2__Add_people.sql',
      'V10__Add_orders_index.sql',
      'R__Audit_function.sql',
      'R__People_view.sql',
    ]);
    assert.ok('migrations' in plan);
    assert.deepEqual(
      plan.migrations.filter((m) => m.repeatable).map((m) => m.name),
      ['R__Audit_function.sql', 'R__People_view.sql'],
    );
    // Date-like versions, as many projects write them.
    assert.deepEqual(order(planFiles('flyway', ['V2023.10.02.1__b.sql', 'V2023.9.30__a.sql', 'V2023.10.02__c.sql'])), [
      'V2023.9.30__a.sql',
      'V2023.10.02__c.sql',
      'V2023.10.02.1__b.sql',
    ]);
  });

  it('flyway: versions compare part by part, trailing zeros dropped', () => {
    assert.deepEqual(flywayVersion('1_2_0'), [1n, 2n]);
    assert.ok(compareVersions(flywayVersion('1.1'), flywayVersion('1.2')) < 0);
    assert.ok(compareVersions(flywayVersion('1.2'), flywayVersion('2')) < 0);
    assert.ok(compareVersions(flywayVersion('2'), flywayVersion('10')) < 0);
    assert.ok(compareVersions(flywayVersion('1.10'), flywayVersion('1.9')) > 0);
    assert.equal(compareVersions(flywayVersion('1.0'), flywayVersion('1')), 0);
    assert.equal(compareVersions(flywayVersion('99999999999999999999.1'), flywayVersion('99999999999999999999.1')), 0);
  });

  it('flyway: a duplicate version, a duplicate description or a version that is not a number is refused', () => {
    assert.match(
      refusal(planFiles('flyway', ['V1__init.sql', 'V1.0__also_init.sql'])),
      /V1\.0__also_init\.sql and V1__init\.sql have the same version 1; Flyway refuses that/,
    );
    assert.match(
      refusal(planFiles('flyway', ['R__my_view.sql', 'R__my view.sql'])),
      /have the same description; Flyway refuses that/,
    );
    assert.match(refusal(planFiles('flyway', ['V1a__x.sql'])), /V1a__x\.sql: '1a' is not a Flyway version/);
    assert.match(refusal(planFiles('flyway', ['V__x.sql'])), /V__x\.sql: '' is not a Flyway version/);
  });

  it('supabase: <timestamp>_name.sql by name; files the CLI skips are skipped', () => {
    assert.deepEqual(
      order(
        planFiles('supabase', [
          '20240215093000_add_profiles.sql',
          '20240101000000_initial_schema.sql',
          'README.md',
          'scratch.sql', // the CLI: "Skipping migration scratch.sql... (file name must match pattern <timestamp>_name.sql)"
          '.gitkeep',
        ]),
      ),
      ['20240101000000_initial_schema.sql', '20240215093000_add_profiles.sql'],
    );
    assert.deepEqual(supabaseSeedPath('supabase/migrations'), { parent: 'supabase', path: 'supabase/seed.sql' });
    assert.deepEqual(supabaseSeedPath('apps/web/supabase/migrations'), {
      parent: 'apps/web/supabase',
      path: 'apps/web/supabase/seed.sql',
    });
    assert.deepEqual(supabaseSeedPath('migrations'), { parent: '', path: 'seed.sql' });
  });
});

describe('dbmate: only the -- migrate:up sections run', () => {
  const users = `-- migrate:up
create table users (
  id integer,
  name varchar(255),
  email varchar(255) not null
);

-- migrate:down
drop table users;
`;

  it('the up section runs, the down section is blanked with its line breaks kept', () => {
    const r = dbmateUpSections(users);
    assert.ok('sql' in r);
    assert.ok(!r.sql.includes('drop table'), r.sql);
    assert.ok(r.sql.startsWith('-- migrate:up\ncreate table users ('));
    assert.equal(r.sql.split('\n').length, users.split('\n').length, 'same lines: errors point at the file');
  });

  it('several up/down pairs, options and leading comments', () => {
    const text = `-- Orders, and an index built without a transaction.
-- migrate:up
create table orders (id bigserial primary key, user_id integer);
-- migrate:down
drop table orders;

-- migrate:up transaction:false
create index orders_user_id on orders (user_id);
-- migrate:down transaction:false
drop index orders_user_id;
`;
    const r = dbmateUpSections(text);
    assert.ok('sql' in r);
    assert.match(r.sql, /create table orders/);
    assert.match(r.sql, /create index orders_user_id/);
    assert.doesNotMatch(r.sql, /drop/);
    const lines = r.sql.split('\n');
    assert.equal(lines.length, text.split('\n').length);
    assert.equal(lines[7], 'create index orders_user_id on orders (user_id);', 'at its own line');
  });

  it("a file dbmate would not run gets dbmate's reason", () => {
    assert.deepEqual(dbmateUpSections('create table t (id int);\n'), { invalid: DBMATE_ERRORS.missingUp });
    assert.deepEqual(dbmateUpSections('-- migrate:up\ncreate table t (id int);\n'), {
      invalid: DBMATE_ERRORS.missingDown,
    });
    assert.deepEqual(dbmateUpSections("create type s as enum ('a');\n-- migrate:up\nselect 1;\n-- migrate:down\n"), {
      invalid: DBMATE_ERRORS.unexpectedStatement,
    });
    assert.deepEqual(dbmateUpSections('-- migrate:up\nselect 1;\n-- migrate:down\nselect 2;\n-- migrate:down\n'), {
      invalid: DBMATE_ERRORS.multipleDown,
    });
  });

  it('a folder is dbmate when its files have -- migrate:up lines', () => {
    assert.ok(looksLikeDbmate(['select 1;', users]));
    assert.ok(!looksLikeDbmate(['create table t (id int); -- migrate:up is mentioned here, not a directive']));
  });
});

describe('layouts: detection from the folder', () => {
  it('tells each layout from its files', () => {
    assert.deepEqual(
      detectFormat('prisma/migrations', [...files('migration_lock.toml'), ...dirs('20210409122838_init')]),
      { format: 'prisma', from: 'migration_lock.toml' },
    );
    assert.deepEqual(detectFormat('db/prisma', dirs('20210409122838_init', '20220124135419_add_profile')), {
      format: 'prisma',
      from: '<timestamp>_<name>/migration.sql',
    });
    assert.deepEqual(detectFormat('supabase/migrations', files('20240101000000_initial_schema.sql')), {
      format: 'supabase',
      from: 'supabase/migrations',
    });
    assert.deepEqual(
      detectFormat('db/migrations', files('000001_create_users_table.down.sql', '000001_create_users_table.up.sql')),
      { format: 'golang-migrate', from: '*.up.sql / *.down.sql' },
    );
    assert.deepEqual(
      detectFormat('src/main/resources/db/migration', files('V1__Create_person_table.sql', 'R__v.sql')),
      {
        format: 'flyway',
        from: 'V<version>__*.sql',
      },
    );
    // dbmate's files look plain by name: their contents decide (looksLikeDbmate).
    assert.equal(detectFormat('db/migrations', files('20151129054053_test_migration.sql')).format, 'plain');
    assert.equal(detectFormat('migrations', files('001_accounts.sql', '002_orders.sql')).format, 'plain');
  });
});

describe('layouts read through the contents API, within the limits', () => {
  const limits: MigrationLimits = { maxFiles: 500, maxFileSize: 1024 * 1024, maxTotalSize: 16 * 1024 * 1024 };

  async function withRepo<T>(
    tree: Record<string, string>,
    f: (gh: RepoApi, s: string, fake: FakeGitHub) => Promise<T>,
  ): Promise<T> {
    const fake = new FakeGitHub('ghp_layouts');
    await fake.start();
    try {
      const s = sha();
      fake.commit('o/r', s, tree);
      const gh = new GitHub({ kind: 'token', token: 'ghp_layouts' }, fake.url, silentLogger).forRepo(
        { owner: 'o', repo: 'r' },
        null,
      );
      return await f(gh, s, fake);
    } finally {
      await fake.close();
    }
  }

  const prisma = {
    'prisma/schema.prisma': 'datasource db { provider = "postgresql" }\n',
    'prisma/migrations/migration_lock.toml': 'provider = "postgresql"\n',
    'prisma/migrations/20210409122838_init/migration.sql': 'CREATE TABLE "User" ("id" SERIAL PRIMARY KEY);\n',
    'prisma/migrations/20220124135419_add_profile/migration.sql': 'CREATE TABLE "Profile" ("id" SERIAL);\n',
    'prisma/migrations/20220124135419_add_profile/README.md': 'notes\n',
  };

  it('prisma: one migration.sql per folder, detected from migration_lock.toml', async () => {
    await withRepo(prisma, async (gh, s) => {
      const r = await fetchMigrations(gh, 'prisma/migrations', s, limits);
      assert.deepEqual(r, {
        format: 'prisma',
        detectedFrom: 'migration_lock.toml',
        files: [
          {
            name: '20210409122838_init/migration.sql',
            sql: prisma['prisma/migrations/20210409122838_init/migration.sql'],
          },
          {
            name: '20220124135419_add_profile/migration.sql',
            sql: prisma['prisma/migrations/20220124135419_add_profile/migration.sql'],
          },
        ],
      });
    });
  });

  it('prisma: the folders count against maxFiles before any is listed; sizes before any download', async () => {
    await withRepo(prisma, async (gh, s, fake) => {
      const before = fake.requests.length;
      assert.deepEqual(await fetchMigrations(gh, 'prisma/migrations', s, { ...limits, maxFiles: 1 }), {
        refused: '2 migrations in prisma/migrations; at most 1 (migrations.maxFiles)',
      });
      assert.equal(fake.requests.length - before, 1, 'only the folder itself was listed');

      assert.deepEqual(await fetchMigrations(gh, 'prisma/migrations', s, { ...limits, maxFileSize: 40 }), {
        refused: '20210409122838_init/migration.sql is 47 bytes; at most 40 bytes per file (migrations.maxFileSize)',
      });
      assert.deepEqual(await fetchMigrations(gh, 'prisma/migrations', s, { ...limits, maxTotalSize: 60 }), {
        refused:
          'the migrations in prisma/migrations come to 85 bytes; at most 60 bytes in all (migrations.maxTotalSize)',
      });
      assert.equal(fake.count('GET', /migration\.sql$/), 0, 'no migration.sql downloaded');
    });
  });

  it('prisma: a folder without its migration.sql is refused, and nothing deeper is looked at', async () => {
    await withRepo(
      {
        'prisma/migrations/migration_lock.toml': 'provider = "postgresql"\n',
        'prisma/migrations/20210409122838_init/migration.sql': 'SELECT 1;\n',
        'prisma/migrations/20220124135419_add_profile/nested/migration.sql': 'SELECT 2;\n',
      },
      async (gh, s, fake) => {
        assert.deepEqual(await fetchMigrations(gh, 'prisma/migrations', s, limits), {
          refused:
            'prisma/migrations/20220124135419_add_profile has no migration.sql; Prisma stops there too (P3015): restore the file or delete the folder',
          layout: true,
        });
        assert.equal(fake.count('GET', /\/nested/), 0);
      },
    );
  });

  it('golang-migrate and flyway: no down or undo file is even downloaded', async () => {
    await withRepo(
      {
        'db/migrations/000001_init.up.sql': 'CREATE TABLE t (id int);\n',
        'db/migrations/000001_init.down.sql': 'DROP TABLE t;\n',
        'sql/V1__init.sql': 'CREATE TABLE p (id int);\n',
        'sql/U1__init.sql': 'DROP TABLE p;\n',
      },
      async (gh, s, fake) => {
        const g = await fetchMigrations(gh, 'db/migrations', s, limits);
        assert.ok(g && 'files' in g);
        assert.equal(g.format, 'golang-migrate');
        assert.deepEqual(
          g.files.map((f) => f.name),
          ['000001_init.up.sql'],
        );
        const f = await fetchMigrations(gh, 'sql', s, limits, 'flyway');
        assert.ok(f && 'files' in f);
        assert.equal(f.detectedFrom, undefined, 'configured, not detected');
        assert.deepEqual(
          f.files.map((x) => x.name),
          ['V1__init.sql'],
        );
        assert.equal(fake.count('GET', /down\.sql$|U1__init\.sql$/), 0);
      },
    );
  });

  it('dbmate: detected from the files, down sections blanked, the whole file recorded', async () => {
    const text = '-- migrate:up\nCREATE TABLE users (id int);\n-- migrate:down\nDROP TABLE users;\n';
    await withRepo(
      { 'db/migrations/20151129054053_users.sql': text, 'db/migrations/schema_notes.sql': '-- not dbmate\n' },
      async (gh, s) => {
        assert.deepEqual(await fetchMigrations(gh, 'db/migrations', s, limits), {
          format: 'dbmate',
          detectedFrom: '-- migrate:up',
          files: [
            {
              name: '20151129054053_users.sql',
              sql: '-- migrate:up\nCREATE TABLE users (id int);\n\n\n',
              source: text,
            },
          ],
        });
      },
    );
  });

  it('supabase: the seed beside the folder, counted in the limits; at the root too', async () => {
    const tree = {
      'supabase/config.toml': 'project_id = "shop"\n',
      'supabase/seed.sql': "INSERT INTO plans (name) VALUES ('free');\n",
      'supabase/migrations/20240101000000_initial_schema.sql': 'CREATE TABLE plans (name text);\n',
    };
    await withRepo(tree, async (gh, s) => {
      assert.deepEqual(await fetchMigrations(gh, 'supabase/migrations', s, limits), {
        format: 'supabase',
        detectedFrom: 'supabase/migrations',
        files: [
          {
            name: '20240101000000_initial_schema.sql',
            sql: tree['supabase/migrations/20240101000000_initial_schema.sql'],
          },
        ],
        seed: { name: 'supabase/seed.sql', sql: tree['supabase/seed.sql'] },
      });
      assert.deepEqual(await fetchMigrations(gh, 'supabase/migrations', s, { ...limits, maxFiles: 1 }), {
        refused: '2 migration files in supabase/migrations and supabase/seed.sql; at most 1 (migrations.maxFiles)',
      });
    });
    await withRepo({ 'seed.sql': 'SELECT 1;\n', 'migrations/20240101000000_a.sql': 'SELECT 2;\n' }, async (gh, s) => {
      const r = await fetchMigrations(gh, 'migrations', s, limits, 'supabase');
      assert.ok(r && 'files' in r);
      assert.deepEqual(r.seed, { name: 'seed.sql', sql: 'SELECT 1;\n' });
    });
  });

  it('a layout the tool refuses is refused before anything is downloaded', async () => {
    await withRepo(
      { 'db/migrations/1_init.up.sql': 'SELECT 1;', 'db/migrations/001_init_again.up.sql': 'SELECT 2;' },
      async (gh, s, fake) => {
        assert.deepEqual(await fetchMigrations(gh, 'db/migrations', s, limits), {
          refused:
            'db/migrations: 001_init_again.up.sql and 1_init.up.sql have the same version 1; golang-migrate applies one migration per version',
          layout: true,
        });
        assert.equal(fake.count('GET', /\.up\.sql$/), 0);
      },
    );
  });
});

describe('config: migrations.format', () => {
  const base = { secret: 's'.repeat(32), github: { token: 'ghp_x' }, agent: { token: 't'.repeat(20) } };
  const parse = (migrations: unknown) =>
    parseWebhookConfig({ ...base, repos: { 'o/r': { database: 'x', migrations } } }, 'f.yaml', {}).then(
      (c) => repoSettings(c, 'o/r')!.migrations,
    );

  it("a format without a path reads the tool's own folder; no format and no path: no migrations", async () => {
    assert.equal((await parse({ format: 'prisma' })).path, 'prisma/migrations');
    assert.equal((await parse({ format: 'dbmate' })).path, 'db/migrations');
    assert.equal((await parse({ format: 'supabase' })).path, 'supabase/migrations');
    assert.equal((await parse({ format: 'flyway' })).path, 'src/main/resources/db/migration');
    const own = await parse({ format: 'golang-migrate', path: 'internal/db/migrations' });
    assert.deepEqual([own.format, own.path], ['golang-migrate', 'internal/db/migrations']);
    const none = await parse(undefined);
    assert.deepEqual([none.format, none.path], [undefined, undefined]);
    assert.equal((await parse({ path: 'db/migrations' })).format, undefined, 'detected');
  });

  it('refuses an unknown format, and plain or golang-migrate without a path, in one line', async () => {
    const bad: [unknown, RegExp][] = [
      [
        { format: 'liquibase' },
        /migrations\.format: must be one of plain, prisma, golang-migrate, dbmate, flyway, supabase/,
      ],
      [{ format: 'plain' }, /migrations\.path: required with format plain/],
      [{ format: 'golang-migrate' }, /migrations\.path: required with format golang-migrate/],
    ];
    for (const [migrations, re] of bad)
      await assert.rejects(parse(migrations), (e: Error) => re.test(e.message) && !e.message.includes('\n'));
  });
});

describe('the comment names the layout', () => {
  const render = (m: MigrationSummary) =>
    renderComment({
      state: 'ready',
      database: 'shop',
      branch: 'pr-1',
      parent: 'main',
      showPassword: false,
      migrations: m,
    });

  it('detected or configured', () => {
    const m = {
      path: 'prisma/migrations',
      applied: ['20210409122838_init/migration.sql'],
      alreadyApplied: [],
      changed: [],
    };
    assert.match(
      render({ ...m, format: 'prisma', detectedFrom: 'migration_lock.toml' }),
      /✅ 1 applied: `20210409122838_init\/migration.sql` · layout `prisma` \(detected from `migration_lock.toml`\)/,
    );
    assert.match(render({ ...m, format: 'prisma' }), /· layout `prisma` \|/);
    assert.match(
      render({ ...m, format: 'plain', detectedFrom: "no other tool's layout" }),
      /· layout `plain` \(detected\)/,
    );
    assert.match(
      render({ path: 'supabase/migrations', applied: [], alreadyApplied: [], changed: [], format: 'supabase' }),
      /no migrations in `supabase\/migrations` · layout `supabase`/,
    );
  });

  it('a layout its tool refuses is said to be one, not a limit', () => {
    const refused = (refusedLayout: boolean) =>
      renderComment({
        state: 'refused',
        database: 'shop',
        branch: 'pr-1',
        parent: 'main',
        showPassword: false,
        error: 'sql: V1.0__b.sql and V1__a.sql have the same version 1; Flyway refuses that',
        refusedLayout,
      });
    assert.match(refused(true), /The migration tool itself would refuse this folder/);
    assert.doesNotMatch(refused(true), /maxFiles/);
    assert.match(refused(false), /raise them in the receiver's config/);
  });
});

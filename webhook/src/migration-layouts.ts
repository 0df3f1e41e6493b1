/**
 * The migration layouts of the tools people use, as pure rules: which entries of a folder are
 * migrations, the order they run in, and which part of a file runs. No I/O here: migration-files.ts
 * lists and fetches through the contents API and applies these rules to what it finds.
 *
 *   plain           every `*.sql` of the folder, name order
 *   prisma          `<timestamp>_<name>/migration.sql`, folder order
 *   golang-migrate  `<version>_<name>.up.sql` by numeric version; `*.down.sql` never
 *   dbmate          `<version>*.sql` by version, only their `-- migrate:up` sections
 *   flyway          `V<version>__<description>.sql` by numeric version, then `R__<description>.sql`
 *                   by description; `U` (undo) and `B` (baseline) never
 *   supabase        `<timestamp>_<name>.sql` by name, then `seed.sql` beside the folder once, on a new branch
 *
 * Where a tool itself refuses a layout (two migrations with one version, a Prisma folder without
 * its migration.sql, a Flyway version that is not a number), so does the receiver: nothing is
 * applied, and the reason names the files.
 */

export const MIGRATION_FORMATS = ['plain', 'prisma', 'golang-migrate', 'dbmate', 'flyway', 'supabase'] as const;
export type MigrationFormat = (typeof MIGRATION_FORMATS)[number];

/**
 * Where each tool keeps its migrations unless told otherwise. plain and golang-migrate have no such
 * place (golang-migrate's `-path` is always given), so they need `migrations.path`.
 */
export const DEFAULT_FOLDERS: Partial<Record<MigrationFormat, string>> = {
  prisma: 'prisma/migrations',
  dbmate: 'db/migrations',
  flyway: 'src/main/resources/db/migration',
  supabase: 'supabase/migrations',
};

/** Prisma writes this beside its migration folders; its presence says "prisma". */
export const PRISMA_LOCK = 'migration_lock.toml';
/** Each Prisma migration folder holds exactly this file. */
export const PRISMA_FILE = 'migration.sql';

/** An entry of a folder's listing: `file` or `dir` (symlinks and submodules are neither). */
export interface Entry {
  name: string;
  type: string;
}

export interface Detection {
  format: MigrationFormat;
  /** What gave it away, for the logs and the comment: `migration_lock.toml`, `*.up.sql`, ... */
  from: string;
}

/** One migration to run, in order. */
export interface Planned {
  /** Path inside the migrations folder: what is read, recorded on the branch and shown. */
  name: string;
  /** Flyway's `R__` migrations: applied again whenever their content changes. */
  repeatable?: boolean;
}

/** The migrations in the order they run, or why the tool would refuse the folder. */
export type Plan = { migrations: Planned[] } | { invalid: string };

// ---------------------------------------------------------------- file names

/** golang-migrate's own pattern: `<version>_<title>.<up|down>.<extension>`. */
const GOLANG_MIGRATE = /^([0-9]+)_(.*)\.(down|up)\.(.*)$/;
/** dbmate's: a file whose name starts with its version (digits) and ends in `.sql`. */
const DBMATE = /^(\d+).*\.sql$/;
/** Supabase CLI's: `<timestamp>_name.sql`; it skips other files ("file name must match pattern"). */
const SUPABASE = /^([0-9]+)_(.*)\.sql$/;
/** Flyway's versions: numbers separated by `.` or `_`. */
const FLYWAY_VERSION = /^\d+([._]\d+)*$/;
/** Prisma names each migration folder `<timestamp>_<name>`. */
const PRISMA_FOLDER = /^\d+_/;

const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** The parts of a version, trailing zeros dropped as Flyway does (`1.0` is `1`). */
export function flywayVersion(text: string): bigint[] {
  const parts = text.replaceAll('_', '.').split('.').map(BigInt);
  while (parts.length > 1 && parts[parts.length - 1] === 0n) parts.pop();
  return parts;
}

/** Part by part, a missing part counting as 0: `1.1` < `1.2` < `2` < `10`. */
export function compareVersions(a: bigint[], b: bigint[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i] ?? 0n;
    const y = b[i] ?? 0n;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

const compareNumbers = (a: bigint, b: bigint): number => (a < b ? -1 : a > b ? 1 : 0);

// ---------------------------------------------------------------- detection

/**
 * The layout of a folder from its listing (no file is read): the first rule that matches wins.
 * `plain` here may still turn out `dbmate` once the files are read (`looksLikeDbmate`).
 */
export function detectFormat(path: string, entries: Entry[]): Detection {
  const files = entries.filter((e) => e.type === 'file').map((e) => e.name);
  const dirs = entries.filter((e) => e.type === 'dir').map((e) => e.name);
  if (files.includes(PRISMA_LOCK)) return { format: 'prisma', from: PRISMA_LOCK };
  if (/(^|\/)supabase\/migrations$/.test(path)) return { format: 'supabase', from: 'supabase/migrations' };
  if (files.some((f) => GOLANG_MIGRATE.test(f) && f.endsWith('.sql')))
    return { format: 'golang-migrate', from: '*.up.sql / *.down.sql' };
  if (files.some((f) => /^(V\d[\d._]*|R|U\d[\d._]*)__.+\.sql$/.test(f)))
    return { format: 'flyway', from: 'V<version>__*.sql' };
  if (!files.some(isSql) && dirs.some((d) => PRISMA_FOLDER.test(d)))
    return { format: 'prisma', from: '<timestamp>_<name>/migration.sql' };
  return { format: 'plain', from: "no other tool's layout" };
}

const isSql = (name: string): boolean => name.toLowerCase().endsWith('.sql');

/** A plain folder whose files have `-- migrate:up` lines is dbmate's. */
export function looksLikeDbmate(texts: string[]): boolean {
  return texts.some((t) => new RegExp(DBMATE_UP.source, 'm').test(t));
}

// ---------------------------------------------------------------- planning

/**
 * The migrations among a flat folder's files (names, any order) for every layout but prisma, in the
 * order the tool runs them. Files the tool ignores are left out.
 */
export function planFiles(format: Exclude<MigrationFormat, 'prisma'>, names: string[]): Plan {
  switch (format) {
    case 'plain':
      return { migrations: names.filter(isSql).sort(byName).map(one) };
    case 'supabase':
      return byVersion(names, SUPABASE, 'Supabase');
    case 'dbmate':
      return byVersion(names, DBMATE, 'dbmate');
    case 'golang-migrate':
      return byVersion(
        names.filter((n) => GOLANG_MIGRATE.exec(n)?.[3] === 'up' && n.endsWith('.up.sql')),
        GOLANG_MIGRATE,
        'golang-migrate',
      );
    case 'flyway':
      return planFlyway(names);
  }
}

const one = (name: string): Planned => ({ name });

/** Sorted by the number the pattern's first group captures, then by name; one file per version. */
function byVersion(names: string[], pattern: RegExp, tool: string): Plan {
  const found = names.flatMap((name) => {
    const m = pattern.exec(name);
    return m ? [{ name, version: BigInt(m[1]!) }] : [];
  });
  found.sort((a, b) => compareNumbers(a.version, b.version) || byName(a.name, b.name));
  for (let i = 1; i < found.length; i++) {
    if (found[i]!.version === found[i - 1]!.version)
      return {
        invalid: `${found[i - 1]!.name} and ${found[i]!.name} have the same version ${found[i]!.version}; ${tool} applies one migration per version`,
      };
  }
  return { migrations: found.map((f) => one(f.name)) };
}

function planFlyway(names: string[]): Plan {
  const versioned: { name: string; version: bigint[] }[] = [];
  const repeatable: { name: string; description: string }[] = [];
  for (const name of names) {
    // A prefix, a version (none for R), `__`, a description, `.sql`; anything else (callbacks such as
    // afterMigrate.sql, notes, other tools' files) is not a migration to Flyway.
    const sep = name.indexOf('__');
    const prefix = name[0] ?? '';
    if (sep < 1 || !['V', 'R', 'U', 'B'].includes(prefix) || !name.endsWith('.sql') || sep + 2 >= name.length - 4)
      continue;
    const version = name.slice(1, sep);
    const description = name.slice(sep + 2, -'.sql'.length);
    if (prefix === 'U' || prefix === 'B') continue; // undo: never; baseline: only for an empty database
    if (prefix === 'R') {
      if (version !== '') continue; // not Flyway's R__
      repeatable.push({ name, description: description.replaceAll('_', ' ') });
      continue;
    }
    if (!FLYWAY_VERSION.test(version))
      return {
        invalid: `${name}: '${version}' is not a Flyway version (numbers separated by . or _, as in V1__, V1.1__, V2_1__)`,
      };
    versioned.push({ name, version: flywayVersion(version) });
  }
  versioned.sort((a, b) => compareVersions(a.version, b.version) || byName(a.name, b.name));
  for (let i = 1; i < versioned.length; i++) {
    if (compareVersions(versioned[i - 1]!.version, versioned[i]!.version) === 0)
      return {
        invalid: `${versioned[i - 1]!.name} and ${versioned[i]!.name} have the same version ${versioned[i]!.version.join('.')}; Flyway refuses that`,
      };
  }
  // Flyway applies repeatable migrations after the versioned ones, by description.
  repeatable.sort((a, b) => byName(a.description, b.description) || byName(a.name, b.name));
  for (let i = 1; i < repeatable.length; i++) {
    if (repeatable[i - 1]!.description === repeatable[i]!.description)
      return {
        invalid: `${repeatable[i - 1]!.name} and ${repeatable[i]!.name} have the same description; Flyway refuses that`,
      };
  }
  return {
    migrations: [...versioned.map((v) => one(v.name)), ...repeatable.map((r) => ({ name: r.name, repeatable: true }))],
  };
}

/** Prisma's migration folders in the order Prisma applies them: by name. */
export function prismaFolders(entries: Entry[]): string[] {
  return entries
    .filter((e) => e.type === 'dir')
    .map((e) => e.name)
    .sort(byName);
}

// ---------------------------------------------------------------- dbmate sections

const DBMATE_UP = /^--\s*migrate:up(\s*$|\s+\S+)/gm;
const DBMATE_DOWN = /^--\s*migrate:down(\s*$|\s+\S+)/gm;

/** dbmate's own messages for a file it will not run. */
export const DBMATE_ERRORS = {
  missingUp: "dbmate requires each migration to define an up block with '-- migrate:up'",
  missingDown: "dbmate requires each migration to define a down block with '-- migrate:down'",
  unexpectedStatement: "dbmate does not support statements preceding the '-- migrate:up' block",
  multipleDown: "dbmate requires every '-- migrate:down' to be preceded by a '-- migrate:up'",
} as const;

/**
 * What dbmate runs of a file: each `-- migrate:up` block up to its `-- migrate:down` (a file may
 * hold several up/down pairs). Everything else (the down blocks) is blanked to its line breaks, so
 * that a PostgreSQL error's position still points at the file's own line. A file dbmate would
 * refuse gets dbmate's reason instead.
 */
export function dbmateUpSections(text: string): { sql: string } | { invalid: string } {
  const ups = [...text.matchAll(DBMATE_UP)].map((m) => m.index);
  if (ups.length === 0) return { invalid: DBMATE_ERRORS.missingUp };
  const before = text.slice(0, ups[0]).split('\n');
  if (before.some((line) => !/^\s*$/.test(line) && !/^\s*--/.test(line)))
    return { invalid: DBMATE_ERRORS.unexpectedStatement };
  let sql = blank(text.slice(0, ups[0]));
  for (let i = 0; i < ups.length; i++) {
    const start = ups[i]!;
    const end = ups[i + 1] ?? text.length;
    const section = text.slice(start, end);
    const downs = [...section.matchAll(DBMATE_DOWN)].map((m) => m.index);
    if (downs.length > 1) return { invalid: DBMATE_ERRORS.multipleDown };
    if (downs.length === 0) return { invalid: DBMATE_ERRORS.missingDown };
    sql += section.slice(0, downs[0]) + blank(section.slice(downs[0]));
  }
  return { sql };
}

/** Only the line breaks of `s`. */
const blank = (s: string): string => s.replace(/[^\n]+/g, '');

// ---------------------------------------------------------------- supabase seed

/** Supabase's seed file: `seed.sql` beside the migrations folder (`supabase/seed.sql`). */
export function supabaseSeedPath(folder: string): { parent: string; path: string } {
  const i = folder.lastIndexOf('/');
  const parent = i < 0 ? '' : folder.slice(0, i);
  return { parent, path: parent === '' ? 'seed.sql' : `${parent}/seed.sql` };
}

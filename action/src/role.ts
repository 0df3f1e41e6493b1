/**
 * The `role` input: a login role on the branch that is not a superuser, for apps that must not run
 * as one. It owns the database and its objects, so the app can use (and migrate) its own schema,
 * but it cannot make roles, read other roles' secrets (pg_authid) or reach the server's files.
 *
 * Its password is derived from the branch's own (HMAC-SHA-256 keyed with it): random to anyone
 * without the branch's password, the same on every run and for `command: get` (an app deployed
 * with it keeps working after the next push), new when the branch is made anew, and it cannot be
 * turned back into the branch's password. Anyone who has the branch's password is a superuser of
 * the branch and could set the role's password anyway. The server gets a SCRAM verifier, never the
 * password itself, so not even a statement log on the branch can show it.
 */
import { createHmac } from 'node:crypto';
import pg from 'pg';
import type { BranchView } from '../../agent/api/schemas.js';
import { scramVerifier } from '../../agent/drivers/postgres.js';
import { pgClientConfig } from '../../shared/pg-config.js';
import { ActionError } from './errors.js';

export type BranchConnection = BranchView['connection'];

export interface RoleCredentials {
  user: string;
  password: string;
  /** The branch's connection string with the role's user and password (through the router when the agent runs one). */
  uri: string;
}

/** 32 URL-safe characters, as the agent's own passwords: nothing to escape in a URI. */
export function rolePassword(branchPassword: string, role: string): string {
  return createHmac('sha256', branchPassword).update(`betterpg/role/${role}`).digest('base64url').slice(0, 32);
}

export function roleCredentials(c: BranchConnection, role: string): RoleCredentials {
  const password = rolePassword(c.password, role);
  const u = new URL(c.uri);
  u.username = role;
  u.password = password;
  return { user: role, password, uri: u.toString() };
}

/**
 * Our session's settings in the startup packet, which win over what the branch's SQL may have set
 * for the superuser (ALTER ROLE … SET: a search_path that puts its own functions first, a 1 ms
 * statement_timeout, read-only transactions). Bounded waits: a lock the branch holds fails the step.
 */
const SESSION_OPTIONS = [
  'search_path=pg_catalog',
  'default_transaction_read_only=off',
  'statement_timeout=120000',
  'lock_timeout=30000',
]
  .map((o) => `-c ${o}`)
  .join(' ');

/**
 * Everything in one transaction, from the superuser's session. `__ROLE__` is replaced by the role's
 * name as a literal (it is checked to be [a-z0-9_] anyway; the names of the branch's objects, which
 * the pull request chose, only ever go through format('%I')). Objects owned by a superuser in the
 * database's own schemas are given to the role: the database, its schemas (public among them),
 * tables, views, sequences (those of a column follow their table), functions, procedures,
 * aggregates, domains, enums, range and composite types; extensions' objects stay as they are.
 */
const ENSURE_ROLE_SQL = `
DO $role$
DECLARE
  r text := __ROLE__;
  o record;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
    EXECUTE format('CREATE ROLE %I LOGIN', r);
  END IF;
  -- Whatever the branch's SQL (or the parent) made of it before: a plain login role again.
  EXECUTE format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT -1 VALID UNTIL %L PASSWORD %L',
    r, 'infinity', __VERIFIER__);
  EXECUTE format('ALTER ROLE %I RESET ALL', r);
  EXECUTE format('ALTER ROLE %I IN DATABASE %I RESET ALL', r, current_database());
  -- Membership is how a role becomes another (SET ROLE): of a superuser, of pg_execute_server_program, ...
  FOR o IN SELECT m.roleid::regrole::text AS granted, m.grantor::regrole::text AS grantor
      FROM pg_auth_members m WHERE m.member = r::regrole LOOP
    IF current_setting('server_version_num')::int >= 160000 THEN
      EXECUTE format('REVOKE %s FROM %I GRANTED BY %s CASCADE', o.granted, r, o.grantor);
    ELSE
      EXECUTE format('REVOKE %s FROM %I CASCADE', o.granted, r);
    END IF;
  END LOOP;

  EXECUTE format('ALTER DATABASE %I OWNER TO %I', current_database(), r);
  FOR o IN SELECT n.oid, n.nspname FROM pg_namespace n
      WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
        AND n.nspowner IN (SELECT oid FROM pg_roles WHERE rolsuper)
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('ALTER SCHEMA %I OWNER TO %I', o.nspname, r);
  END LOOP;
  FOR o IN SELECT c.oid, c.relkind, format('%I.%I', n.nspname, c.relname) AS name
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
        AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
        AND c.relowner IN (SELECT oid FROM pg_roles WHERE rolsuper)
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND (d.deptype = 'e' OR (c.relkind = 'S' AND d.deptype IN ('a', 'i') AND d.refclassid = 'pg_class'::regclass)))
  LOOP
    EXECUTE format('ALTER %s %s OWNER TO %I',
      CASE o.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
      o.name, r);
  END LOOP;
  FOR o IN SELECT p.oid::regprocedure::text AS name, p.prokind
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
        AND p.proowner IN (SELECT oid FROM pg_roles WHERE rolsuper)
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('ALTER %s %s OWNER TO %I',
      CASE o.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END, o.name, r);
  END LOOP;
  FOR o IN SELECT t.oid::regtype::text AS name, t.typtype
      FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
      LEFT JOIN pg_class c ON c.oid = t.typrelid
      WHERE (t.typtype IN ('d', 'e', 'r') OR (t.typtype = 'c' AND c.relkind = 'c'))
        AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
        AND t.typowner IN (SELECT oid FROM pg_roles WHERE rolsuper)
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('ALTER %s %s OWNER TO %I', CASE o.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, o.name, r);
  END LOOP;
END
$role$`;

async function superuserSession(c: BranchConnection): Promise<pg.Client> {
  const client = new pg.Client({
    ...pgClientConfig(c),
    connectionTimeoutMillis: 30_000,
    application_name: 'betterpg-action',
    options: SESSION_OPTIONS,
  });
  client.on('error', () => {}); // the branch going away fails the next query instead
  await client.connect();
  return client;
}

/** A PostgreSQL error as one line: its message and SQLSTATE (never the statement: it holds the verifier). */
function sqlError(e: unknown): string {
  const err = e as { message?: string; code?: string };
  return `${err.message ?? String(e)}${err.code ? ` (SQLSTATE ${err.code})` : ''}`;
}

/**
 * Makes (or brings back in line) the role on the branch and gives it the database's objects.
 * Idempotent: run before `migrate` (the migration may grant to the role) and again after it (what
 * the migration made, as the superuser, is given to the role too).
 */
export async function ensureRole(c: BranchConnection, role: string): Promise<RoleCredentials> {
  if (role === c.user)
    throw new ActionError(`input role: '${role}' is the branch's superuser; choose another name for the app's role`);
  const creds = roleCredentials(c, role);
  let client: pg.Client | null = null;
  try {
    client = await superuserSession(c);
    const literal = (v: string) => () => client!.escapeLiteral(v); // a function: `$` in the value stays `$`
    const sql = ENSURE_ROLE_SQL.replace('__ROLE__', literal(role)).replace(
      '__VERIFIER__',
      literal(scramVerifier(creds.password)),
    );
    await client.query(`BEGIN; ${sql}; COMMIT`);
  } catch (e) {
    if (e instanceof ActionError) throw e;
    throw new ActionError(`could not make role ${role} on the branch: ${sqlError(e)}`, { cause: e });
  } finally {
    await client?.end().catch(() => {});
  }
  return creds;
}

/**
 * For `command: get`: the role's credentials, after checking that they log in (nothing is made or
 * changed). A branch without the role (or with another password) is a clear failure.
 */
export async function checkRole(c: BranchConnection, role: string): Promise<RoleCredentials> {
  const creds = roleCredentials(c, role);
  const client = new pg.Client({
    ...pgClientConfig({ ...c, user: creds.user, password: creds.password }),
    connectionTimeoutMillis: 30_000,
    application_name: 'betterpg-action',
  });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
  } catch (e) {
    const code = (e as { code?: string }).code;
    const why =
      code === '28P01' || code === '28000'
        ? `role ${role} does not exist on the branch or has another password; run the action with command create and role ${role} first`
        : `role ${role} cannot log in to the branch: ${sqlError(e)}`;
    throw new ActionError(why, { cause: e });
  } finally {
    await client.end().catch(() => {});
  }
  return creds;
}

import type pg from 'pg';
import { BpgError, conflict, describe, invalid } from '../errors.js';
import { parseBranchRef, printable, refName, type BranchRef } from '../names.js';
import type { BranchRecord, DatabaseRecord } from '../state/schema.js';
import { target } from './containers.js';
import type { EngineContext } from './context.js';
import { assertBranchIdle, requireBranch, requireDatabase } from './rules.js';
import { CATALOG_LIMITS, readCatalog } from './schema-catalog.js';
import { compareSchemas, type SchemaDiff } from './schema-compare.js';
import { buildModel, type SchemaModel } from './schema-model.js';

export type { SchemaDiff } from './schema-compare.js';

/**
 * `bpg branch diff`, `GET .../schema-diff`: what a branch changed in the schema compared with its
 * parent (or another branch of the same database). Both branches' catalogs are read on their own
 * servers, which must be running: a stopped branch is a 409 that says how to start it (reading its
 * schema is not worth starting it behind the user's back).
 */

/** Bytes one branch's server may send while its schema is read (the catalog reader bounds each kind below this). */
export const SCHEMA_READ_MAX_BYTES = 64 * 1024 * 1024;
/** The whole read of one branch, ms: past it the session is closed. */
export const SCHEMA_READ_TIMEOUT_MS = 120_000;

export async function schemaDiff(
  ctx: EngineContext,
  ref: BranchRef,
  o: { against?: BranchRef } = {},
): Promise<SchemaDiff> {
  const s = await ctx.store.read();
  const b = requireBranch(s, ref);
  const db = requireDatabase(s, ref.database);
  let other: BranchRef;
  if (o.against !== undefined) {
    if (o.against.database !== ref.database)
      throw invalid(
        `a schema diff compares two branches of one database: '${refName(o.against)}' is not a branch of '${ref.database}'`,
      );
    other = o.against;
  } else {
    if (b.parent === null)
      throw invalid(
        `branch '${refName(ref)}' has no parent to compare with: name another branch of '${ref.database}' (--against, ?against=)`,
      );
    other = parseBranchRef(b.parent);
  }
  const a = requireBranch(s, other);
  await Promise.all([assertReadable(ctx, a), assertReadable(ctx, b)]);
  const [before, after] = await Promise.all([readModel(ctx, a, db), readModel(ctx, b, db)]);
  return compareSchemas(before, after, { branch: refName(b), against: refName(a) });
}

/** Running, with no operation on it, and its container up. */
async function assertReadable(ctx: EngineContext, b: BranchRecord): Promise<void> {
  const key = refName(b);
  assertBranchIdle(b);
  if (b.status !== 'running') {
    const why = b.status === 'stopped' && b.stoppedBy === 'idle' ? 'stopped (idle)' : b.status;
    throw conflict(`branch '${key}' is ${why}: start it ('bpg start ${key}') to read its schema`);
  }
  const st = await ctx.docker.state(b.container);
  if (!st?.running)
    throw conflict(
      `branch '${key}' is not running (its container is ${st ? st.status : 'missing'}): 'bpg restart ${key}'`,
    );
}

async function readModel(ctx: EngineContext, b: BranchRecord, db: DatabaseRecord): Promise<SchemaModel> {
  let timedOut = false;
  try {
    const catalog = await ctx.pg.withClient(
      target(ctx, b, db),
      (c: pg.Client) => {
        const timer = setTimeout(() => {
          timedOut = true;
          void c.end().catch(() => {});
        }, SCHEMA_READ_TIMEOUT_MS);
        return readCatalog(c, CATALOG_LIMITS).finally(() => clearTimeout(timer));
      },
      { maxReadBytes: SCHEMA_READ_MAX_BYTES },
    );
    return buildModel(catalog);
  } catch (e) {
    if (e instanceof BpgError) throw e;
    // The message may come from the branch's server: one line, printable, short.
    const why = timedOut ? `not read within ${SCHEMA_READ_TIMEOUT_MS / 1000} s` : printable(describe(e)).slice(0, 300);
    throw new BpgError('failed', `could not read the schema of '${refName(b)}': ${why}`, { cause: e });
  }
}

/**
 * The faces' side of the schema diff (the agent's `GET …/schema-diff`): what a pull request's
 * branch changed in the schema compared with its parent, for the comment. Advice for the
 * reviewer, never a reason to fail: an agent without the route (older) gives nothing, any other
 * failure (the parent stopped, ...) a short reason in its place.
 */
import { BpgApiError, type BpgClient } from '../agent/api/client.js';
import type { SchemaDiff } from '../agent/api/schemas.js';

export type SchemaDiffOutcome = { diff: SchemaDiff } | { unavailable: string };

/** Null when the agent has no schema diff (an older agent). Never throws. */
export async function getSchemaDiff(
  client: Pick<BpgClient, 'schemaDiff'>,
  db: string,
  branch: string,
  onProblem: (message: string) => void = () => {},
): Promise<SchemaDiffOutcome | null> {
  try {
    return { diff: await client.schemaDiff(db, branch) };
  } catch (e) {
    // 404 for a branch that was just made or found: the route is missing, not the branch.
    if (e instanceof BpgApiError && e.status === 404) return null;
    const why =
      e instanceof BpgApiError && e.status
        ? `the agent answered ${e.status} ${e.code}: ${e.message}`
        : ((e as Error)?.message ?? String(e));
    onProblem(why);
    return { unavailable: why };
  }
}

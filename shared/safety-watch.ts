/**
 * The faces' side of the migration safety report (the agent's `POST …/watches`): start a watch
 * before a migration, stop it after, whatever the migration did. The report is advice for the
 * reviewer, never a reason to fail: an agent without the route (older than the report) gives no
 * report, and any other failure gives a short reason in its place.
 */
import { BpgApiError, type BpgClient } from '../agent/api/client.js';
import type { SafetyReport } from '../agent/api/schemas.js';

/** What a watched migration tells the comment: the agent's report, or why there is none. */
export type SafetyOutcome = { report: SafetyReport } | { unavailable: string };

export interface SafetyWatch {
  /**
   * Ends the watch and answers its report; null when the agent has no watches (an older agent).
   * Never throws; call it once, also when the migration failed (a watch nobody stops holds one of
   * the agent's 64 until it ends by itself after an hour).
   */
  stop(): Promise<SafetyOutcome | null>;
}

type WatchClient = Pick<BpgClient, 'startWatch' | 'stopWatch'>;

/** The stop counts the rows of every table touched (up to 50 tables, 5 s each): more than a usual call. */
const STOP_TIMEOUT_MS = 600_000;

function why(e: unknown): string {
  if (e instanceof BpgApiError) return e.status ? `the agent answered ${e.status} ${e.code}: ${e.message}` : e.message;
  return (e as Error)?.message ?? String(e);
}

/**
 * Starts watching `db/branch` (it must be running). `onProblem` hears why a report will be
 * missing (for a warning in the log); the comment gets the same reason from `stop()`.
 */
export async function startSafetyWatch(
  client: WatchClient,
  db: string,
  branch: string,
  onProblem: (message: string) => void = () => {},
): Promise<SafetyWatch> {
  let id: string;
  try {
    id = (await client.startWatch(db, branch)).id;
  } catch (e) {
    // 404 right after the branch was made or found: the route is missing, not the branch.
    if (e instanceof BpgApiError && e.status === 404) return { stop: async () => null };
    const reason = `could not start watching the migration: ${why(e)}`;
    onProblem(reason);
    return { stop: async () => ({ unavailable: reason }) };
  }
  let done: Promise<SafetyOutcome> | null = null;
  return {
    stop() {
      done ??= client.stopWatch(db, branch, id, { timeoutMs: STOP_TIMEOUT_MS }).then(
        (report) => ({ report }),
        (e: unknown) => {
          // 404 here: the watch is gone (the agent restarted, or it ran past its hour).
          const reason = `could not get the report: ${why(e)}`;
          onProblem(reason);
          return { unavailable: reason };
        },
      );
      return done;
    },
  };
}

import { nameProblem, type BranchRef } from '../names.js';

/**
 * Which branch a connection asks for. Two ways, and main when neither names a branch:
 * - the database name `<db>@<branch>` (every client can send it);
 * - the TLS SNI host name `<branch>.<db>.<domain>` with the database name `<db>`.
 * Pure: the router looks the answer up in the state afterwards.
 */
export type Routing = { ok: true; ref: BranchRef } | { ok: false; message: string };

export function routeOf(database: string, serverName: string | null, domain: string | null): Routing {
  const fromSni = domain && serverName ? sniRef(serverName, domain) : null;
  const at = database.indexOf('@');
  if (at >= 0) {
    const ref = { database: database.slice(0, at), branch: database.slice(at + 1) };
    if (!valid(ref)) return { ok: false, message: `database "${safe(database)}" does not exist` };
    return { ok: true, ref };
  }
  if (fromSni) {
    if (fromSni.database.toLowerCase() !== database.toLowerCase())
      return {
        ok: false,
        message: `the host name names database "${safe(fromSni.database)}" but the connection asks for "${safe(database)}"`,
      };
    return valid({ database, branch: fromSni.branch })
      ? { ok: true, ref: { database, branch: fromSni.branch } }
      : { ok: false, message: `database "${safe(database)}" does not exist` };
  }
  if (nameProblem('database', database) !== null)
    return { ok: false, message: `database "${safe(database)}" does not exist` };
  return { ok: true, ref: { database, branch: 'main' } };
}

/** `<branch>.<db>.<domain>` → the two labels; null when the name is not under the domain or has other labels. */
function sniRef(serverName: string, domain: string): BranchRef | null {
  const name = serverName.toLowerCase().replace(/\.$/, '');
  const suffix = `.${domain.toLowerCase()}`;
  if (!name.endsWith(suffix)) return null;
  const labels = name.slice(0, -suffix.length).split('.');
  if (labels.length !== 2) return null;
  return { branch: labels[0]!, database: labels[1]! };
}

const valid = (r: BranchRef) =>
  nameProblem('database', r.database) === null && nameProblem('branch', r.branch) === null;

/** A client's name in a message: printable, at most 80 characters. */
export function safe(v: string): string {
  const s = v.replace(/[^\x20-\x7e]/g, '?');
  return s.length > 80 ? `${s.slice(0, 80)}…` : s;
}

/**
 * Who may call what. A token has a role (api.tokens[].role) and may be limited to some databases
 * (api.tokens[].databases); BPG_API_TOKEN and requests on the agent's local socket are admin.
 *
 *  - read:  every GET route (reads, status, schema diffs, WAL info, openapi.json, /metrics);
 *  - write: read, and every change to databases, branches and snapshots (create and delete
 *           included), migration watches and WAL cleanup;
 *  - admin: write, and the doctor (its report and its repairs): it looks at the whole host, every
 *           database's datasets, containers and files, and repairs any of them.
 *
 * One table decides, and both the server (which enforces it) and openapi.json (which states it,
 * as `x-betterpg-role`) read it from here.
 */

export const ROLES = ['read', 'write', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** Who a request comes from: a token's name, role and databases (null: every database). */
export interface Principal {
  name: string;
  role: Role;
  databases: ReadonlySet<string> | null;
}

/** A request on the agent's own unix socket (file permissions are the check): admin, named `local`. */
export const LOCAL_PRINCIPAL: Principal = Object.freeze({ name: 'local', role: 'admin', databases: null });

const RANK: Record<Role, number> = { read: 0, write: 1, admin: 2 };

export const allows = (has: Role, needs: Role): boolean => RANK[has] >= RANK[needs];

/** Routes that need more than their method says (`GET` read, anything else write). */
const ADMIN_ROUTES = new Set(['GET /v1/doctor', 'POST /v1/doctor/fix']);

/** Routes that see the whole host: a token limited to some databases may not call them. */
export const WHOLE_HOST_ROUTES: ReadonlySet<string> = ADMIN_ROUTES;

/**
 * The role a route needs; `path` in OpenAPI style (`/v1/databases/{db}`). `none`: /v1/health,
 * which needs no token at all.
 */
export function routeRole(method: string, path: string): Role | 'none' {
  const m = method.toUpperCase();
  if (path === '/v1/health') return 'none';
  if (ADMIN_ROUTES.has(`${m} ${path}`)) return 'admin';
  return m === 'GET' || m === 'HEAD' ? 'read' : 'write';
}

/** One line for openapi.json's descriptions. */
export function roleLine(role: Role | 'none'): string {
  switch (role) {
    case 'none':
      return 'Role: none (no token needed).';
    case 'read':
      return 'Role: read (any token; a token limited to some databases sees only those).';
    case 'write':
      return 'Role: write (tokens with role write or admin; a token limited to some databases only for those).';
    case 'admin':
      return 'Role: admin (a token with role admin and no databases list, BPG_API_TOKEN, or the local socket).';
  }
}

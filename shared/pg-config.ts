/**
 * node-postgres settings for a branch's connection, with libpq's meaning of `sslmode`.
 *
 * Through the router the agent hands out `sslmode=require`: encrypt, but do not verify the
 * certificate (libpq's meaning; the router's may be self-signed). node-postgres's own
 * connection-string parser (pg-connection-string 2.x) reads `sslmode=require` as verify-full, which
 * refuses such a certificate; so the client is configured from the fields, never from the uri.
 *
 * Pure: a type import of pg only, nothing loaded at run time.
 */
import type { ClientConfig } from 'pg';

/** A branch's connection as the agent returns it (BranchView['connection'], or its `direct`). */
export interface PgTarget {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /** `require`: TLS without verifying the certificate; null or absent: plaintext. */
  sslmode?: 'require' | null;
}

/** host, port, user, password, database, and `ssl` as libpq's sslmode says. */
export function pgClientConfig(t: PgTarget): ClientConfig {
  return {
    host: t.host,
    port: t.port,
    user: t.user,
    password: t.password,
    database: t.database,
    ssl: t.sslmode === 'require' ? { rejectUnauthorized: false } : false,
  };
}

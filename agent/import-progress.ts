/**
 * What an import (or the import inside a refresh) has done so far, and its one-line form for
 * stderr. Light on purpose: the engine fills it in (engine/import-build.ts), and the CLI prints it
 * both in process and from an agent's operation (cli/remote.ts), whose path loads no engine module.
 */
export interface ImportProgress {
  phase: 'check' | 'dump' | 'restore' | 'analyze' | 'basebackup' | 'recover' | 'done';
  /** Bytes written so far in this phase (the dump folder, or the data directory). */
  bytes: number;
  /** The source database's size, when known (pg_database_size at the start). */
  totalBytes: number | null;
  /** Tables dumped so far (dump), or the tables the dump holds (restore). */
  tables: number;
  totalTables: number | null;
  bytesPerSecond: number;
  elapsedMs: number;
}

/** Bytes as MB with one decimal. */
export const mb = (n: number) => `${(n / 1024 ** 2).toFixed(1)} MB`;

/** `dump: 120.0 MB written (database ~1024.0 MB), 3 of ~4 tables, 12.0 MB/s, 10 s` */
export function progressLine(p: ImportProgress): string {
  const of = (n: number, t: number | null, f: (x: number) => string) => (t ? `${f(n)} of ~${f(t)}` : f(n));
  // A dump is compressed: its bytes are not comparable with the database's size.
  const bytes =
    p.phase === 'dump'
      ? `${mb(p.bytes)} written${p.totalBytes ? ` (database ~${mb(p.totalBytes)})` : ''}`
      : of(p.bytes, p.totalBytes, mb);
  const parts = [`${p.phase}: ${bytes}`];
  if (p.phase === 'dump') parts.push(`${of(p.tables, p.totalTables, String)} tables`);
  else if (p.totalTables !== null && p.phase !== 'done') parts.push(`${p.totalTables} tables`);
  parts.push(`${mb(p.bytesPerSecond)}/s`, `${(p.elapsedMs / 1000).toFixed(0)} s`);
  return parts.join(', ');
}

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Running `bpg` (or any command) as a child in the unit tier: this file loads nothing of the stack
 * (no ZFS, Docker or PostgreSQL helpers), so *.unit.test.ts files may import it.
 */
export const BPG = fileURLToPath(new URL('../../../bin/bpg.js', import.meta.url));
/** The same CLI from tsc's modules, not the bundle: for tests of which modules a command loads. */
export const BPG_UNBUNDLED = fileURLToPath(new URL('./bpg-unbundled.js', import.meta.url));
/** What in a bundle chunk shows it holds yaml or imports the engine's libraries. */
export const ENGINE_CHUNK = /YAMLParseError|from ["'](dockerode|pg|express|prom-client|undici)["']/;
/** What in a bundle chunk shows it holds zod. */
export const ZOD_CHUNK = /ZodType/;

/** The bundle's chunks (build/cli) among a run's loaded module URLs whose code matches one of `markers`. */
export function bundleChunksWith(loaded: string[], ...markers: RegExp[]): string[] {
  return loaded.filter(
    (u) => /\/build\/cli\/[^/]+\.js$/.test(u) && markers.some((m) => m.test(readFileSync(fileURLToPath(u), 'utf8'))),
  );
}
/** A config path that does not exist: a command that got as far as the engine fails on it. */
export const NO_CONFIG = '/nonexistent/bpg-unit-test/config.yaml';

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `cmd args` with exactly `env`; `stdin` is written to it when given (else no stdin). */
export function runChild(cmd: string, args: string[], env: NodeJS.ProcessEnv, stdin?: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: [stdin == null ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d) => (stdout += d));
    child.stderr?.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    if (stdin != null) child.stdin?.end(stdin);
  });
}

import { execFile } from 'node:child_process';

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    const detail = stderr.trim().split('\n').filter(Boolean).pop() ?? `exit code ${exitCode}`;
    super(`${command} ${args[0] ?? ''}: ${detail}`);
    this.name = 'CommandError';
  }
}

/** Runs a program with an argument array (never a shell string) and returns its stdout. */
export function run(command: string, args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      command,
      args,
      { timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } },
      (err, stdout, stderr) => {
        if (err) {
          const code =
            typeof (err as NodeJS.ErrnoException).code === 'number' ? (err as unknown as { code: number }).code : null;
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
            reject(new CommandError(command, args, null, `${command}: command not found`));
            return;
          }
          reject(new CommandError(command, args, code, String(stderr || err.message)));
          return;
        }
        resolve(String(stdout));
      },
    );
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

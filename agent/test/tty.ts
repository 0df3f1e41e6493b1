import { spawn } from 'node:child_process';

/**
 * Runs `argv` on a pseudo-terminal (python3's pty module: Node has none) and returns what it wrote
 * there, stdout and stderr together, as a terminal shows them. `env` is added to this process's,
 * less what makes Node's own colour check answer "no colours" on any terminal (CI=true, as CI
 * systems set it, and NODE_DISABLE_COLORS): the tests stand for a person's terminal. An undefined
 * value in `env` removes a variable.
 */
const ON_A_TTY = `
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
out = b''
while True:
    try:
        d = os.read(fd, 65536)
    except OSError:
        break
    if not d:
        break
    out += d
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
`;

export function onTty(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const merged: NodeJS.ProcessEnv = { ...process.env, CI: undefined, NODE_DISABLE_COLORS: undefined, ...env };
    for (const k of ['CI', 'NODE_DISABLE_COLORS']) if (merged[k] === undefined) delete merged[k];
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete merged[k];
    const child = spawn('python3', ['-c', ON_A_TTY, ...argv], { env: merged, stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout }));
  });
}

/**
 * Which engine a command runs on: a remote agent when one is set (remote-target.ts), else
 * `bpg serve` on this host through its local socket when it answers (its locks, admission and
 * metrics then cover CLI work), else the engine in this process. `--local` forces the last.
 */
import { agentSocketPath, socketAnswers } from '../api/local-socket.js';
import { readStateDir } from '../config-file.js';
import { invalid } from '../errors.js';
import type { Logger } from '../log.js';
import { openEngine, type CliEngine } from './engine.js';
import { resolveTarget, type TargetFlags } from './remote-target.js';

export async function openCliEngine(flags: TargetFlags, log: Logger): Promise<CliEngine> {
  const target = await resolveTarget(flags);
  if (target) {
    log.debug(`agent ${target.url} (${target.source})`);
    return (await import('./remote.js')).remoteEngine(target, log);
  }
  if (!flags.local) {
    const remote = import('./remote.js'); // read while the socket is looked for
    remote.catch(() => {});
    // The socket's folder without validating the whole config (yaml and zod's config schema cost
    // ~60 ms): the daemon validated it when it started; the in-process engine below validates it.
    const stateDir = await readStateDir();
    const path = stateDir === null ? null : agentSocketPath(stateDir);
    if (path !== null && (await socketAnswers(path))) {
      log.debug(`through bpg serve on ${path}`);
      return (await remote).socketEngine(path, log);
    }
  }
  return openEngine(log);
}

/** Refuses `command` (exit 2) when a remote agent is set: it would run here, not there. */
export async function refuseIfRemote(command: string, flags: TargetFlags): Promise<void> {
  const target = await resolveTarget(flags);
  if (target)
    throw invalid(
      `'bpg ${command}' runs only on the agent's host, and a remote agent is set (${target.source}): run it there, or pass --local`,
    );
}

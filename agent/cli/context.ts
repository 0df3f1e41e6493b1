import type { Engine } from '../engine/engine.js';
import type { CliEngine } from './engine.js';
import type { Output } from './output.js';

/** What every command is handed: the one writer, and the engine (opened on first use). */
export interface CliContext {
  out: Output;
  /** The agent the command talks to: remote (--agent, env, context), `bpg serve` on this host, or in-process. */
  engine: () => Promise<CliEngine>;
  /** The in-process engine, for commands that run only on the agent's host (`bpg housekeep`). */
  localEngine: () => Promise<Engine>;
}

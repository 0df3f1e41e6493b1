import type { Engine } from '../engine/engine.js';
import type { Logger } from '../log.js';

/** What every command is handed: the engine, opened on first use, and the logger for progress. */
export interface CliContext {
  engine: () => Promise<Engine>;
  log: () => Logger;
}

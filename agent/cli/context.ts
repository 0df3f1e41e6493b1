import type { CliEngine } from './engine.js';
import type { Output } from './output.js';

/** What every command is handed: the one writer, and the engine (opened on first use). */
export interface CliContext {
  out: Output;
  engine: () => Promise<CliEngine>;
}

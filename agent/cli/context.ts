import type { Engine } from '../engine/engine.js';
import type { Output } from './output.js';

/** What every command is handed: the one writer, and the engine (opened on first use). */
export interface CliContext {
  out: Output;
  engine: () => Promise<Engine>;
}

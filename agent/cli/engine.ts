/**
 * The CLI's one door into agent/engine: every operation a command runs is a method of the Engine
 * facade, which openEngine() returns; no other module of agent/cli loads agent/engine at run time
 * (the others import its types only).
 *
 * Loaded on demand: dockerode and pg cost ~0.3 s of start-up that --help and bad input need not pay.
 */
import { loadConfig } from '../config.js';
import type { Engine } from '../engine/engine.js';
import type { Logger } from '../log.js';

/** Everything the CLI asks of the engine: the facade itself. */
export type CliEngine = Engine;

/** Reads the config (BPG_CONFIG) and opens the engine on it. */
export async function openEngine(log: Logger): Promise<CliEngine> {
  const [{ Engine }, cfg] = await Promise.all([import('../engine/engine.js'), loadConfig()]);
  return new Engine(cfg, { log });
}

/** `--pitr` and `--now`: ISO 8601 with a zone, or e.g. '2 hours ago' (checked before the engine opens). */
export async function parseTime(text: string): Promise<Date> {
  return (await import('../engine/pitr.js')).parseTime(text);
}

/** `--from-url` and the flags that go with it, checked before the engine opens (one clear line). */
export async function checkSourceInput(input: import('../engine/import-source.js').SourceInput): Promise<void> {
  (await import('../engine/import-source.js')).checkSourceInput(input);
}

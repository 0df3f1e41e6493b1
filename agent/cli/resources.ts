import { Option } from 'commander';
import { parseSize } from '../size.js';
import { describe, invalid } from '../errors.js';

export const memoryOption = () =>
  new Option('--memory <size>', 'container memory, e.g. 512m, 1g (default: postgres.memory; at most limits.maxMemory)');
export const cpusOption = () =>
  new Option('--cpus <n>', 'container CPUs, e.g. 0.5, 2 (default: postgres.cpus; at most limits.maxCpus)');
export const diskOption = (what: string) =>
  new Option('--disk <size>', `ZFS quota of its dataset, e.g. 5g, 100g (${what}; at most limits.maxDisk)`);

export interface Resources {
  memory?: number;
  cpus?: number;
  disk?: number;
}

function size(flag: string, text: string): number {
  try {
    return parseSize(text);
  } catch (e) {
    throw invalid(`${flag}: ${describe(e)}`);
  }
}

/** `--memory 1g --cpus 2 --disk 5g` as the engine takes them (the engine checks them against the limits). */
export function resources(o: { memory?: string; cpus?: string; disk?: string }): Resources {
  const out: Resources = {};
  if (o.disk !== undefined) out.disk = size('--disk', o.disk);
  if (o.memory !== undefined) out.memory = size('--memory', o.memory);
  if (o.cpus !== undefined) {
    if (!/^\d+(\.\d+)?$/.test(o.cpus)) throw invalid(`--cpus must be a number of CPUs (e.g. 0.5, 2), not '${o.cpus}'`);
    out.cpus = Number(o.cpus);
  }
  return out;
}

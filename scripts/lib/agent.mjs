/** What the benchmark scripts that run an agent of their own share: the checkout's CLI, `bpg init`, cleanup. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { must, run } from './bench.mjs';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BPG_JS = join(ROOT, 'bin', 'bpg.js');
export const IMAGE = 'betterpg/postgres:15-local';

/**
 * `bpg init` of an agent of the benchmark's own: dataset base `base` on `pool`, state folder
 * `stateDir`, ports `ports` ("lo-hi"), the local image; `args` are added at the end, `env` names the
 * config file (BPG_CONFIG) unless `args` does.
 */
export const bpgInit = ({ pool, base, stateDir, ports, env, args = [], bpgJs = BPG_JS }) =>
  must(
    process.execPath,
    [
      bpgJs,
      'init',
      '--pool',
      pool,
      '--dataset-base',
      base,
      '--image',
      IMAGE,
      '--state-dir',
      stateDir,
      '--port-range',
      ports,
      ...args,
    ],
    env ? { env } : undefined,
  );

/** Ctrl-C runs `cleanup` once and exits 130; a second Ctrl-C exits at once. */
export function cleanupOnInterrupt(log, cleanup) {
  let cleaning = false;
  process.on('SIGINT', () => {
    if (cleaning) process.exit(130);
    cleaning = true;
    log('interrupted: cleaning up');
    cleanup().finally(() => process.exit(130));
  });
}

/** Writes `data` to .bench/<kind>-<date>.json in the checkout; returns the file's path. */
export function writeBenchJson(kind, data) {
  mkdirSync(join(ROOT, '.bench'), { recursive: true });
  const file = join(ROOT, '.bench', `${kind}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(data, null, 2));
  return file;
}

/**
 * `zfs destroy -r` of a benchmark's dataset base, retried (zfs-fuse answers "dataset is busy" at
 * random) until it is gone. It unmounts nothing: after an interrupt a container may still use a
 * dataset, and unmounting under it keeps the dataset busy until the container is removed.
 */
export async function destroyBase(ds) {
  for (let i = 0; i < 10; i++) {
    const r = await run('zfs', ['destroy', '-r', ds]);
    if (r.code === 0 || /does not exist/.test(r.stderr)) break;
    await new Promise((res) => setTimeout(res, 1000 * (i + 1)));
  }
}

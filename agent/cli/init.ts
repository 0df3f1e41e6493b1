import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import type { ConfigInput } from '../config.js';
import { configPath, DEFAULT_STATE_DIR } from '../config-file.js';
import { BpgError, invalid } from '../errors.js';
import { jsonOption, outputOption, type Output } from './output.js';

/** `bpg init`: writes the config file (needs no engine). */
export function registerInitCommand(program: Command, out: Output): void {
  program
    .command('init')
    .description(`write the config file (${configPath()}; BPG_CONFIG overrides the path)`)
    .option('--pool <pool>', 'ZFS pool', 'tank')
    .option('--dataset-base <name>', 'dataset under the pool that holds everything', 'betterpg')
    .option('--image <image>', 'PostgreSQL image for new databases', 'postgres:17')
    .option('--state-dir <dir>', 'state and WAL archives', DEFAULT_STATE_DIR)
    .option('--bind-address <ip>', 'address branch ports are published on', '127.0.0.1')
    .option('--public-host <host>', 'host name put in connection strings', '127.0.0.1')
    .option('--port-range <from-to>', 'ports for branches', '15432-16431')
    .option('--force', 'overwrite an existing config file')
    .addOption(outputOption())
    .addOption(jsonOption())
    .action(async (o) => {
      const path = configPath();
      if (existsSync(path) && !o.force)
        throw new BpgError('conflict', `${path} already exists (use --force to overwrite)`);
      const m = /^(\d+)-(\d+)$/.exec(o.portRange);
      if (!m) throw invalid(`--port-range must look like 15432-16431`);
      const input: ConfigInput = {
        zfs: { pool: o.pool, datasetBase: o.datasetBase },
        postgres: {
          image: o.image,
          bindAddress: o.bindAddress,
          publicHost: o.publicHost,
          portRange: [Number(m[1]), Number(m[2])],
        },
        stateDir: o.stateDir,
      };
      const cfg = await (await import('../config.js')).writeConfig(input, path);
      out.result(o, { path, config: cfg }, () => `wrote ${path}\n`);
    });
}

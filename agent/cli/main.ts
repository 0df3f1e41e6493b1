import { Command, CommanderError, Option } from 'commander';
import { loadConfig, parseSize, writeConfig, configPath, type ConfigInput } from '../config.js';
import { BpgError, describe, invalid } from '../errors.js';
import type { Engine } from '../engine/engine.js';
import { createLogger } from '../log.js';
import { parseBranchRef, parseDatabaseName, parseImage, parseSnapshotId } from '../names.js';
import { branchDetail, branchTable, databaseTable, printJson, statusText } from './output.js';
import { registerHistoryCommands, registerMoveCommands } from './history.js';
import { registerDoctorCommand } from './doctor.js';
import { registerExpiryCommands, ttlOption } from './expiry.js';

interface Globals {
  debug?: boolean;
  quiet?: boolean;
}

const program = new Command('bpg')
  .description('BetterPG: instant PostgreSQL branches on ZFS')
  .option('--debug', 'log every step, and show stack traces on error')
  .option('-q, --quiet', 'no progress on stderr')
  .showHelpAfterError(false)
  .configureOutput({ outputError: (str, write) => write(str.split('\n')[0] + '\n') })
  .exitOverride();

const globals = (): Globals => program.opts<Globals>();
const log = () => createLogger({ debug: globals().debug, quiet: globals().quiet });
async function engine(): Promise<Engine> {
  // Loaded on demand: dockerode and pg cost ~0.3 s of start-up that --help and bad input need not pay.
  const [{ Engine }, cfg] = await Promise.all([import('../engine/engine.js'), loadConfig()]);
  return new Engine(cfg, { log: log() });
}
const json = new Option('--json', 'print JSON on stdout');
const memory = () => new Option('--memory <size>', 'container memory, e.g. 512m, 1g (default: postgres.memory; at most limits.maxMemory)');
const cpus = () => new Option('--cpus <n>', 'container CPUs, e.g. 0.5, 2 (default: postgres.cpus; at most limits.maxCpus)');
const disk = (what: string) => new Option('--disk <size>', `ZFS quota of its dataset, e.g. 5g, 100g (${what}; at most limits.maxDisk)`);

/** `--memory 1g --cpus 2 --disk 5g` as the engine takes them (the engine checks them against the limits). */
function resources(o: { memory?: string; cpus?: string; disk?: string }): { memory?: number; cpus?: number; disk?: number } {
  const out: { memory?: number; cpus?: number; disk?: number } = {};
  if (o.disk !== undefined) {
    try {
      out.disk = parseSize(o.disk);
    } catch (e) {
      throw invalid(`--disk: ${describe(e)}`);
    }
  }
  if (o.memory !== undefined) {
    try {
      out.memory = parseSize(o.memory);
    } catch (e) {
      throw invalid(`--memory: ${describe(e)}`);
    }
  }
  if (o.cpus !== undefined) {
    if (!/^\d+(\.\d+)?$/.test(o.cpus)) throw invalid(`--cpus must be a number of CPUs (e.g. 0.5, 2), not '${o.cpus}'`);
    out.cpus = Number(o.cpus);
  }
  return out;
}

program
  .command('init')
  .description(`write the config file (${configPath()}; BPG_CONFIG overrides the path)`)
  .option('--pool <pool>', 'ZFS pool', 'tank')
  .option('--dataset-base <name>', 'dataset under the pool that holds everything', 'betterpg')
  .option('--image <image>', 'PostgreSQL image for new databases', 'postgres:17')
  .option('--state-dir <dir>', 'state and WAL archives', '/var/lib/betterpg')
  .option('--bind-address <ip>', 'address branch ports are published on', '127.0.0.1')
  .option('--public-host <host>', 'host name put in connection strings', '127.0.0.1')
  .option('--port-range <from-to>', 'ports for branches', '15432-16431')
  .option('--force', 'overwrite an existing config file')
  .addOption(json)
  .action(async (o) => {
    const { existsSync } = await import('node:fs');
    const path = configPath();
    if (existsSync(path) && !o.force) throw new BpgError('conflict', `${path} already exists (use --force to overwrite)`);
    const m = /^(\d+)-(\d+)$/.exec(o.portRange);
    if (!m) throw invalid(`--port-range must look like 15432-16431`);
    const input: ConfigInput = {
      zfs: { pool: o.pool, datasetBase: o.datasetBase },
      postgres: { image: o.image, bindAddress: o.bindAddress, publicHost: o.publicHost, portRange: [Number(m[1]), Number(m[2])] },
      stateDir: o.stateDir,
    };
    const cfg = await writeConfig(input, path);
    if (o.json) printJson({ path, config: cfg });
    else process.stdout.write(`wrote ${path}\n`);
  });

const db = program.command('db').description('databases (each has a main branch)');

db.command('create <db>')
  .description('create a database and its main branch')
  .option('--image <image>', 'PostgreSQL image (default: postgres.image from the config)')
  .addOption(memory())
  .addOption(cpus())
  .addOption(disk('default: none for main'))
  .addOption(json)
  .action(async (name: string, o) => {
    parseDatabaseName(name);
    if (o.image !== undefined) parseImage(o.image);
    const res = await (await engine()).createDatabase(name, { image: o.image, ...resources(o) });
    log().info(`created ${res.branch.name} in ${res.totalMs} ms`);
    if (o.json) printJson(res.branch);
    else process.stdout.write(branchDetail(res.branch));
  });

db.command('list')
  .description('list databases')
  .addOption(json)
  .action(async (o) => {
    const dbs = await (await engine()).listDatabases();
    if (o.json) printJson(dbs);
    else process.stdout.write(databaseTable(dbs));
  });

db.command('get <db>')
  .description('show one database and its branches')
  .addOption(json)
  .action(async (name: string, o) => {
    const d = await (await engine()).getDatabase(parseDatabaseName(name));
    if (o.json) printJson(d);
    else process.stdout.write(`database ${d.name} (image ${d.image}, created ${d.createdAt})\n` + branchTable(d.branches));
  });

db.command('delete <db>')
  .description('delete a database with its main branch')
  .option('--force', 'also delete every other branch of it')
  .addOption(json)
  .action(async (name: string, o) => {
    await (await engine()).deleteDatabase(parseDatabaseName(name), { force: o.force });
    if (o.json) printJson({ deleted: name });
    else process.stdout.write(`deleted database ${name}\n`);
  });

const branch = program.command('branch').description('branches: <db>/<branch>');

branch
  .command('create <branch>')
  .description('create a branch (application-consistent by default)')
  .option('--from <branch>', 'parent branch (default: <db>/main)')
  .option('--fast', 'crash-consistent: CHECKPOINT then snapshot, no backup mode')
  .option('--from-snapshot <id>', 'clone a kept snapshot (bpg snapshot list)')
  .option('--pitr <time>', "point-in-time recovery of --from: ISO 8601 with zone, or e.g. '2 hours ago'")
  .addOption(memory())
  .addOption(cpus())
  .addOption(disk('default: postgres.diskQuota'))
  .option('--ttl <duration>', "delete it this long after creation (30m, 12h, 7d; 'none': never; pr-<n> branches default to expiry.prBranchTtl)")
  .option('--protect', 'never delete it by expiry nor stop it when idle')
  .addOption(json)
  .action(async (name: string, o) => {
    const ref = parseBranchRef(name);
    const from = o.from !== undefined ? parseBranchRef(o.from, ref.database) : undefined; // --from '' is an error, not main
    const pitr = o.pitr === undefined ? undefined : (await import('../engine/pitr.js')).parseTime(o.pitr);
    if (o.fromSnapshot !== undefined) parseSnapshotId(o.fromSnapshot);
    const ttlMs = o.ttl === undefined ? undefined : ttlOption(o.ttl);
    const res = await (await engine()).createBranch(ref, { from, fast: o.fast, fromSnapshot: o.fromSnapshot, pitr, ttlMs, protect: o.protect, ...resources(o) });
    log().info(`created ${res.branch.name} from ${res.branch.parent} in ${res.totalMs} ms`);
    if (o.json) printJson(res.branch);
    else process.stdout.write(branchDetail(res.branch));
  });

branch
  .command('list [db]')
  .description('list branches (of one database, or all)')
  .addOption(json)
  .action(async (name: string | undefined, o) => {
    const list = await (await engine()).listBranches(name === undefined ? undefined : parseDatabaseName(name));
    if (o.json) printJson(list);
    else process.stdout.write(branchTable(list));
  });

branch
  .command('get <branch>')
  .description('show one branch with its connection string')
  .addOption(json)
  .action(async (name: string, o) => {
    const b = await (await engine()).getBranch(parseBranchRef(name));
    if (o.json) printJson(b);
    else process.stdout.write(branchDetail(b));
  });

branch
  .command('delete <branch>')
  .description('delete a branch and everything it owns')
  .option('--force', 'also delete its child branches')
  .addOption(json)
  .action(async (name: string, o) => {
    const deleted = await (await engine()).deleteBranch(parseBranchRef(name), { force: o.force });
    if (o.json) printJson({ deleted });
    else process.stdout.write(deleted.map((d) => `deleted branch ${d}\n`).join(''));
  });

for (const verb of ['start', 'stop', 'restart'] as const) {
  program
    .command(`${verb} <branch>`)
    .description(`${verb} a branch's PostgreSQL (port and password stay)`)
    .addOption(json)
    .action(async (name: string, o) => {
      const b = await (await engine())[verb](parseBranchRef(name));
      if (o.json) printJson(b);
      else process.stdout.write(`${b.name} ${b.status} on port ${b.port}\n`);
    });
}

program
  .command('status')
  .description('pool usage, counts by status, limits, and every branch with its size, WAL and expiry')
  .addOption(json)
  .action(async (o) => {
    const s = await (await engine()).status();
    if (o.json) printJson(s);
    else process.stdout.write(statusText(s));
  });

program
  .command('serve')
  .description('run the agent daemon: the HTTP API on api.listen, JSON-line logs on stderr')
  .option('--listen <host:port>', 'address to listen on (default: api.listen from the config)')
  .option('--allow-plaintext', 'plain HTTP on a non-loopback address without api.tls (same as api.allowPlaintext)')
  .action(async (o) => {
    // Loaded on demand like engine(): express and the engine are only needed here.
    const [{ serve }, { warnIfShared }, cfg] = await Promise.all([import('../api/serve.js'), import('../api/transport.js'), loadConfig()]);
    const serveLog = createLogger({ json: true, debug: globals().debug });
    if (cfg.api.tokens.length) await warnIfShared(configPath(), 'config file with api.tokens', serveLog);
    const server = await serve(cfg, { listen: o.listen, allowPlaintext: o.allowPlaintext, log: serveLog });
    await server.closed;
  });

registerHistoryCommands(program, engine);
registerMoveCommands(db, branch, engine);
registerDoctorCommand(program, engine);
registerExpiryCommands(program, branch, engine);

export async function main(argv: string[]): Promise<number> {
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version exit 0; usage errors were already printed on one line
      return e.exitCode === 0 ? 0 : 1;
    }
    if (globals().debug && e instanceof Error) process.stderr.write((e.stack ?? String(e)) + '\n');
    process.stderr.write(`error: ${describe(e)}\n`);
    return 1;
  }
}

const code = await main(process.argv);
process.exitCode = code;

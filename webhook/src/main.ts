/**
 * `bpg-webhook [--config <file>]`: the GitHub webhook receiver. Reads the config (or the file named
 * by BPG_WEBHOOK_CONFIG), starts the receiver, stops cleanly on SIGTERM/SIGINT.
 */
import { parseArgs } from 'node:util';
import { describe } from '../../agent/errors.js';
import { createLogger } from '../../agent/log.js';
import { DEFAULT_WEBHOOK_CONFIG, ENV, loadWebhookConfig } from './config.js';
import { startReceiver } from './receiver.js';

const USAGE = `Usage: bpg-webhook [--config <file>] [--listen host:port]

Receives GitHub pull_request deliveries and gives every pull request of the configured
repositories a database branch, its SQL migrations, a comment and a commit status.

  --config <file>     YAML config (default: $${ENV.config}, else ${DEFAULT_WEBHOOK_CONFIG})
  --listen host:port  overrides listen from the config
  -h, --help
`;

async function main(): Promise<void> {
  let args;
  try {
    args = parseArgs({
      options: { config: { type: 'string' }, listen: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    }).values;
  } catch (e) {
    process.stderr.write(`error: ${describe(e)}\n${USAGE}`);
    process.exit(2);
  }
  if (args.help) {
    process.stdout.write(USAGE);
    return;
  }
  const log = createLogger({ json: true });
  const path = args.config ?? process.env[ENV.config] ?? DEFAULT_WEBHOOK_CONFIG;
  const cfg = await loadWebhookConfig(path);
  const receiver = await startReceiver(cfg, { log, listen: args.listen });

  const onSignal = (signal: NodeJS.Signals) => {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    log.info(`${signal}: stopping (queued work stays on disk; send it again to stop at once)`);
    process.once(signal, () => process.exit(130));
    void receiver.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

main().catch((e) => {
  process.stderr.write(`error: ${describe(e)}\n`);
  process.exit(1);
});

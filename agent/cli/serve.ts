import type { Command } from 'commander';
import { configPath } from '../config-file.js';
import type { Output } from './output.js';

/** `bpg serve`: the agent daemon. Its logs are JSON lines on stderr, not the CLI's text. */
export function registerServeCommand(program: Command, out: Output): void {
  program
    .command('serve')
    .description(
      'run the agent daemon: the HTTP API on api.listen and, for bpg on this host, on <stateDir>/agent.sock; JSON-line logs on stderr',
    )
    .option('--listen <host:port>', 'address to listen on (default: api.listen from the config)')
    .option('--allow-plaintext', 'plain HTTP on a non-loopback address without api.tls (same as api.allowPlaintext)')
    .action(async (o) => {
      // Loaded on demand: express and the engine are only needed here.
      const [{ serve }, { warnIfShared }, { agentSocketPath }, cfg] = await Promise.all([
        import('../api/serve.js'),
        import('../api/transport.js'),
        import('../api/local-socket.js'),
        import('../config.js').then((c) => c.loadConfig()),
      ]);
      const serveLog = out.daemonLog();
      if (cfg.api.tokens.length) await warnIfShared(configPath(), 'config file with api.tokens', serveLog);
      const server = await serve(cfg, {
        listen: o.listen,
        allowPlaintext: o.allowPlaintext,
        log: serveLog,
        socket: agentSocketPath(cfg.stateDir),
      });
      await server.closed;
    });
}

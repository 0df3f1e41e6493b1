/**
 * Shared by the receiver's stack tests: a real agent in this process (serve() on the real stack
 * from BPG_CONFIG), the receiver as a process of its own, and (re-exported) the fixtures that need
 * no stack (fixtures.ts: payloads, signatures, config, waiting).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { BpgClient } from '../../agent/api/client.js';
import { serve, type RunningServer } from '../../agent/api/serve.js';
import { loadConfig } from '../../agent/config.js';

export * from './fixtures.js';

export const BPG_WEBHOOK = fileURLToPath(new URL('../../../bin/bpg-webhook.js', import.meta.url));

import { recorder, type LogLine as Line } from '../../agent/test/helpers.js';
export { recorder, type Line };

export interface TestAgent {
  server: RunningServer;
  client: BpgClient;
  token: string;
  log: ReturnType<typeof recorder>;
  close(): Promise<void>;
}

/**
 * A real agent (the HTTP API over the engine, ZFS, Docker) in this process, on a free port; on the
 * shared test state, or on the config at `configPath` (e.g. one with the router on).
 */
export async function startAgent(configPath?: string): Promise<TestAgent> {
  const cfg = await loadConfig(configPath);
  const token = `tok-${randomBytes(16).toString('hex')}`;
  const log = recorder();
  const server = await serve(
    { ...cfg, api: { ...cfg.api, listen: '127.0.0.1:0', tokens: [{ name: 'webhook-tests', token }] } },
    { listen: '127.0.0.1:0', log, handleSignals: false, env: {} },
  );
  const client = new BpgClient({ baseUrl: server.url, token });
  return { server, client, token, log, close: () => server.close() };
}

export interface ReceiverProcess {
  url: string;
  child: ChildProcess;
  lines: Line[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Runs `bin/bpg-webhook.js --config <file>` as a process of its own; resolves once it listens. */
export async function spawnReceiver(configFile: string, env: Record<string, string> = {}): Promise<ReceiverProcess> {
  const child = spawn(process.execPath, [BPG_WEBHOOK, '--config', configFile], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const lines: Line[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.on('exit', (code, signal) => r({ code, signal })),
  );
  let buf = '';
  const url = new Promise<string>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const text = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (process.env.BPG_TEST_VERBOSE) process.stderr.write(`[receiver] ${text}\n`);
        try {
          const l = JSON.parse(text) as Line;
          lines.push(l);
          if (l.msg === 'listening') resolve(String(l.url));
        } catch {
          lines.push({ level: 'raw', msg: text });
        }
      }
    });
    void exited.then(({ code, signal }) =>
      reject(
        new Error(`bpg-webhook exited (${code ?? signal}) before listening: ${lines.map((l) => l.msg).join(' | ')}`),
      ),
    );
  });
  return { url: await url, child, lines, exited };
}

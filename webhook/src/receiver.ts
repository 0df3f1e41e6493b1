/**
 * The receiver process, wired: on-disk store -> queue (resumes what a previous run left) -> HTTP
 * server. main.ts runs it from the command line; the tests start it in-process.
 */
import { createServer } from 'node:http';
import { BpgClient } from '../../agent/api/client.js';
import { listenOn } from '../../agent/api/listen.js';
import { describe } from '../../agent/errors.js';
import type { Logger } from '../../agent/log.js';
import type { WebhookConfig } from './config.js';
import { GitHub } from './github.js';
import { isPermanent, reportFailure, runJob, type LifecycleDeps } from './lifecycle.js';
import { JobQueue } from './queue.js';
import { createWebhookApp } from './server.js';
import { JobStore } from './store.js';

export interface Receiver {
  /** http://host:port */
  url: string;
  queue: JobQueue;
  /** Stops accepting; running jobs get `graceMs` to finish, the rest waits on disk for the next start. */
  close(graceMs?: number): Promise<void>;
}

export async function startReceiver(cfg: WebhookConfig, opts: { log: Logger; listen?: string }): Promise<Receiver> {
  const { log } = opts;
  const store = new JobStore(cfg.stateDir);
  const { jobs, skipped } = await store.open();
  if (skipped)
    log.warn('skipped torn records in the queue journal (a kill mid-write; they were never acknowledged)', { skipped });

  const deps: LifecycleDeps = {
    cfg,
    log,
    // Retries of connection errors stay short: the queue retries the whole job with its own backoff.
    agent: new BpgClient({ baseUrl: cfg.agent.url, token: cfg.agent.token, ca: cfg.agent.ca, retries: 2 }),
    github: new GitHub(cfg.github.auth, cfg.github.apiUrl, log),
  };
  const queue = new JobQueue({
    store,
    log,
    ...cfg.queue,
    run: (job) => runJob(deps, job),
    isPermanent,
    giveUp: (job, err) => reportFailure(deps, job, err),
  });

  const server = createServer(createWebhookApp({ cfg, queue, log }));
  // A slow or stuck sender must not hold a connection: GitHub sends a delivery in one go.
  server.requestTimeout = 15_000;
  server.headersTimeout = 10_000;
  const { url } = await listenOn(server, opts.listen ?? cfg.listen);
  log.info('listening', {
    url,
    path: cfg.path,
    repos: Object.keys(cfg.repos),
    agent: cfg.agent.url,
    github: cfg.github.apiUrl,
    auth: cfg.github.auth.kind,
    queued: jobs.length,
  });
  queue.resume(jobs);

  let closing: Promise<void> | null = null;
  return {
    url,
    queue,
    close(graceMs = 30_000) {
      closing ??= (async () => {
        const serverClosed = new Promise<void>((r) => server.close(() => r()));
        server.closeIdleConnections();
        const finished = await queue.stop(graceMs);
        if (!finished) log.warn('stopping with work still running: it runs again after the next start');
        server.closeAllConnections();
        await store.close();
        await serverClosed.catch((e) => log.warn(`closing the server: ${describe(e)}`));
        log.info('stopped', { queued: queue.size });
      })();
      return closing;
    },
  };
}

/**
 * The HTTP face: one POST route. Verification comes first: the body is read with a cap, then its
 * X-Hub-Signature-256 is checked with @octokit/webhooks' `verify` (constant time); a missing or bad
 * signature gets 401 and nothing else happens. Only then are headers and payload looked at, and the
 * delivery is queued on disk and answered (202) without waiting for the work. A delivery whose id,
 * or whose exact body, was queued before is answered 200 `duplicate` and not worked on again.
 *
 * Not the stock middleware: it answers a bad signature with 400 and logs the whole payload and a
 * stack trace; here nothing of a payload is ever logged.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import express, { type Request, type Response } from 'express';
import { Webhooks } from '@octokit/webhooks';
import { describe } from '../../agent/errors.js';
import type { Logger } from '../../agent/log.js';
import type { WebhookConfig } from './config.js';
import { routeDelivery } from './events.js';
import type { JobQueue } from './queue.js';
import { DELIVERY_ID } from './store.js';

/** GitHub caps payloads at 25 MB, but pull_request deliveries are tens of KiB. */
export const MAX_BODY_BYTES = 1024 * 1024;

const SIGNATURE = /^sha256=[0-9a-f]{64}$/;

export interface ServerDeps {
  cfg: WebhookConfig;
  queue: JobQueue;
  log: Logger;
}

type Outcome = { status: number; body: Record<string, unknown>; log: Record<string, unknown> };

class TooLarge extends Error {}

/** The body, or TooLarge past `cap` bytes (announced or actual). */
function readBody(req: IncomingMessage, cap: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const announced = Number(req.headers['content-length']);
    if (Number.isFinite(announced) && announced > cap) return reject(new TooLarge());
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > cap) {
        req.removeAllListeners('data');
        req.pause();
        reject(new TooLarge());
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** application/json, or the form encoding GitHub offers too (`payload=<json>`). */
function parsePayload(body: string, contentType: string | undefined): unknown {
  if (contentType?.startsWith('application/x-www-form-urlencoded')) {
    const p = new URLSearchParams(body).get('payload');
    if (p === null) throw new Error('form body without payload');
    return JSON.parse(p);
  }
  return JSON.parse(body);
}

export function createWebhookApp(d: ServerDeps): express.Express {
  const webhooks = new Webhooks({ secret: d.cfg.secret });
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok', queued: d.queue.size });
  });

  const handle = async (req: Request): Promise<Outcome> => {
    const signature = req.get('x-hub-signature-256');
    if (!signature || !SIGNATURE.test(signature)) {
      return {
        status: 401,
        body: { error: 'missing or malformed X-Hub-Signature-256' },
        log: { reason: 'no signature' },
      };
    }
    let raw: Buffer;
    try {
      raw = await readBody(req, MAX_BODY_BYTES);
    } catch (e) {
      if (e instanceof TooLarge)
        return { status: 413, body: { error: `body over ${MAX_BODY_BYTES} bytes` }, log: { reason: 'too large' } };
      throw e;
    }
    const text = raw.toString('utf8');
    let valid: boolean;
    try {
      valid = await webhooks.verify(text, signature);
    } catch {
      valid = false;
    }
    if (!valid) return { status: 401, body: { error: 'signature does not match' }, log: { reason: 'bad signature' } };

    // Verified: from here on the sender is GitHub (or holds the secret).
    const event = req.get('x-github-event') ?? '';
    const id = req.get('x-github-delivery') ?? '';
    if (!/^[a-z_]{1,64}$/.test(event) || !DELIVERY_ID.test(id)) {
      return {
        status: 400,
        body: { error: 'missing X-GitHub-Event or X-GitHub-Delivery' },
        log: { reason: 'bad headers' },
      };
    }
    const fields = { delivery: id, event };
    if (event === 'ping') return { status: 200, body: { status: 'pong' }, log: fields };
    if (event !== 'pull_request')
      return {
        status: 200,
        body: { status: 'ignored', reason: `event ${event}` },
        log: { ...fields, ignored: 'event' },
      };

    let payload: unknown;
    try {
      payload = parsePayload(text, req.get('content-type'));
    } catch {
      return { status: 400, body: { error: 'payload is not JSON' }, log: { ...fields, reason: 'bad payload' } };
    }
    const routed = routeDelivery(d.cfg, id, event, payload);
    if ('ignored' in routed)
      return {
        status: 200,
        body: { status: 'ignored', reason: routed.ignored },
        log: { ...fields, ignored: routed.ignored },
      };
    const w = routed.work;
    // The signature covers the body, not the delivery id: the body is what was delivered.
    const digest = createHash('sha256').update(raw).digest('hex');
    const job = { ...w, seq: d.queue.nextSeq(), digest };
    const more = { ...fields, action: w.action, pr: w.key };
    const added = await d.queue.add(job);
    if (!added.accepted) {
      const body = {
        status: 'duplicate',
        delivery: id,
        ...(added.duplicate === 'body' ? { sameBodyAs: added.of } : {}),
      };
      return {
        status: 200,
        body,
        log: { ...more, duplicate: added.duplicate, ...(added.duplicate === 'body' ? { sameBodyAs: added.of } : {}) },
      };
    }
    return { status: 202, body: { status: 'queued', delivery: id }, log: { ...more, queued: true } };
  };

  app.post(d.cfg.path, (req: Request, res: Response) => {
    const t0 = performance.now();
    handle(req)
      .catch((e): Outcome => {
        d.log.warn(`delivery not accepted: ${describe(e)}`, { delivery: req.get('x-github-delivery') ?? null });
        return {
          status: 500,
          body: { error: 'could not queue the delivery; redeliver it' },
          log: { reason: 'internal' },
        };
      })
      .then((o) => {
        const line = { status: o.status, ms: Math.round(performance.now() - t0), ...o.log };
        if (o.status >= 400) d.log.warn('delivery refused', line);
        else d.log.info('delivery', line);
        // A refused body may still be arriving: do not keep reading it on this connection.
        if (o.status === 413 || o.status === 401) res.setHeader('Connection', 'close');
        res.status(o.status).json(o.body);
      });
  });

  app.use((_req, res) => {
    res.status(404).json({ error: 'not found' });
  });
  return app;
}

/**
 * What the receiver keeps on disk, so that a killed receiver loses nothing: one JSON-lines journal,
 * `<stateDir>/queue.jsonl`, with two kinds of records:
 *
 *   {"job": {...}}            a delivery accepted, a try of it started, or its retry state updated:
 *                             the last one wins
 *   {"done": "<id>", "at": …, "digest": …}  its work finished (or was given up); the id and the
 *                             digest of its body stay seen
 *
 * A delivery is answered 202 only after its record is fsynced, so a 202 is a promise kept across a
 * kill. Appends are group-committed: records that arrive while an fsync runs share the next one,
 * so a burst of deliveries costs a few fsyncs, not one each (fsync on a busy disk takes 100s of ms,
 * and GitHub wants its answer fast). A record torn by a kill was never acknowledged and is skipped.
 *
 * A delivery is known by its id and by the SHA-256 of its body: the signature covers the body only,
 * so a body sent again under a new X-GitHub-Delivery (a replay by whoever saw it once) is the same
 * delivery, and is not worked on twice.
 *
 * At start-up, and when the journal has grown well past what it holds, it is rewritten atomically
 * (temp file, fsync, rename, fsync of the folder) to the queued jobs and the ids and digests seen
 * in the last SEEN_KEEP_DAYS days.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';

/** GitHub lets an administrator redeliver deliveries of the last few days; keep ids well past that. */
export const SEEN_KEEP_DAYS = 30;
/** Rewrite the journal once it is this much bigger than a fresh one would be. */
const COMPACT_FACTOR = 4;
const COMPACT_MIN_BYTES = 4 * 1024 * 1024;

export const JobKind = z.enum(['open', 'push', 'close']);
export type JobKind = z.infer<typeof JobKind>;

/** The part of a pull_request delivery the work needs; the rest of the payload is not kept. */
export const Job = z.object({
  /** X-GitHub-Delivery */
  id: z.string(),
  /** Order of arrival: jobs of one pull request run in this order. */
  seq: z.number(),
  /** `owner/name#number`, lowercased: jobs with one key run one after another. */
  key: z.string(),
  kind: JobKind,
  /** The webhook action that made it (opened, reopened, synchronize, closed), for logs. */
  action: z.string(),
  owner: z.string(),
  repo: z.string(),
  number: z.number().int(),
  headSha: z.string(),
  /** A GitHub App's installation; null with a token. */
  installationId: z.number().int().nullable(),
  receivedAt: z.string(),
  /** Tries started so far: counted on disk before each one starts. */
  attempts: z.number().int(),
  /** Epoch ms before which the job does not run (backoff). */
  notBefore: z.number(),
  lastError: z.string().nullable(),
  /** Epoch ms the current try started; null between tries. Still set at start-up: that try was cut short. */
  startedAt: z.number().nullable().default(null),
  /** SHA-256 (hex) of the delivery's body; null in journals from before digests were kept. */
  digest: z.string().nullable().default(null),
});
export type Job = z.infer<typeof Job>;

const JournalLine = z.union([
  z.object({ job: Job }),
  z.object({ done: z.string(), at: z.string(), digest: z.string().nullish() }),
]);

/** Delivery ids are GUIDs; anything else is refused before it reaches the journal. */
export const DELIVERY_ID = /^[A-Za-z0-9-]{1,128}$/;

async function fsyncDir(dir: string): Promise<void> {
  const fd = await open(dir, 'r');
  try {
    await fd.sync();
  } finally {
    await fd.close();
  }
}

/** temp file, fsync, rename, fsync of the folder: the file is either the old or the new one. */
export async function writeAtomic(path: string, data: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fd = await open(tmp, 'w', 0o600);
  try {
    await fd.writeFile(data);
    await fd.sync();
  } finally {
    await fd.close();
  }
  await rename(tmp, path);
  await fsyncDir(dirname(path));
}

type JournalRecord = z.infer<typeof JournalLine>;

/** What `accept` says about a delivery. */
export type Accepted = { accepted: true } | { accepted: false; duplicate: 'id' | 'body'; of: string };

interface Waiting {
  record: JournalRecord;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class JobStore {
  readonly file: string;
  /** Queued jobs by id: what the journal says is not done. */
  private readonly queued = new Map<string, Job>();
  /** Done ids -> when they were received. */
  private readonly done = new Map<string, string>();
  /** Body digests of queued and done jobs -> the delivery id that brought them, and when. */
  private readonly digests = new Map<string, { id: string; at: string }>();
  /** Ids and digests accepted in memory whose record may still be on its way to disk. */
  private readonly accepting = new Map<string, string>();
  private fd: FileHandle | null = null;
  private waiting: Waiting[] = [];
  private flushing: Promise<void> | null = null;
  /** A failed write may have left half a line: start the next one on a fresh line. */
  private torn = false;
  private bytes = 0;
  private compactedBytes = 0;

  constructor(readonly stateDir: string) {
    this.file = join(stateDir, 'queue.jsonl');
  }

  /** Reads the journal (skipping torn records), compacts it and opens it for appending. */
  async open(now = new Date()): Promise<{ jobs: Job[]; skipped: number }> {
    await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    let text = '';
    try {
      text = await readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    let skipped = 0;
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      try {
        this.apply(JournalLine.parse(JSON.parse(line)));
      } catch {
        skipped++; // torn by a kill mid-append: that record was never acknowledged
      }
    }
    const cutoff = now.getTime() - SEEN_KEEP_DAYS * 86_400_000;
    for (const [id, at] of this.done) if (Date.parse(at) < cutoff) this.done.delete(id);
    for (const [digest, { id, at }] of this.digests)
      if (Date.parse(at) < cutoff && !this.queued.has(id)) this.digests.delete(digest);
    await this.compact();
    return { jobs: [...this.queued.values()].sort((a, b) => a.seq - b.seq), skipped };
  }

  async close(): Promise<void> {
    await this.flushing;
    await this.fd?.close();
    this.fd = null;
  }

  hasSeen(id: string): boolean {
    return this.queued.has(id) || this.done.has(id) || this.accepting.has(`id:${id}`);
  }

  /** The delivery id that brought a body with this digest, if one did. */
  bodySeen(digest: string): string | undefined {
    return this.digests.get(digest)?.id ?? this.accepting.get(`body:${digest}`);
  }

  /**
   * Marks the id and the body's digest seen at once (so a second copy arriving meanwhile is a
   * duplicate), then makes the job durable. A delivery seen before, by its id or its body, is not.
   */
  async accept(job: Job): Promise<Accepted> {
    if (!DELIVERY_ID.test(job.id)) throw new Error(`bad delivery id '${job.id}'`);
    if (this.hasSeen(job.id)) return { accepted: false, duplicate: 'id', of: job.id };
    const of = job.digest === null ? undefined : this.bodySeen(job.digest);
    if (of !== undefined) return { accepted: false, duplicate: 'body', of };
    const keys = [`id:${job.id}`, ...(job.digest === null ? [] : [`body:${job.digest}`])];
    for (const k of keys) this.accepting.set(k, job.id);
    try {
      await this.append({ job });
    } finally {
      // On failure both are free again: a redelivery must be able to try once more.
      for (const k of keys) this.accepting.delete(k);
    }
    return { accepted: true };
  }

  /** Records a queued job's new state: a try starting, or the retry after a failed one. */
  save(job: Job): Promise<void> {
    return this.append({ job });
  }

  /** The work is done (or given up): the job leaves the queue, its id and digest stay seen. */
  remove(job: Job): Promise<void> {
    return this.append({ done: job.id, at: job.receivedAt, ...(job.digest === null ? {} : { digest: job.digest }) });
  }

  /** What a record means for the in-memory view; the same on replay as when written. */
  private apply(r: JournalRecord): void {
    if ('job' in r) {
      if (this.done.has(r.job.id)) return;
      this.queued.set(r.job.id, r.job);
      if (r.job.digest !== null) this.digests.set(r.job.digest, { id: r.job.id, at: r.job.receivedAt });
    } else {
      this.queued.delete(r.done);
      this.done.set(r.done, r.at);
      if (r.digest) this.digests.set(r.digest, { id: r.done, at: r.at });
    }
  }

  private append(record: JournalRecord): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ record, resolve, reject });
      this.flushing ??= this.flush().finally(() => (this.flushing = null));
    });
  }

  /** Writes and fsyncs everything waiting, in batches, until nothing is. */
  private async flush(): Promise<void> {
    while (this.waiting.length) {
      const batch = this.waiting;
      this.waiting = [];
      const data = (this.torn ? '\n' : '') + batch.map((w) => JSON.stringify(w.record) + '\n').join('');
      try {
        if (!this.fd) throw new Error('the queue journal is not open');
        await this.fd.appendFile(data);
        await this.fd.sync();
        this.torn = false;
        this.bytes += Buffer.byteLength(data);
        // Applied here, before any compaction below, so that a snapshot never misses a record.
        for (const w of batch) this.apply(w.record);
        for (const w of batch) w.resolve();
      } catch (e) {
        this.torn = true;
        for (const w of batch) w.reject(e);
      }
      if (this.bytes > Math.max(COMPACT_MIN_BYTES, COMPACT_FACTOR * this.compactedBytes)) {
        // Between batches nothing else writes: safe to swap the file under the handle.
        await this.compact().catch(() => {});
      }
    }
  }

  /** Rewrites the journal to what it holds now (queued jobs first, then done ids) and reopens it. */
  private async compact(): Promise<void> {
    const digestOf = new Map([...this.digests].map(([digest, { id }]) => [id, digest]));
    const doneLine = (done: string, at: string) => {
      const digest = digestOf.get(done);
      return JSON.stringify(digest === undefined ? { done, at } : { done, at, digest });
    };
    const lines = [
      ...[...this.queued.values()].map((job) => JSON.stringify({ job })),
      ...[...this.done].map(([done, at]) => doneLine(done, at)),
    ];
    const data = lines.map((l) => l + '\n').join('');
    await writeAtomic(this.file, data);
    await this.fd?.close();
    this.fd = await open(this.file, 'a', 0o600);
    this.bytes = this.compactedBytes = Buffer.byteLength(data);
    this.torn = false;
    // Leftovers of a compaction killed before its rename (ours was just renamed away).
    for (const name of await readdir(this.stateDir)) {
      if (name.startsWith('queue.jsonl.tmp-')) await rm(join(this.stateDir, name), { force: true }).catch(() => {});
    }
  }
}

/**
 * What the receiver keeps on disk, so that a killed receiver loses nothing: one JSON-lines journal,
 * `<stateDir>/queue.jsonl`, with two kinds of records:
 *
 *   {"job": {...}}            a delivery accepted (or its retry state updated): the last one wins
 *   {"done": "<id>", "at": …} its work finished (or was given up); the id stays seen
 *
 * A delivery is answered 202 only after its record is fsynced, so a 202 is a promise kept across a
 * kill. Appends are group-committed: records that arrive while an fsync runs share the next one,
 * so a burst of deliveries costs a few fsyncs, not one each (fsync on a busy disk takes 100s of ms,
 * and GitHub wants its answer fast). A record torn by a kill was never acknowledged and is skipped.
 *
 * At start-up, and when the journal has grown well past what it holds, it is rewritten atomically
 * (temp file, fsync, rename, fsync of the folder) to the queued jobs and the ids seen in the last
 * SEEN_KEEP_DAYS days.
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
  /** Tries that failed so far. */
  attempts: z.number().int(),
  /** Epoch ms before which the job does not run (backoff). */
  notBefore: z.number(),
  lastError: z.string().nullable(),
});
export type Job = z.infer<typeof Job>;

const JournalLine = z.union([z.object({ job: Job }), z.object({ done: z.string(), at: z.string() })]);

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
  /** Ids accepted in memory whose record may still be on its way to disk. */
  private readonly accepting = new Set<string>();
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
    await this.compact();
    return { jobs: [...this.queued.values()].sort((a, b) => a.seq - b.seq), skipped };
  }

  async close(): Promise<void> {
    await this.flushing;
    await this.fd?.close();
    this.fd = null;
  }

  hasSeen(id: string): boolean {
    return this.queued.has(id) || this.done.has(id) || this.accepting.has(id);
  }

  /**
   * Marks the id seen at once (so a second copy arriving meanwhile is a duplicate), then makes the
   * job durable. Returns false for an id seen before.
   */
  async accept(job: Job): Promise<boolean> {
    if (!DELIVERY_ID.test(job.id)) throw new Error(`bad delivery id '${job.id}'`);
    if (this.hasSeen(job.id)) return false;
    this.accepting.add(job.id);
    try {
      await this.append({ job });
    } finally {
      // On failure the id is free again: a redelivery must be able to try once more.
      this.accepting.delete(job.id);
    }
    return true;
  }

  /** Records a queued job's new retry state. */
  save(job: Job): Promise<void> {
    return this.append({ job });
  }

  /** The work is done (or given up): the job leaves the queue, its id stays seen. */
  remove(job: Job): Promise<void> {
    return this.append({ done: job.id, at: job.receivedAt });
  }

  /** What a record means for the in-memory view; the same on replay as when written. */
  private apply(r: JournalRecord): void {
    if ('job' in r) {
      if (!this.done.has(r.job.id)) this.queued.set(r.job.id, r.job);
    } else {
      this.queued.delete(r.done);
      this.done.set(r.done, r.at);
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
    const lines = [...[...this.queued.values()].map((job) => JSON.stringify({ job })), ...[...this.done].map(([done, at]) => JSON.stringify({ done, at }))];
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

/**
 * What the receiver keeps on disk under `stateDir`, so that a killed receiver loses nothing:
 *
 *   jobs/<delivery id>.json   one file per queued delivery, written atomically (temp, fsync,
 *                             rename, fsync of the folder); removed when its work is done
 *   seen.jsonl                delivery ids already accepted, one JSON line each, appended with
 *                             fsync; compacted at start-up to the last SEEN_KEEP_DAYS days
 *
 * A delivery is accepted only once its job file is on disk, so a 202 is a promise kept across a
 * kill. The job file itself also marks its id as seen (for a kill between the two writes).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';

/** GitHub lets an administrator redeliver deliveries of the last few days; keep ids well past that. */
export const SEEN_KEEP_DAYS = 30;

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

const SeenLine = z.object({ id: z.string(), at: z.string() });

/** Delivery ids are GUIDs; anything else never becomes a file name. */
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
  const dir = join(path, '..');
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fd = await open(tmp, 'w', 0o600);
  try {
    await fd.writeFile(data);
    await fd.sync();
  } finally {
    await fd.close();
  }
  await rename(tmp, path);
  await fsyncDir(dir);
}

export class JobStore {
  readonly jobsDir: string;
  readonly seenFile: string;
  private seen = new Map<string, string>();

  constructor(readonly stateDir: string) {
    this.jobsDir = join(stateDir, 'jobs');
    this.seenFile = join(stateDir, 'seen.jsonl');
  }

  /** Creates the folders, reads queued jobs and seen ids, drops leftovers of a killed write. */
  async open(now = new Date()): Promise<{ jobs: Job[]; unreadable: string[] }> {
    await mkdir(this.jobsDir, { recursive: true, mode: 0o700 });
    const jobs: Job[] = [];
    const unreadable: string[] = [];
    for (const name of await readdir(this.jobsDir)) {
      const path = join(this.jobsDir, name);
      if (name.includes('.tmp-')) {
        await rm(path, { force: true }); // a write that never reached its rename
        continue;
      }
      if (!name.endsWith('.json')) continue;
      try {
        jobs.push(Job.parse(JSON.parse(await readFile(path, 'utf8'))));
      } catch {
        // Cannot happen with atomic writes short of disk damage; keep the file for a human.
        unreadable.push(name);
        await rename(path, `${path}.unreadable`).catch(() => {});
      }
    }

    let text = '';
    try {
      text = await readFile(this.seenFile, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    const cutoff = now.getTime() - SEEN_KEEP_DAYS * 86_400_000;
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const s = SeenLine.parse(JSON.parse(line));
        if (Date.parse(s.at) >= cutoff) this.seen.set(s.id, s.at);
      } catch {
        // A torn last line from a kill mid-append: that delivery's job file (if any) still counts.
      }
    }
    for (const j of jobs) if (!this.seen.has(j.id)) this.seen.set(j.id, j.receivedAt);
    await writeAtomic(this.seenFile, [...this.seen].map(([id, at]) => JSON.stringify({ id, at }) + '\n').join(''));
    return { jobs: jobs.sort((a, b) => a.seq - b.seq), unreadable };
  }

  hasSeen(id: string): boolean {
    return this.seen.has(id);
  }

  /**
   * Marks the id seen in memory at once (so a second copy arriving meanwhile is a duplicate), then
   * writes the job and appends the id. Returns false for an id seen before.
   */
  async accept(job: Job): Promise<boolean> {
    if (this.seen.has(job.id)) return false;
    this.seen.set(job.id, job.receivedAt);
    try {
      await this.save(job);
    } catch (e) {
      this.seen.delete(job.id); // not accepted: a redelivery must be able to try again
      throw e;
    }
    const fd = await open(this.seenFile, 'a', 0o600);
    try {
      await fd.appendFile(JSON.stringify({ id: job.id, at: job.receivedAt }) + '\n');
      await fd.sync();
    } finally {
      await fd.close();
    }
    return true;
  }

  async save(job: Job): Promise<void> {
    await writeAtomic(this.jobPath(job.id), JSON.stringify(job) + '\n');
  }

  /** The work is done (or given up): the id stays seen. */
  async remove(id: string): Promise<void> {
    await rm(this.jobPath(id), { force: true });
    await fsyncDir(this.jobsDir);
  }

  private jobPath(id: string): string {
    if (!DELIVERY_ID.test(id)) throw new Error(`bad delivery id '${id}'`);
    return join(this.jobsDir, `${id}.json`);
  }
}

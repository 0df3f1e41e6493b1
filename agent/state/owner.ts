import { readFileSync } from 'node:fs';

/**
 * Who holds an operation, told apart across reboots and PID reuse. A PID alone is not enough: after
 * a reboot, or once the kernel hands the PID to another process, `kill(pid, 0)` says "alive" for a
 * process that has nothing to do with us, and an interrupted operation would never be recovered.
 * So an operation records the boot it ran in and its process's start time (clock ticks after boot,
 * field 22 of /proc/<pid>/stat), and it is alive only when all three still match.
 */
export interface OwnerStamp {
  pid: number;
  /** /proc/sys/kernel/random/boot_id of the boot the owner ran in. */
  boot?: string;
  /** The owner's start time in clock ticks after boot (decimal string). */
  pidStart?: string;
}

let bootCache: string | null | undefined;

/** This boot's id, or null where the kernel does not tell (then only the PID and start time count). */
export function bootId(): string | null {
  if (bootCache === undefined) {
    try {
      bootCache = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || null;
    } catch {
      bootCache = null;
    }
  }
  return bootCache;
}

/** A process's start time in clock ticks after boot, or null when there is no such process. */
export function processStartTime(pid: number): string | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) is in parentheses and may hold spaces or ')': count from the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return rest[19] ?? null; // field 22 overall: 20th after the state field (field 3)
}

function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let selfCache: OwnerStamp | undefined;

/** The stamp of this process, recorded in every operation it starts. */
export function selfStamp(): OwnerStamp {
  if (!selfCache || selfCache.pid !== process.pid) {
    const boot = bootId();
    const pidStart = processStartTime(process.pid);
    selfCache = { pid: process.pid, ...(boot ? { boot } : {}), ...(pidStart ? { pidStart } : {}) };
  }
  return selfCache;
}

/** Whether the process that recorded this stamp still runs (entries from older versions: PID only). */
export function ownerAlive(o: OwnerStamp): boolean {
  if (
    o.pid === process.pid &&
    (o.boot === undefined || o.boot === bootId()) &&
    (o.pidStart === undefined || o.pidStart === selfStamp().pidStart)
  )
    return true;
  if (o.boot !== undefined) {
    const boot = bootId();
    if (boot !== null && boot !== o.boot) return false;
  }
  if (!pidExists(o.pid)) return false;
  if (o.pidStart !== undefined) {
    const start = processStartTime(o.pid);
    if (start !== null && start !== o.pidStart) return false;
  }
  return true;
}

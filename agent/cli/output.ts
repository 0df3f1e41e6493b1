import { Option } from 'commander';
import { describe } from '../errors.js';
import { createLogger, type Logger } from '../log.js';

/** The global flags that decide what reaches stderr. */
export interface OutputFlags {
  debug?: boolean;
  quiet?: boolean;
}

/** `--json`, defined once: every command that prints data takes it. */
export const jsonOption = (): Option => new Option('--json', 'print JSON on stdout');

/** commander's 'error: unknown command ...' and its '(Did you mean ...?)' line, as one line. */
export const oneLine = (text: string): string =>
  text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .join(' ');

/**
 * The CLI's one writer. stdout carries data only: what the command was asked for, JSON with
 * --json, text for people without. Everything else goes to stderr: progress (hidden by --quiet),
 * warnings, --debug steps, and errors as one line.
 */
export class Output {
  constructor(private readonly flags: () => OutputFlags = () => ({})) {}

  /** Data on stdout: `value` as JSON with --json, else `text(value)`. */
  result<T>(o: { json?: boolean }, value: T, text: (value: T) => string): void {
    process.stdout.write(o.json ? JSON.stringify(value, null, 2) + '\n' : text(value));
  }

  /** Progress, warnings and --debug steps on stderr; the engine logs through it too. */
  log(): Logger {
    const { debug, quiet } = this.flags();
    return createLogger({ debug, quiet });
  }

  /** `bpg serve`'s log: JSON lines on stderr, for a service manager's journal. */
  daemonLog(): Logger {
    return createLogger({ json: true, debug: this.flags().debug });
  }

  /** `warning: ...` on stderr. */
  warn(msg: string): void {
    this.log().warn(msg);
  }

  /** A failed command: one line on stderr (after its stack trace with --debug). */
  error(e: unknown): void {
    if (this.flags().debug && e instanceof Error) process.stderr.write((e.stack ?? String(e)) + '\n');
    process.stderr.write(`error: ${describe(e)}\n`);
  }

  /** A usage error as commander words it ('error: ...'), on one line with its suggestion. */
  usageError(text: string): void {
    process.stderr.write(oneLine(text) + '\n');
  }
}

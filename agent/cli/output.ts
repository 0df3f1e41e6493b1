import { createRequire } from 'node:module';
import { Option } from 'commander';
import { describe } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { colourOn, paintOf, type Paint } from './colour.js';

/** The global flags that decide what reaches stderr. */
export interface OutputFlags {
  debug?: boolean;
  quiet?: boolean;
}

/** What `-o` takes: `table` is the text for people (tables, or name/value rows for one object). */
export const FORMATS = ['table', 'json', 'yaml'] as const;
export type Format = (typeof FORMATS)[number];

/** The options of a command that prints data: `-o json|yaml|table`, and `--json` for `-o json`. */
export interface FormatFlags {
  output?: Format;
  json?: boolean;
}

/** `-o, --output`, defined once: every read and create command takes it (with `--json`). */
export const outputOption = (): Option =>
  new Option('-o, --output <format>', 'print json, yaml, or table (text for people, the default)').choices(FORMATS);

/** `--json`, the synonym of `-o json` that scripts already use. */
export const jsonOption = (): Option =>
  new Option('--json', 'print JSON on stdout (same as -o json)').conflicts('output');

export const formatOf = (o: FormatFlags): Format => (o.json ? 'json' : (o.output ?? 'table'));

// yaml is loaded when `-o yaml` asks for it: the other formats need not pay for it at start-up.
const yaml = (): typeof import('yaml') => createRequire(import.meta.url)('yaml') as typeof import('yaml');

/**
 * Ends the command with this exit code and nothing more on stderr: `bpg psql` exits as psql did
 * (psql printed its own errors).
 */
export class ExitWith extends Error {
  constructor(readonly exitCode: number) {
    super(`exit ${exitCode}`);
    this.name = 'ExitWith';
  }
}

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

  /**
   * Data on stdout: `value` as JSON (`-o json`, `--json`) or YAML (`-o yaml`), else `text(value)`,
   * in colour when stdout is a terminal (colour.ts).
   */
  result<T>(o: FormatFlags, value: T, text: (value: T, paint: Paint) => string): void {
    const format = formatOf(o);
    process.stdout.write(
      format === 'json'
        ? JSON.stringify(value, null, 2) + '\n'
        : format === 'yaml'
          ? yaml().stringify(value, { aliasDuplicateObjects: false })
          : text(value, paintOf(colourOn(process.stdout))),
    );
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
    process.stderr.write(`${this.stderrPaint().error('error:')} ${describe(e)}\n`);
  }

  /** A usage error as commander words it ('error: ...'), on one line with its suggestion. */
  usageError(text: string): void {
    process.stderr.write(oneLine(text).replace(/^error:/, this.stderrPaint().error('error:')) + '\n');
  }

  private stderrPaint(): Paint {
    return paintOf(colourOn(process.stderr));
  }
}

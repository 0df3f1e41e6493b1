/**
 * Colour for people: only on a terminal, never with NO_COLOR set (https://no-color.org), never in
 * json or yaml. picocolors writes the escape codes; whether to write them is decided here, per stream.
 */
import { createRequire } from 'node:module';

/** What the CLI colours: table headings, branch statuses, and the `error:` of a failed command. */
export interface Paint {
  readonly enabled: boolean;
  head(text: string): string;
  /** A status cell (`running`, `stopped (idle)`, `down`, ...): green, yellow, cyan or red by its first word. */
  status(text: string): string;
  error(text: string): string;
}

const STATUS: Record<string, 'green' | 'yellow' | 'cyan' | 'red'> = {
  running: 'green',
  stopped: 'yellow',
  creating: 'cyan',
  deleting: 'cyan',
  down: 'red',
  missing: 'red',
  interrupted: 'red',
  // bpg doctor's findings
  FAILED: 'red',
  fixed: 'green',
  warn: 'yellow',
  '!': 'yellow',
};

/** Without colour, text as it is; picocolors is loaded only for a terminal that shows colour. */
const asIs = (text: string) => text;
const colours = (enabled: boolean) =>
  enabled
    ? (createRequire(import.meta.url)('picocolors') as typeof import('picocolors')).createColors(true)
    : { bold: asIs, red: asIs, green: asIs, yellow: asIs, cyan: asIs };

export function paintOf(enabled: boolean): Paint {
  const c = colours(enabled);
  return {
    enabled,
    head: c.bold,
    status: (text) => {
      const colour = STATUS[text.split(' ')[0] ?? ''];
      return colour ? c[colour](text) : text;
    },
    error: c.red,
  };
}

/** No escape codes: what json, yaml, pipes, files and NO_COLOR get. */
export const plain: Paint = paintOf(false);

/**
 * Colour on `stream`: a TTY that has colours (TERM=dumb has none), and NO_COLOR not set. NO_COLOR is
 * checked first: Node's own check lets FORCE_COLOR override it (with a warning), ours does not.
 */
export function colourOn(
  stream: { isTTY?: boolean; hasColors?: (env?: object) => boolean },
  env: NodeJS.ProcessEnv = process.env,
): boolean {
  if (env.NO_COLOR !== undefined) return false;
  return stream.isTTY === true && typeof stream.hasColors === 'function' && stream.hasColors(env);
}

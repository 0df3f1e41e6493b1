/**
 * Progress and logs go to stderr, data to stdout. The daemon sets `json` for JSON lines.
 * Nothing here may ever be handed a password: callers log names, ports and timings only.
 */
export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
}

export function createLogger(opts: { json?: boolean; debug?: boolean; quiet?: boolean } = {}): Logger {
  const write = (level: string, msg: string, fields?: Record<string, unknown>) => {
    if (opts.json) {
      process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }) + '\n');
    } else {
      const extra =
        fields && Object.keys(fields).length
          ? ' ' +
            Object.entries(fields)
              .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
              .join(' ')
          : '';
      process.stderr.write(`${level === 'warn' ? 'warning: ' : ''}${msg}${extra}\n`);
    }
  };
  return {
    info: (m, f) => !opts.quiet && write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    debug: (m, f) => opts.debug && write('debug', m, f),
  };
}

export const silentLogger: Logger = { info() {}, warn() {}, debug() {} };

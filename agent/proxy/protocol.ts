/**
 * The few PostgreSQL wire messages the router reads and writes itself: the client's first packet
 * (SSLRequest, GSSENCRequest, CancelRequest, StartupMessage), the StartupMessage it forwards with
 * the database name rewritten, and ErrorResponse for the refusals it answers on its own. Backend
 * messages are only framed (type and length) until ReadyForQuery; after that bytes are piped.
 *
 * node-postgres's pg-protocol parses backend messages and writes frontend ones (the client's side),
 * and nothing else here needs a parser of the whole protocol, so these ~150 lines are our own.
 */

export const SSL_REQUEST = 80877103;
export const GSSENC_REQUEST = 80877104;
export const CANCEL_REQUEST = 80877102;

/** The peer broke the protocol: answered with 08P01 and closed. */
export class ProtocolError extends Error {}

export type FirstPacket =
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  /** `packet` is forwarded as it is to the branch that issued the key. */
  | { kind: 'cancel'; key: string; packet: Buffer }
  | { kind: 'startup'; version: number; params: Map<string, string> };

/** Parses a whole first packet (length word included). */
export function parseFirstPacket(p: Buffer): FirstPacket {
  if (p.length < 8 || p.readInt32BE(0) !== p.length) throw new ProtocolError('invalid length of startup packet');
  const code = p.readInt32BE(4);
  if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
    if (p.length !== 8) throw new ProtocolError('invalid length of encryption request');
    return { kind: code === SSL_REQUEST ? 'ssl' : 'gssenc' };
  }
  if (code === CANCEL_REQUEST) {
    // process id and secret key: 4 + 4 bytes, up to 256 bytes of key in protocol 3.2
    if (p.length < 16 || p.length > 12 + 256) throw new ProtocolError('invalid length of cancel request');
    return { kind: 'cancel', key: p.subarray(8).toString('hex'), packet: p };
  }
  const major = code >>> 16;
  if (major !== 3)
    throw new ProtocolError(`unsupported frontend protocol ${major}.${code & 0xffff}: the router speaks 3.0 and later`);
  const params = new Map<string, string>();
  let at = 8;
  for (;;) {
    if (at >= p.length) throw new ProtocolError('invalid startup packet layout: expected terminator as last byte');
    if (p[at] === 0) {
      if (at !== p.length - 1) throw new ProtocolError('invalid startup packet layout: data after the terminator');
      break;
    }
    const keyEnd = p.indexOf(0, at);
    const valueEnd = keyEnd < 0 ? -1 : p.indexOf(0, keyEnd + 1);
    if (keyEnd < 0 || valueEnd < 0) throw new ProtocolError('invalid startup packet layout: unterminated parameter');
    params.set(p.toString('utf8', at, keyEnd), p.toString('utf8', keyEnd + 1, valueEnd));
    at = valueEnd + 1;
  }
  if (!params.get('user')) throw new ProtocolError('no PostgreSQL user name specified in startup packet');
  return { kind: 'startup', version: code, params };
}

/** A StartupMessage with these parameters, in the client's protocol version. */
export function startupPacket(version: number, params: Map<string, string>): Buffer {
  const parts: Buffer[] = [Buffer.alloc(8)];
  for (const [k, v] of params) parts.push(Buffer.from(`${k}\0${v}\0`, 'utf8'));
  parts.push(Buffer.from([0]));
  const b = Buffer.concat(parts);
  b.writeInt32BE(b.length, 0);
  b.writeInt32BE(version, 4);
  return b;
}

/** An ErrorResponse (FATAL unless told otherwise): severity, SQLSTATE, message and an optional hint. */
export function errorResponse(code: string, message: string, o: { hint?: string; severity?: string } = {}): Buffer {
  const severity = o.severity ?? 'FATAL';
  const fields: Array<[string, string]> = [
    ['S', severity],
    ['V', severity],
    ['C', code],
    ['M', message],
  ];
  if (o.hint) fields.push(['H', o.hint]);
  const body = Buffer.concat([
    ...fields.map(([t, v]) => Buffer.from(`${t}${v.replace(/\0/g, '')}\0`, 'utf8')),
    Buffer.from([0]),
  ]);
  const head = Buffer.alloc(5);
  head.write('E', 0, 'latin1');
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

/** The fields of an ErrorResponse or NoticeResponse body, by their one-letter type. */
export function errorFields(body: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let at = 0;
  while (at < body.length && body[at] !== 0) {
    const end = body.indexOf(0, at + 1);
    if (end < 0) break;
    out.set(String.fromCharCode(body[at]!), body.toString('utf8', at + 1, end));
    at = end + 1;
  }
  return out;
}

export interface BackendMessage {
  type: string;
  body: Buffer;
}

/**
 * Splits a backend byte stream into whole messages (1-byte type, 4-byte length). A message longer
 * than `maxMessage` is refused before it is buffered: the branch is the PR's, and the messages of a
 * startup (authentication, parameters, the key, notices) are small.
 */
export class MessageFramer {
  private buf: Buffer = Buffer.alloc(0);

  constructor(private readonly maxMessage = 1024 * 1024) {}

  push(chunk: Buffer): BackendMessage[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: BackendMessage[] = [];
    while (this.buf.length >= 5) {
      const len = this.buf.readInt32BE(1);
      if (len < 4) throw new ProtocolError('invalid message length from the server');
      if (len > this.maxMessage) throw new ProtocolError(`message of ${len} bytes from the server during startup`);
      if (this.buf.length < 1 + len) break;
      out.push({ type: String.fromCharCode(this.buf[0]!), body: this.buf.subarray(5, 1 + len) });
      this.buf = this.buf.subarray(1 + len);
    }
    return out;
  }
}

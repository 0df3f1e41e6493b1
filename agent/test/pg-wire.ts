import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';

/**
 * The PostgreSQL wire protocol up to the startup message, written by hand for tests that send
 * what no client library would: bad lengths, wrong versions, half a packet, oversized packets.
 * (https://www.postgresql.org/docs/current/protocol-message-formats.html)
 */

export const PROTOCOL_3 = 196608; // 3.0
export const SSL_REQUEST = 80877103;
export const GSSENC_REQUEST = 80877104;
export const CANCEL_REQUEST = 80877102;

/** Int32 length (itself included), then the body. */
function packet(body: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeInt32BE(body.length + 4);
  return Buffer.concat([len, body]);
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}

/** A StartupMessage: version, then name/value pairs as C strings, then a terminating zero. */
export function startupPacket(params: Record<string, string>, version = PROTOCOL_3): Buffer {
  const pairs = Object.entries(params).flatMap(([k, v]) => [Buffer.from(`${k}\0${v}\0`)]);
  return packet(Buffer.concat([int32(version), ...pairs, Buffer.from([0])]));
}

export const sslRequest = () => packet(int32(SSL_REQUEST));
export const gssEncRequest = () => packet(int32(GSSENC_REQUEST));
export const cancelRequest = (pid: number, key: number) =>
  packet(Buffer.concat([int32(CANCEL_REQUEST), int32(pid), int32(key)]));

/** A frame with a length field that says `length` whatever follows (for bad and oversized lengths). */
export function rawFrame(length: number, rest: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([int32(length), rest]);
}

export interface BackendMessage {
  type: string;
  body: Buffer;
}

/** The fields of an ErrorResponse or NoticeResponse: S (severity), C (SQLSTATE), M (message), ... */
export function errorFields(body: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const code = String.fromCharCode(body[i]!);
    const end = body.indexOf(0, i + 1);
    if (end < 0) throw new Error(`unterminated error field ${code}`);
    out[code] = body.subarray(i + 1, end).toString('utf8');
    i = end + 1;
  }
  return out;
}

/**
 * One client connection driven byte by byte. Data is buffered as it comes; reads wait for it with a
 * (generous) timeout, so a server that hangs fails the test with a message instead of hanging it.
 */
export class Wire {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  private ended = false;
  private error: Error | null = null;
  readonly closed: Promise<void>;
  private markClosed!: () => void;

  private constructor(private sock: Socket | TLSSocket) {
    this.closed = new Promise((r) => (this.markClosed = r));
    this.attach(sock);
  }

  static connect(port: number, host = '127.0.0.1'): Promise<Wire> {
    return new Promise((resolve, reject) => {
      const s = netConnect({ port, host });
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new Wire(s));
      });
    });
  }

  get isClosed(): boolean {
    return this.ended;
  }

  get socket(): Socket | TLSSocket {
    return this.sock;
  }

  private attach(s: Socket | TLSSocket) {
    s.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.poke();
    });
    s.on('error', (e) => {
      this.error = e;
      this.poke();
    });
    s.on('close', () => {
      this.ended = true;
      this.markClosed();
      this.poke();
    });
  }

  private poke() {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  write(b: Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.sock.write(b, (e) => (e ? reject(e) : resolve())));
  }

  /** Exactly `n` bytes; rejects if the server closes first or nothing comes within `timeoutMs`. */
  async read(n: number, timeoutMs = 20_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.ended || this.error)
        throw new Error(
          `connection ${this.error ? `failed (${this.error.message})` : 'closed'} after ${this.buf.length} of ${n} bytes`,
        );
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no answer within ${timeoutMs} ms (${this.buf.length} of ${n} bytes)`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.wake = () => {
          clearTimeout(t);
          r();
        };
      });
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** One backend message (type byte, length, body). */
  async message(timeoutMs = 20_000): Promise<BackendMessage> {
    const head = await this.read(5, timeoutMs);
    const len = head.readInt32BE(1);
    if (len < 4 || len > 1_000_000)
      throw new Error(`bad message length ${len} (type ${String.fromCharCode(head[0]!)})`);
    return { type: String.fromCharCode(head[0]!), body: await this.read(len - 4, timeoutMs) };
  }

  /** The next message, which must be an ErrorResponse: its fields. */
  async errorResponse(timeoutMs = 20_000): Promise<Record<string, string>> {
    const m = await this.message(timeoutMs);
    if (m.type !== 'E') throw new Error(`expected an ErrorResponse, got message type ${m.type}`);
    return errorFields(m.body);
  }

  /** Whether the server closes the connection within `ms` (any bytes it sends meanwhile are kept). */
  async closesWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      this.closed.then(() => true),
      new Promise<boolean>((res) => (timer = setTimeout(() => res(false), ms))),
    ]);
    clearTimeout(timer);
    return r;
  }

  /** Bytes received and not read yet. */
  pending(): Buffer {
    return this.buf;
  }

  /** SSLRequest, expect 'S', then a TLS handshake over this connection. Returns the TLS socket. */
  async startTls(opts: ConnectionOptions = {}): Promise<TLSSocket> {
    await this.write(sslRequest());
    const answer = (await this.read(1)).toString();
    if (answer !== 'S') throw new Error(`SSLRequest answered ${JSON.stringify(answer)}`);
    const raw = this.sock;
    raw.removeAllListeners('data');
    raw.removeAllListeners('close');
    raw.removeAllListeners('error');
    const t = tlsConnect({ socket: raw, rejectUnauthorized: false, ...opts });
    await new Promise<void>((resolve, reject) => {
      t.once('secureConnect', resolve);
      t.once('error', reject);
    });
    this.sock = t;
    this.attach(t);
    return t;
  }

  destroy(): void {
    this.sock.destroy();
  }
}

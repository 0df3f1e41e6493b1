import type { Duplex } from 'node:stream';
import { ProtocolError } from './protocol.js';

/**
 * Reads one length-prefixed packet (the client's first packets have no type byte) and leaves the
 * stream paused with anything after it pushed back. A length outside 8..max fails at once, before
 * the rest arrives: an oversized packet is never buffered.
 */
export function readPacket(s: Duplex, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const cleanup = () => {
      s.off('data', onData);
      s.off('end', onEnd);
      s.off('close', onEnd);
      s.off('error', onError);
      s.pause();
    };
    const onData = (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      if (buf.length < 4) return;
      const len = buf.readInt32BE(0);
      if (len < 8 || len > max) {
        cleanup();
        reject(
          new ProtocolError(
            len > max
              ? `startup packet of ${len} bytes is larger than this router accepts (${max})`
              : 'invalid length of startup packet',
          ),
        );
        return;
      }
      if (buf.length < len) return;
      cleanup();
      if (buf.length > len) s.unshift(buf.subarray(len));
      resolve(buf.subarray(0, len));
    };
    const onEnd = () => {
      cleanup();
      reject(Object.assign(new Error('the client went away during its startup'), { code: 'ECONNRESET' }));
    };
    const onError = (e: Error) => {
      cleanup();
      reject(e);
    };
    s.on('data', onData);
    s.once('end', onEnd);
    s.once('close', onEnd);
    s.once('error', onError);
    s.resume();
  });
}

// Raw HTTP/2 (prior knowledge, HPACK literals without Huffman): a gRPC call as bytes, the way a
// hostile guest with nothing but printf and nc would make one; and the reading of the answer.
import http2 from 'node:http2';
import { Duplex } from 'node:stream';

function frame(type, flags, streamId, payload) {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId, 5);
  return Buffer.concat([h, payload]);
}

/** "Literal header field without indexing, new name", lengths under 127. */
function literal(name, value) {
  const n = Buffer.from(name);
  const v = Buffer.from(value);
  return Buffer.concat([Buffer.from([0x00, n.length]), n, Buffer.from([v.length]), v]);
}

/** A protobuf message of string fields, numbered from 1. */
function protoStrings(...values) {
  return Buffer.concat(values.map((s, i) => {
    const b = Buffer.from(s);
    return Buffer.concat([Buffer.from([((i + 1) << 3) | 2, b.length]), b]);
  }));
}

/** The bytes of one unary gRPC call over h2c: preface, SETTINGS, HEADERS, DATA (END_STREAM). */
export function rawGrpcCall(authority, path, ...stringFields) {
  const msg = protoStrings(...stringFields);
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(msg.length, 1);
  const headers = Buffer.concat([
    literal(':method', 'POST'), literal(':scheme', 'http'), literal(':path', path), literal(':authority', authority),
    literal('content-type', 'application/grpc'), literal('te', 'trailers'),
  ]);
  return Buffer.concat([
    Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
    frame(0x4, 0, 0, Buffer.alloc(0)),
    frame(0x1, 0x4, 1, headers),
    frame(0x0, 0x1, 1, Buffer.concat([prefix, msg])),
  ]);
}

/**
 * The grpc-status and grpc-message in a server's bytes, read by Node's own HTTP/2 client fed
 * those bytes (HPACK with Huffman is no fun by hand). undefined when no answer is in them.
 */
export function readGrpcAnswer(bytes, timeoutMs = 5_000) {
  return new Promise((resolve) => {
    const wire = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
    const session = http2.connect('http://answer', { createConnection: () => wire });
    session.on('error', () => undefined);
    const done = (v) => { clearTimeout(t); session.destroy(); resolve(v); };
    const t = setTimeout(() => done(undefined), timeoutMs);
    const req = session.request({ ':method': 'POST', ':path': '/x', 'content-type': 'application/grpc' });
    req.on('error', () => done(undefined));
    let head = {};
    req.on('response', (h) => {
      head = h;
      if (h['grpc-status'] !== undefined) done({ code: Number(h['grpc-status']), message: decodeURIComponent(h['grpc-message'] ?? '') });
    });
    req.on('trailers', (tr) => done({ code: Number(tr['grpc-status']), message: decodeURIComponent(tr['grpc-message'] ?? ''), headers: head }));
    req.on('data', () => undefined);
    req.end();
    setImmediate(() => wire.push(bytes));
  });
}

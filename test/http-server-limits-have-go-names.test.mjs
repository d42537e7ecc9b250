// The HTTP endpoint's limits under the Go manager's names (magistrala pkg/server:
// MANAGER_HTTP_SERVER_READ_TIMEOUT, _WRITE_TIMEOUT, _READ_HEADER_TIMEOUT, _IDLE_TIMEOUT,
// _MAX_HEADER_BYTES), with Go's defaults where this daemon's were not stricter and Go's meaning
// of 0 where it is a bound; each one reaches the server (READ_HEADER_TIMEOUT: in
// connection-floods-are-bounded.test.mjs, a client sending its headers slowly).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Daemon, fakeQemuEnv, tmpDir } from './daemon.mjs';
import { FACTS } from './fake-host.mjs';
import { loadConfig } from '../dist/config/load.js';
import { GO_DEFAULT_MAX_HEADER_BYTES, createHttpServer, httpLimits, listen } from '../dist/api/http/server.js';

const daemons = [];
after(() => Promise.all(daemons.map((d) => d.stop())));
async function start(extra) {
  const d = await Daemon.start(fakeQemuEnv(tmpDir(), extra));
  daemons.push(d);
  return d;
}

/** Sends `request` raw on a new connection; resolves with what came back once the server closes it (bounded). */
function exchange(port, request, { keepOpenMs = 15_000 } = {}) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    let received = '';
    const t = setTimeout(() => { s.destroy(); reject(new Error(`still open after ${keepOpenMs} ms; got ${JSON.stringify(received)}`)); }, keepOpenMs);
    s.on('data', (b) => (received += b));
    s.on('error', () => undefined);
    s.on('close', () => { clearTimeout(t); resolve(received); });
    s.once('connect', () => s.write(request));
  });
}

test("the defaults are Go's, but idle and header bytes, where this daemon's are stricter; Go's zeros", () => {
  const limits = (env) => httpLimits(loadConfig(env, FACTS.plain).httpServer, 300_000);
  assert.deepEqual(limits({}), { readTimeoutMs: 15_000, writeTimeoutMs: 15_000, readHeaderTimeoutMs: 5_000, idleTimeoutMs: 5_000, maxHeaderBytes: 8192, silentMs: 300_000 });
  // 0: as READ_TIMEOUT (header, idle), Go's 1 MiB (header bytes).
  const zeros = limits({ MANAGER_HTTP_SERVER_READ_TIMEOUT: '20s', MANAGER_HTTP_SERVER_READ_HEADER_TIMEOUT: '0', MANAGER_HTTP_SERVER_IDLE_TIMEOUT: '0', MANAGER_HTTP_SERVER_MAX_HEADER_BYTES: '0' });
  assert.deepEqual([zeros.readHeaderTimeoutMs, zeros.idleTimeoutMs, zeros.maxHeaderBytes], [20_000, 20_000, GO_DEFAULT_MAX_HEADER_BYTES]);
  assert.equal(GO_DEFAULT_MAX_HEADER_BYTES, 1 << 20);
  // Go bounds the headers by the read timeout too.
  assert.equal(limits({ MANAGER_HTTP_SERVER_READ_TIMEOUT: '2s', MANAGER_HTTP_SERVER_READ_HEADER_TIMEOUT: '1m' }).readHeaderTimeoutMs, 2_000);
  // This daemon's earlier name still sets the header timeout.
  assert.equal(limits({ MANAGER_HTTP_HEADERS_TIMEOUT: '3s' }).readHeaderTimeoutMs, 3_000);
});

test('MAX_HEADER_BYTES: a request whose headers are larger is answered 431; a smaller one is served', async () => {
  const d = await start({ MANAGER_HTTP_SERVER_MAX_HEADER_BYTES: '1024' });
  const request = (bytes) => `GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(bytes)}\r\nConnection: close\r\n\r\n`;
  assert.match(await exchange(d.httpPort, request(512)), /^HTTP\/1\.1 200 /);
  assert.match(await exchange(d.httpPort, request(2048)), /^HTTP\/1\.1 431 /);
});

test('IDLE_TIMEOUT: a keep-alive connection is told the timeout and closed by the server once idle', async () => {
  const d = await start({ MANAGER_HTTP_SERVER_IDLE_TIMEOUT: '1s' });
  const got = await exchange(d.httpPort, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.match(got, /^HTTP\/1\.1 200 /);
  assert.match(got, /\r\nKeep-Alive: timeout=1\r\n/i);
});

test('WRITE_TIMEOUT: a request not answered in time costs its connection; one answered is served', async () => {
  // The real server, with a metrics registry that never answers (a collector stuck).
  const stuck = { contentType: 'text/plain', metrics: () => new Promise(() => undefined) };
  const deps = { registry: stuck, build: { version: 't', commit: 't', description: '', build_time: '' }, instanceId: 'i', lifecycle: () => 'serving' };
  const limits = httpLimits({ readTimeoutMs: 5_000, writeTimeoutMs: 300, readHeaderTimeoutMs: 5_000, idleTimeoutMs: 5_000, maxHeaderBytes: 8192 }, 60_000);
  const server = createHttpServer(deps, undefined, undefined, limits);
  const { port } = await listen(server, '127.0.0.1', 0);
  try {
    assert.equal(await exchange(port, 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n'), '');
    assert.match(await exchange(port, 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 200 /);
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

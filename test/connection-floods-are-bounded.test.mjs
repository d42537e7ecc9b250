// A flood of connections to the gRPC TCP port or the HTTP port (a guest through 10.0.2.2, or any
// local process) is bounded: over the cap per peer address or in total, a connection is reset as
// it is accepted, so the daemon's descriptors stay bounded and it keeps answering others; the
// flood is logged once per window with its counts and counted in a metric. Connections that
// send nothing are closed after the idle timeout, connections the guest check cannot decide
// after the verdict deadline, and an HTTP client trickling its headers after the headers timeout.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { Daemon, call, fakeQemuEnv, tmpDir, waitFor } from './daemon.mjs';
import { ConnectionGuard } from '../dist/api/connection-guard.js';
import { GuestPeerGate } from '../dist/api/guest-peer.js';
import { listenGrpc } from '../dist/api/grpc/listener.js';

const daemons = [];
after(async () => {
  for (const d of daemons) await d.stop();
});

async function start(extra = {}) {
  const d = await Daemon.start(fakeQemuEnv(tmpDir('cocos-conns-'), extra));
  daemons.push(d);
  return d;
}

const fdCount = (pid) => fs.readdirSync(`/proc/${pid}/fd`).length;

/**
 * Opens `n` connections to 127.0.0.1:`port` from `localAddress` (another loopback address than
 * the test's normal clients, which are 127.0.0.1) and keeps them; tracks which the server closed.
 */
function flood(port, n, localAddress) {
  const sockets = [];
  const state = { connected: 0, closed: 0, sockets };
  for (let i = 0; i < n; i++) {
    const s = net.connect({ port, host: '127.0.0.1', localAddress });
    s.on('error', () => undefined);
    // Read (and drop) what comes: a socket that does not read never sees the server's FIN.
    s.resume();
    s.on('connect', () => state.connected++);
    s.on('close', () => state.closed++);
    sockets.push(s);
  }
  state.end = () => sockets.forEach((s) => s.destroy());
  return state;
}

async function metric(d, name) {
  const text = await (await fetch(`http://127.0.0.1:${d.httpPort}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const m = new RegExp(`^${name.replace(/[{}]/g, (c) => `\\${c}`)} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

const refusalLines = (d, api) => d.logs.lines.filter((l) => l.api === api && typeof l.refused === 'number' && /refused/.test(l.msg));

test('a flood beyond the per-peer cap leaves descriptors bounded, the daemon answers gRPC and /health, and is logged once per window with its counts', async () => {
  const cap = 32;
  const n = 300;
  // Long request and headers timeouts: the admitted connections, which send nothing, stay while they are counted.
  const d = await start({ MANAGER_MAX_CONNECTIONS_PER_PEER: String(cap), MANAGER_MAX_CONNECTIONS: '1000', MANAGER_HTTP_SERVER_READ_TIMEOUT: '5m', MANAGER_HTTP_SERVER_READ_HEADER_TIMEOUT: '5m' });
  const pid = d.proc.pid;
  const before = fdCount(pid);
  const grpcFlood = flood(d.port, n, '127.0.0.2');
  const httpFlood = flood(d.httpPort, n, '127.0.0.2');
  try {
    // Every connection over the cap is reset; the cap's worth stay open.
    assert.ok(await waitFor(() => grpcFlood.closed === n - cap && httpFlood.closed === n - cap, 20_000, 50),
      `closed by the daemon: gRPC ${grpcFlood.closed}, HTTP ${httpFlood.closed}; expected ${n - cap} each`);
    const during = fdCount(pid);
    // Without the caps the daemon would hold 2 × 300 more descriptors.
    assert.ok(during <= before + 2 * cap + 16, `daemon descriptors: ${before} before, ${during} during the flood`);

    // Others are served: a gRPC call and /health from 127.0.0.1.
    const client = d.client();
    try {
      await assert.rejects(call(client, 'RemoveVm', { cvm_id: 'no-such-vm' }, 5_000), (err) => err.code === grpc.status.NOT_FOUND);
    } finally {
      client.close();
    }
    const h = await fetch(`http://127.0.0.1:${d.httpPort}/health`, { signal: AbortSignal.timeout(5_000) });
    assert.equal(h.status, 200);

    // Counted, by port and reason.
    assert.equal(await metric(d, 'cocos_manager_connections_refused_total{api="grpc",reason="per_peer"}'), n - cap);
    assert.equal(await metric(d, 'cocos_manager_connections_refused_total{api="http",reason="per_peer"}'), n - cap);

    // Logged: at once for the first, then one summary for the rest of the window, with counts.
    for (const api of ['grpc', 'http']) {
      assert.ok(await waitFor(() => refusalLines(d, api).reduce((a, l) => a + l.refused, 0) >= n - cap, 15_000, 100), `${api}: summary line within the window`);
      const lines = refusalLines(d, api);
      assert.equal(lines.length, 2, `${api}: one line at the first refusal, one summary: ${JSON.stringify(lines)}`);
      assert.equal(lines[0].refused, 1);
      assert.equal(lines[1].refused, n - cap - 1);
      assert.equal(lines[1].refused_per_peer_cap, n - cap - 1);
      assert.equal(lines[1].refused_total_cap, 0);
      assert.deepEqual(lines[1].top_peer, { address: '127.0.0.2', open: cap });
      assert.equal(lines[1].level, 'warn');
    }
  } finally {
    grpcFlood.end();
    httpFlood.end();
  }
  // The flood's connections, once closed by their client, are given back.
  assert.ok(await waitFor(() => fdCount(pid) <= before + 4, 10_000, 50), `descriptors after the flood: ${fdCount(pid)} (before: ${before})`);
});

test('the total cap holds across peers; once the flood goes, connections are admitted again', async () => {
  const d = await start({ MANAGER_MAX_CONNECTIONS_PER_PEER: '20', MANAGER_MAX_CONNECTIONS: '30' });
  const a = flood(d.port, 25, '127.0.0.2');
  assert.ok(await waitFor(() => a.connected === 25 && a.closed === 5, 10_000, 25), `first peer: ${a.closed} closed`);
  const b = flood(d.port, 25, '127.0.0.3');
  try {
    assert.ok(await waitFor(() => b.closed === 15, 10_000, 25), `second peer: ${b.closed} closed, expected 15 (only 10 left of the total)`);
    assert.equal(await metric(d, 'cocos_manager_connections_refused_total{api="grpc",reason="total"}'), 15);
    assert.equal(await metric(d, 'cocos_manager_connections_open{api="grpc"}'), 30);
    // Full: a normal client is refused too, until the flood ends.
    const client = d.client();
    try {
      await assert.rejects(call(client, 'RemoveVm', { cvm_id: 'x' }, 3_000), (err) => err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED);
    } finally {
      client.close();
    }
    a.end();
    b.end();
    assert.ok(await waitFor(async () => (await metric(d, 'cocos_manager_connections_open{api="grpc"}')) === 0, 10_000, 50), 'the flood\'s connections are counted out');
    const again = d.client();
    try {
      await assert.rejects(call(again, 'RemoveVm', { cvm_id: 'x' }, 10_000), (err) => err.code === grpc.status.NOT_FOUND);
    } finally {
      again.close();
    }
  } finally {
    a.end();
    b.end();
  }
});

test('connections that send nothing are closed after the idle timeout; an idle client reconnects by itself', async () => {
  const d = await start({ MANAGER_CONNECTION_IDLE_TIMEOUT: '1s' });
  const silent = flood(d.port, 5, '127.0.0.2');
  const silentHttp = flood(d.httpPort, 5, '127.0.0.2');
  try {
    assert.ok(await waitFor(() => silent.closed === 5, 15_000, 50), `gRPC: ${silent.closed} of 5 silent connections closed`);
    assert.ok(await waitFor(() => silentHttp.closed === 5, 15_000, 50), `HTTP: ${silentHttp.closed} of 5 silent connections closed`);
    assert.equal(await metric(d, 'cocos_manager_connections_open{api="grpc"}'), 0);
  } finally {
    silent.end();
    silentHttp.end();
  }
  const client = d.client();
  try {
    await assert.rejects(call(client, 'RemoveVm', { cvm_id: 'x' }), (err) => err.code === grpc.status.NOT_FOUND);
    // The daemon closes the idle connection (GOAWAY); the channel opens a new one for the next call.
    assert.ok(await waitFor(() => client.getChannel().getConnectivityState(false) === grpc.connectivityState.IDLE, 10_000, 50), 'the idle connection was closed');
    await assert.rejects(call(client, 'RemoveVm', { cvm_id: 'x' }), (err) => err.code === grpc.status.NOT_FOUND);
  } finally {
    client.close();
  }
});

test('an HTTP client that sends its headers slowly is cut off after the headers timeout (408)', async () => {
  const d = await start({ MANAGER_HTTP_SERVER_READ_HEADER_TIMEOUT: '1s' });
  const s = net.connect({ port: d.httpPort, host: '127.0.0.1' });
  let received = '';
  let closed = false;
  s.on('data', (b) => (received += b));
  s.on('error', () => undefined);
  s.on('close', () => (closed = true));
  await new Promise((r) => s.once('connect', r));
  s.write('GET /health HTTP/1.1\r\nHost: x\r\n');
  // One header byte every 100 ms, for at most 20 s: never a complete request in that time.
  const header = 'X-Slow: ' + 'a'.repeat(200);
  let sent = 0;
  const trickle = setInterval(() => {
    if (closed || sent >= header.length) return clearInterval(trickle);
    s.write(header[sent++]);
  }, 100);
  try {
    assert.ok(await waitFor(() => closed, 15_000, 50), 'the slow client was not cut off');
    assert.ok(sent < header.length, 'cut off while still sending');
    assert.match(received, /^HTTP\/1\.1 408 /, 'no answer to an incomplete request but Request Timeout');
  } finally {
    clearInterval(trickle);
    s.destroy();
  }
  // A normal client is still served.
  assert.equal((await fetch(`http://127.0.0.1:${d.httpPort}/health`, { signal: AbortSignal.timeout(5_000) })).status, 200);
});

test('a connection whose guest verdict does not come within the deadline is closed, and logged with the count', async () => {
  // The real listener and gate, with an attribution that never answers (a /proc look stuck
  // behind a flood's).
  const lines = [];
  const log = { warn: (o, msg) => lines.push({ ...o, msg }), info() {}, error() {}, debug() {} };
  const refused = [];
  const guard = new ConnectionGuard('grpc', { maxTotal: 100, maxPerPeer: 100, verdictTimeoutMs: 300 }, log, { connectionRefused: (api, reason) => refused.push(`${api}/${reason}`) }, 2_000);
  const gate = new GuestPeerGate({ refuse: true, refuseUnattributed: false }, () => new Promise(() => undefined), log);
  const server = new grpc.Server();
  const listener = await listenGrpc({ host: '127.0.0.1', port: 0, credentials: grpc.ServerCredentials.createInsecure(), server, gate, guard, log });
  const waiting = flood(listener.port, 3, '127.0.0.1');
  try {
    assert.ok(await waitFor(() => waiting.closed === 3, 10_000, 20), `${waiting.closed} of 3 closed`);
    assert.deepEqual(refused, ['grpc/verdict_timeout', 'grpc/verdict_timeout', 'grpc/verdict_timeout']);
    assert.equal(guard.open, 0);
    assert.ok(await waitFor(() => lines.reduce((a, l) => a + (l.refused_verdict_timeout ?? 0), 0) === 3, 5_000, 20), JSON.stringify(lines));
    assert.ok(lines.length <= 2, `one line at once, one summary: ${JSON.stringify(lines)}`);
  } finally {
    waiting.end();
    listener.close();
    server.forceShutdown();
  }
});

// Spans reach an OTLP/HTTP receiver (a plain HTTP server on loopback): one per RPC continuing the
// caller's traceparent, with children for the steps of CreateVm; an unreachable collector costs
// the RPCs nothing and is logged once.
import { test } from 'node:test';
import net from 'node:net';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { Daemon, call, fakeQemuEnv, listenOnFreePort, tmpDir, waitFor } from './daemon.mjs';
import { otlpReceiver } from './otlp-receiver.mjs';

function callWithMetadata(client, method, req, metadata) {
  return new Promise((resolve, reject) => {
    client[method](req, metadata, { deadline: Date.now() + 10_000 }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

test('CreateVm gives one server span continuing the traceparent, with the four step spans as children', async () => {
  const rx = await otlpReceiver();
  const d = await Daemon.start(fakeQemuEnv(tmpDir(), { COCOS_JAEGER_URL: rx.url, COCOS_JAEGER_TRACE_RATIO: '1', MANAGER_INSTANCE_ID: 'trace-host' }));
  // The SDK loads once the daemon serves; calls before that are not traced.
  await d.waitForLog((l) => l.msg === 'tracing started');
  const client = d.client();
  try {
    const traceId = randomBytes(16).toString('hex');
    const parentId = randomBytes(8).toString('hex');
    const md = new grpc.Metadata();
    md.set('traceparent', `00-${traceId}-${parentId}-01`);
    const vm = await callWithMetadata(client, 'CreateVm', {}, md);
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
    assert.ok(await waitFor(() => rx.spans.some((s) => s.name === 'manager.ManagerService/RemoveVm'), 10_000), 'spans exported');
    const rpc = rx.spans.find((s) => s.name === 'manager.ManagerService/CreateVm');
    assert.equal(rpc.traceId, traceId);
    assert.equal(rpc.parentSpanId, parentId);
    assert.equal(rpc.kind, 2, 'SERVER');
    for (const step of ['allocate-port', 'write-shares', 'spawn-qemu', 'wait-qemu-ready']) {
      const s = rx.spans.find((x) => x.name === step);
      assert.ok(s, `${step} span`);
      assert.equal(s.traceId, traceId, step);
      assert.equal(s.parentSpanId, rpc.spanId, `${step} is a child of the RPC span`);
    }
    assert.ok(rx.resources.some((r) => r['service.name'] === 'manager' && r['service.instance.id'] === 'trace-host'));
    // OTLP's default encoding, binary protobuf, as the Go manager's exporter sends it.
    assert.ok(rx.requests.every((r) => r.type === 'application/x-protobuf'), JSON.stringify(rx.requests));
  } finally {
    client.close();
    await d.stop();
    await rx.close();
  }
});

test('an unreachable collector costs the calls nothing and is logged once', async () => {
  // A collector that accepts and drops every connection: it stays bound, so no port is raced for,
  // and it counts the export attempts the daemon makes.
  let attempts = 0;
  const dropper = net.createServer((sock) => { attempts++; sock.destroy(); });
  const dead = await listenOnFreePort(dropper);
  const d = await Daemon.start(fakeQemuEnv(tmpDir(), { COCOS_JAEGER_URL: `http://127.0.0.1:${dead}`, COCOS_JAEGER_TRACE_RATIO: '1' }));
  await d.waitForLog((l) => l.msg === 'tracing started');
  const client = d.client();
  try {
    let round = 0;
    const unreachable = () => d.logs.lines.filter((l) => /trace collector unreachable/.test(l.msg ?? '')).length;
    // Calls go on while exports fail: each call answers (far sooner than an export timeout,
    // which is what a call waiting on the exporter would take), until several exports failed.
    const tried = await waitFor(async () => {
      const t0 = Date.now();
      const info = await call(client, 'CVMInfo', { id: `x${round}` });
      assert.equal(info.id, `x${round++}`);
      assert.ok(Date.now() - t0 < 5_000, 'a call did not wait for the exporter');
      return attempts >= 3 && unreachable() >= 1;
    }, 60_000, 200);
    assert.ok(tried, `export attempts: ${attempts}`);
    assert.equal(unreachable(), 1, 'logged once, not once per failed export');
  } finally {
    client.close();
    await d.stop();
    dropper.close();
  }
});

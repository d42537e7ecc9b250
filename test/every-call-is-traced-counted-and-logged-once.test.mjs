// Every call of every service the daemon serves (ManagerService, ManagerAdmin with its WatchVms
// stream, health) gets exactly one rpc log line, one metric sample under its plain method name
// and one server span continuing the caller's traceparent. A CreateVm whose caller leaves while
// it runs is recorded with what the manager answered once it is done (as it always was).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ROOT } from './helpers.mjs';
import { Daemon, call, fakeQemuEnv, listenOnFreePort, tmpDir, waitFor } from './daemon.mjs';

const healthProto = path.join(ROOT, 'node_modules/grpc-health-check/proto/health/v1/health.proto');
const Health = grpc.loadPackageDefinition(protoLoader.loadSync(healthProto, { keepCase: true, defaults: true, enums: String })).grpc.health.v1.Health;

/** An OTLP/HTTP (JSON: the daemon is asked for it, protobuf being the default) trace receiver on loopback: the spans it got, flattened. */
async function traceReceiver() {
  const spans = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = req.url === '/v1/traces' ? JSON.parse(Buffer.concat(chunks).toString()) : {};
      for (const rs of body.resourceSpans ?? []) for (const ss of rs.scopeSpans ?? []) spans.push(...ss.spans);
      res.end('{}');
    });
  });
  return { spans, server, port: await listenOnFreePort(server) };
}

const attr = (span, key) => {
  const v = span.attributes.find((a) => a.key === key)?.value;
  return v && (v.intValue ?? v.stringValue);
};

test('each call of each service: one rpc line, one metric sample, one span', async () => {
  const dir = tmpDir();
  const gate = path.join(dir, 'qemu-may-listen');
  const modeFile = path.join(dir, 'mode');
  fs.writeFileSync(modeFile, `listen-when:${gate}`);
  const rx = await traceReceiver();
  const d = await Daemon.start(fakeQemuEnv(path.join(dir, 'state'), { FAKE_QEMU_MODE_FILE: modeFile, COCOS_JAEGER_URL: `http://127.0.0.1:${rx.port}`, COCOS_JAEGER_TRACE_RATIO: '1', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }));
  await d.waitForLog((l) => l.msg === 'tracing started');
  const client = d.client();
  const admin = d.adminClient();
  const health = new Health(`127.0.0.1:${d.port}`, grpc.credentials.createInsecure());
  try {
    // A CreateVm its caller gives up on while QEMU starts: the VM's directory is there, so the handler runs.
    const createErr = new Promise((resolve) => {
      const c = client.CreateVm({}, { deadline: Date.now() + 30_000 }, (err) => resolve(err));
      void waitFor(() => fs.readdirSync(path.join(dir, 'state', 'vms')).length === 1, 10_000).then(() => c.cancel());
    });
    assert.equal((await createErr)?.code, grpc.status.CANCELLED);
    fs.writeFileSync(gate, '');
    const created = await d.waitForLog((l) => l.msg === 'rpc' && l.method === 'CreateVm', 10_000);
    assert.equal(created.code, 'OK', 'recorded with the manager\'s answer, not the caller\'s leaving');

    await call(client, 'CVMInfo', { id: 'any' });
    await assert.rejects(call(admin, 'GetVm', { id: 'nope' }), (e) => e.code === grpc.status.NOT_FOUND);
    const serving = await new Promise((resolve, reject) => health.Check({ service: '' }, { deadline: Date.now() + 5_000 }, (e, r) => (e ? reject(e) : resolve(r))));
    assert.equal(serving.status, 'SERVING');

    const traceId = randomBytes(16).toString('hex');
    const parentId = randomBytes(8).toString('hex');
    const md = new grpc.Metadata();
    md.set('traceparent', `00-${traceId}-${parentId}-01`);
    const stream = admin.WatchVms({}, md);
    const events = [];
    stream.on('data', (e) => events.push(e));
    stream.on('error', () => {});
    assert.ok(await waitFor(() => events.length === 1, 5_000), 'the opening list (the one VM)');
    stream.cancel();

    const expected = { CreateVm: 'OK', CVMInfo: 'OK', GetVm: 'NOT_FOUND', Check: 'OK', WatchVms: 'CANCELLED' };
    assert.ok(await waitFor(() => d.logs.lines.some((l) => l.msg === 'rpc' && l.method === 'WatchVms'), 5_000), 'WatchVms logged');
    const lines = d.logs.lines.filter((l) => l.msg === 'rpc');
    for (const [method, code] of Object.entries(expected)) {
      const mine = lines.filter((l) => l.method === method);
      assert.equal(mine.length, 1, `${method}: ${JSON.stringify(mine)}`);
      assert.equal(mine[0].code, code, method);
      assert.equal(typeof mine[0].ms, 'number');
    }
    assert.equal(lines.find((l) => l.method === 'WatchVms').events, 1);
    assert.equal(lines.find((l) => l.method === 'GetVm').details, 'no VM with id "nope" on this manager');

    const metrics = await (await fetch(`http://127.0.0.1:${d.httpPort}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
    for (const [method, code] of Object.entries(expected)) {
      assert.match(metrics, new RegExp(`^cocos_manager_rpc_requests_total\\{method="${method}",code="${code}"\\} 1$`, 'm'), method);
      assert.match(metrics, new RegExp(`^cocos_manager_rpc_duration_seconds_count\\{method="${method}",code="${code}"\\} 1$`, 'm'), method);
    }
    assert.doesNotMatch(metrics, /method="CreateVm",code="CANCELLED"/);

    const names = {
      CreateVm: 'manager.ManagerService/CreateVm',
      CVMInfo: 'manager.ManagerService/CVMInfo',
      GetVm: 'manager.ManagerAdmin/GetVm',
      Check: 'grpc.health.v1.Health/Check',
      WatchVms: 'manager.ManagerAdmin/WatchVms',
    };
    const exported = () => Object.values(names).every((n) => rx.spans.some((s) => s.name === n));
    assert.ok(await waitFor(exported, 15_000, 100), `spans: ${rx.spans.map((s) => s.name).join(', ')}`);
    for (const [method, name] of Object.entries(names)) {
      const mine = rx.spans.filter((s) => s.name === name);
      assert.equal(mine.length, 1, name);
      assert.equal(mine[0].kind, 2, `${name} is a SERVER span`);
      assert.equal(attr(mine[0], 'rpc.method'), method);
      assert.equal(Number(attr(mine[0], 'rpc.grpc.status_code')), grpc.status[expected[method]], name);
      assert.ok(BigInt(mine[0].endTimeUnixNano) >= BigInt(mine[0].startTimeUnixNano), name);
    }
    const watch = rx.spans.find((s) => s.name === names.WatchVms);
    assert.equal(watch.traceId, traceId);
    assert.equal(watch.parentSpanId, parentId);
    assert.equal(Number(attr(watch, 'cocos.events_sent')), 1);
    assert.notEqual(watch.status?.code, 2, 'a watcher leaving is no error');
    assert.equal(rx.spans.find((s) => s.name === names.GetVm).status?.code, 2, 'NOT_FOUND is an error');
    // The steps of the CreateVm its caller left are still children of its span.
    const createSpan = rx.spans.find((s) => s.name === names.CreateVm);
    assert.equal(rx.spans.find((s) => s.name === 'spawn-qemu')?.parentSpanId, createSpan.spanId);

    const [vm] = (await call(admin, 'ListVms', {})).vms;
    await call(client, 'RemoveVm', { cvm_id: vm.id });
  } finally {
    client.close();
    admin.close();
    health.close();
    await d.stop();
    rx.server.close();
  }
});

// The standard OTEL_* variables work as in every OpenTelemetry SDK, beside COCOS_JAEGER_URL and
// COCOS_JAEGER_TRACE_RATIO, and win where both say the same thing (docs/configuration.md,
// "Tracing"). Each test runs a daemon against real OTLP/HTTP receivers on loopback.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { Daemon, call, fakeQemuEnv, tmpDir, waitFor } from './daemon.mjs';
import { otlpReceiver } from './otlp-receiver.mjs';

/** A receiver closed when the test ends, however it ends. */
async function receiver(t, opts) {
  const rx = await otlpReceiver(opts);
  t.after(() => rx.close());
  return rx;
}

/**
 * A daemon on the stand-in QEMU with exactly these tracing variables (fakeQemuEnv's ratio 0
 * removed) and a client; both stopped when the test ends. Registered after the receivers, so
 * run before their closing (after-hooks run last-in, first-out): the daemon flushes into them.
 */
async function daemonWith(t, tracingEnv) {
  const d = await Daemon.start(fakeQemuEnv(tmpDir(), { COCOS_JAEGER_TRACE_RATIO: undefined, ...tracingEnv }));
  const client = d.client();
  t.after(async () => {
    client.close();
    await d.stop();
  });
  return { d, client };
}

function cvmInfo(client, id, traceparent) {
  const md = new grpc.Metadata();
  if (traceparent) md.set('traceparent', traceparent);
  return new Promise((resolve, reject) => {
    client.CVMInfo({ id }, md, { deadline: Date.now() + 10_000 }, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** A caller's trace: its id, and a traceparent header for it (flags 01: sampled). */
function callerTrace() {
  const traceId = randomBytes(16).toString('hex');
  return { traceId, header: (flags = '01') => `00-${traceId}-${randomBytes(8).toString('hex')}-${flags}` };
}

test('OTEL_* alone: OTEL_EXPORTER_OTLP_ENDPOINT takes the spans, in OTLP/JSON when OTEL_EXPORTER_OTLP_PROTOCOL says so', async (t) => {
  const rx = await receiver(t);
  const { d, client } = await daemonWith(t, { OTEL_EXPORTER_OTLP_ENDPOINT: `${rx.url}/`, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' });
  const started = await d.waitForLog((l) => l.msg === 'tracing started');
  assert.equal(started.url, `${rx.url}/v1/traces`);
  assert.equal(started.url_from, 'OTEL_EXPORTER_OTLP_ENDPOINT');
  await call(client, 'CVMInfo', { id: 'otel-alone' });
  assert.ok(await waitFor(() => rx.spans.some((s) => s.name === 'manager.ManagerService/CVMInfo'), 10_000), 'span exported');
  assert.deepEqual([...new Set(rx.requests.map((r) => `${r.method} ${r.path} ${r.type}`))], ['POST /v1/traces application/json']);
});

test('both set: the OTEL_* endpoint and sampler win over COCOS_JAEGER_URL and COCOS_JAEGER_TRACE_RATIO', async (t) => {
  const cocos = await receiver(t);
  const otel = await receiver(t);
  // COCOS alone would send nothing at all (ratio 0); OTEL_TRACES_SAMPLER=always_on wins.
  const { d, client } = await daemonWith(t, { COCOS_JAEGER_URL: cocos.url, COCOS_JAEGER_TRACE_RATIO: '0', OTEL_EXPORTER_OTLP_ENDPOINT: otel.url, OTEL_TRACES_SAMPLER: 'always_on' });
  const started = await d.waitForLog((l) => l.msg === 'tracing started');
  assert.equal(started.sampler, 'OTEL_TRACES_SAMPLER=always_on');
  await call(client, 'CVMInfo', { id: 'both-set' });
  assert.ok(await waitFor(() => otel.spans.some((s) => s.name === 'manager.ManagerService/CVMInfo'), 10_000), 'span exported to the OTEL endpoint');
  // Stopped, the daemon has flushed every span it had: none went to COCOS_JAEGER_URL.
  await d.stop();
  assert.deepEqual(cocos.requests, []);
});

test('OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES reach the collector; a signal endpoint is used as given', async (t) => {
  const rx = await receiver(t, { tracesPath: '/custom/traces' });
  const { d, client } = await daemonWith(t, {
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${rx.url}/custom/traces`,
    OTEL_SERVICE_NAME: 'cocos-manager-east',
    OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment=staging,cocos.site=rack%2C7',
    MANAGER_INSTANCE_ID: 'east-1',
  });
  await d.waitForLog((l) => l.msg === 'tracing started');
  await call(client, 'CVMInfo', { id: 'resource' });
  assert.ok(await waitFor(() => rx.resources.length > 0, 10_000), `spans exported: ${JSON.stringify(rx.requests)}`);
  const r = rx.resources[0];
  assert.equal(r['service.name'], 'cocos-manager-east');
  assert.equal(r['deployment.environment'], 'staging');
  assert.equal(r['cocos.site'], 'rack,7', 'percent-decoded');
  assert.equal(r['service.instance.id'], 'east-1', 'the daemon\'s own attributes stay');
  assert.match(r['service.version'], /^\d+\.\d+\.\d+/);
});

for (const env of [{ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0' }, { COCOS_JAEGER_TRACE_RATIO: '0' }]) {
  const named = Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ');
  test(`${named} sends no span, not even a caller's sampled trace: the SDK is not loaded`, async (t) => {
    const rx = await receiver(t);
    const { d, client } = await daemonWith(t, { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, ...env });
    const off = await d.waitForLog((l) => l.msg === 'tracing off');
    assert.equal(off.off_by, named);
    await cvmInfo(client, 'ratio-0', callerTrace().header());
    await call(client, 'CreateVm', {});
    // Stopped: whatever it had queued would have been flushed by now.
    await d.stop();
    assert.deepEqual(rx.requests, []);
    assert.ok(!d.logs.lines.some((l) => l.msg === 'tracing started'));
  });
}

test('parentbased_traceidratio at 0 starts no trace of its own but continues a caller\'s sampled one', async (t) => {
  const rx = await receiver(t);
  const { d, client } = await daemonWith(t, { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0' });
  const sampled = callerTrace();
  await d.waitForLog((l) => l.msg === 'tracing started');
  await cvmInfo(client, 'root');
  await cvmInfo(client, 'unsampled', callerTrace().header('00'));
  await cvmInfo(client, 'sampled', sampled.header());
  await d.stop();
  assert.deepEqual(rx.spans.map((s) => [s.name, s.traceId]), [['manager.ManagerService/CVMInfo', sampled.traceId]]);
});

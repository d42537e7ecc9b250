// /health and /metrics for Prometheus and load balancers: health fails while the daemon starts
// or stops, metrics parse and move by exactly what the calls did, other paths and methods refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { Daemon, call, fakeQemuEnv, httpPortOf, nextRange, spawnServe, tmpDir, waitFor } from './daemon.mjs';

async function get(port, p, method = 'GET') {
  const res = await fetch(`http://127.0.0.1:${port}${p}`, { method, signal: AbortSignal.timeout(5_000) });
  return { status: res.status, type: res.headers.get('content-type'), body: await res.text(), allow: res.headers.get('allow') };
}

/** Prometheus text format → Map "name{labels}" → number (a parser of the test's own). */
function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$/.exec(line);
    assert.ok(m, `unparseable metrics line: ${line}`);
    out.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return out;
}

test('health: 200 pass with version, commit and instance id once serving; 404 and 405 elsewhere', async () => {
  const d = await Daemon.start(fakeQemuEnv(tmpDir(), { MANAGER_INSTANCE_ID: 'host-7' }));
  try {
    const h = await get(d.httpPort, '/health');
    assert.equal(h.status, 200);
    assert.equal(h.type, 'application/health+json');
    const body = JSON.parse(h.body);
    assert.equal(body.status, 'pass');
    assert.equal(body.instance_id, 'host-7');
    assert.match(body.version, /^\d+\.\d+\.\d+/);
    assert.match(body.commit, /^([0-9a-f]{12}|unknown)$/);
    for (const k of ['description', 'build_time']) assert.equal(typeof body[k], 'string', k);
    assert.equal((await get(d.httpPort, '/nope')).status, 404);
    const post = await get(d.httpPort, '/metrics', 'POST');
    assert.equal(post.status, 405);
    assert.equal(post.allow, 'GET, HEAD');
    assert.equal((await get(d.httpPort, '/health', 'DELETE')).status, 405);
  } finally {
    await d.stop();
  }
});

test('health: 503 until the daemon serves, 200 "warn" while it re-adopts what an earlier run left, then "pass"', async () => {
  // Many leftovers to clean: recovery takes a while after the port opens, and health says so.
  const state = tmpDir();
  for (let i = 0; i < 300; i++) fs.mkdirSync(path.join(state, 'vms', randomUUID()), { recursive: true });
  const { proc, logs } = spawnServe(fakeQemuEnv(state));
  try {
    const httpPort = await httpPortOf(logs);
    const seen = [];
    let leftAtPass;
    await waitFor(async () => {
      try {
        const h = await get(httpPort, '/health');
        const body = JSON.parse(h.body);
        seen.push(`${h.status} ${body.status}`);
        // What recovery has still to clean when health first says pass (the log line saying it
        // ended may reach this process after the answer: the state directory is what counts).
        if (body.status === 'pass') leftAtPass = fs.readdirSync(path.join(state, 'vms')).length;
        return body.status === 'pass';
      } catch {
        return false;
      }
    }, 30_000, 5);
    const distinct = [...new Set(seen)];
    // In this order: not serving yet (a short window, may be missed), serving while
    // recovering (the 300 directories take a while), done.
    const order = ['503 fail', '200 warn', '200 pass'];
    assert.deepEqual(distinct, order.filter((s) => distinct.includes(s)), `saw ${seen.join(', ')}`);
    assert.ok(distinct.includes('200 warn'), `serving while recovering: saw ${seen.join(', ')}`);
    assert.equal(leftAtPass, 0, 'pass only once recovery has ended (every leftover cleaned)');
    assert.deepEqual(fs.readdirSync(path.join(state, 'vms')), []);
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
  }
});

test('metrics parse, and move by exactly what the calls did', async () => {
  const range = nextRange(10);
  const d = await Daemon.start(fakeQemuEnv(tmpDir(), { MANAGER_QEMU_HOST_FWD_RANGE: range }));
  const client = d.client();
  try {
    const before = parseMetrics((await get(d.httpPort, '/metrics')).body);
    const a = await call(client, 'CreateVm', {});
    const b = await call(client, 'CreateVm', {});
    await assert.rejects(call(client, 'CreateVm', { ttl: 'soon' }));
    await call(client, 'RemoveVm', { cvm_id: a.cvm_id });
    await call(client, 'CVMInfo', { id: b.cvm_id });
    const m = parseMetrics((await get(d.httpPort, '/metrics')).body);
    const delta = (k) => (m.get(k) ?? 0) - (before.get(k) ?? 0);
    assert.equal(delta('cocos_manager_rpc_requests_total{method="CreateVm",code="OK"}'), 2);
    assert.equal(delta('cocos_manager_rpc_requests_total{method="CreateVm",code="INVALID_ARGUMENT"}'), 1);
    assert.equal(delta('cocos_manager_rpc_requests_total{method="RemoveVm",code="OK"}'), 1);
    assert.equal(delta('cocos_manager_rpc_duration_seconds_count{method="CreateVm",code="OK"}'), 2);
    assert.equal(delta('cocos_manager_vm_start_duration_seconds_count'), 2);
    assert.equal(delta('cocos_manager_qemu_exits_total{cause="removed"}'), 1);
    assert.equal(m.get('cocos_manager_vms{state="running"}'), 1);
    assert.equal(m.get('cocos_manager_ports_free'), 9);
    assert.ok(m.get('cocos_manager_process_resident_memory_bytes') > 0, 'default process metrics');
    for (const key of m.keys()) assert.ok(!key.includes(b.cvm_id), `no VM id in labels: ${key}`);
    await call(client, 'RemoveVm', { cvm_id: b.cvm_id });
  } finally {
    client.close();
    await d.stop();
  }
});

test('the HTTP endpoint does TLS and mutual TLS from the MANAGER_HTTP_ settings', async () => {
  const https = await import('node:https');
  const { makePki } = await import('./pki.mjs');
  const pki = makePki(tmpDir('cocos-http-pki-'));
  const { proc, logs } = spawnServe({ ...fakeQemuEnv(tmpDir()), MANAGER_HTTP_SERVER_CERT: pki.file('server.pem'), MANAGER_HTTP_SERVER_KEY: pki.file('server.key'), MANAGER_HTTP_CLIENT_CA_CERTS: pki.file('ca.pem') });
  let httpPort;
  const get = (opts) => new Promise((resolve) => {
    const req = https.request({ host: '127.0.0.1', port: httpPort, path: '/health', servername: 'localhost', ca: pki.read('ca.pem'), timeout: 2_000, ...opts }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', (e) => resolve(e.code ?? 'error'));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
  try {
    httpPort = await httpPortOf(logs);
    assert.ok(await waitFor(async () => (await get({ cert: pki.read('client.pem'), key: pki.read('client.key') })) === 200, 15_000), 'a client with a certificate of the CA gets 200');
    assert.notEqual(await get({}), 200, 'no client certificate: refused');
    assert.notEqual(await get({ cert: pki.read('stranger.pem'), key: pki.read('stranger.key') }), 200, 'another CA: refused');
    const plain = await fetch(`http://127.0.0.1:${httpPort}/health`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.status, () => 'refused');
    assert.notEqual(plain, 200, 'plain HTTP: refused');
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
  }
});

// /metrics carries the Go manager's two families beside ours, as its dashboards read them
// (cocos manager/api/metrics.go over magistrala's prometheus.MakeMetrics("manager", "api")):
// manager_api_request_count (counter) and manager_api_request_latency_microseconds (a summary,
// quantiles 0.5/0.9/0.99, in seconds whatever its name), label `method` with the Go service's
// names: Run, Stop, FetchAttestationPolicy, ReturnCVMInfo. Failed calls count, as Go's deferred
// observation does; ManagerAdmin's methods are not Go's and do not show.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Daemon, call, fakeQemuEnv, nextRange, tmpDir } from './daemon.mjs';

/** Prometheus text format → Map family → { help, type, samples: [{ name, labels, value }] } (a parser of the test's own). */
function parseExposition(text) {
  const families = new Map();
  const family = (name) => {
    if (!families.has(name)) families.set(name, { samples: [] });
    return families.get(name);
  };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (meta) {
      family(meta[2])[meta[1].toLowerCase()] = meta[3];
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparseable metrics line: ${line}`);
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    const base = [...families.keys()].find((f) => m[1] === f || m[1] === `${f}_sum` || m[1] === `${f}_count`) ?? m[1];
    family(base).samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return families;
}

async function scrape(d) {
  const res = await fetch(`http://127.0.0.1:${d.httpPort}/metrics`, { signal: AbortSignal.timeout(5_000) });
  return parseExposition(await res.text());
}

test('after real gRPC calls, the Go families count and time them by the Go method names', async () => {
  const d = await Daemon.start(fakeQemuEnv(tmpDir(), { MANAGER_QEMU_HOST_FWD_RANGE: nextRange(5) }));
  const client = d.client();
  const admin = d.adminClient();
  try {
    const before = await scrape(d);
    for (const f of ['manager_api_request_count', 'manager_api_request_latency_microseconds']) {
      assert.deepEqual(before.get(f)?.samples, [], `${f}: declared, no sample before any call`);
    }
    const started = process.hrtime.bigint();
    const a = await call(client, 'CreateVm', {});
    const b = await call(client, 'CreateVm', {});
    await assert.rejects(call(client, 'CreateVm', { ttl: 'soon' }), /INVALID_ARGUMENT|ttl/i);
    await call(client, 'RemoveVm', { cvm_id: a.cvm_id });
    await call(client, 'CVMInfo', { id: b.cvm_id });
    await call(client, 'CVMInfo', { id: 'not-a-vm' });
    // A plain OVMF VM has no policy: the call fails, and counts all the same.
    await assert.rejects(call(client, 'AttestationPolicy', { id: b.cvm_id }), /FAILED_PRECONDITION/);
    await call(admin, 'ListVms', {});
    await call(admin, 'GetVm', { id: b.cvm_id });
    const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
    const m = await scrape(d);

    const count = m.get('manager_api_request_count');
    assert.equal(count.type, 'counter');
    assert.equal(count.help, 'Number of requests received.');
    const counted = Object.fromEntries(count.samples.map((s) => {
      assert.equal(s.name, 'manager_api_request_count');
      assert.deepEqual(Object.keys(s.labels), ['method']);
      return [s.labels.method, s.value];
    }));
    assert.deepEqual(counted, { Run: 3, Stop: 1, ReturnCVMInfo: 2, FetchAttestationPolicy: 1 });

    const latency = m.get('manager_api_request_latency_microseconds');
    assert.equal(latency.type, 'summary');
    assert.equal(latency.help, 'Total duration of requests in microseconds.');
    for (const [method, n] of Object.entries(counted)) {
      const mine = latency.samples.filter((s) => s.labels.method === method);
      const quantiles = mine.filter((s) => s.name === 'manager_api_request_latency_microseconds');
      assert.deepEqual(quantiles.map((s) => s.labels.quantile), ['0.5', '0.9', '0.99'], `${method}: the Go objectives`);
      for (const s of mine) assert.deepEqual(Object.keys(s.labels).sort(), s.name === 'manager_api_request_latency_microseconds' ? ['method', 'quantile'] : ['method']);
      const sum = mine.find((s) => s.name.endsWith('_sum')).value;
      assert.equal(mine.find((s) => s.name.endsWith('_count')).value, n, `${method}: one observation per call`);
      // Seconds, as go-kit's Observe(time.Since(begin).Seconds()): never more than the calls took.
      assert.ok(sum > 0 && sum <= elapsed, `${method}: sum ${sum} s within the ${elapsed} s the calls took`);
      for (const q of quantiles) assert.ok(q.value > 0 && q.value <= sum, `${method} q${q.labels.quantile}: ${q.value}`);
    }
    assert.deepEqual([...new Set(latency.samples.map((s) => s.labels.method))].sort(), Object.keys(counted).sort(), 'ManagerService only, under the Go names');
    // Ours go on beside them, by gRPC method name.
    assert.equal(m.get('cocos_manager_rpc_requests_total').samples.find((s) => s.labels.method === 'CreateVm' && s.labels.code === 'OK').value, 2);
    await call(client, 'RemoveVm', { cvm_id: b.cvm_id });
  } finally {
    client.close();
    admin.close();
    await d.stop();
  }
});

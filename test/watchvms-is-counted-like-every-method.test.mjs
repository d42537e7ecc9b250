// WatchVms is counted, timed and logged like every other method: its metric label is its plain
// name ("WatchVms", as "CreateVm"), not a path, and the events it sent are in its rpc line.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Daemon, fakeQemuEnv, tmpDir, waitFor } from './daemon.mjs';

let daemon;
after(async () => {
  await daemon?.stop();
});

test('a WatchVms call shows in /metrics as method="WatchVms" and in the log with its events', async () => {
  daemon = await Daemon.start(fakeQemuEnv(path.join(tmpDir('cocos-watch-metric-'), 'state')));
  await daemon.createVms({});
  const admin = daemon.adminClient();
  const stream = admin.WatchVms({});
  const events = [];
  stream.on('data', (e) => events.push(e));
  stream.on('error', () => {});
  assert.ok(await waitFor(() => events.length >= 1, 5_000), 'the opening list came');
  stream.cancel();
  admin.close();
  const metrics = async () => (await fetch(`http://127.0.0.1:${daemon.httpPort}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  assert.ok(await waitFor(async () => /cocos_manager_rpc_requests_total\{method="WatchVms",code="CANCELLED"\} 1/.test(await metrics()), 5_000), 'counted under its plain name');
  const text = await metrics();
  assert.doesNotMatch(text, /method="\/manager\.ManagerAdmin\/WatchVms"/);
  assert.match(text, /cocos_manager_rpc_duration_seconds_count\{method="WatchVms"/);
  const line = await daemon.waitForLog((l) => l.msg === 'rpc' && l.method === 'WatchVms', 5_000);
  assert.equal(line.code, 'CANCELLED');
  assert.equal(line.events, 1);
});

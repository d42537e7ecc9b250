// SIGTERM while CreateVm calls are in flight: health turns 503, new calls are refused, the calls
// in flight finish with a usable VM, the daemon exits 0, and the VMs are re-adopted at next start.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, isAlive, killProcessesMentioning, readAgent, tmpDir, waitFor } from './daemon.mjs';

test('SIGTERM during CreateVm: calls finish, daemon exits 0, VMs survive and are re-adopted', async (t) => {
  const state = tmpDir();
  // Whatever happens below, no VM of this test outlives it.
  t.after(() => killProcessesMentioning(state));
  const modeFile = path.join(tmpDir('cocos-mode-'), 'mode');
  // QEMU takes 4 s to come up: long enough that both calls are surely in flight at SIGTERM.
  fs.writeFileSync(modeFile, 'slow-listen:4000');
  const env = fakeQemuEnv(state, { FAKE_QEMU_MODE_FILE: modeFile, MANAGER_QEMU_START_TIMEOUT: '30s' });
  const d = await Daemon.start(env);
  const client = d.client();
  const inflight = [call(client, 'CreateVm', {}), call(client, 'CreateVm', {})];
  // Both calls have spawned their QEMU.
  assert.ok(await waitFor(() => d.logs.lines.filter((l) => l.msg === 'starting QEMU').length === 2, 10_000), 'both calls started QEMU');
  let settled = false;
  void Promise.allSettled(inflight).then(() => { settled = true; });
  d.proc.kill('SIGTERM');
  // The signal is handled asynchronously: health turns 503 shortly, and while the calls still run.
  let body;
  assert.ok(await waitFor(async () => {
    const res = await fetch(`http://127.0.0.1:${d.httpPort}/health`, { signal: AbortSignal.timeout(1_000) });
    body = await res.json();
    return res.status === 503;
  }, 3_000, 10), 'health 503 after SIGTERM');
  assert.equal(body.status, 'fail');
  assert.equal(settled, false, 'the calls were still in flight');
  const vms = await Promise.all(inflight);
  client.close();
  assert.deepEqual(await d.exited, { code: 0, signal: null });
  for (const vm of vms) assert.match((await readAgent(Number(vm.forwarded_port))).environment, new RegExp(vm.cvm_id));

  fs.writeFileSync(modeFile, 'normal');
  const again = await d.restart();
  const c2 = again.client();
  try {
    assert.equal(again.logs.lines.filter((l) => l.msg === 're-adopted a running VM').length, 2);
    for (const vm of vms) {
      const { pid } = JSON.parse(fs.readFileSync(path.join(state, 'vms', vm.cvm_id, 'record.json'), 'utf8'));
      await call(c2, 'RemoveVm', { cvm_id: vm.cvm_id });
      assert.ok(await waitFor(() => !isAlive(pid), 3_000));
    }
  } finally {
    c2.close();
    await again.stop();
  }
});

// Slots and ports: never more than MANAGER_MAX_VMS, never the same port twice, never a port
// another process listens on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, nextRange, readAgent, tmpDir } from './daemon.mjs';

test('30 concurrent CreateVm with MANAGER_MAX_VMS=5: exactly 5 succeed on distinct ports, the rest RESOURCE_EXHAUSTED', async () => {
  const state = tmpDir();
  const daemon = await Daemon.start(fakeQemuEnv(state, { MANAGER_MAX_VMS: '5', MANAGER_QEMU_HOST_FWD_RANGE: nextRange(40) }));
  const client = daemon.client();
  try {
    const results = await Promise.allSettled(Array.from({ length: 30 }, () => call(client, 'CreateVm', {}, 30_000)));
    const ok = results.filter((r) => r.status === 'fulfilled').map((r) => r.value);
    const failed = results.filter((r) => r.status === 'rejected').map((r) => r.reason);
    assert.equal(ok.length, 5);
    assert.equal(new Set(ok.map((r) => r.forwarded_port)).size, 5, 'ports distinct');
    for (const e of failed) {
      assert.equal(e.code, 8, e.details);
      assert.match(e.details, /MANAGER_MAX_VMS=5/);
    }
    for (const r of ok) assert.equal((await readAgent(Number(r.forwarded_port))).environment.includes(`AGENT_CVM_ID=${r.cvm_id}\n`), true);
    assert.equal(fs.readdirSync(path.join(state, 'vms')).length, 5, 'no directory of a refused call');
    // A slot freed is a slot available again.
    await call(client, 'RemoveVm', { cvm_id: ok[0].cvm_id });
    const again = await call(client, 'CreateVm', {});
    await call(client, 'RemoveVm', { cvm_id: again.cvm_id });
    for (const r of ok.slice(1)) await call(client, 'RemoveVm', { cvm_id: r.cvm_id });
  } finally {
    client.close();
    await daemon.stop();
  }
});

test('a port another process listens on is skipped; an exhausted range is RESOURCE_EXHAUSTED', async () => {
  const range = nextRange(3);
  const [first, last] = range.split('-').map(Number);
  const squatter = net.createServer();
  await new Promise((r) => squatter.listen(first + 1, '127.0.0.1', r));
  const daemon = await Daemon.start(fakeQemuEnv(tmpDir(), { MANAGER_MAX_VMS: '0', MANAGER_QEMU_HOST_FWD_RANGE: range }));
  const client = daemon.client();
  try {
    const a = await call(client, 'CreateVm', {});
    const b = await call(client, 'CreateVm', {});
    assert.deepEqual([a.forwarded_port, b.forwarded_port].map(Number).sort(), [first, last]);
    await assert.rejects(call(client, 'CreateVm', {}), (e) => e.code === 8 && e.details.includes(`MANAGER_QEMU_HOST_FWD_RANGE=${range}`));
    await call(client, 'RemoveVm', { cvm_id: a.cvm_id });
    const c = await call(client, 'CreateVm', {});
    assert.equal(c.forwarded_port, a.forwarded_port, 'the freed port is handed out again');
    await call(client, 'RemoveVm', { cvm_id: b.cvm_id });
    await call(client, 'RemoveVm', { cvm_id: c.cvm_id });
  } finally {
    client.close();
    squatter.close();
    await daemon.stop();
  }
});

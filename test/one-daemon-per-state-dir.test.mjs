// Two daemons on one MANAGER_STATE_DIR would both supervise the same QEMUs: the second is refused
// with exit 2 and one line naming the first one's PID; a daemon killed with -9 leaves no stale lock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Daemon, call, fakeQemuEnv, isAlive, spawnServe, tmpDir } from './daemon.mjs';

function exitOf(proc, timeoutMs = 20_000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error('second daemon did not exit')); }, timeoutMs);
    proc.once('exit', (code, signal) => { clearTimeout(t); resolve({ code, signal }); });
  });
}

test('a second daemon on the same state directory exits 2 naming the PID that holds it, and adopts nothing', async () => {
  const state = tmpDir();
  const first = await Daemon.start(fakeQemuEnv(state));
  const client = first.client();
  try {
    const vm = await call(client, 'CreateVm', {});
    const { proc, logs } = spawnServe(fakeQemuEnv(state));
    const { code } = await exitOf(proc);
    assert.equal(code, 2, logs.stderr);
    const lines = logs.stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, logs.stderr);
    assert.match(lines[0], new RegExp(`MANAGER_STATE_DIR=.* is in use by cocos-manager pid ${first.proc.pid}\\b`));
    assert.equal(logs.lines.filter((l) => l.msg === 're-adopted a running VM').length, 0);
    // The first daemon still owns its VM.
    const info = await call(client, 'CVMInfo', { id: vm.cvm_id });
    assert.equal(info.id, vm.cvm_id);
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
  } finally {
    client.close();
    await first.stop();
  }
});

test('a daemon killed with -9 leaves no stale lock: the next one starts and re-adopts', async () => {
  const state = tmpDir();
  const first = await Daemon.start(fakeQemuEnv(state));
  let second;
  let client;
  try {
    const [vm] = await first.createVms({});
    second = await first.restart({ whileDown: () => assert.equal(isAlive(first.proc.pid), false) });
    client = second.client();
    assert.equal(second.logs.lines.filter((l) => l.msg === 're-adopted a running VM').length, 1);
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
  } finally {
    // Whatever failed, no daemon of this test outlives it (the test process would wait for it).
    client?.close();
    await (second ?? first).stop();
  }
});

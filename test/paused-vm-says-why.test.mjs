// A VM that QEMU pauses by itself says why, in GetVm, ListVms, WatchVms, the log and `vm ls` /
// `vm info`: an I/O error with werror=stop (BLOCK_IO_ERROR: a full disk), a guest panic with
// -action panic=pause (GUEST_PANICKED). Resumed, the reason goes; a pause asked for has none.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, baseEnv } from './helpers.mjs';
import { Daemon, call, fakeQemuEnv, tmpDir, waitFor } from './daemon.mjs';

let daemon;
after(async () => {
  await daemon?.stop();
});

/** The CLI, asynchronously (the daemon's clients live in this process's event loop). */
function cli(args) {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { env: baseEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    p.stdout.on('data', (d) => { stdout += d; });
    const t = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.on('exit', () => { clearTimeout(t); resolve(stdout); });
  });
}

const cases = [
  ['io-error-when', /^I\/O error on drive0 \(write, no space left\)$/],
  ['panic-pause-when', /^guest panic$/],
];

test('a VM paused by QEMU for a reason shows the reason everywhere an operator looks; resumed, it is gone', async () => {
  const dir = tmpDir('cocos-paused-');
  const modeFile = path.join(dir, 'mode');
  daemon = await Daemon.start(fakeQemuEnv(path.join(dir, 'state'), { FAKE_QEMU_MODE_FILE: modeFile, MANAGER_LOG_LEVEL: 'info' }));
  const client = daemon.client();
  const admin = daemon.adminClient();
  const events = [];
  const stream = admin.WatchVms({});
  stream.on('data', (e) => events.push(e));
  stream.on('error', () => {});
  try {
    for (const [mode, reason] of cases) {
      const trigger = path.join(dir, `${mode}.trip`);
      fs.writeFileSync(modeFile, `${mode}:${trigger}`);
      const vm = await call(client, 'CreateVm', {});
      fs.writeFileSync(trigger, '');
      const paused = (e) => e.id === vm.cvm_id && e.to === 'paused';
      assert.ok(await waitFor(() => events.some(paused), 10_000), JSON.stringify(events.filter((e) => e.id === vm.cvm_id).map((e) => [e.to, e.reason])));
      assert.match(events.find(paused).vm.pause_reason, reason);
      const v = await call(admin, 'GetVm', { id: vm.cvm_id });
      assert.equal(v.state, 'paused');
      assert.match(v.pause_reason, reason);
      const listed = (await call(admin, 'ListVms', {})).vms.find((x) => x.id === vm.cvm_id);
      assert.match(listed.pause_reason, reason);
      await daemon.waitForLog((l) => l.cvm_id === vm.cvm_id && l.level === 'warn' && reason.test(l.pause_reason ?? ''), 5_000);
      const ls = await cli(['vm', 'ls', '--admin-socket', daemon.adminSocket]);
      assert.match(ls, new RegExp(`${vm.cvm_id}\\s+paused \\(${reason.source.slice(1, -1)}\\)`), ls);
      const info = await cli(['vm', 'info', vm.cvm_id, '--admin-socket', daemon.adminSocket, '--addr', `127.0.0.1:${daemon.port}`]);
      assert.match(info, new RegExp(`paused \\(${reason.source.slice(1, -1)}\\)`), info);

      // Resumed (the stand-in toggles on SIGHUP: RESUME): running, no reason left.
      process.kill(Number(v.pid), 'SIGHUP');
      assert.ok(await waitFor(async () => (await call(admin, 'GetVm', { id: vm.cvm_id })).state === 'running', 10_000));
      assert.equal((await call(admin, 'GetVm', { id: vm.cvm_id })).pause_reason, '');
      await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
    }

    // A pause asked for (the stand-in's SIGHUP: QMP STOP with no reason) has none.
    fs.writeFileSync(modeFile, 'normal');
    const plain = await call(client, 'CreateVm', {});
    process.kill(Number((await call(admin, 'GetVm', { id: plain.cvm_id })).pid), 'SIGHUP');
    assert.ok(await waitFor(async () => (await call(admin, 'GetVm', { id: plain.cvm_id })).state === 'paused', 10_000));
    assert.equal((await call(admin, 'GetVm', { id: plain.cvm_id })).pause_reason, '');
  } finally {
    stream.cancel();
    client.close();
    admin.close();
  }
});

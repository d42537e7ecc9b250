// QEMU failing to start, dying, or ignoring SIGTERM: clear errors, full rollback, nothing leaked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, fakeQemuEnv, isAlive, portIsFree, tmpDir, waitFor } from './daemon.mjs';

let daemon;
let client;
let state;
let modeFile;
const setMode = (m) => fs.writeFileSync(modeFile, m);
const vmDirs = () => fs.readdirSync(path.join(state, 'vms'));
const record = (id) => JSON.parse(fs.readFileSync(path.join(state, 'vms', id, 'record.json'), 'utf8'));

before(async () => {
  state = tmpDir();
  modeFile = path.join(tmpDir('cocos-mode-'), 'mode');
  setMode('normal');
  daemon = await Daemon.start(
    fakeQemuEnv(state, { FAKE_QEMU_MODE_FILE: modeFile, MANAGER_MAX_VMS: '1', MANAGER_QEMU_START_TIMEOUT: '1500ms', MANAGER_QEMU_STOP_TIMEOUT: '500ms' }),
  );
  client = daemon.client();
});
after(async () => {
  client?.close();
  await daemon?.stop();
});

test('QEMU exiting during start: FAILED_PRECONDITION with its last lines, everything rolled back', async () => {
  setMode('exit-early');
  await assert.rejects(call(client, 'CreateVm', {}), (e) => {
    assert.equal(e.code, 9, e.details);
    assert.match(e.details, /QEMU exited during start \(exit code 1\)/);
    assert.match(e.details, /invalid object type: sev-snp-guest/);
    return true;
  });
  assert.deepEqual(vmDirs(), []);
  setMode('normal');
  // The slot (MAX_VMS=1) and the port were given back.
  const ok = await call(client, 'CreateVm', {});
  await call(client, 'RemoveVm', { cvm_id: ok.cvm_id });
});

test('QEMU never listening: UNAVAILABLE after MANAGER_QEMU_START_TIMEOUT, process killed, rolled back', async () => {
  setMode('no-listen');
  const t0 = Date.now();
  await assert.rejects(call(client, 'CreateVm', {}), (e) => e.code === 14 && /did not finish starting .* within/.test(e.details));
  assert.ok(Date.now() - t0 >= 1400);
  assert.deepEqual(vmDirs(), []);
  setMode('normal');
});

test('QEMU killed -9 while running: noticed within a second, port and slot freed, record kept until RemoveVm', async () => {
  setMode('normal');
  const vm = await call(client, 'CreateVm', {});
  const { pid } = record(vm.cvm_id);
  process.kill(pid, 'SIGKILL');
  const seen = await daemon.waitForLog((l) => l.cvm_id === vm.cvm_id && /QEMU exited on its own/.test(l.msg ?? ''), 1_500);
  assert.equal(seen.signal, 'SIGKILL');
  assert.ok(await waitFor(() => record(vm.cvm_id).state === 'crashed', 1_000));
  assert.equal(record(vm.cvm_id).exit.cause, 'host signal');
  assert.ok(await portIsFree(Number(vm.forwarded_port)));
  // The slot is free (MAX_VMS=1): another VM starts while the dead one's record stays.
  const other = await call(client, 'CreateVm', {});
  assert.ok(vmDirs().includes(vm.cvm_id));
  await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
  assert.equal(vmDirs().includes(vm.cvm_id), false);
  await call(client, 'RemoveVm', { cvm_id: other.cvm_id });
});

test('QEMU ignoring SIGTERM is killed after MANAGER_QEMU_STOP_TIMEOUT', async () => {
  setMode('ignore-term');
  const vm = await call(client, 'CreateVm', {});
  const { pid } = record(vm.cvm_id);
  const t0 = Date.now();
  await call(client, 'RemoveVm', { cvm_id: vm.cvm_id });
  const took = Date.now() - t0;
  assert.ok(took >= 450, `waited the stop timeout (${took} ms)`);
  assert.equal(isAlive(pid), false);
  await daemon.waitForLog((l) => l.cvm_id === vm.cvm_id && /ignored (SIGTERM|QMP quit)/.test(l.msg ?? ''), 1_000);
  setMode('normal');
});

test('QEMU output reaches the log with the cvm id: stderr at warn, error-like lines at error', async () => {
  setMode('exit-early');
  await assert.rejects(call(client, 'CreateVm', {}));
  const line = await daemon.waitForLog((l) => /invalid object type/.test(l.msg ?? ''), 1_000);
  assert.equal(line.level, 'error');
  assert.ok(line.cvm_id);
  const warn = await daemon.waitForLog((l) => /char device redirected/.test(l.msg ?? ''), 1_000).catch(() => undefined);
  if (warn) assert.equal(warn.level, 'warn');
  setMode('normal');
});

test('a missing OVMF_VARS template: FAILED_PRECONDITION naming the setting and the path, nothing left behind', async () => {
  const st = tmpDir();
  const d = await Daemon.start(fakeQemuEnv(st, { MANAGER_QEMU_OVMF_VARS_FILE: '/nonexistent/OVMF_VARS.fd' }));
  const c = d.client();
  try {
    await assert.rejects(call(c, 'CreateVm', {}), (e) => {
      assert.equal(e.code, 9, e.details);
      assert.match(e.details, /^MANAGER_QEMU_OVMF_VARS_FILE="\/nonexistent\/OVMF_VARS.fd" cannot be read \(no such file\)/);
      assert.doesNotMatch(e.details, /ENOENT.*ENOENT/);
      return true;
    });
    assert.deepEqual(fs.readdirSync(path.join(st, 'vms')), []);
  } finally {
    c.close();
    await d.stop();
  }
});

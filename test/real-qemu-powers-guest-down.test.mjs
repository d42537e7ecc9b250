// Graceful power-down on the real thing: with MANAGER_QEMU_POWERDOWN_TIMEOUT set, RemoveVm sends
// QMP system_powerdown, the test guest's acpid sees the ACPI power button and powers off, QEMU
// reports SHUTDOWN (guest-shutdown) and exits: the exit cause reads "guest shutdown".
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Daemon, call, isAlive, portIsFree, tcgEnv, tmpDir, waitFor } from './daemon.mjs';
import { GUEST_INITRD, GUEST_KERNEL, consoleTail, waitForAgentReport } from './guest.mjs';
import { QEMUS } from './qemu-versions.mjs';

const BOOT_TIMEOUT_MS = 120_000;
for (const qemu of QEMUS) describe(qemu.name, { skip: qemu.skip }, () => {
let daemon;
let client;
let admin;
let state;

before(async () => {
  assert.ok(fs.existsSync(GUEST_KERNEL) && fs.existsSync(GUEST_INITRD), 'run `make guest` first (make test does)');
  state = tmpDir('cocos-powerdown-');
  daemon = await Daemon.start(tcgEnv(state, {
    ...qemu.env,
    MANAGER_QEMU_DISK_IMG_KERNEL_FILE: GUEST_KERNEL,
    MANAGER_QEMU_DISK_IMG_ROOTFS_FILE: GUEST_INITRD,
    MANAGER_QEMU_POWERDOWN_TIMEOUT: '60s',
    MANAGER_LOG_LEVEL: 'info',
  }));
  client = daemon.client();
  admin = daemon.adminClient();
});
after(async () => {
  client?.close();
  admin?.close();
  await daemon?.stop();
});

async function bootedVm() {
  const vm = await call(client, 'CreateVm', {}, 60_000);
  try {
    await waitForAgentReport(Number(vm.forwarded_port), BOOT_TIMEOUT_MS);
    // The agent answers after acpid started (init.sh order); the line says so.
    await daemon.waitForLog((l) => l.cvm_id === vm.cvm_id && /acpid listening for the power button/.test(l.msg ?? ''), 10_000);
  } catch (err) {
    err.message += `\n--- serial console of ${vm.cvm_id} ---\n${consoleTail(state, vm.cvm_id)}`;
    throw err;
  }
  return vm;
}

test('RemoveVm presses the power button: the guest logs its shutdown, the exit cause is "guest shutdown"', { timeout: 300_000 }, async () => {
  const vm = await bootedVm();
  const { pid } = await call(admin, 'GetVm', { id: vm.cvm_id });
  const events = [];
  const stream = admin.WatchVms({});
  stream.on('data', (e) => events.push(e));
  stream.on('error', () => {});
  try {
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id }, 90_000);
    assert.ok(await waitFor(() => events.some((e) => e.id === vm.cvm_id && e.to === 'removed'), 5_000));
    const stopped = events.find((e) => e.id === vm.cvm_id && (e.to === 'stopped' || e.to === 'crashed'));
    assert.equal(stopped?.to, 'stopped', JSON.stringify(events));
    assert.equal(stopped.vm.exit_cause, 'guest shutdown');
    const said = (re) => daemon.logs.lines.some((l) => l.cvm_id === vm.cvm_id && l.stream === 'console' && re.test(l.msg ?? ''));
    assert.ok(said(/power button pressed: shutting down/), 'the guest logged its shutdown');
    assert.ok(daemon.logs.lines.some((l) => l.cvm_id === vm.cvm_id && /the guest shut down after the power button/.test(l.msg ?? '')));
    assert.equal(isAlive(pid), false);
    assert.ok(await portIsFree(Number(vm.forwarded_port)));
  } finally {
    stream.cancel();
  }
});
});

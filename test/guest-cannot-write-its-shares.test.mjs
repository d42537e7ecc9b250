// The real test guest, on each QEMU of qemu-versions.mjs, tries to make its env share writable
// (`mount -o remount,rw /env`) and to write a file into it (guest/probe.sh). The 9P shares are
// `readonly=on` on QEMU's side, so whatever the guest's kernel thinks of the mount, the write
// fails and the VM's env directory on the host holds only what the manager put there. The guest
// still read its `environment` (the probe runs only because it found AWS_ENDPOINT_URL in it),
// and its QEMU runs under -sandbox.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, tcgEnv, tmpDir } from './daemon.mjs';
import { GUEST_INITRD, GUEST_KERNEL, consoleTail, waitForProbe } from './guest.mjs';
import { QEMUS } from './qemu-versions.mjs';

const PROBE_TIMEOUT_MS = 180_000;
// A guest initramfs built elsewhere (e.g. from a worktree whose build/ is shared) may be named here.
const INITRD = process.env.COCOS_TEST_GUEST_INITRD || GUEST_INITRD;

for (const qemu of QEMUS) describe(`on ${qemu.name}`, { skip: qemu.skip }, () => {
  let daemon;
  let client;
  let state;
  before(async () => {
    assert.ok(fs.existsSync(GUEST_KERNEL) && fs.existsSync(INITRD), 'run `make guest` first (make test does)');
    state = tmpDir('cocos-ro-shares-');
    daemon = await Daemon.start(tcgEnv(state, {
      ...qemu.env,
      MANAGER_QEMU_DISK_IMG_KERNEL_FILE: GUEST_KERNEL,
      MANAGER_QEMU_DISK_IMG_ROOTFS_FILE: INITRD,
    }));
    client = daemon.client();
  });
  after(async () => {
    client?.close();
    await daemon?.stop();
  });

  test('the guest cannot write to its env share: the write fails and nothing appears on the host', { timeout: 300_000 }, async () => {
    // Only the share part of the probe matters here: its network targets are left empty.
    const vm = await call(client, 'CreateVm', { aws_endpoint_url: 'cocos-probe' }, 60_000);
    const envDir = path.join(state, 'vms', vm.cvm_id, 'env');
    const before = fs.readdirSync(envDir).sort();
    const environment = fs.readFileSync(path.join(envDir, 'environment'));
    assert.deepEqual(before, ['environment']);

    const rec = JSON.parse(fs.readFileSync(path.join(state, 'vms', vm.cvm_id, 'record.json'), 'utf8'));
    const cmdline = fs.readFileSync(`/proc/${rec.pid}/cmdline`, 'utf8').split('\0');
    const fsdevs = cmdline.flatMap((a, i) => (cmdline[i - 1] === '-fsdev' ? [a] : []));
    assert.equal(fsdevs.length, 2, cmdline.join(' '));
    for (const f of fsdevs) assert.match(f, /,readonly=on$/);
    assert.ok(cmdline.includes('-sandbox'), 'this QEMU takes -sandbox, so its VMs run under it');

    let probe;
    try {
      ({ probe } = await waitForProbe(Number(vm.forwarded_port), PROBE_TIMEOUT_MS));
    } catch (err) {
      err.message += `\n--- serial console of ${vm.cvm_id} ---\n${consoleTail(state, vm.cvm_id)}`;
      throw err;
    }
    process.stderr.write(`# ${qemu.name} guest share probe: ${JSON.stringify({ remount: probe.share_remount_exit, write: probe.share_write_exit, appeared: probe.share_file_appeared })}\n`);
    assert.ok(probe.share_write_exit !== undefined, `this guest's probe has no share part: rebuild the guest (make guest); got ${JSON.stringify(probe)}`);
    assert.notEqual(probe.share_write_exit, '0', 'the guest\'s write into /env failed');
    assert.equal(probe.share_file_appeared, '0', 'no file appeared in the guest\'s view of /env');
    assert.deepEqual(fs.readdirSync(envDir).sort(), before, 'nothing new in the VM\'s env directory on the host');
    assert.deepEqual(fs.readFileSync(path.join(envDir, 'environment')), environment);

    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id }, 30_000);
  });
});

// The daemon launches the real qemu-system-x86_64 (software emulation, OVMF from Debian), on
// each QEMU of qemu-versions.mjs (Debian 12's 7.2 and 11.1 from trixie-backports):
// QEMU itself listens on the forwarded port, under its seccomp sandbox, its output reaches the log, RemoveVm stops it;
// a missing kernel is reported with QEMU's own words and rolled back.
// The guest is a stub (a Linux boot header around a spin loop) made here: booting a real
// Linux guest is the end-to-end test's job.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Daemon, call, isAlive, portIsFree, tcgEnv, tmpDir, waitFor } from './daemon.mjs';
import { QEMUS, isQemuCommandLine } from './qemu-versions.mjs';

function writeStubKernel(file) {
  const b = Buffer.alloc(16 * 1024);
  b[0x1f1] = 1; // setup_sects
  b.writeUInt16LE(0xaa55, 0x1fe); // boot_flag
  b.write('HdrS', 0x202, 'latin1'); // boot protocol header
  b.writeUInt16LE(0x020f, 0x206); // protocol 2.15
  b[0x211] = 0x01; // LOADED_HIGH
  b.writeUInt32LE(0x7fffffff, 0x22c); // initrd_addr_max
  b.writeUInt16LE(0xfeeb, 1024); // protected-mode entry: jmp $
  fs.writeFileSync(file, b);
}

for (const qemu of QEMUS) describe(`on ${qemu.name}`, { skip: qemu.skip }, () => {
  let dir;
  let daemon;
  let client;
  let state;
  before(async () => {
    dir = tmpDir('cocos-real-');
    state = path.join(dir, 'state');
    writeStubKernel(path.join(dir, 'bzImage'));
    fs.writeFileSync(path.join(dir, 'initrd'), Buffer.alloc(512));
    daemon = await Daemon.start(tcgEnv(state, {
      ...qemu.env,
      MANAGER_QEMU_MEMORY_SIZE: '256M',
      MANAGER_QEMU_DISK_IMG_KERNEL_FILE: path.join(dir, 'bzImage'),
      MANAGER_QEMU_DISK_IMG_ROOTFS_FILE: path.join(dir, 'initrd'),
      MANAGER_QEMU_KERNEL_CMDLINE: 'console=ttyS0',
    }));
    client = daemon.client();
  });
  after(async () => {
    client?.close();
    await daemon?.stop();
  });

  test('CreateVm starts real QEMU listening on the forwarded port; RemoveVm stops it', async () => {
    const vm = await call(client, 'CreateVm', { aa_kbs_params: 'cc_kbc::http://127.0.0.1:1' }, 30_000);
    const rec = JSON.parse(fs.readFileSync(path.join(state, 'vms', vm.cvm_id, 'record.json'), 'utf8'));
    // The PID the daemon holds is QEMU's own (a wrapper execs in place), not a shell's.
    const cmdline = fs.readFileSync(`/proc/${rec.pid}/cmdline`, 'utf8').split('\0');
    assert.ok(isQemuCommandLine(cmdline), cmdline.join(' '));
    // Both QEMUs take the seccomp sandbox (the trial start says so), and run under it.
    assert.equal(cmdline[cmdline.indexOf('-sandbox') + 1], 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny', cmdline.join(' '));
    assert.equal(await portIsFree(Number(vm.forwarded_port)), false, 'QEMU holds the forwarded port');
    // QEMU's own stderr line reaches the log with the cvm id.
    const line = await daemon.waitForLog((l) => l.cvm_id === vm.cvm_id && /char device redirected/.test(l.msg ?? ''), 10_000);
    assert.ok(['qemu', 'console'].includes(line.stream), line.stream);
    assert.ok(fs.statSync(path.join(state, 'vms', vm.cvm_id, 'OVMF_VARS.fd')).size > 0);
    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id }, 30_000);
    assert.ok(await waitFor(() => !isAlive(rec.pid), 5_000));
    assert.ok(await portIsFree(Number(vm.forwarded_port)));
    assert.equal(fs.existsSync(path.join(state, 'vms', vm.cvm_id)), false);
  });
});

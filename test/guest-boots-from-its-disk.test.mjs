// A guest boots from its own disk through the daemon (MANAGER_QEMU_ENABLE_DISK, the Go manager's
// disk boot), on each QEMU of qemu-versions.mjs: CreateVm makes the VM a qcow2 overlay on
// build/guest/disk.qcow2 (`make guest-disk`, the source) in its directory, QEMU gets Go's disk
// options right after the virtio-net-pci device and no -kernel, -append or -initrd, OVMF finds
// the unified kernel image on the disk, and the guest's agent reports what the VM's directory
// gave it. The overlay is the VM user's alone (0600), that user cannot write the source, the
// source is unchanged afterwards, and RemoveVm deletes the overlay.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { escapeOptionValue } from '../dist/qemu/args.js';
import { Daemon, call, isAlive, tcgEnv, tmpDir, waitFor } from './daemon.mjs';
import { GUEST_DISK, GUEST_DISK_CMDLINE, consoleTail, waitForAgentReport } from './guest.mjs';
import { QEMUS } from './qemu-versions.mjs';
import { vmVector } from './vm-vector.mjs';

const BOOT_TIMEOUT_MS = 180_000;
const sha256 = (data) => createHash('sha256').update(data).digest('hex');
const sha384 = (file) => createHash('sha384').update(fs.readFileSync(file)).digest('hex');

/** Go's defaults for the disk: MANAGER_QEMU_DISK_ID, _DISK_SCSI_ID, _DISK_FORMAT. */
const DISK = { id: 'disk0', scsiId: 'scsi0', format: 'qcow2' };

/** The kernel-boot vector `args` made Go's disk boot of `diskFile` (config.go 225-239, 312-316). */
function diskBootArgs(args, diskFile) {
  const out = [];
  for (let i = 0; i < args.length; i++) {
    if (['-kernel', '-append', '-initrd'].includes(args[i])) { i++; continue; }
    out.push(args[i]);
    if (args[i - 1] === '-device' && args[i].startsWith('virtio-net-pci,')) {
      out.push(
        '-drive', `file=${escapeOptionValue(diskFile)},if=none,id=${DISK.id},format=${DISK.format}`,
        '-device', `virtio-scsi-pci,id=${DISK.scsiId},disable-legacy=on,iommu_platform=true`,
        '-device', `scsi-hd,drive=${DISK.id},bus=${DISK.scsiId}.0`,
      );
    }
  }
  return out;
}

/** Everything that reaches the guest, aa_kbs_params included (it rides on -append, which a disk boot drops). */
const REQUEST = {
  agent_log_level: 'warn',
  agent_cvm_server_url: 'prism.example:7001',
  agent_cvm_client_cert: Buffer.from('cert of the disk-booted VM'),
  aa_kbs_params: 'cc_kbc::http://10.0.2.2:8080',
};

test('the daemon\'s disk vector is Go\'s: the kernel vector with the disk options right after the virtio-net-pci device, and no kernel options', async () => {
  const dir = tmpDir('cocos-disk-argv-');
  try {
    const kernelBoot = await vmVector(tcgEnv(dir), dir, REQUEST);
    const diskBoot = await vmVector(tcgEnv(path.join(dir, 'disk'), { MANAGER_QEMU_ENABLE_DISK: 'true' }), path.join(dir, 'disk'), REQUEST, { diskFile: '/vms/a,b.qcow2' });
    const sameDirs = diskBoot.map((a) => a.replaceAll(path.join(dir, 'disk'), dir));
    assert.deepEqual(sameDirs, diskBootArgs(kernelBoot, '/vms/a,b.qcow2'));
    const nic = diskBoot.findIndex((a) => a.startsWith('virtio-net-pci,'));
    assert.deepEqual(diskBoot.slice(nic + 1, nic + 8), [
      '-drive', 'file=/vms/a,,b.qcow2,if=none,id=disk0,format=qcow2',
      '-device', 'virtio-scsi-pci,id=scsi0,disable-legacy=on,iommu_platform=true',
      '-device', 'scsi-hd,drive=disk0,bus=scsi0.0',
      '-nographic',
    ]);
    for (const opt of ['-kernel', '-append', '-initrd']) assert.ok(kernelBoot.includes(opt) && !diskBoot.includes(opt), opt);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

const bootsFromItsDisk = (qemu) => describe(`on ${qemu.name}`, { skip: qemu.skip }, () => {
  let state;
  let daemon;
  let client;
  let sourceHash;

  before(async () => {
    assert.ok(fs.existsSync(GUEST_DISK) && fs.existsSync(GUEST_DISK_CMDLINE), 'run `make guest-disk` first (make test does)');
    sourceHash = sha384(GUEST_DISK);
    state = tmpDir('cocos-disk-boot-');
    daemon = await Daemon.start(tcgEnv(state, { ...qemu.env, MANAGER_QEMU_ENABLE_DISK: 'true', MANAGER_QEMU_SRC_DISK_FILE: GUEST_DISK }));
    client = daemon.client();
  });
  after(async () => {
    client?.close();
    await daemon?.stop();
  });

  test('CreateVm makes the VM an overlay of the disk, the guest boots from it and its agent reports what it was given; RemoveVm deletes the overlay; the source is unchanged', { timeout: BOOT_TIMEOUT_MS + 60_000 }, async () => {
    const t0 = Date.now();
    const vm = await call(client, 'CreateVm', REQUEST, 60_000);
    const record = JSON.parse(fs.readFileSync(path.join(state, 'vms', vm.cvm_id, 'record.json'), 'utf8'));
    const overlay = record.disk.file;
    let report;
    try {
      report = await waitForAgentReport(Number(vm.forwarded_port), BOOT_TIMEOUT_MS);
    } catch (err) {
      err.message += `\n--- argv ---\n${record.command.join(' ')}\n--- serial console ---\n${consoleTail(state, vm.cvm_id)}`;
      throw err;
    }
    process.stderr.write(`# disk boot to agent report through the daemon on ${qemu.name}: ${Date.now() - t0} ms\n`);
    assert.deepEqual(report.environment, [
      'AGENT_LOG_LEVEL=warn', 'AGENT_CVM_GRPC_URL=prism.example:7001', `AGENT_CVM_ID=${vm.cvm_id}`, 'AGENT_CERTS_TOKEN=', 'AGENT_CVM_CA_URL=',
      'AGENT_CVM_GRPC_CLIENT_CERT=/etc/certs/cert.pem',
    ]);
    assert.deepEqual(report.certs, { 'cert.pem': { size: REQUEST.agent_cvm_client_cert.length, sha256: sha256(REQUEST.agent_cvm_client_cert) } });
    // The command line baked into the disk's UKI, nothing of the argv: as in Go, aa_kbs_params has no way in, and the log says so.
    assert.equal(report.cmdline, fs.readFileSync(GUEST_DISK_CMDLINE, 'utf8').trim());
    assert.ok(daemon.logs.lines.some((l) => l.cvm_id === vm.cvm_id && l.field === 'aa_kbs_params' && l.level === 'warn'));

    // The overlay: in the VM's directory, its user's alone; its backing file the source, which that user cannot write.
    assert.equal(overlay, path.join(daemon.stateDir, 'vms', vm.cvm_id, 'disk.qcow2'));
    assert.ok(!record.command.includes('-kernel') && record.command.includes(`file=${overlay},if=none,id=disk0,format=qcow2`), record.command.join(' '));
    const st = fs.statSync(overlay);
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.uid, record.runAs.uid, "the VM's user owns it");
    assert.equal(record.disk.source.sha384, sourceHash);
    const info = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', overlay], { encoding: 'utf8', timeout: 20_000 }));
    assert.equal(info['backing-filename'], GUEST_DISK);
    const asVmUser = (cmd) => spawnSync('setpriv', [`--reuid=${record.runAs.uid}`, `--regid=${record.runAs.gid}`, '--clear-groups', '--', ...cmd], { timeout: 10_000 }).status;
    assert.equal(asVmUser(['test', '-r', GUEST_DISK]), 0, 'the VM user reads the source');
    assert.notEqual(asVmUser(['test', '-w', GUEST_DISK]), 0, 'but cannot write it');

    await call(client, 'RemoveVm', { cvm_id: vm.cvm_id }, 30_000);
    assert.ok(await waitFor(() => !isAlive(record.pid), 5_000), 'QEMU gone');
    assert.equal(fs.existsSync(overlay), false, 'the overlay is deleted');
    assert.equal(sha384(GUEST_DISK), sourceHash, 'the source is unchanged');
  });
});

// Both QEMUs at once: each boot is mostly one vCPU's thread, and the machine has two cores.
describe('disk boot through the daemon', { concurrency: true }, () => QEMUS.forEach(bootsFromItsDisk));

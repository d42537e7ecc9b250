// A guest boots from its own disk, started the way the Go manager starts a disk boot
// (manager/qemu/config.go, EnableDisk): the plain per-VM vector with the three disk options right
// after the virtio-net-pci device, and no -kernel, -append or -initrd. OVMF finds the unified kernel
// image at \EFI\BOOT\BOOTX64.EFI on the disk of `make guest-disk`, and the guest's agent reports
// what the VM's directory gave it. QEMU is started directly (the daemon has no disk boot yet). The
// disk QEMU opens is a qcow2 overlay, so the built image is never written. On each QEMU of
// qemu-versions.mjs.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { escapeOptionValue } from '../dist/qemu/args.js';
import { nextRange, tcgEnv, tmpDir } from './daemon.mjs';
import { GUEST_DISK, GUEST_DISK_CMDLINE, waitForAgentReport } from './guest.mjs';
import { QEMUS } from './qemu-versions.mjs';
import { vmVector } from './vm-vector.mjs';

const BOOT_TIMEOUT_MS = 180_000;
const STOP_TIMEOUT_MS = 10_000;
const sha256 = (data) => createHash('sha256').update(data).digest('hex');

/** Go's defaults for the disk: MANAGER_QEMU_DISK_ID, _DISK_SCSI_ID, _DISK_FORMAT. */
const DISK = { id: 'disk0', scsiId: 'scsi0', format: 'qcow2' };

/** The kernel-boot vector `args` made Go's disk boot of `diskFile`. */
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

test('the disk options come where Go puts them: right after the virtio-net-pci device, and no kernel options', async () => {
  const dir = tmpDir('cocos-disk-argv-');
  try {
    const kernelBoot = await vmVector(tcgEnv(dir), dir, REQUEST);
    const args = diskBootArgs(kernelBoot, '/vms/a,b.qcow2');
    const nic = args.findIndex((a) => a.startsWith('virtio-net-pci,'));
    assert.ok(nic > 0 && args[nic - 1] === '-device');
    assert.deepEqual(args.slice(nic + 1, nic + 8), [
      '-drive', 'file=/vms/a,,b.qcow2,if=none,id=disk0,format=qcow2',
      '-device', 'virtio-scsi-pci,id=scsi0,disable-legacy=on,iommu_platform=true',
      '-device', 'scsi-hd,drive=disk0,bus=scsi0.0',
      '-nographic',
    ]);
    for (const opt of ['-kernel', '-append', '-initrd']) assert.ok(kernelBoot.includes(opt) && !args.includes(opt), opt);
    assert.equal(args.length, kernelBoot.length, 'three options (six elements) in, three out');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

const bootsFromItsDisk = (qemu) => describe(`on ${qemu.name}`, { skip: qemu.skip }, () => {
  let dir;
  let imageHash;

  before(() => {
    assert.ok(fs.existsSync(GUEST_DISK) && fs.existsSync(GUEST_DISK_CMDLINE), 'run `make guest-disk` first (make test does)');
    imageHash = sha256(fs.readFileSync(GUEST_DISK));
    dir = tmpDir('cocos-disk-boot-');
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  /**
   * Starts QEMU on the first port of a fresh range its host forward can bind (QEMU exits at once
   * when the port is taken) and waits for the agent's report; QEMU is left running.
   */
  async function bootFromDisk(overlay, id) {
    const [first, last] = nextRange(5).split('-').map(Number);
    for (let port = first; port <= last; port++) {
      // The development profile's changes for a host without KVM, a small VM, this QEMU and its firmware.
      const stateDir = path.join(dir, `state-${port}`);
      const args = diskBootArgs(await vmVector(tcgEnv(stateDir, qemu.env), stateDir, REQUEST, { id, hostPort: port }), overlay);
      const consoleLog = path.join(dir, `console-${port}.log`);
      const out = fs.openSync(consoleLog, 'w');
      const t0 = Date.now();
      const child = spawn(qemu.bin, args, { stdio: ['ignore', out, 'pipe'] });
      fs.closeSync(out);
      let stderr = '';
      child.stderr.on('data', (d) => { stderr += d; });
      const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
      const stop = new AbortController();
      try {
        const outcome = await Promise.race([
          waitForAgentReport(port, BOOT_TIMEOUT_MS, { signal: stop.signal }).then((report) => ({ report })),
          exited.then((exit) => ({ exit })),
        ]);
        if (outcome.report) return { child, exited, args, report: outcome.report, bootMs: Date.now() - t0 };
        if (/host forwarding rule/.test(stderr) && port < last) continue;
        throw new Error(`QEMU exited (${JSON.stringify(outcome.exit)}): ${stderr}`);
      } catch (err) {
        child.kill('SIGKILL');
        const tail = fs.readFileSync(consoleLog, 'utf8').split('\n').slice(-40).join('\n');
        err.message += `\n--- argv ---\n${args.join(' ')}\n--- serial console ---\n${tail}`;
        throw err;
      } finally {
        stop.abort();
      }
    }
    throw new Error('unreachable');
  }

  test('the guest boots from an overlay of the disk, its agent reports what it was given, and the image is unchanged', { timeout: BOOT_TIMEOUT_MS + 60_000 }, async () => {
    const overlay = path.join(dir, 'vm.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', GUEST_DISK, '-F', 'qcow2', overlay], { timeout: 20_000 });
    const id = randomUUID();
    const { child, exited, args, report, bootMs } = await bootFromDisk(overlay, id);
    try {
      process.stderr.write(`# disk boot to agent report on ${qemu.name}: ${bootMs} ms\n`);
      assert.deepEqual(report.environment, [
        'AGENT_LOG_LEVEL=warn', 'AGENT_CVM_GRPC_URL=prism.example:7001', `AGENT_CVM_ID=${id}`, 'AGENT_CERTS_TOKEN=', 'AGENT_CVM_CA_URL=',
        'AGENT_CVM_GRPC_CLIENT_CERT=/etc/certs/cert.pem',
      ]);
      assert.deepEqual(report.certs, { 'cert.pem': { size: REQUEST.agent_cvm_client_cert.length, sha256: sha256(REQUEST.agent_cvm_client_cert) } });
      // The command line baked into the disk's UKI, nothing of the argv: as in Go, aa_kbs_params has no way in.
      assert.equal(report.cmdline, fs.readFileSync(GUEST_DISK_CMDLINE, 'utf8').trim());
      assert.ok(!args.includes('-kernel') && args.includes(`file=${overlay},if=none,id=disk0,format=qcow2`), args.join(' '));
    } finally {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', overlay], { encoding: 'utf8', timeout: 20_000 }));
    assert.equal(info['backing-filename'], GUEST_DISK, 'the image is only the overlay\'s backing file');
    assert.equal(sha256(fs.readFileSync(GUEST_DISK)), imageHash, 'the built image is unchanged');
  });
});

// Both QEMUs at once: each boot is mostly one vCPU's thread, and the machine has two cores.
describe('disk boot', { concurrency: true }, () => QEMUS.forEach(bootsFromItsDisk));

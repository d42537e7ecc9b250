// A VM's GPU on QEMU's command line is the Go manager's, element by element and in its place
// (manager/qemu/config_test.go, "GPU passthrough configuration"), and both QEMUs take that argv
// up to the host device itself: each refuses a PCI address this host does not have with its
// own "no such host device". The GPU settings are checked like every other setting, and a GPU
// VM's QEMU runs under prlimit with the locked memory VFIO needs.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { loadConfig } from '../dist/config/load.js';
import { buildQemuArgs, commandRunsBinary, qemuCommand, templateLaunch } from '../dist/qemu/args.js';
import { vfioLockedMemory } from '../dist/isolation/locked-memory.js';
import { nextRange } from './daemon.mjs';
import { GUEST_INITRD, GUEST_KERNEL } from './guest.mjs';
import { runCli } from './helpers.mjs';
import { QEMUS } from './qemu-versions.mjs';
import { FACTS } from './fake-host.mjs';

// Go's expected vector for its GPU test configuration, verbatim.
const GO_GPU_VECTOR = [
  '-enable-kvm',
  '-machine', 'q35',
  '-cpu', 'EPYC',
  '-smp', '4,maxcpus=64',
  '-m', '2048M,slots=5,maxmem=30G',
  '-drive', 'if=pflash,format=raw,unit=0,file=/usr/share/OVMF/OVMF_CODE.fd,readonly=on',
  '-drive', 'if=pflash,format=raw,unit=1,file=/usr/share/OVMF/OVMF_VARS.fd',
  '-netdev', 'user,id=vmnic,hostfwd=tcp::7020-:7002',
  '-device', 'virtio-net-pci,disable-legacy=on,iommu_platform=true,netdev=vmnic,addr=0x2,romfile=',
  '-device', 'pcie-root-port,id=pci.1,bus=pcie.0',
  '-device', 'vfio-pci,host=0000:02:00.0,bus=pci.1',
  '-fw_cfg', 'name=opt/ovmf/X-PciMmio64Mb,string=262144',
  '-kernel', 'img/bzImage',
  '-append', 'quiet console=null',
  '-initrd', 'img/rootfs.cpio.gz',
  '-nographic',
  '-monitor', 'pty',
];

const argvWith = (env, gpu) => {
  const q = loadConfig(env, FACTS.plain).qemu;
  return buildQemuArgs(q, templateLaunch(q, false, gpu));
};

test("a VM's GPU is the Go manager's three elements, after the network device, with the defaults", () => {
  assert.deepEqual(argvWith({ MANAGER_QEMU_ENABLE_SEV_SNP: 'false' }, '0000:02:00.0'), GO_GPU_VECTOR);
  // Without a GPU, the vector is Go's without them.
  const without = argvWith({ MANAGER_QEMU_ENABLE_SEV_SNP: 'false' });
  assert.deepEqual(without, GO_GPU_VECTOR.filter((_, i) => i < 17 || i > 22));
});

test('with SEV-SNP the GPU comes before the confidential-guest options, as in Go', () => {
  const args = argvWith({ MANAGER_QEMU_ENABLE_SEV_SNP: 'true' }, '0000:41:00.0');
  const at = args.indexOf('vfio-pci,host=0000:41:00.0,bus=pci.1');
  assert.ok(at > args.indexOf('-netdev') && at < args.indexOf('confidential-guest-support=sev0,memory-backend=ram1,igvm-cfg=igvm0'), args.join(' '));
});

test('the root port, its bus and the MMIO window come from their settings', () => {
  const args = argvWith({ MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_GPU_PCIE_ROOT_PORT: 'gpu_port.0', MANAGER_QEMU_GPU_PCIE_BUS: 'pcie.0', MANAGER_QEMU_GPU_FW_CFG_MMIO_MB: '524288' }, '0000:02:00.0');
  assert.deepEqual(args.slice(17, 23), [
    '-device', 'pcie-root-port,id=gpu_port.0,bus=pcie.0',
    '-device', 'vfio-pci,host=0000:02:00.0,bus=gpu_port.0',
    '-fw_cfg', 'name=opt/ovmf/X-PciMmio64Mb,string=524288',
  ]);
});

test('MANAGER_QEMU_GPU_BDF takes one address, a list, none or empty; anything else is exit 2 naming it', () => {
  const sel = (v) => loadConfig({ MANAGER_QEMU_GPU_BDF: v }, FACTS.plain).qemu.gpu.bdf;
  assert.deepEqual(sel(''), { mode: 'discover' });
  assert.deepEqual(sel('none'), { mode: 'none' });
  assert.deepEqual(sel('0000:02:00.0'), { mode: 'list', bdfs: ['0000:02:00.0'] });
  // QEMU's short form and upper case are sysfs's spelling once read.
  assert.deepEqual(sel(' 02:00.0, 0000:C1:1F.7 '), { mode: 'list', bdfs: ['0000:02:00.0', '0000:c1:1f.7'] });
  const bad = [
    ['0000:02:00', /expected a PCI address like 0000:02:00.0, a comma-separated list of them, none, or empty .*"0000:02:00" is not one/],
    ['0000:02:00.0,none', /"none" is not one/],
    ['0000:02:20.0', /"0000:02:20.0" is not one/],
    ['0000:02:00.8', /is not one/],
    ['0000:02:00.0,02:00.0', /expected each PCI address once; 0000:02:00.0 is listed twice/],
  ];
  for (const [value, message] of bad) {
    const r = runCli(['qemu-args'], { MANAGER_QEMU_GPU_BDF: value });
    assert.equal(r.status, 2, value);
    assert.equal(r.stderr.split('\n').length, 2, 'one line');
    assert.match(r.stderr, new RegExp(`^cocos-manager: invalid MANAGER_QEMU_GPU_BDF=${JSON.stringify(value).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
    assert.match(r.stderr, message);
  }
  for (const [name, value, message] of [
    ['MANAGER_QEMU_GPU_PCIE_ROOT_PORT', 'pci.1,multifunction=on', /expected a QEMU id/],
    ['MANAGER_QEMU_GPU_PCIE_BUS', '0bus', /expected a QEMU id/],
    ['MANAGER_QEMU_GPU_FW_CFG_MMIO_MB', '0', /expected a positive number of MiB/],
    ['MANAGER_QEMU_GPU_FW_CFG_MMIO_MB', '256G', /expected a positive number of MiB/],
  ]) {
    const r = runCli(['qemu-args'], { [name]: value });
    assert.equal(r.status, 2, `${name}=${value}`);
    assert.match(r.stderr, message);
    assert.match(r.stderr, new RegExp(`invalid ${name}=`));
  }
});

test('qemu-args shows the first GPU of the setting (the one Go would give), and none with none', () => {
  const plain = { MANAGER_QEMU_ENABLE_SEV_SNP: 'false' };
  const listed = runCli(['qemu-args'], { ...plain, MANAGER_QEMU_GPU_BDF: '0000:02:00.0,0000:03:00.0' });
  assert.equal(listed.status, 0, listed.stderr);
  assert.deepEqual(JSON.parse(listed.stdout).slice(0, GO_GPU_VECTOR.length), GO_GPU_VECTOR);
  const none = runCli(['qemu-args'], { ...plain, MANAGER_QEMU_GPU_BDF: 'none' });
  assert.ok(!JSON.parse(none.stdout).includes('-fw_cfg'));
});

test("a GPU VM's QEMU runs under prlimit, which execs setpriv (or sudo) in place; recovery still knows it for QEMU", () => {
  const q = loadConfig({ MANAGER_QEMU_BIN_PATH: '/usr/bin/qemu-system-x86_64' }, FACTS.plain).qemu;
  const cmd = qemuCommand(q, { uid: 1900000001, gid: 1900000001, groups: [106] }, 3n << 30n);
  assert.equal(cmd.file, 'prlimit');
  assert.deepEqual(cmd.prefix, ['--memlock=3221225472:3221225472', '--', 'setpriv', '--reuid=1900000001', '--regid=1900000001', '--groups=1900000001,106', '--inh-caps=-all', '--no-new-privs', '--', '/usr/bin/qemu-system-x86_64']);
  assert.ok(commandRunsBinary([cmd.file, ...cmd.prefix, '-enable-kvm'], 'qemu-system-x86_64'));
  assert.ok(!commandRunsBinary(['prlimit', '--memlock=1:1', '--', 'tail', '-f', '/x/qemu-system-x86_64'], 'qemu-system-x86_64'));
  // Without a GPU, nothing changes.
  assert.equal(qemuCommand(q).file, '/usr/bin/qemu-system-x86_64');
  const sudo = qemuCommand(loadConfig({ MANAGER_QEMU_USE_SUDO: 'true' }, FACTS.plain).qemu, undefined, 1n << 30n);
  assert.deepEqual([sudo.file, ...sudo.prefix.slice(0, 3)], ['prlimit', '--memlock=1073741824:1073741824', '--', 'sudo']);
});

test('the locked memory of a GPU VM: its guest memory and 1 GiB (libvirt\'s VFIO rule) when the daemon may give it', () => {
  const G = 1n << 30n;
  const M = 1n << 20n;
  assert.deepEqual(vfioLockedMemory(2n * G, { hard: null, mayRaise: false }), { ok: true, bytes: 3n * G }, 'the unit: infinity');
  assert.deepEqual(vfioLockedMemory(2n * G, { hard: 8n * M, mayRaise: true }), { ok: true, bytes: 3n * G }, 'CAP_SYS_RESOURCE raises it');
  assert.deepEqual(vfioLockedMemory(2n * G, { hard: 4n * G, mayRaise: false }), { ok: true, bytes: 3n * G }, 'lowered from a higher limit');
  const short = vfioLockedMemory(2n * G, { hard: 2n * G, mayRaise: false });
  assert.equal(short.bytes, 2n * G);
  assert.match(short.short, /should be able to lock 3 GiB \(guest memory and 1 GiB for VFIO\), but the daemon's RLIMIT_MEMLOCK hard limit is 2 GiB and it lacks CAP_SYS_RESOURCE: its QEMU gets 2 GiB/);
  assert.deepEqual(vfioLockedMemory(2n * G, { hard: 8n * M, mayRaise: false }), {
    ok: false,
    reason: "a VM with a GPU locks its guest memory (2 GiB) for VFIO, but the daemon's RLIMIT_MEMLOCK hard limit is 8 MiB and it lacks CAP_SYS_RESOURCE: give the daemon LimitMEMLOCK=infinity (the unit shipped does) or CAP_SYS_RESOURCE",
  });
});

// A PCI address this host does not have (outside any faked sysfs: the real /sys).
const ABSENT = ['0000:7f:1f.7', '0000:fe:1f.6', '0000:fd:1e.5'].find((b) => !fs.existsSync(`/sys/bus/pci/devices/${b}`));
const noGuest = fs.existsSync(GUEST_KERNEL) ? false : 'no test guest (make guest)';

for (const qemu of QEMUS) describe(`on ${qemu.name}`, { skip: qemu.skip || noGuest }, () => {
  test('QEMU takes the GPU argv up to the host device, and names the one it does not have', () => {
    const env = {
      ...qemu.env,
      MANAGER_QEMU_ENABLE_KVM: 'false', MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_CPU: 'max', MANAGER_QEMU_SMP_COUNT: '1',
      MANAGER_QEMU_MEMORY_SIZE: '256M', MANAGER_QEMU_MAX_MEMORY: '1G', MANAGER_QEMU_MONITOR: 'none',
      MANAGER_QEMU_HOST_FWD_AGENT: nextRange(1).split('-')[0],
      MANAGER_QEMU_DISK_IMG_KERNEL_FILE: GUEST_KERNEL, MANAGER_QEMU_DISK_IMG_ROOTFS_FILE: GUEST_INITRD,
    };
    const args = argvWith(env, ABSENT);
    const r = spawnSync(qemu.bin, args, { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] });
    assert.equal(r.status, 1, `${r.stdout}\n${r.stderr}`);
    // Everything before it was taken: the error is the host device's, and the last word QEMU says.
    assert.equal(r.stderr.trim().split('\n').at(-1), `qemu-system-x86_64: -device vfio-pci,host=${ABSENT},bus=pci.1: vfio /sys/bus/pci/devices/${ABSENT}: no such host device: No such file or directory`);
  });
});

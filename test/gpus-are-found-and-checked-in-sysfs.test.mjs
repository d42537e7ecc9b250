// The GPUs VMs get are read from sysfs where the kernel shows them, on fake hosts (PCI devices,
// IOMMU groups and /dev/vfio mounted over the real paths in a namespace of the test's):
// discovery takes every NVIDIA 3D or VGA controller bound to vfio-pci and nothing else (not its
// audio function, a bridge, a GPU left to the nvidia driver, another vendor's); a GPU QEMU could
// not be given (absent, on another driver, an IOMMU group shared with a device on a host driver,
// no /dev/vfio node, no IOMMU) stops the daemon with exit 2 and one line naming
// MANAGER_QEMU_GPU_BDF when it is named there, is left out with a warning when it was only
// found; `check` says the same in its rows. A daemon whose locked-memory limit cannot hold a
// GPU VM's guest memory does not start either.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { FakeHost, fakeHostUnavailable, pciDevice } from './fake-host.mjs';
import { Daemon, fakeQemuEnv, nextUidRange, tmpDir } from './daemon.mjs';
import { CLI, ROOT, baseEnv } from './helpers.mjs';

const skip = fakeHostUnavailable({ pci: true });

const H100 = pciDevice('0000:01:00.0', '10'); // 3D controller
const H100_AUDIO = pciDevice('0000:01:00.1', '10', { device: '0x22a3', cls: '0x040300' }); // on vfio-pci too: its group is whole
const VGA = pciDevice('0000:02:00.0', '11', { device: '0x2684', cls: '0x030000' });
const ROOT_PORT = pciDevice('0000:00:03.1', '11', { vendor: '0x1022', device: '0x1483', cls: '0x060400', driver: 'pcieport' }); // a bridge in VGA's group
const ON_NVIDIA = pciDevice('0000:03:00.0', '12', { driver: 'nvidia' });
const AMD_VGA = pciDevice('0000:04:00.0', '13', { vendor: '0x1002', device: '0x744c', cls: '0x030000' });
const NV_BRIDGE = pciDevice('0000:05:00.0', '14', { device: '0x22b1', cls: '0x060400' }); // NVIDIA, on vfio-pci, but a bridge
const GPU_HOST = [H100, H100_AUDIO, VGA, ROOT_PORT, ON_NVIDIA, AMD_VGA, NV_BRIDGE];

const hosts = [];
after(() => {
  for (const h of hosts) h.dispose();
});
function fakeHost(devices, vfioGroups) {
  const h = FakeHost.create({ pci: { devices, vfioGroups } });
  hosts.push(h);
  return h;
}

const MODULE = pathToFileURL(path.join(ROOT, 'dist', 'host', 'pci-gpus.js')).href;

function discovered(host) {
  const r = host.run([process.execPath, '--input-type=module', '-e', `import(${JSON.stringify(MODULE)}).then((m) => console.log(JSON.stringify(m.discoverGpus())))`]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

/** A daemon's environment on a fake host: the stand-in QEMU, loopback ports, no admin socket. */
function serveEnv(extra) {
  return baseEnv({
    ...fakeQemuEnv(path.join(tmpDir('cocos-gpu-'), 'state'), { MANAGER_QEMU_MEMORY_SIZE: '4M', MANAGER_QEMU_MAX_MEMORY: '64M' }),
    MANAGER_GRPC_HOST: '127.0.0.1', MANAGER_GRPC_PORT: '0', MANAGER_HTTP_HOST: '127.0.0.1', MANAGER_HTTP_PORT: '0',
    MANAGER_ADMIN_SOCKET: '', MANAGER_VM_UID_RANGE: nextUidRange(), ...extra,
  });
}

/** `serve` on the host, expected to stop at once: its exit status and stderr. */
function serveRefused(host, gpuBdf) {
  const r = host.run([process.execPath, CLI, 'serve'], { env: serveEnv({ MANAGER_QEMU_GPU_BDF: gpuBdf }), timeout: 15_000 });
  return { status: r.status, stderr: r.stderr };
}

/** The GPU rows of `cocos-manager check` on the host: check -> [status, detail, remedy]. */
function gpuRows(host, gpuBdf) {
  const r = host.run([process.execPath, CLI, 'check'], { env: serveEnv({ MANAGER_QEMU_GPU_BDF: gpuBdf }), timeout: 60_000 });
  assert.ok(r.status === 0 || r.status === 1, r.stderr);
  const rows = {};
  for (const line of r.stdout.split('\n')) {
    const m = /^(PASS|WARN|FAIL)\s+(GPU \S+|GPU passthrough|locked memory for GPU VMs)\s{2,}(.*)$/.exec(line);
    if (m) rows[m[2]] = [m[1], ...m[3].split(/ {2,}/)];
  }
  return rows;
}

test('discovery takes each NVIDIA 3D or VGA controller on vfio-pci, in address order, and nothing else', { skip }, () => {
  assert.deepEqual(discovered(fakeHost(GPU_HOST)), ['0000:01:00.0', '0000:02:00.0']);
  assert.deepEqual(discovered(fakeHost([])), [], 'a host without PCI devices');
});

test('check: each GPU found passes with its IOMMU group; none are other devices; `none` turns it off', { skip }, () => {
  const host = fakeHost(GPU_HOST);
  const rows = gpuRows(host, '');
  assert.deepEqual(Object.keys(rows).sort(), ['GPU 0000:01:00.0', 'GPU 0000:02:00.0', 'locked memory for GPU VMs']);
  assert.deepEqual(rows['GPU 0000:01:00.0'], ['PASS', 'bound to vfio-pci with its whole IOMMU group 10 (/dev/vfio/10)']);
  assert.deepEqual(rows['GPU 0000:02:00.0'][0], 'PASS', 'a bridge in the group is no obstacle');
  assert.deepEqual(gpuRows(host, 'none'), { 'GPU passthrough': ['PASS', 'off (MANAGER_QEMU_GPU_BDF=none): VMs get no GPU'] });
  assert.deepEqual(gpuRows(fakeHost([AMD_VGA, ON_NVIDIA]), ''), { 'GPU passthrough': ['PASS', 'no NVIDIA GPU bound to vfio-pci on this host (MANAGER_QEMU_GPU_BDF empty): VMs get no GPU'] });
});

test('a GPU named in MANAGER_QEMU_GPU_BDF that QEMU could not be given: exit 2, one line naming the setting; a FAIL row in check', { skip }, () => {
  const host = fakeHost([...GPU_HOST, pciDevice('0000:06:00.0', null), pciDevice('0000:07:00.0', '17')], ['10', '11', '12', '14']);
  const cases = [
    ['0000:02:00.0,0000:09:00.0', 'no PCI device 0000:09:00.0 (no /sys/bus/pci/devices/0000:09:00.0)'],
    ['0000:03:00.0', '0000:03:00.0 is bound to nvidia, not vfio-pci'],
    ['0000:06:00.0', '0000:06:00.0 has no IOMMU group (the IOMMU is off: turn it on in the firmware and with amd_iommu=on or intel_iommu=on)'],
    ['0000:07:00.0', 'no /dev/vfio/17 (ENOENT): is the vfio-pci module loaded?'],
  ];
  for (const [setting, problem] of cases) {
    const r = serveRefused(host, setting);
    assert.equal(r.status, 2, `${setting}: ${r.stderr}`);
    assert.equal(r.stderr, `cocos-manager: MANAGER_QEMU_GPU_BDF=${setting}: ${problem}; bind it and every other device of its IOMMU group to vfio-pci (e.g. driverctl set-override <BDF> vfio-pci), or leave it out of MANAGER_QEMU_GPU_BDF\n`);
    const bdf = setting.split(',').at(-1);
    const [status, detail, remedy] = gpuRows(host, setting)[`GPU ${bdf}`];
    assert.equal(status, 'FAIL');
    assert.equal(detail, `${problem}: the daemon does not start (MANAGER_QEMU_GPU_BDF)`);
    assert.equal(remedy, 'bind it and every other device of its IOMMU group to vfio-pci (e.g. driverctl set-override <BDF> vfio-pci), or leave it out of MANAGER_QEMU_GPU_BDF');
  }
});

test('an IOMMU group holding a device on a host driver: a named GPU stops the start, a found one is left out with a warning', { skip }, async () => {
  const audioOnHost = pciDevice('0000:01:00.1', '10', { device: '0x22a3', cls: '0x040300', driver: 'snd_hda_intel' });
  const host = fakeHost([H100, audioOnHost, VGA, ROOT_PORT]);
  const problem = 'its IOMMU group 10 also holds 0000:01:00.1, bound to snd_hda_intel, not vfio-pci';
  const r = serveRefused(host, '0000:01:00.0');
  assert.equal(r.status, 2);
  assert.match(r.stderr, new RegExp(`^cocos-manager: MANAGER_QEMU_GPU_BDF=0000:01:00\\.0: ${problem}; `));
  assert.deepEqual(gpuRows(host, '0000:01:00.0')['GPU 0000:01:00.0'].slice(0, 2), ['FAIL', `${problem}: the daemon does not start (MANAGER_QEMU_GPU_BDF)`]);
  const found = gpuRows(host, '');
  assert.deepEqual(found['GPU 0000:01:00.0'], ['WARN', `found but left out: ${problem}`, 'bind it and every other device of its IOMMU group to vfio-pci (e.g. driverctl set-override <BDF> vfio-pci)']);
  assert.equal(found['GPU 0000:02:00.0'][0], 'PASS');
  // The daemon starts with the other one, and says which it left out.
  const d = await Daemon.start(serveEnv({}), { wrap: host.prefix });
  try {
    assert.equal(d.logs.lines.find((l) => l.gpu === '0000:01:00.0' && l.level === 'warn')?.msg, `GPU 0000:01:00.0 left out: ${problem}`);
    assert.deepEqual(d.logs.lines.find((l) => l.msg === '1 GPU(s) for VMs, one each')?.gpus, ['0000:02:00.0']);
  } finally {
    await d.stop();
  }
});

test('a daemon whose locked-memory limit cannot hold a GPU VM\'s guest memory does not start', { skip }, () => {
  const host = fakeHost([H100, H100_AUDIO]);
  // The limit of a daemon started by hand (8 MiB), without CAP_SYS_RESOURCE to raise it (root
  // loses it with the bounding set at exec).
  const r = spawnSync('prlimit', ['--memlock=8388608:8388608', '--', 'setpriv', '--bounding-set=-sys_resource', '--', ...host.prefix, process.execPath, CLI, 'serve'], {
    env: serveEnv({ MANAGER_QEMU_MEMORY_SIZE: '2048M', MANAGER_QEMU_MAX_MEMORY: '30G' }), encoding: 'utf8', timeout: 15_000,
  });
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr, "cocos-manager: MANAGER_QEMU_MEMORY_SIZE=2048M with GPUs (MANAGER_QEMU_GPU_BDF): a VM with a GPU locks its guest memory (2 GiB) for VFIO, but the daemon's RLIMIT_MEMLOCK hard limit is 8 MiB and it lacks CAP_SYS_RESOURCE: give the daemon LimitMEMLOCK=infinity (the unit shipped does) or CAP_SYS_RESOURCE\n");
});

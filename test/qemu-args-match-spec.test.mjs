// The argument vector matches the Go manager's (docs/qemu-argv.md) element by element, in every mode,
// plus the deliberate deviations: read-only 9P shares, and -sandbox last when the binary takes it
// (the host's QEMU does; a binary without seccomp gets none, and qemu-args says why).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from './helpers.mjs';
import { FAKE_QEMU } from './daemon.mjs';
import { loadConfig } from '../dist/config/load.js';
import { buildQemuArgs } from '../dist/qemu/args.js';
import { FACTS, SEV_SNP_HOST, fakeHostUnavailable } from './fake-host.mjs';

const SANDBOX = ['-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny'];
const HOST_DATA = Buffer.alloc(32, 0xab).toString('base64');

const COMMON_HEAD = ['-enable-kvm', '-machine', 'q35', '-cpu', 'EPYC', '-smp', '4,maxcpus=64', '-m', '2048M,slots=5,maxmem=30G'];
const NET = [
  '-netdev', 'user,id=vmnic,hostfwd=tcp::7020-:7002',
  '-device', 'virtio-net-pci,disable-legacy=on,iommu_platform=true,netdev=vmnic,addr=0x2,romfile=',
];
const TAIL = ['-kernel', 'img/bzImage', '-append', 'quiet console=null', '-initrd', 'img/rootfs.cpio.gz', '-nographic', '-monitor', 'pty'];
const NO_KERNEL = TAIL.slice(6);
/** Go's disk options (config.go, EnableDisk), of the file `file`, with its default ids. */
const DISK = (file, format = 'qcow2') => [
  '-drive', `file=${file},if=none,id=disk0,format=${format}`,
  '-device', 'virtio-scsi-pci,id=scsi0,disable-legacy=on,iommu_platform=true',
  '-device', 'scsi-hd,drive=disk0,bus=scsi0.0',
];
const SNP = (hostData) => [
  '-machine', 'confidential-guest-support=sev0,memory-backend=ram1,igvm-cfg=igvm0',
  '-object', 'memory-backend-memfd,id=ram1,size=2048M,share=true,prealloc=false',
  '-object', `sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1${hostData ? `,host-data=${hostData}` : ''}`,
  '-object', 'igvm-cfg,id=igvm0,file=/root/coconut-qemu.igvm',
];

const table = [
  {
    name: 'plain OVMF (the spec example)',
    env: { MANAGER_QEMU_ENABLE_SEV_SNP: 'false' },
    want: [
      ...COMMON_HEAD,
      '-drive', 'if=pflash,format=raw,unit=0,file=/usr/share/OVMF/OVMF_CODE.fd,readonly=on',
      '-drive', 'if=pflash,format=raw,unit=1,file=/usr/share/OVMF/OVMF_VARS.fd',
      ...NET, ...TAIL,
    ],
  },
  // SEV-SNP decided from the host, as the Go manager decides it (a fake SEV-SNP host: fake-host.mjs).
  { name: 'SEV-SNP without host data (the defaults, on an SEV-SNP host)', env: {}, host: SEV_SNP_HOST, want: [...COMMON_HEAD, ...NET, ...SNP(''), ...TAIL] },
  { name: 'SEV-SNP declared true (on any host)', env: { MANAGER_QEMU_ENABLE_SEV_SNP: 'true' }, want: [...COMMON_HEAD, ...NET, ...SNP(''), ...TAIL] },
  {
    name: 'SEV-SNP with host data',
    env: { MANAGER_QEMU_ENABLE_SEV_SNP: 'true', MANAGER_QEMU_ENABLE_HOST_DATA: 'true', MANAGER_QEMU_HOST_DATA: HOST_DATA },
    want: [...COMMON_HEAD, ...NET, ...SNP(HOST_DATA), ...TAIL],
  },
  {
    name: 'TDX',
    env: { MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_ENABLE_TDX: 'true' },
    want: [
      ...COMMON_HEAD, ...NET,
      '-object', '{"qom-type":"tdx-guest","id":"tdx0","quote-generation-socket":{"type":"vsock","cid":"2","port":"4050"}}',
      '-machine', 'confidential-guest-support=tdx0,memory-backend=ram1,hpet=off',
      '-object', 'memory-backend-memfd,id=ram1,size=2048M,share=true,prealloc=false',
      '-bios', '/usr/share/ovmf/OVMF.fd',
      '-nodefaults',
      ...TAIL,
    ],
  },
  {
    // An empty MACHINE is its default, q35, as caarlos0/env makes it in the Go manager.
    name: 'no KVM, an empty machine (q35), no graphic option off, ROM file set',
    env: {
      MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_ENABLE_KVM: 'false', MANAGER_QEMU_MACHINE: '',
      MANAGER_QEMU_NO_GRAPHIC: 'false', MANAGER_QEMU_VIRTIO_NET_PCI_ROMFILE: '/usr/share/qemu/efi-virtio.rom',
      MANAGER_QEMU_VIRTIO_NET_PCI_IOMMU_PLATFORM: 'off', MANAGER_QEMU_KERNEL_CMDLINE: 'console=ttyS0 root=/dev/vda rw',
    },
    want: [
      '-machine', 'q35', '-cpu', 'EPYC', '-smp', '4,maxcpus=64', '-m', '2048M,slots=5,maxmem=30G',
      '-drive', 'if=pflash,format=raw,unit=0,file=/usr/share/OVMF/OVMF_CODE.fd,readonly=on',
      '-drive', 'if=pflash,format=raw,unit=1,file=/usr/share/OVMF/OVMF_VARS.fd',
      '-netdev', 'user,id=vmnic,hostfwd=tcp::7020-:7002',
      '-device', 'virtio-net-pci,disable-legacy=on,iommu_platform=false,netdev=vmnic,addr=0x2,romfile=/usr/share/qemu/efi-virtio.rom',
      '-kernel', 'img/bzImage', '-append', 'console=ttyS0 root=/dev/vda rw', '-initrd', 'img/rootfs.cpio.gz', '-monitor', 'pty',
    ],
  },
  {
    name: 'commas in paths and ids are doubled',
    env: {
      MANAGER_QEMU_ENABLE_SEV_SNP: 'false',
      MANAGER_QEMU_OVMF_CODE_FILE: '/srv/a,b/OVMF_CODE.fd',
      MANAGER_QEMU_OVMF_VARS_FILE: '/srv/a,b/OVMF_VARS.fd,readonly=off',
      MANAGER_QEMU_NETDEV_ID: 'n,1',
    },
    want: [
      ...COMMON_HEAD,
      '-drive', 'if=pflash,format=raw,unit=0,file=/srv/a,,b/OVMF_CODE.fd,readonly=on',
      '-drive', 'if=pflash,format=raw,unit=1,file=/srv/a,,b/OVMF_VARS.fd,,readonly=off',
      '-netdev', 'user,id=n,,1,hostfwd=tcp::7020-:7002',
      '-device', 'virtio-net-pci,disable-legacy=on,iommu_platform=true,netdev=n,,1,addr=0x2,romfile=',
      ...TAIL,
    ],
  },
  {
    name: 'disk boot, plain OVMF (the template\'s disk is the source, as its variables file is the template)',
    env: { MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_ENABLE_DISK: 'true' },
    want: [
      ...COMMON_HEAD,
      '-drive', 'if=pflash,format=raw,unit=0,file=/usr/share/OVMF/OVMF_CODE.fd,readonly=on',
      '-drive', 'if=pflash,format=raw,unit=1,file=/usr/share/OVMF/OVMF_VARS.fd',
      ...NET, ...DISK('img/enc_os.qcow2'), ...NO_KERNEL,
    ],
  },
  { name: 'disk boot, SEV-SNP', env: { MANAGER_QEMU_ENABLE_SEV_SNP: 'true', MANAGER_QEMU_ENABLE_DISK: 'true' }, want: [...COMMON_HEAD, ...NET, ...DISK('img/enc_os.qcow2'), ...SNP(''), ...NO_KERNEL] },
  {
    name: 'disk boot, TDX, ids, format and a source with a comma',
    env: {
      MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_ENABLE_TDX: 'true', MANAGER_QEMU_ENABLE_DISK: 'true',
      MANAGER_QEMU_SRC_DISK_FILE: '/img/a,b.qcow2', MANAGER_QEMU_DISK_ID: 'd,1', MANAGER_QEMU_DISK_SCSI_ID: 's1', MANAGER_QEMU_DISK_FORMAT: 'raw',
      MANAGER_QEMU_DST_DISK_FILE: '/tmp/not-used.qcow2',
    },
    want: [
      ...COMMON_HEAD, ...NET,
      '-drive', 'file=/img/a,,b.qcow2,if=none,id=d,,1,format=raw',
      '-device', 'virtio-scsi-pci,id=s1,disable-legacy=on,iommu_platform=true',
      '-device', 'scsi-hd,drive=d,,1,bus=s1.0',
      '-object', '{"qom-type":"tdx-guest","id":"tdx0","quote-generation-socket":{"type":"vsock","cid":"2","port":"4050"}}',
      '-machine', 'confidential-guest-support=tdx0,memory-backend=ram1,hpet=off',
      '-object', 'memory-backend-memfd,id=ram1,size=2048M,share=true,prealloc=false',
      '-bios', '/usr/share/ovmf/OVMF.fd',
      '-nodefaults',
      ...NO_KERNEL,
    ],
  },
  {
    name: 'SEV-SNP IGVM path with a comma',
    env: { MANAGER_QEMU_ENABLE_SEV_SNP: 'true', MANAGER_QEMU_IGVM_FILE: '/fw/x,file=/etc/shadow.igvm' },
    want: [
      ...COMMON_HEAD, ...NET,
      ...SNP('').slice(0, 6),
      '-object', 'igvm-cfg,id=igvm0,file=/fw/x,,file=/etc/shadow.igvm',
      ...TAIL,
    ],
  },
];

for (const { name, env, want, host } of table) {
  test(`qemu-args prints the spec vector: ${name}`, { skip: host && fakeHostUnavailable() }, () => {
    const r = runCli(['qemu-args'], env, { host });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.split('\n').length, 2, 'one line');
    assert.deepEqual(JSON.parse(r.stdout), [...want, ...SANDBOX]);
  });
}

test('qemu-args leaves -sandbox out, and says why, for a binary without seccomp', () => {
  const env = { MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_BIN_PATH: FAKE_QEMU, FAKE_QEMU_NO_SECCOMP: '1' };
  const r = runCli(['qemu-args'], env);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), table[0].want);
  assert.match(r.stderr, /does not take -sandbox, so VMs run without it: exit code 1: qemu-system-x86_64: -sandbox on,obsolete=deny,.*: -sandbox support is not enabled in this QEMU binary/);
  const withSeccomp = runCli(['qemu-args'], { ...env, FAKE_QEMU_NO_SECCOMP: '' });
  assert.deepEqual(JSON.parse(withSeccomp.stdout), [...table[0].want, ...SANDBOX]);
  assert.equal(withSeccomp.stderr, '');
});

test('a VM gets its own port, firmware copy, kbs params and 9P shares, certificates first', () => {
  const config = loadConfig({ MANAGER_QEMU_ENABLE_SEV_SNP: 'false' }, FACTS.plain);
  const args = buildQemuArgs(config.qemu, {
    hostPort: 6123,
    ovmfVarsFile: '/var/lib/cocos-manager/vms/x/OVMF_VARS.fd',
    aaKbsParams: 'cc_kbc::http://10.0.0.1:8080',
    shares: { certsDir: '/s/vms/x/certs', envDir: '/s/vms/x/env,1' },
  });
  assert.equal(args[args.indexOf('-netdev') + 1], 'user,id=vmnic,hostfwd=tcp::6123-:7002');
  assert.equal(args[12], 'if=pflash,format=raw,unit=1,file=/var/lib/cocos-manager/vms/x/OVMF_VARS.fd');
  assert.equal(args[args.indexOf('-append') + 1], 'quiet console=null agent.aa_kbc_params=cc_kbc::http://10.0.0.1:8080');
  assert.deepEqual(args.slice(-8), [
    '-fsdev', 'local,id=cert_fs,path=/s/vms/x/certs,security_model=mapped,readonly=on',
    '-device', 'virtio-9p-pci,fsdev=cert_fs,mount_tag=certs_share',
    '-fsdev', 'local,id=env_fs,path=/s/vms/x/env,,1,security_model=mapped,readonly=on',
    '-device', 'virtio-9p-pci,fsdev=env_fs,mount_tag=env_share',
  ]);
});

test('a VM with a disk gets its own disk file right after the network card, no kernel, and never the source in its place', () => {
  const config = loadConfig({ MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_ENABLE_DISK: 'true' }, FACTS.plain);
  const vm = { hostPort: 6123, ovmfVarsFile: '/v', aaKbsParams: 'cc_kbc::x', shares: { certsDir: '/c', envDir: '/e' } };
  const args = buildQemuArgs(config.qemu, { ...vm, diskFile: '/s/vms/x/disk.qcow2' });
  const nic = args.findIndex((a) => a.startsWith('virtio-net-pci,'));
  assert.deepEqual(args.slice(nic + 1, nic + 7), DISK('/s/vms/x/disk.qcow2'));
  assert.deepEqual(args.slice(nic + 7, nic + 10), ['-nographic', '-monitor', 'pty']);
  assert.ok(!args.some((a) => a.includes('aa_kbc_params')), 'nothing of aa_kbs_params');
  assert.throws(() => buildQemuArgs(config.qemu, vm), /MANAGER_QEMU_ENABLE_DISK needs its own disk file/);
});

test('with a disk and a GPU, Go\'s order: the network card, the disk, then the GPU', () => {
  const config = loadConfig({ MANAGER_QEMU_ENABLE_SEV_SNP: 'false', MANAGER_QEMU_ENABLE_DISK: 'true' }, FACTS.plain);
  const args = buildQemuArgs(config.qemu, { hostPort: 6123, ovmfVarsFile: '/v', diskFile: '/s/vms/x/disk.qcow2', gpu: '0000:02:00.0' });
  const nic = args.findIndex((a) => a.startsWith('virtio-net-pci,'));
  assert.deepEqual(args.slice(nic + 1, nic + 13), [
    ...DISK('/s/vms/x/disk.qcow2'),
    '-device', 'pcie-root-port,id=pci.1,bus=pcie.0',
    '-device', 'vfio-pci,host=0000:02:00.0,bus=pci.1',
    '-fw_cfg', 'name=opt/ovmf/X-PciMmio64Mb,string=262144',
  ]);
});

test('-sandbox comes last, after the QMP channel, only when the binary takes it', () => {
  const config = loadConfig({ MANAGER_QEMU_ENABLE_SEV_SNP: 'false' }, FACTS.plain);
  const vm = { hostPort: 6123, ovmfVarsFile: '/v', shares: { certsDir: '/c', envDir: '/e' }, qmp: { socketPath: '/q.sock', form: { reconnect: 'seconds', monitor: 'mon' } } };
  assert.deepEqual(buildQemuArgs(config.qemu, { ...vm, sandbox: true }).slice(-2), SANDBOX);
  assert.ok(!buildQemuArgs(config.qemu, { ...vm, sandbox: false }).includes('-sandbox'));
  assert.ok(!buildQemuArgs(config.qemu, vm).includes('-sandbox'));
});

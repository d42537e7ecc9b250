// Runs commands as on another host: in a mount namespace of the test's own (as root), where what
// the daemon reads of the host is mounted over the real paths:
//   cpuinfo / modules: /proc/cpuinfo is a file of the test's, /sys/module a tmpfs holding only
//     the module parameters given;
//   hosts: /etc/hosts is a file of the test's (what `localhost` resolves to);
//   pci: /sys/bus/pci and /sys/kernel/iommu_groups are tmpfs holding the devices given, in the
//     kernel's layout (devices/<BDF>/{vendor,device,class}, its driver and iommu_group links,
//     drivers/<name>/<BDF>, iommu_groups/<N>/devices/<BDF>), and /dev/vfio a tmpfs with a
//     character device per IOMMU group (root's, 0600, as udev makes them) and `vfio` (0666).
// The namespace is kept (bound to a file) until dispose(), so the daemon, its restarts and its
// QEMUs (which inherit it) all see one host: what the daemon changes there (the owner of a
// /dev/vfio node) stays. The real host is untouched.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SEV_SNP, TDX, cvmSupport } from '../dist/host/cvm-host.js';

const run = (cmd, args) => spawnSync(cmd, args, { encoding: 'utf8', timeout: 20_000 });

/** Why a fake host (with PCI devices: `pci`) cannot be made here, or undefined when it can. */
export function fakeHostUnavailable({ pci = false } = {}) {
  if (process.getuid?.() !== 0) return 'needs root (unshare -m and mount)';
  const r = spawnSync('unshare', ['-m', '--', 'true'], { stdio: 'ignore', timeout: 10_000 });
  if (r.status !== 0) return 'unshare -m fails here';
  if (pci && !fs.existsSync('/sys/kernel/iommu_groups')) return 'no /sys/kernel/iommu_groups to mount over (a kernel without IOMMU support)';
  return undefined;
}

/** Single-quoted for sh (the test's own paths and names). */
const q = (s) => `'${String(s).replaceAll("'", "'\\''")}'`;

/**
 * A PCI device: `driver` null for none, `group` null for no IOMMU group. Defaults: an NVIDIA
 * H100 (3D controller) bound to vfio-pci.
 */
export function pciDevice(bdf, group, { vendor = '0x10de', device = '0x2330', cls = '0x030200', driver = 'vfio-pci' } = {}) {
  return { bdf, group, vendor, device, class: cls, driver };
}

/** The two trees the kernel would show: /sys/bus/pci and /sys/kernel/iommu_groups. */
function writePciTrees(dir, devices) {
  const pci = path.join(dir, 'pci');
  const groups = path.join(dir, 'iommu_groups');
  fs.mkdirSync(path.join(pci, 'devices'), { recursive: true });
  fs.mkdirSync(path.join(pci, 'drivers'), { recursive: true });
  fs.mkdirSync(groups, { recursive: true });
  for (const d of devices) {
    const dev = path.join(pci, 'devices', d.bdf);
    fs.mkdirSync(dev);
    for (const name of ['vendor', 'device', 'class']) fs.writeFileSync(path.join(dev, name), `${d[name]}\n`);
    if (d.driver) {
      fs.mkdirSync(path.join(pci, 'drivers', d.driver), { recursive: true });
      fs.symlinkSync(`../../drivers/${d.driver}`, path.join(dev, 'driver'));
      fs.symlinkSync(`../../devices/${d.bdf}`, path.join(pci, 'drivers', d.driver, d.bdf));
    }
    if (d.group !== null) {
      fs.mkdirSync(path.join(groups, d.group, 'devices'), { recursive: true });
      fs.symlinkSync(`../../../../kernel/iommu_groups/${d.group}`, path.join(dev, 'iommu_group'));
      fs.symlinkSync(`../../../../bus/pci/devices/${d.bdf}`, path.join(groups, d.group, 'devices', d.bdf));
    }
  }
  return { pci, groups };
}

export class FakeHost {
  /**
   * `cpuinfo` (with `modules`: { kvm_amd: { sev_snp: 'Y\n' } } for
   * /sys/module/kvm_amd/parameters/sev_snp), `hosts` (the text of /etc/hosts), and/or `pci`: the
   * devices (pciDevice()) and `vfioGroups`, the groups given a /dev/vfio node (default: every
   * group of a device on vfio-pci).
   */
  static create({ cpuinfo, modules = {}, hosts, pci } = {}) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cocos-fake-host-'));
    const host = new FakeHost(dir);
    try {
      const lines = ['set -e'];
      if (cpuinfo !== undefined) {
        const cpu = path.join(dir, 'cpuinfo');
        fs.writeFileSync(cpu, cpuinfo);
        const tree = path.join(dir, 'module');
        fs.mkdirSync(tree);
        for (const [module, params] of Object.entries(modules)) {
          const pdir = path.join(tree, module, 'parameters');
          fs.mkdirSync(pdir, { recursive: true });
          for (const [name, value] of Object.entries(params)) fs.writeFileSync(path.join(pdir, name), value);
        }
        lines.push(`mount --bind ${q(cpu)} /proc/cpuinfo`, 'mount -t tmpfs -o mode=0755 fake-sys-module /sys/module', `cp -a ${q(tree)}/. /sys/module/`);
      }
      if (hosts !== undefined) {
        const file = path.join(dir, 'hosts');
        fs.writeFileSync(file, hosts, { mode: 0o644 });
        lines.push(`mount --bind ${q(file)} /etc/hosts`);
      }
      if (pci !== undefined) {
        const { pci: pciTree, groups } = writePciTrees(dir, pci.devices);
        const vfioGroups = pci.vfioGroups ?? [...new Set(pci.devices.filter((d) => d.driver === 'vfio-pci' && d.group !== null).map((d) => d.group))];
        // The mount point must exist; on a host without VFIO it is made, and removed by dispose().
        if (!fs.existsSync('/dev/vfio')) {
          fs.mkdirSync('/dev/vfio');
          host.madeDevVfio = true;
        }
        lines.push(
          'mount -t tmpfs -o mode=0755 fake-sys-bus-pci /sys/bus/pci', `cp -a ${q(pciTree)}/. /sys/bus/pci/`,
          'mount -t tmpfs -o mode=0755 fake-iommu-groups /sys/kernel/iommu_groups', `cp -a ${q(groups)}/. /sys/kernel/iommu_groups/`,
          // Nodes of /dev/null's numbers: they open like the real ones and can be given owners.
          'mount -t tmpfs -o mode=0755 fake-dev-vfio /dev/vfio', 'mknod -m 0666 /dev/vfio/vfio c 1 3',
          ...vfioGroups.map((g) => `mknod -m 0600 /dev/vfio/${q(g)} c 1 3`),
        );
      }
      // A namespace that outlives its first process: bound to a file on a private mount.
      const keep = path.join(dir, 'ns');
      fs.mkdirSync(keep);
      for (const args of [['--bind', keep, keep], ['--make-private', keep]]) {
        const r = run('mount', args);
        if (r.status !== 0) throw new Error(`mount ${args.join(' ')}: ${r.stderr}`);
      }
      host.keep = keep;
      host.nsFile = path.join(keep, 'mnt');
      fs.writeFileSync(host.nsFile, '');
      const r = run('unshare', [`--mount=${host.nsFile}`, '--propagation', 'private', '--', 'sh', '-c', lines.join('\n')]);
      if (r.status !== 0) throw new Error(`the fake host could not be made: ${r.stderr}`);
      host.made = true;
    } catch (err) {
      host.dispose();
      throw err;
    }
    return host;
  }

  constructor(dir) {
    this.dir = dir;
  }

  /** The words that run a command on this host: put before the command. */
  get prefix() {
    return ['nsenter', `--mount=${this.nsFile}`, '--'];
  }

  /** Runs `argv` on this host, bounded (with `env` as its environment if given); spawnSync's result. */
  run(argv, { timeout = 20_000, env } = {}) {
    return spawnSync(this.prefix[0], [...this.prefix.slice(1), ...argv], { encoding: 'utf8', timeout, ...(env ? { env } : {}) });
  }

  /** fs.statSync of a path as this host shows it (e.g. /dev/vfio/12). */
  stat(p) {
    const r = this.run(['stat', '-c', '%u:%g %a %F', p]);
    if (r.status !== 0) throw new Error(`stat ${p} on the fake host: ${r.stderr}`);
    const [owner, mode, ...type] = r.stdout.trim().split(' ');
    return { owner, mode, type: type.join(' ') };
  }

  /** Unmounts what keeps the namespace (it goes with its last process) and removes the test's files. */
  dispose() {
    if (this.nsFile && this.made) run('umount', [this.nsFile]);
    if (this.keep) run('umount', [this.keep]);
    if (this.madeDevVfio) {
      try {
        fs.rmdirSync('/dev/vfio');
      } catch {
        /* a VFIO module loaded meanwhile filled it */
      }
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Runs `argv` on a fake host made for it (see FakeHost.create), bounded (with `env` if given); spawnSync's result. */
export function runOnFakeHost(host, argv, { timeout = 20_000, env } = {}) {
  const h = FakeHost.create(host);
  try {
    return h.run(argv, { timeout, env });
  } finally {
    h.dispose();
  }
}

/** A /proc/cpuinfo of two processors with these flags (each processor lists them, as Linux does). */
export function cpuinfoWithFlags(...flags) {
  const base = ['fpu', 'vme', 'de', 'pse', 'tsc', 'msr', 'sse2', 'svm', 'vmx'];
  return [0, 1].map((n) => `processor\t: ${n}\nvendor_id\t: FakeVendor\nflags\t\t: ${[...base, ...flags].join(' ')}\n\n`).join('');
}

/** Hosts as the Go manager tells them apart: neither technology, SEV-SNP (AMD), TDX (Intel). */
export const PLAIN_HOST = { cpuinfo: cpuinfoWithFlags() };
export const SEV_SNP_HOST = { cpuinfo: cpuinfoWithFlags('sev', 'sev_es', 'sev_snp'), modules: { kvm_amd: { sev: 'Y\n', sev_snp: 'Y\n' } } };
export const TDX_HOST = { cpuinfo: cpuinfoWithFlags('tdx_host_platform'), modules: { kvm_intel: { tdx: 'Y\n' } } };

/**
 * What src/host/cvm-host.ts answers on a fake host, without mounting anything (its decision from
 * the two files' contents): the host facts of a configuration loaded in-process.
 */
export function hostFacts({ cpuinfo, modules = {} }) {
  const answer = (r) => {
    const value = modules[r.module]?.[r.parameter];
    return cvmSupport(r, { bytes: Buffer.from(cpuinfo, 'latin1') }, value === undefined ? { error: 'ENOENT' } : { bytes: Buffer.from(value) });
  };
  return { sevSnp: answer(SEV_SNP), tdx: answer(TDX) };
}

export const FACTS = { plain: hostFacts(PLAIN_HOST), sevSnp: hostFacts(SEV_SNP_HOST), tdx: hostFacts(TDX_HOST) };

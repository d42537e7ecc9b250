/**
 * The host's GPUs for passthrough, read from sysfs where the kernel shows them (and where QEMU
 * looks): /sys/bus/pci/devices/<BDF>/{vendor,device,class}, its `driver` link (vfio-pci), its
 * `iommu_group` link, /sys/kernel/iommu_groups/<N>/devices (VFIO hands out whole groups) and
 * /dev/vfio/<N> (what QEMU opens). Always the real paths: a host is faked by mounting over them
 * (test/fake-host.mjs), not by a setting.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { GpuSelection } from '../config/gpu-grammar.js';
import { StartupError } from '../util/startup-error.js';

export const PCI_DEVICES = '/sys/bus/pci/devices';
export const IOMMU_GROUPS = '/sys/kernel/iommu_groups';
export const VFIO_DIR = '/dev/vfio';
export const NVIDIA_VENDOR = '0x10de';

export interface PciDevice {
  bdf: string;
  vendor: string;
  device: string;
  /** e.g. 0x030200 (3D controller). */
  class: string;
  /** The bound driver's name; null: none. */
  driver: string | null;
  /** The IOMMU group's number; null: no IOMMU. */
  iommuGroup: string | null;
}

/** A GPU that passes every check: QEMU can be given it. */
export interface HostGpu {
  bdf: string;
  iommuGroup: string;
}

const attr = (dir: string, name: string) => {
  try {
    return fs.readFileSync(path.join(dir, name), 'utf8').trim();
  } catch {
    return '';
  }
};

/** The last component of a symlink's target (the driver's or group's name); null when there is no link. */
const linkName = (p: string) => {
  try {
    return path.basename(fs.readlinkSync(p));
  } catch {
    return null;
  }
};

/** What sysfs says of one PCI device; undefined when it has no such device. */
export function readPciDevice(bdf: string): PciDevice | undefined {
  const dir = path.join(PCI_DEVICES, bdf);
  if (!fs.existsSync(dir)) return undefined;
  return { bdf, vendor: attr(dir, 'vendor'), device: attr(dir, 'device'), class: attr(dir, 'class'), driver: linkName(path.join(dir, 'driver')), iommuGroup: linkName(path.join(dir, 'iommu_group')) };
}

/** As the Go manager's GPUPassthroughAvailable: vendor NVIDIA, class 3D controller (0x0302xx) or VGA (0x0300xx). */
export function isNvidiaGpu(d: PciDevice): boolean {
  return d.vendor === NVIDIA_VENDOR && (d.class.startsWith('0x0302') || d.class.startsWith('0x0300'));
}

const isBridge = (d: PciDevice) => d.class.startsWith('0x0604');

/** Every NVIDIA GPU bound to vfio-pci, in address order (Go takes the first of these). */
export function discoverGpus(): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(PCI_DEVICES);
  } catch {
    return [];
  }
  return names
    .sort()
    .map(readPciDevice)
    .filter((d): d is PciDevice => d !== undefined && d.driver === 'vfio-pci' && isNvidiaGpu(d))
    .map((d) => d.bdf);
}

/** What keeps QEMU from being given the device `bdf`: empty when nothing does. */
export function passthroughProblems(bdf: string): { gpu?: HostGpu; problems: string[] } {
  const d = readPciDevice(bdf);
  if (!d) return { problems: [`no PCI device ${bdf} (no ${PCI_DEVICES}/${bdf})`] };
  const problems: string[] = [];
  if (d.driver !== 'vfio-pci') problems.push(`${bdf} is bound to ${d.driver ?? 'no driver'}, not vfio-pci`);
  const group = d.iommuGroup;
  if (group === null) {
    problems.push(`${bdf} has no IOMMU group (the IOMMU is off: turn it on in the firmware and with amd_iommu=on or intel_iommu=on)`);
    return { problems };
  }
  let members: string[] = [];
  try {
    members = fs.readdirSync(path.join(IOMMU_GROUPS, group, 'devices')).sort();
  } catch (err) {
    problems.push(`its IOMMU group ${group} cannot be listed (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  for (const other of members) {
    if (other === bdf) continue;
    const m = readPciDevice(other);
    // VFIO hands out whole groups: a device of the group left to a host driver keeps QEMU out.
    if (m && m.driver !== 'vfio-pci' && !isBridge(m)) problems.push(`its IOMMU group ${group} also holds ${other}, bound to ${m.driver ?? 'no driver'}, not vfio-pci`);
  }
  const node = path.join(VFIO_DIR, group);
  try {
    if (!fs.statSync(node).isCharacterDevice()) problems.push(`${node} is not a character device`);
  } catch (err) {
    problems.push(`no ${node} (${(err as NodeJS.ErrnoException).code ?? String(err)}): is the vfio-pci module loaded?`);
  }
  return problems.length === 0 ? { gpu: { bdf, iommuGroup: group }, problems } : { problems };
}

export interface HostGpus {
  /** The GPUs VMs are given, in order. */
  gpus: HostGpu[];
  /** Those named or found that QEMU could not be given, each with why. */
  unusable: { bdf: string; problems: string[] }[];
  /** Discovered (MANAGER_QEMU_GPU_BDF empty) rather than named. */
  discovered: boolean;
}

/** The GPUs MANAGER_QEMU_GPU_BDF gives VMs on this host, checked. */
export function hostGpus(selection: GpuSelection): HostGpus {
  const bdfs = selection.mode === 'list' ? selection.bdfs : selection.mode === 'discover' ? discoverGpus() : [];
  const out: HostGpus = { gpus: [], unusable: [], discovered: selection.mode === 'discover' };
  for (const bdf of bdfs) {
    const r = passthroughProblems(bdf);
    if (r.gpu) out.gpus.push(r.gpu);
    else out.unusable.push({ bdf, problems: r.problems });
  }
  return out;
}

/** What fixes a GPU QEMU cannot be given (the IOMMU aside). */
export const BIND_REMEDY = 'bind it and every other device of its IOMMU group to vfio-pci (e.g. driverctl set-override <BDF> vfio-pci)';

/**
 * The GPUs VMs get, for `serve`: a GPU named in MANAGER_QEMU_GPU_BDF that QEMU could not be
 * given stops the start (one line naming the setting); one found by discovery is left out (the
 * caller warns).
 */
export function gpusForVms(selection: GpuSelection): HostGpus {
  const found = hostGpus(selection);
  const bad = found.unusable[0];
  if (selection.mode === 'list' && bad) {
    throw new StartupError(`MANAGER_QEMU_GPU_BDF=${selection.bdfs.join(',')}: ${bad.problems.join('; ')}; ${BIND_REMEDY}, or leave it out of MANAGER_QEMU_GPU_BDF`);
  }
  return found;
}

/** The GPU of the template command line (`qemu-args`, the start-up log): the first, as the Go manager's. */
export function templateGpu(selection: GpuSelection): string | undefined {
  if (selection.mode === 'list') return selection.bdfs[0];
  return selection.mode === 'discover' ? discoverGpus()[0] : undefined;
}

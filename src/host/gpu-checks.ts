/**
 * `check`'s part on GPU passthrough (MANAGER_QEMU_GPU_BDF): each GPU named or found exists, is
 * bound to vfio-pci, so is every other device of its IOMMU group (bridges aside), and its
 * /dev/vfio node exists; and a GPU VM's QEMU can lock its guest memory.
 */
import type { Config } from '../config/types.js';
import { describeBytes, vfioLockedMemory } from '../isolation/locked-memory.js';
import { sizeInBytes } from '../util/size.js';
import type { CheckResult } from './check-result.js';
import { daemonLockedMemory } from './locked-memory.js';
import { BIND_REMEDY, hostGpus } from './pci-gpus.js';

const row = (check: string, status: CheckResult['status'], detail: string, remedy = ''): CheckResult => ({ check, status, detail, remedy });

export function gpuChecks(config: Config): CheckResult[] {
  const selection = config.qemu.gpu.bdf;
  if (selection.mode === 'none') return [row('GPU passthrough', 'pass', 'off (MANAGER_QEMU_GPU_BDF=none): VMs get no GPU')];
  const found = hostGpus(selection);
  const out: CheckResult[] = [];
  if (found.discovered && found.gpus.length === 0 && found.unusable.length === 0) {
    return [row('GPU passthrough', 'pass', 'no NVIDIA GPU bound to vfio-pci on this host (MANAGER_QEMU_GPU_BDF empty): VMs get no GPU')];
  }
  for (const g of found.gpus) out.push(row(`GPU ${g.bdf}`, 'pass', `bound to vfio-pci with its whole IOMMU group ${g.iommuGroup} (/dev/vfio/${g.iommuGroup})`));
  for (const u of found.unusable) {
    // A GPU named in the setting stops the daemon's start; one it found is only left out.
    out.push(
      found.discovered
        ? row(`GPU ${u.bdf}`, 'warn', `found but left out: ${u.problems.join('; ')}`, BIND_REMEDY)
        : row(`GPU ${u.bdf}`, 'fail', `${u.problems.join('; ')}: the daemon does not start (MANAGER_QEMU_GPU_BDF)`, `${BIND_REMEDY}, or leave it out of MANAGER_QEMU_GPU_BDF`),
    );
  }
  if (found.gpus.length > 0) {
    const q = config.qemu;
    const memory = vfioLockedMemory(sizeInBytes(q.memorySize, 'M')!, daemonLockedMemory());
    // This process's limit: the daemon's is the unit's (LimitMEMLOCK=infinity), which it logs at start.
    const remedy = 'run the daemon with LimitMEMLOCK=infinity (the unit shipped does); this row shows the limit of the process that ran it';
    if (!memory.ok) out.push(row('locked memory for GPU VMs', 'fail', memory.reason, remedy));
    else if (memory.short) out.push(row('locked memory for GPU VMs', 'warn', memory.short, remedy));
    else out.push(row('locked memory for GPU VMs', 'pass', `each GPU VM's QEMU may lock ${describeBytes(memory.bytes)} (MANAGER_QEMU_MEMORY_SIZE=${q.memorySize} and 1 GiB for VFIO)`));
  }
  return out;
}

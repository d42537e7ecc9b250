/** `serve`'s GPUs: the pool VMs take theirs from, checked on this host at start. */
import type { Logger } from 'pino';
import type { Config } from '../config/types.js';
import { daemonLockedMemory } from '../host/locked-memory.js';
import { gpusForVms } from '../host/pci-gpus.js';
import { vfioGroupNodes } from '../host/vfio-groups.js';
import { type LockedMemoryLimit, vfioLockedMemory } from '../isolation/locked-memory.js';
import { GpuPool } from '../manager/gpu-pool.js';
import { sizeInBytes } from '../util/size.js';
import { StartupError } from '../util/startup-error.js';

/**
 * The GPUs VMs get (MANAGER_QEMU_GPU_BDF): a named one QEMU could not be given stops the start,
 * a discovered one is left out with a warning. With GPUs, each VM's QEMU must be able to lock
 * its guest memory (VFIO): a daemon whose limit cannot hold it does not start. `ownUsers`: a
 * uid per VM, whose user is given the GPU's /dev/vfio node.
 */
export function gpusOfThisHost(config: Config, log: Logger, ownUsers: boolean): { gpus: GpuPool; lockedMemory: LockedMemoryLimit; templateGpu: string | undefined } {
  const found = gpusForVms(config.qemu.gpu.bdf);
  for (const u of found.unusable) log.warn({ gpu: u.bdf, problems: u.problems }, `GPU ${u.bdf} left out: ${u.problems.join('; ')}`);
  const gpus = new GpuPool(found.gpus, ownUsers ? vfioGroupNodes : undefined, (gpu, err) =>
    log.error({ gpu: gpu.bdf, err: String(err) }, `could not give /dev/vfio/${gpu.iommuGroup} back to root`),
  );
  if (config.qemu.gpu.bdf.mode === 'none') log.info('GPU passthrough is off (MANAGER_QEMU_GPU_BDF=none)');
  else log.info({ gpus: found.gpus.map((g) => g.bdf), discovered: found.discovered }, found.gpus.length > 0 ? `${found.gpus.length} GPU(s) for VMs, one each` : 'no GPU for VMs');
  const lockedMemory = daemonLockedMemory();
  if (found.gpus.length > 0) {
    const memory = vfioLockedMemory(sizeInBytes(config.qemu.memorySize, 'M')!, lockedMemory);
    if (!memory.ok) throw new StartupError(`MANAGER_QEMU_MEMORY_SIZE=${config.qemu.memorySize} with GPUs (MANAGER_QEMU_GPU_BDF): ${memory.reason}`);
    if (memory.short) log.warn(memory.short);
  }
  return { gpus, lockedMemory, templateGpu: found.gpus[0]?.bdf };
}

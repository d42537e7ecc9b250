/**
 * The host's GPUs for passthrough (MANAGER_QEMU_GPU_BDF, checked at start), one per VM while
 * its QEMU runs. A GPU is held by one VM at a time: by the one launched with it, the one
 * re-adopted with it, or the one an earlier run left with it until recovery has decided that
 * one. With a uid per VM, the GPU's /dev/vfio/<group> node belongs to the VM's user while it
 * holds the GPU (an injected effect, src/host/vfio-groups.ts). Allocation goes round the list,
 * so a GPU just freed is the last to be reused. Synchronous: two concurrent CreateVm never get
 * the same GPU.
 */

export interface Gpu {
  /** PCI address as sysfs names it (0000:02:00.0). */
  bdf: string;
  /** Its IOMMU group: QEMU opens /dev/vfio/<iommuGroup>. */
  iommuGroup: string;
}

/** Who may open a group's /dev/vfio node. */
export interface VfioGroupAccess {
  give(group: string, owner: { uid: number; gid: number }): void;
  takeBack(group: string): void;
}

interface Holding {
  gpu: Gpu;
  /** The VM's id. */
  holder: string;
  /** Its /dev/vfio node was given to the VM's user (taken back on release). */
  given: boolean;
}

export class GpuPool {
  private readonly held = new Map<string, Holding>();
  private cursor = 0;

  constructor(
    private readonly gpus: readonly Gpu[],
    /** Absent: QEMU runs as root or under sudo, and the nodes stay as they are. */
    private readonly access?: VfioGroupAccess,
    /** Told when a node could not be taken back (the GPU is freed anyway). */
    private readonly onError: (gpu: Gpu, err: unknown) => void = () => undefined,
  ) {}

  get size(): number {
    return this.gpus.length;
  }

  /** A free GPU, now held by `holder`; undefined when every GPU is held. */
  acquire(holder: string): Gpu | undefined {
    for (let tried = 0; tried < this.gpus.length; tried++) {
      const gpu = this.gpus[this.cursor]!;
      this.cursor = (this.cursor + 1) % this.gpus.length;
      if (this.held.has(gpu.bdf)) continue;
      this.held.set(gpu.bdf, { gpu, holder, given: false });
      return gpu;
    }
    return undefined;
  }

  /** Its /dev/vfio node to the VM's user (guest isolation); a failure leaves the GPU held, for release. */
  giveTo(gpu: Gpu, owner: { uid: number; gid: number }): void {
    const h = this.held.get(gpu.bdf);
    if (!h || !this.access) return;
    h.given = true;
    this.access.give(gpu.iommuGroup, owner);
  }

  /**
   * Held by a VM an earlier run started (re-adopted, or expected until recovery decides it),
   * whether or not the GPU is still in the list: no VM is launched with it meanwhile.
   * `given`: the VM has a user of its own, so its node was given to it.
   */
  hold(gpu: Gpu, holder: string, given: boolean): void {
    this.held.set(gpu.bdf, { gpu, holder, given: given && this.access !== undefined });
  }

  /** Its QEMU is gone: the node back to root (if it was given), the GPU free. Only by its holder. */
  release(bdf: string, holder: string): void {
    const h = this.held.get(bdf);
    if (!h || h.holder !== holder) return;
    this.held.delete(bdf);
    if (!h.given) return;
    try {
      this.access?.takeBack(h.gpu.iommuGroup);
    } catch (err) {
      this.onError(h.gpu, err);
    }
  }

  holderOf(bdf: string): string | undefined {
    return this.held.get(bdf)?.holder;
  }

  /** "0000:02:00.0 held by VM <id>, ...": what a refused CreateVm names. */
  describeHolders(): string {
    return this.gpus.map((g) => `${g.bdf} ${this.held.has(g.bdf) ? `held by VM ${this.held.get(g.bdf)!.holder}` : 'free'}`).join(', ');
  }
}

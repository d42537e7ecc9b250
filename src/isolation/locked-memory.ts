/**
 * How much memory a VM with a GPU may lock. VFIO pins every page of guest RAM (and QEMU's other
 * RAM: firmware flash, ROMs, VGA memory) for the device's DMA, and the kernel counts the pinned
 * pages against the QEMU process's RLIMIT_MEMLOCK. QEMU inherits the daemon's limit (setpriv and
 * sudo keep rlimits); the unit gives the daemon `LimitMEMLOCK=infinity`. Each GPU VM's QEMU gets
 * a limit of its own instead: its guest memory plus 1 GiB, libvirt's rule for VFIO, so a VM can
 * lock what it needs and no more. Pure: the daemon's limit comes in, the decision goes out.
 */

/** The daemon's own RLIMIT_MEMLOCK (what QEMU would inherit), as /proc/self/limits shows it. */
export interface LockedMemoryLimit {
  /** Bytes; null: unlimited. */
  hard: bigint | null;
  /** CAP_SYS_RESOURCE in the daemon's effective set: it may raise the hard limit. */
  mayRaise: boolean;
}

const GiB = 1n << 30n;

/** libvirt's allowance for VFIO beyond guest RAM (qemuDomainGetMemLockLimitBytes). */
export const VFIO_EXTRA_BYTES = GiB;

export type LockedMemoryDecision =
  /** QEMU runs under `prlimit --memlock=bytes:bytes`; `short`: less than the guest needs beyond its RAM. */
  | { ok: true; bytes: bigint; short?: string }
  | { ok: false; reason: string };

export function describeBytes(n: bigint | null): string {
  if (n === null) return 'unlimited';
  for (const [unit, size] of [['GiB', GiB], ['MiB', 1n << 20n], ['KiB', 1n << 10n]] as const) {
    if (n >= size && n % size === 0n) return `${n / size} ${unit}`;
  }
  return `${n} bytes`;
}

/**
 * The limit a GPU VM's QEMU gets, for guest RAM of `guestBytes`. What it needs when the daemon
 * may give it (its hard limit is at least that, or it may raise it); else as much as it has,
 * if that holds the guest's RAM at least (`short` says the rest may fail in QEMU); else refused.
 */
export function vfioLockedMemory(guestBytes: bigint, daemon: LockedMemoryLimit): LockedMemoryDecision {
  const needed = guestBytes + VFIO_EXTRA_BYTES;
  if (daemon.mayRaise || daemon.hard === null || daemon.hard >= needed) return { ok: true, bytes: needed };
  const fix = 'give the daemon LimitMEMLOCK=infinity (the unit shipped does) or CAP_SYS_RESOURCE';
  const have = `the daemon's RLIMIT_MEMLOCK hard limit is ${describeBytes(daemon.hard)} and it lacks CAP_SYS_RESOURCE`;
  if (daemon.hard < guestBytes) {
    return { ok: false, reason: `a VM with a GPU locks its guest memory (${describeBytes(guestBytes)}) for VFIO, but ${have}: ${fix}` };
  }
  return {
    ok: true,
    bytes: daemon.hard,
    short: `a VM with a GPU should be able to lock ${describeBytes(needed)} (guest memory and 1 GiB for VFIO), but ${have}: its QEMU gets ${describeBytes(daemon.hard)} and may fail to map its memory; ${fix}`,
  };
}

/**
 * The grammars of the GPU passthrough settings (MANAGER_QEMU_GPU_*): which GPUs this host hands
 * to VMs, and the QEMU ids and size the Go manager's argv names them with.
 */
import { type Grammar, GrammarError, grammar, integer } from './grammar.js';

/**
 * The GPUs VMs may get: every NVIDIA GPU bound to vfio-pci found at start (`discover`, the
 * empty value), none at all (`none`), or exactly these (PCI addresses in sysfs's spelling).
 */
export type GpuSelection = { mode: 'discover' } | { mode: 'none' } | { mode: 'list'; bdfs: string[] };

const BDF = /^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([01][0-9a-fA-F])\.([0-7])$/;

/**
 * A PCI address as sysfs names it (`0000:02:00.0`, lower case), from the full form or the
 * short one QEMU also takes (`02:00.0`: domain 0000). Undefined when it is not one.
 */
export function canonicalBdf(text: string): string | undefined {
  const m = BDF.exec(text.trim());
  if (!m) return undefined;
  return `${m[1] ?? '0000'}:${m[2]}:${m[3]}.${m[4]}`.toLowerCase();
}

export const gpuSelection: Grammar<GpuSelection> = grammar((input) => {
  const v = input.trim();
  if (v === '') return { mode: 'discover' };
  if (v === 'none') return { mode: 'none' };
  const bdfs: string[] = [];
  for (const item of v.split(',')) {
    const bdf = canonicalBdf(item);
    if (bdf === undefined) {
      throw new GrammarError(`expected a PCI address like 0000:02:00.0, a comma-separated list of them, none, or empty (every NVIDIA GPU bound to vfio-pci); ${JSON.stringify(item.trim())} is not one`);
    }
    if (bdfs.includes(bdf)) throw new GrammarError(`expected each PCI address once; ${bdf} is listed twice`);
    bdfs.push(bdf);
  }
  return { mode: 'list', bdfs };
}, false);

/**
 * A QEMU id (QEMU's id_wellformed: a letter, then letters, digits, '-', '.', '_'): spliced
 * into `-device ...,id=...,bus=...` as is, so no comma can reach the option string.
 */
export const qemuId: Grammar<string> = grammar((input) => {
  const v = input.trim();
  if (!/^[A-Za-z][A-Za-z0-9._-]*$/.test(v)) throw new GrammarError("expected a QEMU id: a letter, then letters, digits, '-', '.' or '_'");
  return v;
});

/** OVMF's 64-bit PCI MMIO window in MiB (opt/ovmf/X-PciMmio64Mb). */
export const mmioMiB = integer(1, 4_294_967_295, 'a positive number of MiB, at most 4294967295');

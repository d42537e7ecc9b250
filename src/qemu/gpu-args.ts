/**
 * A VM's GPU on QEMU's command line, as the Go manager writes it (manager/qemu/config.go): a
 * PCIe root port, the host device behind it (VFIO), and OVMF's 64-bit MMIO window large enough
 * for the GPU's BARs. Pure.
 */
import type { QemuConfig } from '../config/types.js';

export function gpuArgs(g: QemuConfig['gpu'], bdf: string): string[] {
  // The ids and the address are checked by their grammars: no comma can reach these options.
  return [
    '-device', `pcie-root-port,id=${g.pcieRootPort},bus=${g.pcieBus}`,
    '-device', `vfio-pci,host=${bdf},bus=${g.pcieRootPort}`,
    '-fw_cfg', `name=opt/ovmf/X-PciMmio64Mb,string=${g.fwCfgMmioMb}`,
  ];
}

/**
 * /dev/vfio/<group>, the node QEMU opens to reach a GPU's IOMMU group: root's 0600 by default,
 * so with a uid per VM the node is given to the VM's user for the VM's life and back to root
 * after. Only ever its owner: the mode stays as udev made it.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { VfioGroupAccess } from '../manager/gpu-pool.js';
import { VFIO_DIR } from './pci-gpus.js';

const node = (group: string) => {
  // The group comes from sysfs or a record the daemon wrote: a number, never a path.
  if (!/^\d+$/.test(group)) throw new Error(`not an IOMMU group number: ${JSON.stringify(group)}`);
  return path.join(VFIO_DIR, group);
};

export const vfioGroupNodes: VfioGroupAccess = {
  give(group, owner) {
    fs.chownSync(node(group), owner.uid, owner.gid);
  },
  takeBack(group) {
    fs.chownSync(node(group), 0, 0);
  },
};

/**
 * A VM's files as the manager writes them: its directory and shares, its record, their removal.
 * One narrow interface so in-process tests can make a step fail (a full disk) where the real
 * file system would not.
 */
import type { VmRequest } from '../request/create-request.js';
import { createVmDir, type QemuAccess, removeVmDir, type VmPaths } from '../vm/vm-dir.js';
import { type VmRecord, writeRecordAtomically } from '../vm/vm-record.js';

export interface VmFiles {
  create(paths: VmPaths, id: string, req: VmRequest, ovmfVarsTemplate: string | undefined, access?: QemuAccess): Promise<void>;
  writeRecord(dir: string, record: VmRecord): Promise<void>;
  remove(dir: string): Promise<void>;
}

export const diskFiles: VmFiles = {
  create: createVmDir,
  writeRecord: writeRecordAtomically,
  remove: removeVmDir,
};

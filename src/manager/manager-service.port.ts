/**
 * What the API layer asks of the manager (the port; VmManager implements it). It takes only
 * values parsed where the call came in (VmRequest, VmId) and answers in the domain's terms:
 * no proto message or field name crosses it.
 */
import type { VmRequest } from '../request/create-request.js';
import type { VmId } from '../request/vm-id.js';
import type { VmStatusView } from './supervised-vm.js';
import type { VmEvent } from './vm-registry.js';

export type { VmStatusView } from './supervised-vm.js';
export type { VmEvent } from './vm-registry.js';

export interface CvmInfo {
  id: string;
  ovmfVersion: string;
  cpuNum: number;
  cpuType: string;
  kernelCmd: string;
  eosVersion: string;
}

export interface ManagerService {
  /** Launches a VM; resolves once QEMU listens on its forwarded port. */
  create(req: VmRequest): Promise<{ id: string; port: number }>;
  remove(id: VmId): Promise<void>;
  /** What a VM runs on: the configured values, with the VM's own kernel command line if it exists (any id is answered). */
  info(id: VmId): Promise<CvmInfo>;
  /** The VM's attestation policy, encoded as configured. */
  attestationPolicy(id: VmId): Promise<Uint8Array>;

  /** Every VM, once recovery has decided those an earlier run left. */
  list(): Promise<VmStatusView[]>;
  status(id: VmId): Promise<VmStatusView>;
  /** Every VM the manager holds now (during recovery, without those not yet decided). */
  listNow(): VmStatusView[];
  /** Resolves once recovery has decided every VM an earlier run left. */
  recovered(): Promise<void>;
  /** Every VM transition from now on; returns the unsubscribe function. */
  watch(fn: (e: VmEvent) => void): () => void;
  /** Called once when the daemon begins to stop; returns the unsubscribe function. */
  onShutdown(fn: () => void): () => void;
}

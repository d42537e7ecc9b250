/**
 * The VMs this manager knows: the map of SupervisedVms, the slots of MANAGER_MAX_VMS, the
 * reservations for VMs an earlier run left until recovery decides them, and the watchers
 * (WatchVms) that see every change as it happens. Everything else about a VM is its own.
 */
import type { Logger } from 'pino';
import { VmNotFound } from './errors.js';
import type { Gpu, GpuPool } from './gpu-pool.js';
import type { PortPool } from './port-pool.js';
import type { SupervisedVm, VmChange, VmStatusView } from './supervised-vm.js';
import type { UidPool } from './uid-pool.js';
import { VM_STATES, type VmState } from './vm-state.js';

/** One change, for watchers; `to: 'removed'` when the VM leaves the manager. */
export interface VmEvent extends VmChange {
  id: string;
  at: string;
  vm: VmStatusView;
}

/** A VM an earlier run left, known from its record only, until recovery adopts or cleans it. */
export interface Expected {
  /** The record's PID, or the QEMUs found naming the VM's directory (a start cut short). */
  pids: number[];
  hostPort: number | null;
  uid: number | null;
  gpu: Gpu | null;
  settled: Promise<void>;
  settle: () => void;
}

export class VmRegistry {
  private readonly vms = new Map<string, SupervisedVm>();
  private readonly watchers = new Set<(e: VmEvent) => void>();
  private readonly expected = new Map<string, Expected>();
  private allSettled: Promise<void> = Promise.resolve();
  /** Some VMs an earlier run left were never looked at (a stop or a failure during recovery). */
  recoveryIncomplete = false;

  constructor(
    private readonly maxVms: number,
    private readonly log: Logger,
    private readonly ports: PortPool,
    /** The VM users' uids (guest isolation on). */
    private readonly uids: UidPool | undefined,
    /** Called when the last VM is gone (the guest firewall goes with it). */
    private readonly onEmpty: () => void = () => undefined,
    /** The host's GPUs (MANAGER_QEMU_GPU_BDF). */
    private readonly gpus?: GpuPool,
  ) {}

  /** No VM, not even one an earlier run left that recovery has not decided yet. */
  get isEmpty(): boolean {
    return this.vms.size === 0 && this.expected.size === 0;
  }

  /** VMs holding a slot of MANAGER_MAX_VMS: those whose QEMU may run (expected ones included). */
  get slotsInUse(): number {
    let n = 0;
    for (const id of this.expected.keys()) if (!this.vms.has(id)) n++;
    for (const vm of this.vms.values()) if (vm.holdsResources) n++;
    return n;
  }

  /** Whether a new VM may take a slot now (MANAGER_MAX_VMS; 0: no limit). */
  get hasSlot(): boolean {
    return this.maxVms <= 0 || this.slotsInUse < this.maxVms;
  }

  /** Takes a slot for a VM being launched (`hasSlot` checked in the same turn). */
  add(vm: SupervisedVm, reason: string): void {
    this.vms.set(vm.id, vm);
    this.changed(vm, { from: 'new', to: vm.state, reason });
  }

  /** The VM has left: its slot is free. */
  delete(vm: SupervisedVm): void {
    if (this.vms.get(vm.id) === vm) this.vms.delete(vm.id);
    if (this.isEmpty) this.onEmpty();
  }

  /**
   * VMs an earlier run left that may still run, as their records say: until each is settled,
   * its slot, port, uid and GPU are held, its process counts as a guest's, and calls about it wait.
   */
  expect(vms: { id: string; pids: number[]; hostPort: number | null; uid?: number | null; gpu?: Gpu | null }[]): void {
    for (const { id, pids, hostPort, uid = null, gpu = null } of vms) {
      let settle!: () => void;
      const settled = new Promise<void>((resolve) => (settle = resolve));
      this.expected.set(id, { pids, hostPort, uid, gpu, settled, settle });
      if (hostPort !== null) this.ports.hold(hostPort);
      if (uid !== null) this.uids?.hold(uid);
      if (gpu !== null) this.gpus?.hold(gpu, id, uid !== null);
    }
    this.allSettled = Promise.all([...this.expected.values()].map((e) => e.settled)).then(() => undefined);
  }

  /**
   * Recovery has decided this VM (adopted, cleaned or left): its reservation ends. `deferred`:
   * not decided at all (the daemon is stopping), so what is listed from now on is incomplete.
   */
  settle(id: string, deferred = false): void {
    const e = this.expected.get(id);
    if (!e) return;
    if (deferred) this.recoveryIncomplete = true;
    this.expected.delete(id);
    // An adopted VM holds its port, uid and GPU itself from now on.
    const vm = this.vms.get(id);
    if (e.hostPort !== null && vm?.record.hostPort !== e.hostPort) this.ports.release(e.hostPort);
    if (e.uid !== null && vm?.uid !== e.uid) this.uids?.release(e.uid);
    if (e.gpu !== null && vm?.record.gpu?.bdf !== e.gpu.bdf) this.gpus?.release(e.gpu.bdf, id);
    e.settle();
    if (this.isEmpty) this.onEmpty();
  }

  /** Resolves once recovery has decided the VM `id` (at once for any other id). */
  settled(id: string): Promise<void> {
    return this.expected.get(id)?.settled ?? Promise.resolve();
  }

  /** Resolves once recovery has decided every VM an earlier run left. */
  recovered(): Promise<void> {
    return this.allSettled;
  }

  /** Ends every reservation left (recovery itself failed); what is listed is incomplete. */
  settleAll(): void {
    for (const id of [...this.expected.keys()]) this.settle(id, true);
  }

  /** The VM, or NOT_FOUND. The id was parsed where the call came in (VmId), or is the registry's own. */
  find(id: string): SupervisedVm {
    const vm = this.vms.get(id);
    if (!vm) throw new VmNotFound(id);
    return vm;
  }

  get(id: string): SupervisedVm | undefined {
    return this.vms.get(id);
  }

  all(): SupervisedVm[] {
    return [...this.vms.values()];
  }

  /** VMs an earlier run left that recovery has not decided yet, and not adopted already. */
  undecided(): [id: string, e: Expected][] {
    return [...this.expected].filter(([id]) => !this.vms.has(id));
  }

  list(): VmStatusView[] {
    return this.all()
      .map((vm) => vm.view())
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  countByState(): Record<VmState, number> {
    const counts = Object.fromEntries(VM_STATES.map((s) => [s, 0])) as Record<VmState, number>;
    for (const vm of this.vms.values()) counts[vm.state]++;
    return counts;
  }

  /** Every change from now on; returns the unsubscribe function. */
  subscribe(fn: (e: VmEvent) => void): () => void {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }

  cancelTimers(): void {
    for (const vm of this.vms.values()) vm.cancelTimers();
  }

  /** Tells watchers of one change. */
  changed(vm: SupervisedVm, c: VmChange): void {
    if (this.watchers.size === 0) return;
    const e: VmEvent = { id: vm.id, from: c.from, to: c.to, reason: c.reason, at: new Date().toISOString(), vm: vm.view() };
    for (const fn of [...this.watchers]) {
      try {
        fn(e);
      } catch (err) {
        this.log.error({ err: String(err) }, 'a VM watcher failed');
      }
    }
  }
}

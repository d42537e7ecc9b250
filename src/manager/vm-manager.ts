/**
 * The service behind ManagerService and ManagerAdmin: it ties the launcher (CreateVm and its
 * rollback), the registry (VM states, RemoveVm, TTL, views, watchers) and recovery (re-adopt or
 * clean up after a restart) together, and keeps track of operations in flight for a clean stop.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/types.js';
import type { VmRequest } from '../request/create-request.js';
import type { VmId } from '../request/vm-id.js';
import type { VmRecord } from '../vm/vm-record.js';
import type { AttestationPolicies } from './attestation-policy.js';
import { ManagerError } from './errors.js';
import { GpuPool } from './gpu-pool.js';
import { type SupervisedPid, supervisedPids, vmOfUid } from './guest-attribution.js';
import type { LockedMemoryLimit } from '../isolation/locked-memory.js';
import type { CvmInfo, ManagerService } from './manager-service.port.js';
import type { GuestIsolation } from './guest-isolation.js';
import { type ManagerObserver, NO_OBSERVER } from './observer.js';
import type { PortPool } from './port-pool.js';
import { findLeftovers, type Leftover, mayStillRun, orphansToReserve, type RecoveryResult, recoverVms } from './recovery.js';
import type { SupervisedVm, VmStatusView, VmSurroundings } from './supervised-vm.js';
import type { QemuFlavor, VmDriver } from './vm-driver.port.js';
import { diskFiles, type VmFiles } from './vm-files.js';
import { VmLauncher } from './vm-launcher.js';
import { type VmEvent, VmRegistry } from './vm-registry.js';
import type { VmState } from './vm-state.js';

export type { GuestIsolation } from './guest-isolation.js';
export type { VmStatusView } from './supervised-vm.js';
export type { VmEvent } from './vm-registry.js';
export type { VmState } from './vm-state.js';

/** How long the guest firewall outlives the last VM (see dropFirewallIfUnused). */
const FIREWALL_LINGER_MS = 3_000;

export class VmManager implements ManagerService {
  private stopping = false;
  private firewallLinger: NodeJS.Timeout | undefined;
  private readonly shutdownListeners = new Set<() => void>();
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly registry: VmRegistry;
  private readonly launcher: VmLauncher;
  private readonly around: VmSurroundings;
  private readonly policies: AttestationPolicies | undefined;
  private readonly isolation: GuestIsolation | undefined;
  private readonly qemuGid: number | undefined;

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
    private readonly ports: PortPool,
    /** The one way to processes: QEMU + QMP (src/vm/qemu-driver.ts), or a fake in tests. */
    private readonly driver: VmDriver,
    opts: {
      policies?: AttestationPolicies;
      observer?: ManagerObserver;
      isolation?: GuestIsolation;
      /** Under MANAGER_QEMU_USE_SUDO: the group of the user QEMU runs as (src/host/qemu-user.ts). */
      qemuGid?: number;
      files?: VmFiles;
      /** The host's GPUs (MANAGER_QEMU_GPU_BDF, checked at start); none by default. */
      gpus?: GpuPool;
      /** The daemon's RLIMIT_MEMLOCK, for GPU VMs (src/host/locked-memory.ts). */
      lockedMemory?: LockedMemoryLimit;
    } = {},
  ) {
    this.policies = opts.policies;
    this.isolation = opts.isolation;
    this.qemuGid = opts.qemuGid;
    const gpus = opts.gpus ?? new GpuPool([]);
    this.registry = new VmRegistry(config.maxVms, log, ports, opts.isolation?.uids, () => this.dropFirewallIfUnused(), gpus);
    this.around = {
      stopTimeoutMs: config.stopTimeoutMs,
      powerdownTimeoutMs: config.powerdownTimeoutMs,
      ports,
      uids: opts.isolation?.uids,
      gpus,
      files: opts.files ?? diskFiles,
      observer: opts.observer ?? NO_OBSERVER,
      track: (p) => this.track(p),
      changed: (vm, c) => this.registry.changed(vm, c),
      gone: (vm) => this.registry.delete(vm),
    };
    this.launcher = new VmLauncher(config, log, this.registry, driver, this.around, opts.policies, opts.isolation, opts.qemuGid, opts.lockedMemory);
  }

  /**
   * The guest firewall goes with the last VM (and comes back before the next one starts), after
   * FIREWALL_LINGER_MS without a VM: a host that removes its last VM and creates the next one at
   * once (Prism's usual cycle) does not pay an nft install and removal each time. The table only
   * concerns the VM uids, which run no process meanwhile.
   */
  private dropFirewallIfUnused(): void {
    const fw = this.isolation?.firewall;
    if (!fw || !this.registry.isEmpty) return;
    clearTimeout(this.firewallLinger);
    this.firewallLinger = setTimeout(() => {
      fw.removeIf(() => this.registry.isEmpty).then(
        (removed) => removed && this.log.info({ table: fw.table }, 'guest firewall removed: no VM left'),
        (err) => this.log.error({ table: fw.table, err: String(err) }, 'could not remove the guest firewall table'),
      );
    }, FIREWALL_LINGER_MS);
    this.firewallLinger.unref();
  }

  /** The daemon stops: a removal still lingering is left to the stop sequence. */
  private cancelFirewallLinger(): void {
    clearTimeout(this.firewallLinger);
  }

  /** The VM whose QEMU runs as `uid`, and whether `uid` is a VM user's at all. */
  vmOfUid(uid: number): { vmUser: boolean; vmId?: string } {
    return vmOfUid(this.registry, this.isolation?.uids, uid);
  }

  /** Uids of VMs an earlier run left running that lie outside MANAGER_VM_UID_RANGE (the firewall would not cover them). */
  leftoverUidsOutside(range: { first: number; last: number }, leftovers: Leftover[]): number[] {
    return leftovers.flatMap((l) => {
      const uid = mayStillRun(l)?.uid;
      return uid != null && (uid < range.first || uid > range.last) ? [uid] : [];
    });
  }

  /** Whether any VM is supervised or expected (a local peer's row gone is refused then). */
  hasVms(): boolean {
    return !this.registry.isEmpty;
  }

  /** Reads the QEMU binary's version (once; retried at the next CreateVm if it fails). */
  probeQemu(): Promise<QemuFlavor> {
    return this.driver.flavor();
  }

  /** Ports of the range no VM holds. */
  portsFree(): number {
    return this.ports.size - this.ports.heldCount;
  }

  /** VMs by state, for operators and metrics (counted, so never negative). */
  countByState(): Record<VmState, number> {
    return this.registry.countByState();
  }

  /** The PIDs of the QEMUs this manager supervises, with their VM ids. */
  supervisedPids(withoutOwnUid = false): SupervisedPid[] {
    return supervisedPids(this.registry, withoutOwnUid);
  }

  /** Every VM transition from now on (WatchVms); returns the unsubscribe function. */
  watch(fn: (e: VmEvent) => void): () => void {
    return this.registry.subscribe(fn);
  }

  /** Called once when the daemon begins to stop (WatchVms streams end then, not at the grace's end). */
  onShutdown(fn: () => void): () => void {
    this.shutdownListeners.add(fn);
    return () => this.shutdownListeners.delete(fn);
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p)).catch(() => undefined);
    return p;
  }

  create(req: VmRequest): Promise<{ id: string; port: number }> {
    if (this.stopping) return Promise.reject(new ManagerError('unavailable', 'the manager is shutting down; retry on another host or later'));
    return this.track(this.launcher.launch(req));
  }

  async remove(id: VmId): Promise<void> {
    const vm = await this.find(id);
    return this.track(vm.remove('removed'));
  }

  /** The VM a call names, once recovery has decided it: NOT_FOUND or the VM. */
  private async find(id: VmId): Promise<SupervisedVm> {
    await this.settled(id);
    return this.registry.find(id);
  }

  /** Waits until recovery has decided the VM a call names (at once for any other id). */
  private async settled(id: VmId): Promise<void> {
    await this.registry.settled(id);
    this.refuseIfIncomplete();
  }

  /** A VM never looked at may still run: "not found" would be a lie, so the answer is "later". */
  private refuseIfIncomplete(): void {
    if (this.registry.recoveryIncomplete) {
      throw new ManagerError('unavailable', 'the manager did not finish re-adopting the VMs of its previous run (it is stopping, or recovery failed: see its log); retry once it is back');
    }
  }

  async info(id: VmId): Promise<CvmInfo> {
    await this.settled(id);
    const vm = this.registry.get(id);
    const q = this.config.qemu;
    return {
      id,
      ovmfVersion: q.ovmfVersion,
      cpuNum: q.smpCount,
      cpuType: q.cpu,
      kernelCmd: vm?.record.kernelCmdline ?? q.kernelCmdline,
      eosVersion: this.config.eosVersion,
    };
  }

  /** Every VM, once recovery has decided those an earlier run left. */
  async list(): Promise<VmStatusView[]> {
    await this.registry.recovered();
    this.refuseIfIncomplete();
    return this.registry.list();
  }

  /** Every VM the registry holds now (during recovery, without those not yet decided). */
  listNow(): VmStatusView[] {
    return this.registry.list();
  }

  /** Resolves once recovery has decided every VM an earlier run left. */
  recovered(): Promise<void> {
    return this.registry.recovered();
  }

  /** Recovery itself failed: calls waiting for it are answered (UNAVAILABLE) instead of waiting on. */
  abandonRecovery(): void {
    this.registry.settleAll();
  }

  async status(id: VmId): Promise<VmStatusView> {
    return (await this.find(id)).view();
  }

  /** The VM's record, or NOT_FOUND (FAILED_PRECONDITION while it starts). */
  async get(id: VmId): Promise<VmRecord> {
    const vm = await this.find(id);
    if (vm.state === 'starting') throw new ManagerError('failed-precondition', `VM ${vm.id} is still starting`);
    return vm.record;
  }

  /** The attestation policy of a VM, encoded as configured. */
  async attestationPolicy(id: VmId): Promise<Uint8Array> {
    const record = await this.get(id);
    if (!this.policies) throw new ManagerError('unimplemented', 'attestation policies are not configured on this manager');
    return this.policies.policyFor(record);
  }

  /**
   * Before serving: reads what an earlier run left and reserves, for each VM that may still
   * run, its slot and port, and counts its process as a guest's (cheap: one record read per VM;
   * a /proc scan only when a start was cut short).
   */
  async expectLeftovers(): Promise<Leftover[]> {
    const leftovers = await findLeftovers(this.config.stateDir);
    const orphans = await orphansToReserve(leftovers, this.config.stateDir, this.config.qemu.binPath, this.driver.processes);
    this.registry.expect([...leftovers.flatMap((l) => mayStillRun(l) ?? []), ...orphans]);
    return leftovers;
  }

  /** After serving: re-adopts or cleans up each leftover (calls about one wait for it). */
  recover(leftovers: Leftover[]): Promise<RecoveryResult> {
    return this.track(
      recoverVms(leftovers, {
        stateDir: this.config.stateDir,
        qemuBinPath: this.config.qemu.binPath,
        registry: this.registry,
        driver: this.driver,
        around: this.around,
        log: this.log,
        policies: this.policies,
        output: this.config.console,
        stopping: () => this.stopping,
        isolation: this.isolation !== undefined,
        qmpGroup: this.qemuGid,
      }).then((r) => {
        // The firewall was installed at start, in case a VM of the earlier run still ran.
        this.dropFirewallIfUnused();
        return r;
      }),
    );
  }

  /** Refuses new VMs and stops TTL timers; VMs keep running (the next start re-adopts them). */
  beginShutdown(): void {
    this.stopping = true;
    this.cancelFirewallLinger();
    this.registry.cancelTimers();
    for (const fn of [...this.shutdownListeners]) fn();
    this.shutdownListeners.clear();
  }

  /** Waits, at most graceMs, for operations in flight (CreateVm, RemoveVm, TTL removals). */
  async drain(graceMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.inflight]),
      new Promise((resolve) => {
        timer = setTimeout(resolve, graceMs);
      }),
    ]);
    clearTimeout(timer);
  }
}

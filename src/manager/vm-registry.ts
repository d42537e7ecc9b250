/**
 * The VMs this manager knows, each with its state machine (vm-state.ts), and the one place
 * where their state changes: QMP events, process exits, RemoveVm, TTL, recovery. Slots and
 * ports are accounted from the states: a VM holds them while its QEMU may run.
 * Watchers (WatchVms) see every transition as it happens.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/types.js';
import type { ExitInfo, QemuProcess } from '../vm/qemu-process.js';
import type { QmpChannel } from '../vm/qmp.js';
import { removeVmDir, type VmPaths } from '../vm/vm-dir.js';
import { type VmRecord, writeRecordAtomically } from '../vm/vm-record.js';
import { ManagerError, VmNotFound } from './errors.js';
import { type ManagerObserver, NO_OBSERVER, type QemuExitCause } from './observer.js';
import type { PortPool } from './port-pool.js';
import type { UidPool } from './uid-pool.js';
import { TtlTimer } from './ttl-timer.js';
import { type ExitCause, type Transition, VM_STATES, type VmInput, type VmState, VmStateMachine } from './vm-state.js';

export interface Vm {
  readonly id: string;
  readonly machine: VmStateMachine;
  readonly createdAt: string;
  readonly log: Logger;
  hostPort: number | undefined;
  /** The VM's own uid (guest isolation), held from the launch until the VM is removed. */
  uid: number | undefined;
  /** Written once QEMU is up; undefined while the VM starts. */
  record: VmRecord | undefined;
  paths: VmPaths | undefined;
  proc: QemuProcess | undefined;
  qmp: QmpChannel | undefined;
  /** Under sudo, the PIDs below sudo's (QEMU itself); undefined until read, once QEMU is up. */
  qemuPids: number[] | undefined;
  ttl: TtlTimer | undefined;
  removing: Promise<void> | undefined;
  /** Set once QEMU is gone. */
  exit?: ExitRecord;
}

type ExitRecord = { code: number | null; signal: string | null; at: string; cause: string };

/** What an operator sees of one VM. */
export interface VmStatusView {
  id: string;
  state: VmState;
  pid: number | null;
  hostPort: number;
  createdAt: string;
  expiresAt: string | null;
  exit: { code: number | null; signal: string | null; at: string; cause: string } | null;
  kernelCmdline: string;
  /** While paused: why QEMU paused the guest by itself (guest panic, an I/O error); null otherwise. */
  pauseReason: string | null;
}

/** One transition, for watchers; `to: 'removed'` when the VM leaves the manager. */
export interface VmEvent {
  id: string;
  from: VmState | 'new';
  to: VmState | 'removed';
  reason: string;
  at: string;
  vm: VmStatusView;
}

export type StopCause = 'removed' | 'ttl';

/** A VM an earlier run left, known from its record only, until recovery adopts or cleans it. */
interface Expected {
  /** The record's PID, or the QEMUs found naming the VM's directory (a start cut short). */
  pids: number[];
  hostPort: number | null;
  uid: number | null;
  settled: Promise<void>;
  settle: () => void;
}

export class VmRegistry {
  private readonly vms = new Map<string, Vm>();
  private readonly watchers = new Set<(e: VmEvent) => void>();
  private readonly expected = new Map<string, Expected>();
  private allSettled: Promise<void> = Promise.resolve();
  /** Some VMs an earlier run left were never looked at (a stop or a failure during recovery). */
  recoveryIncomplete = false;

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
    private readonly ports: PortPool,
    private readonly observer: ManagerObserver = NO_OBSERVER,
    /** Runs a background operation (a TTL removal) so a stopping daemon waits for it. */
    private readonly track: <T>(p: Promise<T>) => Promise<T> = (p) => p,
    /** The VM users' uids (guest isolation on). */
    private readonly uids?: UidPool,
    /** Called when the last VM is gone (the guest firewall goes with it). */
    private readonly onEmpty: () => void = () => undefined,
  ) {}

  /** No VM, not even one an earlier run left that recovery has not decided yet. */
  get isEmpty(): boolean {
    return this.vms.size === 0 && this.expected.size === 0;
  }

  /** The VM whose QEMU runs as `uid` (guest isolation), also before recovery has decided it. */
  vmOfUid(uid: number): string | undefined {
    for (const vm of this.vms.values()) if (vm.uid === uid) return vm.id;
    for (const [id, e] of this.expected) if (e.uid === uid) return id;
    return undefined;
  }

  /** Whether `uid` is one of the VM users' (held or not). */
  isVmUid(uid: number): boolean {
    return this.uids?.includes(uid) ?? false;
  }

  private releaseUid(vm: Vm): void {
    if (vm.uid !== undefined) this.uids?.release(vm.uid);
  }

  private emptied(): void {
    if (this.isEmpty) this.onEmpty();
  }

  /** VMs holding a slot of MANAGER_MAX_VMS: those whose QEMU may run (expected ones included). */
  get slotsInUse(): number {
    let n = 0;
    for (const id of this.expected.keys()) if (!this.vms.has(id)) n++;
    for (const vm of this.vms.values()) if (vm.machine.holdsResources) n++;
    return n;
  }

  /** A new VM in 'starting', holding a slot; undefined when MANAGER_MAX_VMS are taken. */
  reserve(id: string, log: Logger): Vm | undefined {
    if (this.config.maxVms > 0 && this.slotsInUse >= this.config.maxVms) return undefined;
    const vm: Vm = {
      id,
      machine: new VmStateMachine('starting'),
      createdAt: new Date().toISOString(),
      log,
      hostPort: undefined,
      uid: undefined,
      record: undefined,
      paths: undefined,
      proc: undefined,
      qmp: undefined,
      qemuPids: [],
      ttl: undefined,
      removing: undefined,
    };
    this.vms.set(id, vm);
    this.notify(vm, { from: 'new', to: 'starting', reason: 'CreateVm' });
    return vm;
  }

  /** The one place a VM's state changes. Resources are released when it leaves the holding states. */
  apply(vm: Vm, input: VmInput): Transition | undefined {
    const t = vm.machine.apply(input);
    if (!t) return undefined;
    if (!vm.machine.holdsResources) this.releasePort(vm);
    if (input.kind === 'exited') {
      vm.exit = { code: input.exit?.code ?? null, signal: input.exit?.signal ?? null, at: new Date().toISOString(), cause: vm.machine.cause ?? 'unknown' };
      if (vm.record) vm.record.exit = vm.exit;
    }
    if (vm.record) vm.record.state = t.to;
    const paused = vm.machine.pauseReason;
    if (paused) vm.log.warn({ from: t.from, to: t.to, reason: t.reason, pause_reason: paused }, `VM paused by QEMU: ${paused}`);
    else vm.log.info({ from: t.from, to: t.to, reason: t.reason, cause: vm.machine.cause }, `VM ${t.to}`);
    this.notify(vm, t);
    return t;
  }

  private releasePort(vm: Vm): void {
    if (vm.hostPort !== undefined && this.ports.isHeld(vm.hostPort)) this.ports.release(vm.hostPort);
  }

  /** Drops a VM that never came up (its start was rolled back). */
  discard(vm: Vm, reason: string): void {
    if (vm.machine.holdsResources) this.apply(vm, { kind: 'start-failed' });
    this.releasePort(vm);
    this.releaseUid(vm);
    if (this.vms.get(vm.id) === vm) this.vms.delete(vm.id);
    this.notify(vm, { from: vm.machine.state, to: 'removed', reason });
    this.emptied();
  }

  /**
   * VMs an earlier run left that may still run, as their records say: until each is settled,
   * its slot and port are held, its process counts as a guest's, and calls about it wait.
   */
  expect(vms: { id: string; pids: number[]; hostPort: number | null; uid?: number | null }[]): void {
    for (const { id, pids, hostPort, uid = null } of vms) {
      let settle!: () => void;
      const settled = new Promise<void>((resolve) => (settle = resolve));
      this.expected.set(id, { pids, hostPort, uid, settled, settle });
      if (hostPort !== null) this.ports.hold(hostPort);
      if (uid !== null) this.uids?.hold(uid);
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
    // An adopted VM holds its port through its record from now on.
    if (e.hostPort !== null && this.vms.get(id)?.hostPort !== e.hostPort) this.ports.release(e.hostPort);
    if (e.uid !== null && this.vms.get(id)?.uid !== e.uid) this.uids?.release(e.uid);
    e.settle();
    this.emptied();
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

  /** Registers a VM an earlier run of the daemon started (recovery). */
  adopt(vm: Vm): void {
    this.vms.set(vm.id, vm);
    if (vm.hostPort !== undefined) this.ports.hold(vm.hostPort);
    if (vm.uid !== undefined) this.uids?.hold(vm.uid);
    this.notify(vm, { from: 'new', to: vm.machine.state, reason: 're-adopted after a restart' });
  }

  /**
   * Follows a VM whose QEMU is up: QMP events and (re)connections, the process's exit, its TTL.
   */
  supervise(vm: Vm, adopted = false): void {
    const { qmp, proc } = vm;
    qmp?.onEvent((e) => {
      if (e.event === 'SHUTDOWN' || e.event === 'STOP' || e.event === 'RESUME' || e.event === 'GUEST_PANICKED' || e.event === 'POWERDOWN') {
        vm.log.info({ event: e.event, data: e.data }, `QMP event ${e.event}`);
      }
      this.apply(vm, { kind: 'event', event: e.event, data: e.data });
    });
    // After a reconnection (a restarted daemon), QEMU is asked where it stands.
    const reattached = () => {
      vm.log.info('QMP reattached');
      qmp
        ?.queryStatus()
        .then((st) => st.status && this.apply(vm, { kind: 'status', status: st.status }))
        .catch(() => undefined);
    };
    qmp?.onReady(reattached);
    // A re-adopted QEMU may have come back (it retries every second) while it was being adopted.
    if (adopted && qmp?.isConnected) reattached();
    if (vm.record?.expiresAt) {
      const expiresAt = vm.record.expiresAt;
      vm.ttl = new TtlTimer(Date.parse(expiresAt), () => {
        vm.log.info({ expires_at: expiresAt }, 'TTL expired: removing VM');
        this.track(this.remove(vm.id, 'ttl')).catch((err) => vm.log.error({ err: String(err) }, 'removal after TTL failed'));
      });
    }
    void proc?.exited.then(async (info) => {
      // QEMU writes SHUTDOWN before it exits; let its QMP connection drain so the cause is known.
      if (qmp?.isConnected) await qmp.whenDisconnected(200);
      const stopping = vm.removing !== undefined;
      const t = this.apply(vm, { kind: 'exited', exit: readableExit(info) });
      vm.qmp?.close();
      if (!t || stopping) return;
      const cause = vm.machine.cause ?? 'unknown';
      vm.log.warn({ exit_code: info.code, signal: info.signal, pid: proc.pid, cause }, `QEMU exited on its own (${cause})`);
      this.observer.qemuExited(metricCause(cause, vm.machine.state));
      await this.persist(vm).catch((err) => vm.log.error({ err: String(err) }, 'could not update the VM record'));
    });
  }

  async persist(vm: Vm): Promise<void> {
    if (!vm.record || !vm.paths) return;
    try {
      await writeRecordAtomically(vm.paths.dir, vm.record);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      // Node's message already starts with the code ("ENOENT: no such file..."): say it once.
      throw new ManagerError('internal', `could not write the VM's files in ${vm.paths.dir}: ${e.message ?? String(err)}`);
    }
  }

  /**
   * RemoveVm and TTL: optionally the guest's power button first (MANAGER_QEMU_POWERDOWN_TIMEOUT),
   * then QMP quit / SIGTERM, then SIGKILL; every wait bounded. Then its files go.
   */
  remove(id: string, cause: StopCause = 'removed'): Promise<void> {
    const vm = this.find(id);
    if (vm.machine.state === 'starting') {
      return Promise.reject(new ManagerError('failed-precondition', `VM ${vm.id} is still starting; remove it once CreateVm has answered`));
    }
    vm.removing ??= (async () => {
      vm.ttl?.cancel();
      const proc = vm.proc;
      if (proc && !proc.hasExited) {
        this.apply(vm, { kind: 'stop-requested' });
        await this.powerDown(vm, proc);
        if (!proc.hasExited) {
          let stopped;
          try {
            stopped = await proc.stop(this.config.stopTimeoutMs);
          } catch (err) {
            throw new ManagerError('internal', `QEMU could not be stopped: ${(err as Error).message}`);
          }
          const { info, killed, via } = stopped;
          if (killed) vm.log.warn(`QEMU ignored ${via === 'qmp' ? 'QMP quit' : 'SIGTERM'} for MANAGER_QEMU_STOP_TIMEOUT (${this.config.stopTimeoutMs} ms): killed`);
          vm.log.info({ exit_code: info.code, signal: info.signal, via }, 'QEMU stopped');
        }
        // The exit goes through the state machine here, whatever the order of the callbacks.
        if (vm.qmp?.isConnected) await vm.qmp.whenDisconnected(200);
        this.apply(vm, { kind: 'exited', exit: readableExit(await proc.exited) });
        this.observer.qemuExited(cause);
      } else if (vm.machine.holdsResources) {
        // A VM with no process (cannot happen once started; kept total).
        this.apply(vm, { kind: 'exited', exit: null });
      }
      this.releasePort(vm);
      vm.qmp?.close();
      if (vm.paths) {
        try {
          await removeVmDir(vm.paths.dir);
        } catch (err) {
          throw new ManagerError(
            'internal',
            `QEMU is stopped but the VM's directory ${vm.paths.dir} could not be removed (${(err as NodeJS.ErrnoException).code ?? String(err)}); call RemoveVm again once the state directory is writable`,
          );
        }
      }
      this.releaseUid(vm);
      this.vms.delete(vm.id);
      this.notify(vm, { from: vm.machine.state, to: 'removed', reason: cause === 'ttl' ? 'TTL expired' : 'RemoveVm' });
      vm.log.info({ cause: vm.machine.cause }, 'VM removed');
      this.emptied();
    })();
    // A failed removal can be tried again (e.g. once the state directory is writable again).
    vm.removing.catch(() => {
      vm.removing = undefined;
    });
    return vm.removing;
  }

  private async powerDown(vm: Vm, proc: QemuProcess): Promise<void> {
    const waitMs = this.config.powerdownTimeoutMs;
    if (waitMs <= 0 || !vm.qmp?.isConnected) return;
    try {
      await vm.qmp.systemPowerdown(Math.min(waitMs, 5_000));
    } catch (err) {
      vm.log.warn(`system_powerdown failed, stopping QEMU: ${(err as Error).message}`);
      return;
    }
    if (await proc.waitExit(waitMs)) vm.log.info('the guest shut down after the power button');
    else vm.log.warn(`the guest did not shut down within MANAGER_QEMU_POWERDOWN_TIMEOUT (${waitMs} ms): stopping QEMU`);
  }

  /** The VM, or NOT_FOUND. The id was parsed where the call came in (VmId), or is the registry's own. */
  find(id: string): Vm {
    const vm = this.vms.get(id);
    if (!vm) throw new VmNotFound(id);
    return vm;
  }

  has(id: string): Vm | undefined {
    return this.vms.get(id);
  }

  all(): Vm[] {
    return [...this.vms.values()];
  }

  list(): VmStatusView[] {
    return this.all()
      .map(statusView)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  countByState(): Record<VmState, number> {
    const counts = Object.fromEntries(VM_STATES.map((s) => [s, 0])) as Record<VmState, number>;
    for (const vm of this.vms.values()) counts[vm.machine.state]++;
    return counts;
  }

  /**
   * The PIDs of the QEMUs this manager supervises (QEMU under sudo: sudo's and QEMU's), with their
   * VM's id. `searchBelow` is true for sudo's PID while QEMU's below it is not read yet (a start).
   */
  supervisedPids(withoutOwnUid = false): [pid: number, vmId: string, searchBelow: boolean][] {
    const out: [number, string, boolean][] = [];
    // With a uid per VM, a VM's guest is named by its socket's uid: only QEMUs without one
    // (started before guest isolation) need their descriptors read.
    if (withoutOwnUid) {
      for (const [id, e] of this.expected) if (!this.vms.has(id) && e.uid === null) for (const pid of e.pids) out.push([pid, id, true]);
      for (const vm of this.vms.values()) {
        if (!vm.machine.holdsResources || !vm.proc || vm.uid !== undefined) continue;
        out.push([vm.proc.pid, vm.id, vm.qemuPids === undefined]);
        for (const pid of vm.qemuPids ?? []) out.push([pid, vm.id, false]);
      }
      return out;
    }
    // Before recovery has checked them, the PIDs the records name, and what runs below them
    // (sudo's QEMU): a guest of a VM being re-adopted is refused like any other. (A PID reused
    // by another process since is taken for a guest's too: its connections opened meanwhile
    // stay refused.)
    for (const [id, e] of this.expected) if (!this.vms.has(id)) for (const pid of e.pids) out.push([pid, id, true]);
    for (const vm of this.vms.values()) {
      if (!vm.machine.holdsResources || !vm.proc) continue;
      out.push([vm.proc.pid, vm.id, vm.qemuPids === undefined]);
      for (const pid of vm.qemuPids ?? []) out.push([pid, vm.id, false]);
    }
    return out;
  }

  /** Every transition from now on; returns the unsubscribe function. */
  subscribe(fn: (e: VmEvent) => void): () => void {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }

  cancelTimers(): void {
    for (const vm of this.vms.values()) vm.ttl?.cancel();
  }

  private notify(vm: Vm, t: { from: VmState | 'new'; to: VmState | 'removed'; reason: string }): void {
    if (this.watchers.size === 0) return;
    const e: VmEvent = { id: vm.id, from: t.from, to: t.to, reason: t.reason, at: new Date().toISOString(), vm: statusView(vm) };
    for (const fn of [...this.watchers]) {
      try {
        fn(e);
      } catch (err) {
        this.log.error({ err: String(err) }, 'a VM watcher failed');
      }
    }
  }
}

export function statusView(vm: Vm): VmStatusView {
  const r = vm.record;
  const e = vm.exit ?? r?.exit;
  const exit = e ? { code: e.code, signal: e.signal, at: e.at, cause: e.cause ?? vm.machine.cause ?? 'unknown' } : null;
  return {
    id: vm.id,
    state: vm.machine.state,
    pid: vm.proc?.pid ?? r?.pid ?? null,
    hostPort: vm.hostPort ?? 0,
    createdAt: r?.createdAt ?? vm.createdAt,
    expiresAt: r?.expiresAt ?? null,
    exit,
    kernelCmdline: r?.kernelCmdline ?? '',
    pauseReason: vm.machine.pauseReason ?? null,
  };
}

/** A re-adopted QEMU is not our child: its exit status cannot be read. */
function readableExit(info: ExitInfo): ExitInfo | null {
  return info.code === null && info.signal === null ? null : info;
}

function metricCause(cause: ExitCause, state: VmState): QemuExitCause {
  if (state === 'crashed') return 'crashed';
  if (cause === 'host signal') return 'killed';
  return 'exited';
}

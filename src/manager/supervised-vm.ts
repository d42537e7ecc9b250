/**
 * One VM, owned in one place: its state machine (the only way its state changes), its QEMU
 * (a VmHandle), its TTL, what it holds (a forwarded port, its own uid, a GPU) and its record, which
 * holds its facts once (written to disk once QEMU is up). Built the same way for a launch and
 * for an adoption; the registry only keeps the map.
 */
import type { Logger } from 'pino';
import type { VmIdentity, VmRecord } from '../vm/vm-record.js';
import type { VmPaths } from '../vm/vm-dir.js';
import { ManagerError } from './errors.js';
import type { Gpu, GpuPool } from './gpu-pool.js';
import type { ManagerObserver, QemuExitCause } from './observer.js';
import type { PortPool } from './port-pool.js';
import { TtlTimer } from './ttl-timer.js';
import type { UidPool } from './uid-pool.js';
import type { ProcessExit, VmHandle } from './vm-driver.port.js';
import type { VmFiles } from './vm-files.js';
import { type ExitCause, type Transition, type VmInput, type VmState, VmStateMachine } from './vm-state.js';

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
  /** The host GPU it holds (PCI address); null: none, or its QEMU is gone. */
  gpu: string | null;
  /** What it was launched as, and how that was decided (null: by a daemon that did not record it). */
  cvmKind: VmRecord['launch']['kind'];
  cvmDecision: string | null;
}

export type StopCause = 'removed' | 'ttl';

/** A change a watcher sees; `to: 'removed'` when the VM leaves the manager. */
export interface VmChange {
  from: VmState | 'new';
  to: VmState | 'removed';
  reason: string;
}

/** What a VM needs from around it. */
export interface VmSurroundings {
  stopTimeoutMs: number;
  powerdownTimeoutMs: number;
  ports: PortPool;
  uids: UidPool | undefined;
  gpus: GpuPool;
  files: VmFiles;
  observer: ManagerObserver;
  /** Runs a background operation (a TTL removal) so a stopping daemon waits for it. */
  track: <T>(p: Promise<T>) => Promise<T>;
  /** Every change, for watchers. */
  changed: (vm: SupervisedVm, c: VmChange) => void;
  /** The VM has left the manager (removed, or its start rolled back). */
  gone: (vm: SupervisedVm) => void;
}

export class SupervisedVm {
  private readonly machine: VmStateMachine;
  private handle: VmHandle | undefined;
  private ttl: TtlTimer | undefined;
  private removing: Promise<void> | undefined;
  private portHeld = false;
  private uidHeld: number | undefined;
  private gpuHeld = false;
  /** The record is on disk (QEMU is up): later changes are written too. */
  private persisted = false;
  /** Under sudo (or a wrapper that does not exec), the PIDs below the handle's: undefined until read. */
  private below: number[] | undefined = [];

  private constructor(
    readonly record: VmRecord,
    readonly paths: VmPaths,
    readonly log: Logger,
    private readonly around: VmSurroundings,
    initial: VmState,
  ) {
    this.machine = new VmStateMachine(initial);
  }

  /** A VM about to be launched: its record as far as the request says, nothing held yet. */
  static launching(record: VmRecord, paths: VmPaths, log: Logger, around: VmSurroundings): SupervisedVm {
    return new SupervisedVm(record, paths, log, around, 'starting');
  }

  /** A VM an earlier run launched, whose QEMU still runs: it holds what its record says. */
  static adopted(record: VmRecord, paths: VmPaths, handle: VmHandle, log: Logger, around: VmSurroundings): SupervisedVm {
    const state = record.state === 'paused' || record.state === 'stopping' ? record.state : 'running';
    const vm = new SupervisedVm(record, paths, log, around, state);
    vm.handle = handle;
    vm.persisted = true;
    vm.below = handle.descendants();
    around.ports.hold(record.hostPort);
    vm.portHeld = true;
    if (record.runAs) vm.holdUid(record.runAs);
    if (record.gpu) {
      around.gpus.hold(record.gpu, record.id, Boolean(record.runAs));
      vm.gpuHeld = true;
    }
    return vm;
  }

  get id(): string {
    return this.record.id;
  }
  get state(): VmState {
    return this.machine.state;
  }
  get holdsResources(): boolean {
    return this.machine.holdsResources;
  }
  get cause(): ExitCause | undefined {
    return this.machine.cause;
  }
  /** The VM's own uid (guest isolation), held from its launch until it is removed. */
  get uid(): number | undefined {
    return this.uidHeld;
  }
  get pid(): number | undefined {
    return this.handle?.pid;
  }
  /** The PIDs of QEMU below the handle's (sudo); undefined while not read yet (a start). */
  get qemuPids(): number[] | undefined {
    return this.below;
  }

  /** The port QEMU forwards to the agent, taken from the pool: the VM gives it back once QEMU is gone. */
  holdPort(port: number): void {
    this.record.hostPort = port;
    this.portHeld = true;
  }

  /** The GPU passed through to it, from the pool: given back once QEMU is gone, as the port. */
  holdGpu(gpu: Gpu): void {
    this.record.gpu = gpu;
    this.gpuHeld = true;
  }

  holdUid(identity: VmIdentity): void {
    this.record.runAs = identity;
    this.uidHeld = identity.uid;
  }

  /** QEMU is spawned (not up yet). */
  attach(handle: VmHandle): void {
    this.handle = handle;
    this.record.pid = handle.pid;
    this.record.pidStartTime = handle.startTime;
    this.below = undefined;
  }

  /** The one place the VM's state changes. What it holds goes when it leaves the holding states. */
  apply(input: VmInput): Transition | undefined {
    const t = this.machine.apply(input);
    if (!t) return undefined;
    if (!this.machine.holdsResources) {
      this.releasePort();
      this.releaseGpu();
    }
    if (input.kind === 'exited') {
      this.record.exit = { code: input.exit?.code ?? null, signal: input.exit?.signal ?? null, at: new Date().toISOString(), cause: this.machine.cause ?? 'unknown' };
    }
    this.record.state = t.to;
    const paused = this.machine.pauseReason;
    if (paused) this.log.warn({ from: t.from, to: t.to, reason: t.reason, pause_reason: paused }, `VM paused by QEMU: ${paused}`);
    else this.log.info({ from: t.from, to: t.to, reason: t.reason, cause: this.machine.cause }, `VM ${t.to}`);
    this.around.changed(this, t);
    return t;
  }

  /** QEMU is up and running: the record goes to disk and the VM is followed from now on. */
  async started(): Promise<void> {
    this.below = this.handle?.descendants() ?? [];
    // On disk first: a VM is announced running only once a restarted daemon would find it.
    this.record.state = 'running';
    this.persisted = true;
    try {
      await this.persist();
    } catch (err) {
      this.record.state = 'starting';
      this.persisted = false;
      throw err;
    }
    this.apply({ kind: 'status', status: 'running' });
    this.supervise(false);
  }

  async persist(): Promise<void> {
    if (!this.persisted) return;
    try {
      await this.around.files.writeRecord(this.paths.dir, this.record);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      // Node's message already starts with the code ("ENOENT: no such file..."): say it once.
      throw new ManagerError('internal', `could not write the VM's files in ${this.paths.dir}: ${e.message ?? String(err)}`);
    }
  }

  /** Follows QEMU: its QMP events and (re)connections, its exit, the TTL. */
  supervise(adopted: boolean): void {
    const h = this.handle;
    if (!h) return;
    h.onEvent((e) => {
      if (LOGGED_EVENTS.has(e.event)) this.log.info({ event: e.event, data: e.data }, `QMP event ${e.event}`);
      this.apply({ kind: 'event', event: e.event, data: e.data });
    });
    // After a reconnection (a restarted daemon), QEMU is asked where it stands.
    const reattached = () => {
      this.log.info('QMP reattached');
      h.queryStatus()
        .then((st) => st.status && this.apply({ kind: 'status', status: st.status }))
        .catch(() => undefined);
    };
    h.onQmpReady(reattached);
    // A re-adopted QEMU may have come back (it retries every second) while it was being adopted.
    if (adopted && h.qmpConnected) reattached();
    const expiresAt = this.record.expiresAt;
    if (expiresAt) {
      this.ttl = new TtlTimer(Date.parse(expiresAt), () => {
        this.log.info({ expires_at: expiresAt }, 'TTL expired: removing VM');
        this.around.track(this.remove('ttl')).catch((err) => this.log.error({ err: String(err) }, 'removal after TTL failed'));
      });
    }
    void h.exited.then(async (info) => {
      // QEMU writes SHUTDOWN before it exits; let its QMP connection drain so the cause is known.
      await h.qmpDrained(200);
      const stopping = this.removing !== undefined;
      const t = this.apply({ kind: 'exited', exit: readableExit(info) });
      if (stopping) return; // the removal closes the channel, in its order
      h.close();
      if (!t) return;
      const cause = this.machine.cause ?? 'unknown';
      this.log.warn({ exit_code: info.code, signal: info.signal, pid: h.pid, cause }, `QEMU exited on its own (${cause})`);
      this.around.observer.qemuExited(metricCause(cause, this.machine.state));
      await this.persist().catch((err) => this.log.error({ err: String(err) }, 'could not update the VM record'));
    });
  }

  /**
   * RemoveVm and TTL: optionally the guest's power button first (MANAGER_QEMU_POWERDOWN_TIMEOUT),
   * then QMP quit / SIGTERM, then SIGKILL; every wait bounded. Then its files go, then its uid.
   */
  remove(cause: StopCause): Promise<void> {
    if (this.machine.state === 'starting') {
      return Promise.reject(new ManagerError('failed-precondition', `VM ${this.id} is still starting; remove it once CreateVm has answered`));
    }
    this.removing ??= this.stopAndDelete(cause);
    // A failed removal can be tried again (e.g. once the state directory is writable again).
    this.removing.catch(() => {
      this.removing = undefined;
    });
    return this.removing;
  }

  private async stopAndDelete(cause: StopCause): Promise<void> {
    this.ttl?.cancel();
    const h = this.handle;
    if (h && !h.hasExited) {
      this.apply({ kind: 'stop-requested' });
      await this.powerDown(h);
      if (!h.hasExited) {
        let stopped;
        try {
          stopped = await h.stop(this.around.stopTimeoutMs);
        } catch (err) {
          throw new ManagerError('internal', `QEMU could not be stopped: ${(err as Error).message}`);
        }
        const { exit, killed, via } = stopped;
        if (killed) this.log.warn(`QEMU ignored ${via === 'qmp' ? 'QMP quit' : 'SIGTERM'} for MANAGER_QEMU_STOP_TIMEOUT (${this.around.stopTimeoutMs} ms): killed`);
        this.log.info({ exit_code: exit.code, signal: exit.signal, via }, 'QEMU stopped');
      }
      // The exit goes through the state machine here, whatever the order of the callbacks.
      await h.qmpDrained(200);
      this.apply({ kind: 'exited', exit: readableExit(await h.exited) });
      this.around.observer.qemuExited(cause);
    } else if (this.machine.holdsResources) {
      // A VM with no process (cannot happen once started; kept total).
      this.apply({ kind: 'exited', exit: null });
    }
    this.releasePort();
    this.releaseGpu();
    h?.close();
    try {
      await this.around.files.remove(this.paths.dir);
    } catch (err) {
      throw new ManagerError(
        'internal',
        `QEMU is stopped but the VM's directory ${this.paths.dir} could not be removed (${(err as NodeJS.ErrnoException).code ?? String(err)}); call RemoveVm again once the state directory is writable`,
      );
    }
    this.releaseUid();
    this.around.changed(this, { from: this.machine.state, to: 'removed', reason: cause === 'ttl' ? 'TTL expired' : 'RemoveVm' });
    this.log.info({ cause: this.machine.cause }, 'VM removed');
    this.around.gone(this);
  }

  private async powerDown(h: VmHandle): Promise<void> {
    const waitMs = this.around.powerdownTimeoutMs;
    if (waitMs <= 0 || !h.qmpConnected) return;
    try {
      await h.powerdown(Math.min(waitMs, 5_000));
    } catch (err) {
      this.log.warn(`system_powerdown failed, stopping QEMU: ${(err as Error).message}`);
      return;
    }
    if (await h.waitExit(waitMs)) this.log.info('the guest shut down after the power button');
    else this.log.warn(`the guest did not shut down within MANAGER_QEMU_POWERDOWN_TIMEOUT (${waitMs} ms): stopping QEMU`);
  }

  /** A launch step failed: QEMU, if spawned, is ended at once (bounded). */
  async killQemu(): Promise<void> {
    const h = this.handle;
    if (!h) return;
    try {
      await h.kill();
    } catch (e) {
      this.log.error({ pid: h.pid }, `rollback could not stop QEMU: ${(e as Error).message}`);
    }
    h.close();
    this.around.observer.qemuExited('start-failed');
  }

  /** The launch is rolled back: the VM fails and leaves (its steps have undone themselves). */
  discard(reason: string): void {
    this.apply({ kind: 'start-failed' });
    this.releasePort();
    this.releaseGpu();
    this.releaseUid();
    this.around.changed(this, { from: this.machine.state, to: 'removed', reason });
    this.around.gone(this);
  }

  releasePort(): void {
    if (!this.portHeld) return;
    this.portHeld = false;
    this.around.ports.release(this.record.hostPort);
  }

  /**
   * Once QEMU is gone, as the port: its close of the VFIO device has reset the GPU and let it
   * go, and a VM listed as stopped or crashed until RemoveVm must not keep a GPU it cannot use.
   * Its /dev/vfio node goes back to root before the next VM's user is given it.
   */
  releaseGpu(): void {
    if (!this.gpuHeld || !this.record.gpu) return;
    this.gpuHeld = false;
    this.around.gpus.release(this.record.gpu.bdf, this.id);
    this.log.debug({ gpu: this.record.gpu.bdf }, 'GPU released');
  }

  /** The uid goes last: QEMU is gone and so are the files it owned. */
  releaseUid(): void {
    if (this.uidHeld === undefined) return;
    this.around.uids?.release(this.uidHeld);
    this.uidHeld = undefined;
  }

  cancelTimers(): void {
    this.ttl?.cancel();
  }

  view(): VmStatusView {
    const r = this.record;
    const e = r.exit;
    return {
      id: r.id,
      state: this.machine.state,
      pid: r.pid,
      hostPort: r.hostPort,
      createdAt: r.createdAt,
      expiresAt: r.expiresAt,
      exit: e ? { code: e.code, signal: e.signal, at: e.at, cause: e.cause ?? this.machine.cause ?? 'unknown' } : null,
      kernelCmdline: r.kernelCmdline,
      pauseReason: this.machine.pauseReason ?? null,
      gpu: this.gpuHeld ? (r.gpu?.bdf ?? null) : null,
      cvmKind: r.launch.kind,
      cvmDecision: r.launch.decision ?? null,
    };
  }
}

const LOGGED_EVENTS = new Set(['SHUTDOWN', 'STOP', 'RESUME', 'GUEST_PANICKED', 'POWERDOWN']);

/** A re-adopted QEMU is not our child: its exit status cannot be read. */
function readableExit(info: ProcessExit): ProcessExit | null {
  return info.code === null && info.signal === null ? null : info;
}

function metricCause(cause: ExitCause, state: VmState): QemuExitCause {
  if (state === 'crashed') return 'crashed';
  if (cause === 'host signal') return 'killed';
  return 'exited';
}

/**
 * The service behind ManagerService: slots, ports, VM directories, QEMU processes, TTLs and
 * records. Every CreateVm step is undone if a later one fails; a restarted daemon re-adopts the
 * VMs whose QEMU still runs and cleans up the rest.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { type Config, cvmKind } from '../config/types.js';
import { buildQemuArgs, kernelCommandLine, qemuCommand } from '../qemu/args.js';
import { type CreateReqInput, RequestError, validateCreateReq, validateVmId } from '../request/create-request.js';
import { shellCommandLine } from '../util/shell-quote.js';
import { type ExitInfo, QemuProcess } from '../vm/qemu-process.js';
import { createVmDir, removeVmDir, type VmPaths, vmPaths } from '../vm/vm-dir.js';
import { type VmRecord, writeRecordAtomically } from '../vm/vm-record.js';
import type { AttestationPolicies } from './attestation-policy.js';
import { inSpan } from '../telemetry/spans.js';
import { ManagerError } from './errors.js';
import { type ManagerObserver, NO_OBSERVER, type QemuExitCause } from './observer.js';
import type { PortPool } from './port-pool.js';
import { planRecovery } from './recovery.js';
import { TtlTimer } from './ttl-timer.js';

interface ManagedVm {
  record: VmRecord;
  paths: VmPaths;
  proc: QemuProcess | undefined;
  /** True while the VM holds a slot and its port (starting or running). */
  holdsResources: boolean;
  ttl: TtlTimer | undefined;
  removing: Promise<void> | undefined;
}

export interface CvmInfo {
  id: string;
  ovmfVersion: string;
  cpuNum: number;
  cpuType: string;
  kernelCmd: string;
  eosVersion: string;
}

export type VmState = 'starting' | 'running' | 'exited';

/** What an operator sees of one VM. */
export type VmStatusView = Pick<VmRecord, 'id' | 'state' | 'pid' | 'hostPort' | 'createdAt' | 'expiresAt' | 'exit' | 'kernelCmdline'>;

export class VmManager {
  private readonly vms = new Map<string, ManagedVm>();
  private slotsInUse = 0;
  private stopping = false;
  private readonly inflight = new Set<Promise<unknown>>();
  /** QEMUs spawned by a CreateVm still waiting for them: a guest can call out before it is "running". */
  private readonly launching = new Map<number, string>();

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
    private readonly ports: PortPool,
    private readonly policies?: AttestationPolicies,
    private readonly observer: ManagerObserver = NO_OBSERVER,
  ) {}

  /** Ports of the range no VM holds. */
  portsFree(): number {
    return this.ports.size - this.ports.heldCount;
  }

  /** VMs by state, for operators and metrics. */
  countByState(): Record<VmState, number> {
    const counts: Record<VmState, number> = { starting: 0, running: 0, exited: 0 };
    for (const vm of this.vms.values()) counts[vm.record.state]++;
    counts.starting = this.slotsInUse - counts.running;
    return counts;
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p)).catch(() => undefined);
    return p;
  }

  create(input: CreateReqInput): Promise<{ id: string; port: number }> {
    return this.track(this.createVm(input));
  }

  remove(id: string): Promise<void> {
    return this.track(this.removeVm(id));
  }

  private takeSlot(): boolean {
    if (this.config.maxVms > 0 && this.slotsInUse >= this.config.maxVms) return false;
    this.slotsInUse++;
    return true;
  }

  private releaseResources(vm: ManagedVm): void {
    if (!vm.holdsResources) return;
    vm.holdsResources = false;
    this.slotsInUse--;
    this.ports.release(vm.record.hostPort);
  }

  private async createVm(input: CreateReqInput): Promise<{ id: string; port: number }> {
    let req;
    try {
      req = validateCreateReq(input);
    } catch (err) {
      if (err instanceof RequestError) throw new ManagerError('invalid-argument', err.message);
      throw err;
    }
    if (this.stopping) throw new ManagerError('unavailable', 'the manager is shutting down; retry on another host or later');
    if (!this.takeSlot()) {
      throw new ManagerError('resource-exhausted', `MANAGER_MAX_VMS=${this.config.maxVms} VMs are already running or starting`);
    }

    const q = this.config.qemu;
    const id = randomUUID();
    const log = this.log.child({ cvm_id: id });
    let port: number | undefined;
    let paths: VmPaths | undefined;
    let dirMade = false;
    let proc: QemuProcess | undefined;
    // Where a launch spends its time, in the 'VM started' line (ms since the call began).
    const t0 = process.hrtime.bigint();
    const at = () => Math.round(Number(process.hrtime.bigint() - t0) / 1e4) / 100;
    const timings: Record<string, number> = {};
    try {
      port = await inSpan('allocate-port', async (span) => {
        const p = await this.ports.acquire();
        if (p !== undefined) span.setAttribute('cocos.host_port', p);
        return p;
      });
      if (port === undefined) {
        const r = q.hostFwdRange;
        throw new ManagerError('resource-exhausted', `no free host port left in MANAGER_QEMU_HOST_FWD_RANGE=${r.first}-${r.last}`);
      }
      paths = vmPaths(this.config.stateDir, id);
      const plain = !q.enableSevSnp && !q.enableTdx;
      dirMade = true;
      timings.port = at();
      await inSpan('write-shares', async () => {
        try {
          await createVmDir(paths!, id, req, plain ? q.ovmfVars.file : undefined);
        } catch (err) {
          throw fileError(err, paths!.dir);
        }
      });
      const args = buildQemuArgs(q, {
        hostPort: port,
        ovmfVarsFile: paths.ovmfVars,
        aaKbsParams: req.aaKbsParams,
        shares: { certsDir: paths.certsDir, envDir: paths.envDir },
      });
      const cmd = qemuCommand(q);
      const argv = [...cmd.prefix, ...args];
      const now = Date.now();
      const record: VmRecord = {
        version: 1,
        id,
        state: 'starting',
        pid: null,
        pidStartTime: null,
        command: [cmd.file, ...argv],
        hostPort: port,
        kernelCmdline: kernelCommandLine(q, req.aaKbsParams),
        createdAt: new Date(now).toISOString(),
        expiresAt: req.ttlMs === undefined ? null : new Date(now + req.ttlMs).toISOString(),
        exit: null,
        launch: {
          kind: cvmKind(q),
          cpu: q.cpu,
          hostData: q.enableSevSnp && q.enableHostData ? q.hostData : null,
          igvmFile: q.enableSevSnp ? q.igvmFile : null,
        },
      };
      // No record is written before QEMU is up: a daemon that dies in between leaves a directory
      // without one, and the next start kills the QEMU that names it and removes it (recover()).
      log.info({ port, command: shellCommandLine(record.command) }, 'starting QEMU');
      timings.files = at();
      const spawnedAt = process.hrtime.bigint();
      proc = await inSpan('spawn-qemu', async (span) => {
        try {
          const p = await QemuProcess.spawn(cmd.file, argv, paths!, log, this.outputLimits(id));
          span.setAttribute('process.pid', p.pid);
          return p;
        } catch (err) {
          throw new ManagerError('failed-precondition', `QEMU could not be started: ${(err as Error).message}`);
        }
      });
      record.pid = proc.pid;
      record.pidStartTime = proc.startTime;
      this.launching.set(proc.pid, id);

      timings.spawned = at();
      const started = proc;
      const outcome = await inSpan('wait-qemu-ready', async (span) => {
        const o = await started.waitListening(port!, this.config.startTimeoutMs);
        span.setAttribute('cocos.outcome', o);
        return o;
      });
      if (outcome === 'exited') {
        const info = await proc.exited;
        throw new ManagerError(
          'failed-precondition',
          `QEMU exited during start (${describeExit(info)}); last output: ${proc.lastOutput().join(' | ') || '(none)'}`,
        );
      }
      if (outcome === 'timeout') {
        throw new ManagerError(
          'unavailable',
          `QEMU did not listen on host port ${port} within MANAGER_QEMU_START_TIMEOUT (${this.config.startTimeoutMs} ms); last output: ${proc.lastOutput().join(' | ') || '(none)'}`,
        );
      }
      timings.ready = at();
      this.observer.vmStarted(Number(process.hrtime.bigint() - spawnedAt) / 1e9);
      record.state = 'running';
      await this.persist(paths, record);
      timings.recorded = at();
      const vm: ManagedVm = { record, paths, proc, holdsResources: true, ttl: undefined, removing: undefined };
      this.vms.set(id, vm);
      this.launching.delete(proc.pid);
      this.watch(vm, log);
      log.info({ port, pid: proc.pid, ttl_ms: req.ttlMs ?? null, timings_ms: timings }, 'VM started');
      return { id, port };
    } catch (err) {
      // Undo in reverse: process, files, port, slot.
      if (proc) this.launching.delete(proc.pid);
      if (proc) {
        await proc.kill();
        this.observer.qemuExited('start-failed');
      }
      if (paths && dirMade) await removeVmDir(paths.dir).catch((e) => log.error({ err: String(e) }, 'could not remove VM directory'));
      if (port !== undefined) this.ports.release(port);
      this.slotsInUse--;
      const error = err instanceof ManagerError ? err : new ManagerError('internal', `CreateVm failed: ${(err as Error).message}`);
      log.warn({ code: error.kind }, `CreateVm failed and was rolled back: ${error.message}`);
      throw error;
    }
  }

  private async persist(paths: VmPaths, record: VmRecord): Promise<void> {
    try {
      await writeRecordAtomically(paths.dir, record);
    } catch (err) {
      throw fileError(err, paths.dir);
    }
  }

  /** TTL and exit handling for a running VM. */
  private watch(vm: ManagedVm, log: Logger): void {
    const { record } = vm;
    if (record.expiresAt !== null) {
      vm.ttl = new TtlTimer(Date.parse(record.expiresAt), () => {
        log.info({ expires_at: record.expiresAt }, 'TTL expired: removing VM');
        this.track(this.removeVm(record.id, 'ttl')).catch((err) => log.error({ err: String(err) }, 'removal after TTL failed'));
      });
    }
    void vm.proc?.exited.then(async (info) => {
      if (vm.removing) return;
      log.warn({ exit_code: info.code, signal: info.signal, pid: record.pid }, `QEMU exited on its own (${describeExit(info)})`);
      this.observer.qemuExited(info.signal ? 'killed' : info.code === 0 ? 'exited' : 'crashed');
      this.releaseResources(vm);
      record.state = 'exited';
      record.exit = { code: info.code, signal: info.signal, at: new Date().toISOString() };
      await this.persist(vm.paths, record).catch((err) => log.error({ err: String(err) }, 'could not update the VM record'));
    });
  }

  private async removeVm(rawId: string, cause: QemuExitCause = 'removed'): Promise<void> {
    const id = checkId('cvm_id', rawId);
    const vm = this.vms.get(id);
    if (!vm) throw new ManagerError('not-found', `no VM with cvm_id ${JSON.stringify(id)} on this manager`);
    vm.removing ??= (async () => {
      const log = this.log.child({ cvm_id: id });
      vm.ttl?.cancel();
      if (vm.proc && !vm.proc.hasExited) {
        const { info, killed } = await vm.proc.stop(this.config.stopTimeoutMs);
        if (killed) log.warn(`QEMU ignored SIGTERM for MANAGER_QEMU_STOP_TIMEOUT (${this.config.stopTimeoutMs} ms): killed`);
        log.info({ exit_code: info.code, signal: info.signal }, 'QEMU stopped');
        this.observer.qemuExited(cause);
      }
      this.releaseResources(vm);
      try {
        await removeVmDir(vm.paths.dir);
      } catch (err) {
        throw new ManagerError('internal', `QEMU is stopped but the VM's directory ${vm.paths.dir} could not be removed (${(err as NodeJS.ErrnoException).code ?? String(err)}); call RemoveVm again once the state directory is writable`);
      }
      this.vms.delete(id);
      log.info('VM removed');
    })();
    // A failed removal can be tried again (e.g. once the state directory is writable again).
    vm.removing.catch(() => {
      vm.removing = undefined;
    });
    return vm.removing;
  }

  info(rawId: string): CvmInfo {
    const id = checkId('id', rawId);
    const q = this.config.qemu;
    return {
      id,
      ovmfVersion: q.ovmfVersion,
      cpuNum: q.smpCount,
      cpuType: q.cpu,
      kernelCmd: this.vms.get(id)?.record.kernelCmdline ?? q.kernelCmdline,
      eosVersion: this.config.eosVersion,
    };
  }

  private outputLimits(vmId: string) {
    return { vmId, logMaxBytes: this.config.console.logMaxBytes, linesPerSecond: this.config.console.linesPerSecond };
  }

  /** The processes of VMs that hold resources (starting or running): pid → VM id. */
  supervisedPids(): Map<number, string> {
    const out = new Map<number, string>();
    for (const [id, vm] of this.vms) if (vm.proc && !vm.proc.hasExited) out.set(vm.proc.pid, id);
    for (const [pid, id] of this.launching) out.set(pid, id);
    return out;
  }

  list(): VmStatusView[] {
    return [...this.vms.values()].map((vm) => statusView(vm.record)).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  status(rawId: string): VmStatusView {
    return statusView(this.get(rawId));
  }

  /** The VM's record, or NOT_FOUND. */
  get(rawId: string): VmRecord {
    const id = checkId('id', rawId);
    const vm = this.vms.get(id);
    if (!vm) throw new ManagerError('not-found', `no VM with id ${JSON.stringify(id)} on this manager`);
    return vm.record;
  }

  /** The attestation policy of a VM, encoded as configured. */
  async attestationPolicy(rawId: string): Promise<Uint8Array> {
    const record = this.get(rawId);
    if (!this.policies) throw new ManagerError('unimplemented', 'attestation policies are not configured on this manager');
    return this.policies.policyFor(record);
  }

  /**
   * Re-adopts the VMs an earlier run left running; cleans up what belonged to VMs that are gone
   * or never finished starting. A corrupt record is reported and left alone.
   */
  async recover(): Promise<{ adopted: number; cleaned: number; skipped: number }> {
    const result = { adopted: 0, cleaned: 0, skipped: 0 };
    for (const action of await planRecovery(this.config.stateDir, this.config.qemu.binPath)) {
      const log = this.log.child({ cvm_id: action.name });
      switch (action.kind) {
        case 'adopt':
          await this.adopt(action.record, action.paths, log);
          result.adopted++;
          break;
        case 'skip':
          log.error({ dir: action.paths.dir }, `VM record unreadable, VM skipped (fix or remove the directory by hand): ${action.reason}`);
          result.skipped++;
          break;
        case 'clean':
          for (const pid of action.orphans) {
            log.warn({ pid }, 'killing a QEMU of a VM that never finished starting');
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              /* gone */
            }
          }
          await removeVmDir(action.paths.dir);
          log.info({ state: action.state }, 'cleaned up a VM that is no longer running');
          result.cleaned++;
          break;
      }
    }
    return result;
  }

  private async adopt(record: VmRecord, paths: VmPaths, log: Logger): Promise<void> {
    const proc = await QemuProcess.adopt(record.pid!, record.pidStartTime!, paths, log, this.outputLimits(record.id));
    this.ports.hold(record.hostPort);
    this.slotsInUse++;
    const vm: ManagedVm = { record, paths, proc, holdsResources: true, ttl: undefined, removing: undefined };
    this.vms.set(record.id, vm);
    this.watch(vm, log);
    log.info({ pid: record.pid, port: record.hostPort, expires_at: record.expiresAt }, 're-adopted a running VM');
  }

  /** Refuses new VMs and stops TTL timers; VMs keep running (the next start re-adopts them). */
  beginShutdown(): void {
    this.stopping = true;
    for (const vm of this.vms.values()) vm.ttl?.cancel();
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

function statusView(r: VmRecord): VmStatusView {
  const { id, state, pid, hostPort, createdAt, expiresAt, exit, kernelCmdline } = r;
  return { id, state, pid, hostPort, createdAt, expiresAt, exit, kernelCmdline };
}

function checkId(field: string, id: string): string {
  try {
    return validateVmId(field, id);
  } catch (err) {
    throw new ManagerError('invalid-argument', (err as Error).message);
  }
}

function describeExit(info: ExitInfo): string {
  if (info.signal) return `killed by ${info.signal}`;
  if (info.code !== null) return `exit code ${info.code}`;
  return 'exit status unknown';
}

function fileError(err: unknown, dir: string): ManagerError {
  const e = err as NodeJS.ErrnoException;
  return new ManagerError('internal', `could not write the VM's files in ${dir}: ${e.code ?? ''} ${e.message ?? String(err)}`.trim());
}

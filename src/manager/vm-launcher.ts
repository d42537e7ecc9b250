/**
 * CreateVm: a slot, a port, a uid, a GPU (when the host has any), the VM's directory and shares,
 * QEMU (through the driver) and QEMU's word that it runs. Each step is traced and registers its
 * undo; if a later step fails, the undos run in reverse and nothing is left: no directory, no
 * port, no slot, no uid, no GPU.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { type Config, cvmKind } from '../config/types.js';
import { buildQemuArgs, kernelCommandLine, qemuCommand, type RunAs } from '../qemu/args.js';
import type { VmRequest } from '../request/create-request.js';
import { inSpan } from '../telemetry/spans.js';
import { shellCommandLine } from '../util/shell-quote.js';
import { sizeInBytes } from '../util/size.js';
import { type LockedMemoryLimit, vfioLockedMemory } from '../isolation/locked-memory.js';
import { VarsTemplateError, vmPaths } from '../vm/vm-dir.js';
import type { VmRecord } from '../vm/vm-record.js';
import type { AttestationPolicies } from './attestation-policy.js';
import { ManagerError } from './errors.js';
import type { Gpu } from './gpu-pool.js';
import type { GuestIsolation } from './guest-isolation.js';
import { SupervisedVm, type VmSurroundings } from './supervised-vm.js';
import { UndoStack } from './undo-stack.js';
import { DriverError, type ProcessExit, type QemuFlavor, type VmDriver } from './vm-driver.port.js';
import type { VmRegistry } from './vm-registry.js';
import { SECCOMP_KILL } from './vm-state.js';

export class VmLauncher {
  constructor(
    private readonly config: Config,
    private readonly log: Logger,
    private readonly registry: VmRegistry,
    private readonly driver: VmDriver,
    private readonly around: VmSurroundings,
    private readonly policies?: AttestationPolicies,
    private readonly isolation?: GuestIsolation,
    /** QEMU under sudo as this group's user: its files and QMP socket are shared through the group. */
    private readonly qemuGid?: number,
    /** The daemon's RLIMIT_MEMLOCK, which a GPU VM's QEMU would inherit (src/host/locked-memory.ts). */
    private readonly lockedMemory: LockedMemoryLimit = { hard: null, mayRaise: false },
  ) {}

  async launch(req: VmRequest): Promise<{ id: string; port: number }> {
    // SEV-SNP or TDX declared true on a host that lacks it: no VM, rather than a plain one.
    if (this.config.cvm.unavailable) throw new ManagerError('failed-precondition', this.config.cvm.unavailable);
    if (!this.registry.hasSlot) throw new ManagerError('resource-exhausted', `MANAGER_MAX_VMS=${this.config.maxVms} VMs are already running or starting`);
    const id = randomUUID();
    const log = this.log.child({ cvm_id: id });
    const vm = SupervisedVm.launching(this.draftRecord(id, req), vmPaths(this.config.stateDir, id), log, this.around);
    this.registry.add(vm, 'CreateVm');
    const undo = new UndoStack(log);
    // Where a launch spends its time, in the 'VM started' line (ms since the call began).
    const t0 = process.hrtime.bigint();
    const at = () => Math.round(Number(process.hrtime.bigint() - t0) / 1e4) / 100;
    const timings: Record<string, number> = {};
    try {
      await this.steps(vm, req, undo, timings, at);
      log.info({ port: vm.record.hostPort, pid: vm.pid, gpu: vm.record.gpu?.bdf ?? null, ttl_ms: req.ttlMs ?? null, timings_ms: timings }, 'VM started');
      return { id, port: vm.record.hostPort };
    } catch (err) {
      const error = err instanceof ManagerError ? err : new ManagerError('internal', `CreateVm failed: ${(err as Error).message}`);
      await undo.unwind();
      vm.discard('CreateVm failed');
      log.warn({ code: error.kind }, `CreateVm failed and was rolled back: ${error.message}`);
      throw error;
    }
  }

  /** The record as far as the request and the configuration say; the steps fill in the rest. */
  private draftRecord(id: string, req: VmRequest): VmRecord {
    const q = this.config.qemu;
    const createdAt = new Date().toISOString();
    return {
      version: 1,
      id,
      state: 'starting',
      pid: null,
      pidStartTime: null,
      command: [],
      hostPort: 0,
      kernelCmdline: kernelCommandLine(q, req.aaKbsParams),
      createdAt,
      expiresAt: req.ttlMs === undefined ? null : new Date(Date.parse(createdAt) + req.ttlMs).toISOString(),
      exit: null,
      launch: {
        kind: cvmKind(q),
        decision: this.config.cvm.reason,
        cpu: q.cpu,
        hostData: q.enableSevSnp && q.enableHostData ? q.hostData : null,
        igvmFile: q.enableSevSnp ? q.igvmFile : null,
      },
      runAs: null,
      gpu: null,
    };
  }

  private async steps(vm: SupervisedVm, req: VmRequest, undo: UndoStack, timings: Record<string, number>, at: () => number): Promise<void> {
    const q = this.config.qemu;
    const { paths, log } = vm;
    const port = await inSpan('allocate-port', async (span) => {
      const p = await this.around.ports.acquire();
      if (p === undefined) {
        throw new ManagerError('resource-exhausted', `no free host port left in MANAGER_QEMU_HOST_FWD_RANGE=${q.hostFwdRange.first}-${q.hostFwdRange.last}`);
      }
      span.setAttribute('cocos.host_port', p);
      vm.holdPort(p);
      undo.push('the host port', () => vm.releasePort());
      return p;
    });
    let runAs: RunAs | undefined;
    if (this.isolation) {
      const { uids, groups } = this.isolation;
      runAs = await inSpan('allocate-uid', async () => {
        const uid = uids.acquire();
        if (uid === undefined) {
          const r = this.config.isolation.uidRange;
          throw new ManagerError('resource-exhausted', `no free uid left in MANAGER_VM_UID_RANGE=${r.first}-${r.last}`);
        }
        vm.holdUid({ uid, gid: uid, groups });
        undo.push('the VM uid', () => vm.releaseUid());
        return { uid, gid: uid, groups };
      });
    }
    const gpu = await this.allocateGpu(vm, undo, runAs);
    timings.port = at();
    await inSpan('write-shares', async () => {
      // A directory made in part is removed too.
      undo.push("the VM's directory", () => this.around.files.remove(paths.dir));
      const plain = !q.enableSevSnp && !q.enableTdx;
      const access = runAs ? { uid: runAs.uid, gid: runAs.gid } : this.qemuGid !== undefined ? { gid: this.qemuGid } : undefined;
      try {
        await this.around.files.create(paths, vm.id, req, plain ? q.ovmfVars.file : undefined, access);
      } catch (err) {
        throw fileError(err, paths.dir);
      }
    });
    // Read once per daemon: the option forms and the sandbox this binary takes.
    const flavor: QemuFlavor = await inSpan('probe-qemu', async () => {
      try {
        return await this.driver.flavor();
      } catch (err) {
        throw new ManagerError('failed-precondition', `QEMU could not be started: ${(err as Error).message}`);
      }
    });
    const cmd = qemuCommand(q, runAs, gpu?.lockedMemory);
    const argv = [
      ...cmd.prefix,
      ...buildQemuArgs(q, {
        hostPort: port,
        ovmfVarsFile: paths.ovmfVars,
        aaKbsParams: req.aaKbsParams,
        shares: { certsDir: paths.certsDir, envDir: paths.envDir },
        qmp: { socketPath: paths.qmpSocket, form: flavor.form },
        sandbox: flavor.sandbox.supported,
        gpu: gpu?.gpu.bdf,
      }),
    ];
    vm.record.command = [cmd.file, ...argv];
    const pinning = await inSpan('pin-launch', async () => this.policies?.pinner.atCreate(vm.record, log));
    vm.record.pinned = pinning?.pin;
    // Guests are refused by the kernel before this QEMU can run (a no-op while other VMs run).
    const firewall = this.isolation?.firewall;
    if (firewall) {
      await inSpan('guest-firewall', async () => {
        try {
          await firewall.ensure();
        } catch (err) {
          throw new ManagerError('failed-precondition', `the guest firewall (nftables table ${firewall.table}) could not be installed, so no VM is started: ${(err as Error).message}`);
        }
      });
    }
    // No record is written before QEMU is up: a daemon that dies in between leaves a directory
    // without one, and the next start kills the QEMU that names it and removes it (recovery).
    log.info({ port, gpu: gpu?.gpu.bdf ?? null, command: shellCommandLine(vm.record.command) }, 'starting QEMU');
    timings.files = at();
    const spawnedAt = process.hrtime.bigint();
    const handle = await inSpan('spawn-qemu', async (span) => {
      try {
        const h = await this.driver.spawn({ vmId: vm.id, file: cmd.file, argv, paths, qmp: { owner: runAs, group: this.qemuGid }, output: this.config.console }, log);
        span.setAttribute('process.pid', h.pid);
        return h;
      } catch (err) {
        if (err instanceof DriverError && err.stage === 'qmp') throw new ManagerError('internal', err.message);
        throw new ManagerError('failed-precondition', `QEMU could not be started: ${(err as Error).message}`);
      }
    });
    vm.attach(handle);
    undo.push('QEMU', () => vm.killQemu());
    timings.spawned = at();
    const lastOutput = () => handle.lastOutput().join(' | ') || '(none)';
    const ready = await inSpan('wait-qemu-ready', async (span) => {
      const r = await handle.waitReady(this.config.startTimeoutMs);
      span.setAttribute('cocos.outcome', r.outcome);
      return r;
    });
    if (ready.outcome === 'exited') {
      throw new ManagerError('failed-precondition', `QEMU exited during start (${describeExit(await handle.exited)}); last output: ${lastOutput()}`);
    }
    if (ready.outcome === 'timeout') {
      throw new ManagerError('unavailable', `QEMU did not finish starting (its QMP channel did not answer) within MANAGER_QEMU_START_TIMEOUT (${this.config.startTimeoutMs} ms); last output: ${lastOutput()}`);
    }
    if (ready.status !== 'running') {
      throw new ManagerError('failed-precondition', `QEMU started but its VM is ${JSON.stringify(ready.status ?? 'unknown')}, not running`);
    }
    // QEMU binds its forwards during qemu_init, before it answers QMP; one look confirms it.
    await inSpan('check-forward', async () => {
      if (!(await this.driver.processes.portIsListening(port))) {
        throw new ManagerError('unavailable', `QEMU is running but nothing listens on host port ${port}; last output: ${lastOutput()}`);
      }
    });
    timings.ready = at();
    await pinning?.confirm(); // QEMU has loaded its files by now: still the ones pinned?
    this.around.observer.vmStarted(Number(process.hrtime.bigint() - spawnedAt) / 1e9);
    await vm.started();
    timings.recorded = at();
  }

  /**
   * When the host has GPUs (MANAGER_QEMU_GPU_BDF), every VM gets one: taken from the pool, its
   * /dev/vfio node given to the VM's user, with the locked memory its QEMU needs for VFIO. On a
   * host without any, nothing: the argv is the Go manager's without a GPU.
   */
  private async allocateGpu(vm: SupervisedVm, undo: UndoStack, runAs: RunAs | undefined): Promise<{ gpu: Gpu; lockedMemory: bigint } | undefined> {
    const pool = this.around.gpus;
    if (pool.size === 0) return undefined;
    return inSpan('allocate-gpu', async (span) => {
      const memory = vfioLockedMemory(sizeInBytes(this.config.qemu.memorySize, 'M')!, this.lockedMemory);
      if (!memory.ok) throw new ManagerError('failed-precondition', memory.reason);
      if (memory.short) vm.log.warn(memory.short);
      const gpu = pool.acquire(vm.id);
      if (!gpu) throw new ManagerError('resource-exhausted', `no free GPU: every GPU of this host (MANAGER_QEMU_GPU_BDF) is held: ${pool.describeHolders()}`);
      vm.holdGpu(gpu);
      undo.push('the GPU', () => vm.releaseGpu());
      span.setAttribute('cocos.gpu', gpu.bdf);
      if (runAs) {
        try {
          pool.giveTo(gpu, runAs);
        } catch (err) {
          throw new ManagerError('internal', `could not give /dev/vfio/${gpu.iommuGroup} (GPU ${gpu.bdf}) to the VM's user ${runAs.uid}: ${(err as Error).message}`);
        }
      }
      return { gpu, lockedMemory: memory.bytes };
    });
  }
}

export function describeExit(info: ProcessExit): string {
  if (info.signal === 'SIGSYS') return SECCOMP_KILL;
  if (info.signal) return `killed by ${info.signal}`;
  if (info.code !== null) return `exit code ${info.code}`;
  return 'exit status unknown';
}

function fileError(err: unknown, dir: string): ManagerError {
  if (err instanceof VarsTemplateError) return new ManagerError('failed-precondition', err.message);
  const e = err as NodeJS.ErrnoException;
  // Node's message already starts with the code ("ENOENT: no such file..."): say it once.
  return new ManagerError('internal', `could not write the VM's files in ${dir}: ${e.message ?? String(err)}`);
}

/**
 * CreateVm: a slot, a port, the VM's directory and shares, its QMP socket, QEMU, and QEMU's
 * word that it runs. Every step is undone, in reverse, if a later one fails.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { type Config, cvmKind } from '../config/types.js';
import { buildQemuArgs, kernelCommandLine, qemuCommand, type RunAs } from '../qemu/args.js';
import type { VmRequest } from '../request/create-request.js';
import { inSpan } from '../telemetry/spans.js';
import { shellCommandLine } from '../util/shell-quote.js';
import { descendantPids, portIsListening } from '../vm/proc.js';
import { type ExitInfo, QemuProcess } from '../vm/qemu-process.js';
import type { QemuFlavor, QemuFlavorCache } from '../vm/qemu-version.js';
import { QmpChannel } from '../vm/qmp.js';
import { createVmDir, removeVmDir, VarsTemplateError, vmPaths } from '../vm/vm-dir.js';
import type { VmRecord } from '../vm/vm-record.js';
import type { AttestationPolicies } from './attestation-policy.js';
import { ManagerError } from './errors.js';
import type { ManagerObserver } from './observer.js';
import type { PortPool } from './port-pool.js';
import type { GuestIsolation } from './guest-isolation.js';
import type { Vm, VmRegistry } from './vm-registry.js';
import { SECCOMP_KILL } from './vm-state.js';

export class VmLauncher {
  constructor(
    private readonly config: Config,
    private readonly log: Logger,
    private readonly ports: PortPool,
    private readonly registry: VmRegistry,
    private readonly flavor: QemuFlavorCache,
    private readonly observer: ManagerObserver,
    private readonly policies?: AttestationPolicies,
    private readonly isolation?: GuestIsolation,
    /** QEMU under sudo as this group's user: its files and QMP socket are shared through the group. */
    private readonly qemuGid?: number,
  ) {}

  async launch(req: VmRequest): Promise<{ id: string; port: number }> {
    const id = randomUUID();
    const log = this.log.child({ cvm_id: id });
    const vm = this.registry.reserve(id, log);
    if (!vm) throw new ManagerError('resource-exhausted', `MANAGER_MAX_VMS=${this.config.maxVms} VMs are already running or starting`);

    const q = this.config.qemu;
    let dirMade = false;
    // Where a launch spends its time, in the 'VM started' line (ms since the call began).
    const t0 = process.hrtime.bigint();
    const at = () => Math.round(Number(process.hrtime.bigint() - t0) / 1e4) / 100;
    const timings: Record<string, number> = {};
    try {
      const port = await inSpan('allocate-port', async (span) => {
        const p = await this.ports.acquire();
        if (p !== undefined) span.setAttribute('cocos.host_port', p);
        return p;
      });
      if (port === undefined) {
        const r = q.hostFwdRange;
        throw new ManagerError('resource-exhausted', `no free host port left in MANAGER_QEMU_HOST_FWD_RANGE=${r.first}-${r.last}`);
      }
      vm.hostPort = port;
      let runAs: RunAs | undefined;
      if (this.isolation) {
        const uid = this.isolation.uids.acquire();
        if (uid === undefined) {
          const r = this.config.isolation.uidRange;
          throw new ManagerError('resource-exhausted', `no free uid left in MANAGER_VM_UID_RANGE=${r.first}-${r.last}`);
        }
        vm.uid = uid;
        runAs = { uid, gid: uid, groups: this.isolation.groups };
      }
      const paths = vmPaths(this.config.stateDir, id);
      vm.paths = paths;
      const plain = !q.enableSevSnp && !q.enableTdx;
      dirMade = true;
      timings.port = at();
      await inSpan('write-shares', async () => {
        try {
          await createVmDir(paths, id, req, plain ? q.ovmfVars.file : undefined, runAs ? { uid: runAs.uid, gid: runAs.gid } : this.qemuGid !== undefined ? { gid: this.qemuGid } : undefined);
        } catch (err) {
          throw fileError(err, paths.dir);
        }
      });
      let flavor: QemuFlavor;
      try {
        flavor = await this.flavor.get();
      } catch (err) {
        throw new ManagerError('failed-precondition', `QEMU could not be started: ${(err as Error).message}`);
      }
      const qmp = new QmpChannel(paths.qmpSocket, { owner: runAs, group: this.qemuGid });
      vm.qmp = qmp;
      try {
        await qmp.listen();
      } catch (err) {
        throw new ManagerError('internal', `could not open the VM's QMP socket: ${(err as Error).message}`);
      }
      const args = buildQemuArgs(q, {
        hostPort: port,
        ovmfVarsFile: paths.ovmfVars,
        aaKbsParams: req.aaKbsParams,
        shares: { certsDir: paths.certsDir, envDir: paths.envDir },
        qmp: { socketPath: paths.qmpSocket, form: flavor.form },
        sandbox: flavor.sandbox.supported,
      });
      const cmd = qemuCommand(q, runAs);
      const argv = [...cmd.prefix, ...args];
      const now = Date.parse(vm.createdAt);
      const record: VmRecord = {
        version: 1,
        id,
        state: 'starting',
        pid: null,
        pidStartTime: null,
        command: [cmd.file, ...argv],
        hostPort: port,
        kernelCmdline: kernelCommandLine(q, req.aaKbsParams),
        createdAt: vm.createdAt,
        expiresAt: req.ttlMs === undefined ? null : new Date(now + req.ttlMs).toISOString(),
        exit: null,
        launch: {
          kind: cvmKind(q),
          cpu: q.cpu,
          hostData: q.enableSevSnp && q.enableHostData ? q.hostData : null,
          igvmFile: q.enableSevSnp ? q.igvmFile : null,
        },
        runAs: runAs ?? null,
      };
      const pinning = await inSpan('pin-launch', async () => this.policies?.pinner.atCreate(record, log));
      record.pinned = pinning?.pin;
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
      log.info({ port, command: shellCommandLine(record.command) }, 'starting QEMU');
      timings.files = at();
      const spawnedAt = process.hrtime.bigint();
      const proc = await inSpan('spawn-qemu', async (span) => {
        try {
          const p = await QemuProcess.spawn(cmd.file, argv, paths, qmp, log, { vmId: id, ...this.config.console });
          span.setAttribute('process.pid', p.pid);
          return p;
        } catch (err) {
          throw new ManagerError('failed-precondition', `QEMU could not be started: ${(err as Error).message}`);
        }
      });
      vm.proc = proc;
      // Under sudo (or a wrapper that does not exec), QEMU runs below proc: what is below is
      // read once QEMU is up, and until then the peer check searches below (undefined).
      vm.qemuPids = undefined;
      record.pid = proc.pid;
      record.pidStartTime = proc.startTime;

      timings.spawned = at();
      const ready = await inSpan('wait-qemu-ready', async (span) => {
        const r = await proc.waitReady(this.config.startTimeoutMs);
        span.setAttribute('cocos.outcome', r.outcome);
        return r;
      });
      if (ready.outcome === 'exited') {
        const info = await proc.exited;
        throw new ManagerError(
          'failed-precondition',
          `QEMU exited during start (${describeExit(info)}); last output: ${proc.lastOutput().join(' | ') || '(none)'}`,
        );
      }
      if (ready.outcome === 'timeout') {
        throw new ManagerError(
          'unavailable',
          `QEMU did not finish starting (its QMP channel did not answer) within MANAGER_QEMU_START_TIMEOUT (${this.config.startTimeoutMs} ms); last output: ${proc.lastOutput().join(' | ') || '(none)'}`,
        );
      }
      if (ready.status !== 'running') {
        throw new ManagerError('failed-precondition', `QEMU started but its VM is ${JSON.stringify(ready.status ?? 'unknown')}, not running`);
      }
      // QEMU binds its forwards during qemu_init, before it answers QMP; one look confirms it.
      if (!(await portIsListening(port))) {
        throw new ManagerError('unavailable', `QEMU is running but nothing listens on host port ${port}; last output: ${proc.lastOutput().join(' | ') || '(none)'}`);
      }
      timings.ready = at();
      await pinning?.confirm(); // QEMU has loaded its files by now: still the ones pinned?
      this.observer.vmStarted(Number(process.hrtime.bigint() - spawnedAt) / 1e9);
      vm.record = record;
      vm.qemuPids = descendantPids(proc.pid);
      this.registry.apply(vm, { kind: 'status', status: 'running' });
      await this.registry.persist(vm);
      timings.recorded = at();
      this.registry.supervise(vm);
      log.info({ port, pid: proc.pid, ttl_ms: req.ttlMs ?? null, timings_ms: timings }, 'VM started');
      return { id, port };
    } catch (err) {
      const error = err instanceof ManagerError ? err : new ManagerError('internal', `CreateVm failed: ${(err as Error).message}`);
      await this.rollBack(vm, dirMade, log);
      log.warn({ code: error.kind }, `CreateVm failed and was rolled back: ${error.message}`);
      throw error;
    }
  }

  /** Undo in reverse: process, QMP socket, files, port and slot (by leaving the holding states). */
  private async rollBack(vm: Vm, dirMade: boolean, log: Logger): Promise<void> {
    vm.record = undefined;
    if (vm.proc) {
      try {
        await vm.proc.kill();
      } catch (e) {
        log.error({ pid: vm.proc.pid }, `rollback could not stop QEMU: ${(e as Error).message}`);
      }
      this.observer.qemuExited('start-failed');
    }
    vm.qmp?.close();
    if (vm.paths && dirMade) await removeVmDir(vm.paths.dir).catch((e) => log.error({ err: String(e) }, 'could not remove VM directory'));
    this.registry.discard(vm, 'CreateVm failed');
  }
}

export function describeExit(info: ExitInfo): string {
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

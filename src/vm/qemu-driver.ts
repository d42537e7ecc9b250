/**
 * The VmDriver of real VMs: QEMU started in place (execa, no shell; a prefix such as setpriv or
 * sudo execs it, so recovery still recognises it by its command line) and followed over QMP.
 */
import type { Logger } from 'pino';
import type { QemuConfig } from '../config/types.js';
import {
  type AdoptSpec,
  DriverError,
  type HostProcesses,
  type ProcessExit,
  type QemuFlavor,
  type ReadyOutcome,
  type SpawnSpec,
  type StopResult,
  type VmDriver,
  type QemuEvent,
  type VmHandle,
} from '../manager/vm-driver.port.js';
import { allCommandLines, descendantPids, portIsListening, processCmdline, processStartTime } from './proc.js';
import { QemuProcess } from './qemu-process.js';
import { QemuFlavorCache } from './qemu-version.js';
import { QmpChannel } from './qmp.js';

/** /proc, as the manager asks it. */
export const procProcesses: HostProcesses = {
  startTime: processStartTime,
  commandLine: processCmdline,
  commandLines: allCommandLines,
  kill(pid) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  },
  portIsListening,
};

export class QemuDriver implements VmDriver {
  private readonly flavors: QemuFlavorCache;
  readonly processes = procProcesses;

  constructor(q: QemuConfig) {
    this.flavors = new QemuFlavorCache(q);
  }

  flavor(): Promise<QemuFlavor> {
    return this.flavors.get();
  }

  async spawn(spec: SpawnSpec, log: Logger): Promise<VmHandle> {
    const qmp = new QmpChannel(spec.paths.qmpSocket, spec.qmp);
    try {
      await qmp.listen();
    } catch (err) {
      qmp.close();
      throw new DriverError('qmp', `could not open the VM's QMP socket: ${(err as Error).message}`);
    }
    try {
      const proc = await QemuProcess.spawn(spec.file, spec.argv, spec.paths, qmp, log, { vmId: spec.vmId, ...spec.output });
      return new QemuVmHandle(proc, qmp);
    } catch (err) {
      qmp.close();
      throw new DriverError('spawn', (err as Error).message);
    }
  }

  async adopt(spec: AdoptSpec, log: Logger): Promise<VmHandle> {
    // QEMU reconnects to the new listener by itself (chardev reconnect). The socket is made
    // anew: QEMU's user must be able to connect again.
    const qmp = new QmpChannel(spec.paths.qmpSocket, spec.qmp);
    await qmp.listen().catch((err) => log.error({ err: String(err) }, "could not reopen the VM's QMP socket"));
    const proc = await QemuProcess.adopt(spec.pid, spec.startTime, spec.paths, qmp, log, { vmId: spec.vmId, ...spec.output });
    return new QemuVmHandle(proc, qmp);
  }
}

class QemuVmHandle implements VmHandle {
  constructor(
    private readonly proc: QemuProcess,
    private readonly qmp: QmpChannel,
  ) {}

  get pid(): number {
    return this.proc.pid;
  }
  get startTime(): string {
    return this.proc.startTime;
  }
  get exited(): Promise<ProcessExit> {
    return this.proc.exited;
  }
  get hasExited(): boolean {
    return this.proc.hasExited;
  }
  get qmpConnected(): boolean {
    return this.qmp.isConnected;
  }
  onEvent(fn: (e: QemuEvent) => void): void {
    this.qmp.onEvent(fn);
  }
  onQmpReady(fn: () => void): void {
    this.qmp.onReady(fn);
  }
  qmpDrained(ms: number): Promise<void> {
    return this.qmp.isConnected ? this.qmp.whenDisconnected(ms) : Promise.resolve();
  }
  queryStatus(): Promise<{ status?: string }> {
    return this.qmp.queryStatus();
  }
  waitReady(timeoutMs: number): Promise<ReadyOutcome> {
    return this.proc.waitReady(timeoutMs) as Promise<ReadyOutcome>;
  }
  async powerdown(timeoutMs: number): Promise<void> {
    await this.qmp.systemPowerdown(timeoutMs);
  }
  waitExit(timeoutMs: number): Promise<boolean> {
    return this.proc.waitExit(timeoutMs);
  }
  async stop(timeoutMs: number): Promise<StopResult> {
    const { info, killed, via } = await this.proc.stop(timeoutMs);
    return { exit: info, killed, via };
  }
  kill(): Promise<ProcessExit> {
    return this.proc.kill();
  }
  lastOutput(): string[] {
    return this.proc.lastOutput();
  }
  descendants(): number[] {
    return descendantPids(this.proc.pid);
  }
  close(): void {
    this.qmp.close();
  }
}

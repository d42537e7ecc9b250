/**
 * The manager's one way to processes: a VmDriver starts a VM's QEMU or takes over one an
 * earlier run started, and hands back a VmHandle; HostProcesses answers what recovery asks of
 * /proc. The QEMU + QMP implementation is src/vm/qemu-driver.ts; tests use an in-memory fake,
 * so the launcher, the registry and recovery run without a process (a dependency-cruiser rule
 * keeps src/manager/ off src/vm/'s process modules).
 */
import type { Logger } from 'pino';
import type { QemuVersion, QmpForm } from '../qemu/qmp-args.js';
import type { VmPaths } from '../vm/vm-dir.js';

/** How a process ended; both null when its status cannot be read (a QEMU that is not our child). */
export interface ProcessExit {
  code: number | null;
  signal: string | null;
}

/** What QEMU tells over QMP: an event (qapi/*.json), with its data. */
export interface QemuEvent {
  event: string;
  data: Record<string, unknown>;
}

/** Whether the binary takes `-sandbox`; when not, QEMU's own words for why. */
export type SandboxSupport = { supported: true } | { supported: false; reason: string };

/** The QEMU binary this host runs, as far as the argv depends on it. */
export interface QemuFlavor {
  version: QemuVersion;
  form: QmpForm;
  text: string;
  sandbox: SandboxSupport;
}

/** Who may connect to the VM's QMP socket besides the daemon (QEMU's user). */
export interface QmpAccess {
  owner?: { uid: number; gid: number };
  group?: number;
}

/** What the console and QEMU's stderr may cost (files and log lines). */
export interface OutputLimits {
  logMaxBytes: number;
  linesPerSecond: number;
}

export interface SpawnSpec {
  vmId: string;
  /** The program and its arguments (a prefix such as setpriv or sudo, then QEMU's argv). */
  file: string;
  argv: string[];
  paths: VmPaths;
  qmp: QmpAccess;
  output: OutputLimits;
}

export interface AdoptSpec {
  vmId: string;
  pid: number;
  /** /proc/<pid>/stat's start time as recorded: a reused PID is never taken for this QEMU. */
  startTime: string;
  paths: VmPaths;
  qmp: QmpAccess;
  output: OutputLimits;
}

/** Which step of a spawn failed: the caller's error says which. */
export class DriverError extends Error {
  constructor(
    readonly stage: 'qmp' | 'spawn',
    message: string,
  ) {
    super(message);
    this.name = 'DriverError';
  }
}

export type ReadyOutcome = { outcome: 'ready'; status?: string } | { outcome: 'exited' } | { outcome: 'timeout' };

export interface StopResult {
  exit: ProcessExit;
  /** It ignored quit/SIGTERM for the timeout and was killed. */
  killed: boolean;
  via: 'qmp' | 'signal';
}

/** One running QEMU and its QMP channel. */
export interface VmHandle {
  readonly pid: number;
  readonly startTime: string;
  /** Resolves once the process is gone (never rejects). */
  readonly exited: Promise<ProcessExit>;
  readonly hasExited: boolean;
  /** QMP is negotiated now. */
  readonly qmpConnected: boolean;
  onEvent(fn: (e: QemuEvent) => void): void;
  /** QMP was negotiated (again): after a daemon restart QEMU reconnects by itself. */
  onQmpReady(fn: () => void): void;
  /** Resolves once QMP's connection has ended (all QEMU sent is read), or after ms. */
  qmpDrained(ms: number): Promise<void>;
  /** QEMU's run state (query-status). */
  queryStatus(): Promise<{ status?: string }>;
  /** QEMU has finished starting, as QEMU says (QMP up and query-status answered). */
  waitReady(timeoutMs: number): Promise<ReadyOutcome>;
  /** The guest's ACPI power button (system_powerdown). */
  powerdown(timeoutMs: number): Promise<void>;
  /** Waits up to timeoutMs for the process to end; true if it did. */
  waitExit(timeoutMs: number): Promise<boolean>;
  /** QMP quit (or SIGTERM), then SIGKILL after timeoutMs; rejects if it survives even that. */
  stop(timeoutMs: number): Promise<StopResult>;
  /** Ends it at once (a rollback); bounded. */
  kill(): Promise<ProcessExit>;
  /** QEMU's last lines (stderr, else the console), for error messages. */
  lastOutput(): string[];
  /** What runs below the PID (QEMU under sudo or a wrapper); empty for QEMU itself. */
  descendants(): number[];
  /** Closes the QMP channel (its socket file goes). */
  close(): void;
}

/** What recovery and the launcher ask of the host's processes (/proc). */
export interface HostProcesses {
  startTime(pid: number): Promise<string | undefined>;
  commandLine(pid: number): Promise<string[] | undefined>;
  /** Every process's command line, by PID. */
  commandLines(): Promise<Map<number, string[]>>;
  /** SIGKILL; a process already gone is not an error. */
  kill(pid: number): void;
  /** Something listens on this TCP port (QEMU's host forward). */
  portIsListening(port: number): Promise<boolean>;
}

export interface VmDriver {
  /** The binary's version, QMP form and sandbox support (probed once; retried after a failure). */
  flavor(): Promise<QemuFlavor>;
  /** Opens the VM's QMP socket, then starts QEMU (in place: the PID is QEMU's). Throws DriverError. */
  spawn(spec: SpawnSpec, log: Logger): Promise<VmHandle>;
  /** Takes over a QEMU an earlier run started; its QMP channel is listened on anew. */
  adopt(spec: AdoptSpec, log: Logger): Promise<VmHandle>;
  readonly processes: HostProcesses;
}

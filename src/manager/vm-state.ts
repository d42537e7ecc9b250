/**
 * A VM's life as one explicit state machine. Every change of state goes through apply(): QMP
 * events (SHUTDOWN with its reason, STOP/RESUME, GUEST_PANICKED), QEMU's answer to
 * query-status, the process's exit, RemoveVm, TTL and recovery. What a VM holds (a slot, its
 * forwarded port) follows from its state alone.
 *
 *   starting ──ready──▶ running ◀──RESUME/STOP──▶ paused
 *      │                  │  │                       │
 *      │ start failed     │  └── stop requested / SHUTDOWN ──▶ stopping
 *      ▼                  ▼                                       │
 *    failed        stopped | crashed ◀────────── process exit ────┘
 */
export type VmState = 'starting' | 'running' | 'paused' | 'stopping' | 'stopped' | 'crashed' | 'failed';

export const VM_STATES: readonly VmState[] = ['starting', 'running', 'paused', 'stopping', 'stopped', 'crashed', 'failed'];

/** States in which QEMU may be running: the VM holds a slot of MANAGER_MAX_VMS and its port. */
const HOLDING: ReadonlySet<VmState> = new Set(['starting', 'running', 'paused', 'stopping']);

export function holdsResources(state: VmState): boolean {
  return HOLDING.has(state);
}

/** Why QEMU is gone, as operators read it. */
export type ExitCause =
  | 'guest shutdown'
  | 'guest panic'
  | 'host signal'
  | 'killed by the manager'
  | typeof SECCOMP_KILL
  | `exited with code ${number}`
  | 'unknown';

/** QEMU's seccomp filter (-sandbox) kills the process with SIGSYS on a forbidden system call. */
export const SECCOMP_KILL = 'killed by its seccomp sandbox (SIGSYS)';

export interface ProcessExit {
  code: number | null;
  signal: string | null;
}

export type VmInput =
  /** QEMU answered query-status (at the end of a start, or after QMP reattached). */
  | { kind: 'status'; status: string }
  /** CreateVm could not bring the VM up; it is being rolled back. */
  | { kind: 'start-failed' }
  /** A QMP event from QEMU. */
  | { kind: 'event'; event: string; data: Record<string, unknown> }
  /** RemoveVm or TTL: the manager is stopping QEMU. */
  | { kind: 'stop-requested' }
  /** The QEMU process is gone; `exit` is null when its status cannot be read (re-adopted VM). */
  | { kind: 'exited'; exit: ProcessExit | null };

export interface Transition {
  from: VmState;
  to: VmState;
  /** What moved it, for the log and watchers. */
  reason: string;
}

export class VmStateMachine {
  private current: VmState;
  /** SHUTDOWN's reason, if QEMU announced one. */
  private shutdownReason: string | undefined;
  private panicked = false;
  private stopRequested = false;
  private exitCause: ExitCause | undefined;
  /** Why QEMU paused the guest by itself (a panic, an I/O error), while paused. */
  private pausedBecause: string | undefined;

  constructor(
    initial: VmState = 'starting',
    /** The id of the VM's own disk drive (MANAGER_QEMU_DISK_ID), named as such in a pause's reason. */
    private readonly diskId: () => string | undefined = () => undefined,
  ) {
    this.current = initial;
  }

  get state(): VmState {
    return this.current;
  }

  get cause(): ExitCause | undefined {
    return this.exitCause;
  }

  /** While paused: why QEMU paused the guest by itself; undefined for a pause asked for (QMP stop). */
  get pauseReason(): string | undefined {
    return this.current === 'paused' ? this.pausedBecause : undefined;
  }

  get holdsResources(): boolean {
    return holdsResources(this.current);
  }

  /** True once QEMU is known to be gone (or never came up). */
  get isFinal(): boolean {
    return !this.holdsResources;
  }

  /** Applies one input; returns the transition, or undefined when the state does not change. */
  apply(input: VmInput): Transition | undefined {
    const from = this.current;
    if (this.isFinal) return undefined; // nothing moves a VM whose QEMU is gone
    let to: VmState = from;
    let reason: string = input.kind;
    switch (input.kind) {
      case 'status':
        if (from === 'stopping') break; // a late answer does not undo a stop
        to = input.status === 'running' ? 'running' : input.status === 'shutdown' ? 'stopping' : 'paused';
        reason = `QEMU status ${input.status}`;
        // A run state that says why (after a daemon restart the events that told it are gone).
        if (to === 'paused') this.pausedBecause = PAUSED_STATUS[input.status] ?? this.pausedBecause;
        else this.pausedBecause = undefined;
        break;
      case 'start-failed':
        to = 'failed';
        break;
      case 'stop-requested':
        this.stopRequested = true;
        to = 'stopping';
        reason = 'stop requested by the manager';
        break;
      case 'event':
        reason = `QMP ${input.event}`;
        switch (input.event) {
          case 'STOP':
            if (from === 'running') to = 'paused';
            break;
          case 'RESUME':
            if (from === 'paused' || from === 'starting') to = 'running';
            this.pausedBecause = undefined;
            break;
          case 'GUEST_PANICKED':
            this.panicked = true;
            // -action panic=pause: the guest stays, paused, for the operator to look at.
            if (input.data.action === 'pause') {
              this.pausedBecause = 'guest panic';
              if (from === 'running') to = 'paused';
            }
            break;
          case 'BLOCK_IO_ERROR':
            // werror/rerror=stop: QEMU pauses the guest until the disk is fixed and it is resumed.
            if (input.data.action === 'stop') {
              this.pausedBecause = ioErrorReason(input.data, this.diskId());
              if (from === 'running') to = 'paused';
            }
            break;
          case 'SHUTDOWN':
            this.shutdownReason = typeof input.data.reason === 'string' ? input.data.reason : undefined;
            if (this.shutdownReason === 'guest-panic') this.panicked = true;
            to = 'stopping';
            reason = `QMP SHUTDOWN (${this.shutdownReason ?? 'no reason'})`;
            break;
          default:
            break;
        }
        break;
      case 'exited': {
        if (from === 'starting') {
          to = 'failed';
          this.exitCause = causeOf(input.exit, this.shutdownReason, this.panicked, this.stopRequested);
          break;
        }
        this.exitCause = causeOf(input.exit, this.shutdownReason, this.panicked, this.stopRequested);
        to = isCrash(this.exitCause, input.exit) ? 'crashed' : 'stopped';
        reason = `QEMU exited: ${this.exitCause}`;
        break;
      }
    }
    if (to === from) return undefined;
    this.current = to;
    return { from, to, reason };
  }
}

/** QEMU run states that are a pause with a reason (qapi/run-state.json). */
const PAUSED_STATUS: Record<string, string> = {
  'io-error': 'I/O error',
  'guest-panicked': 'guest panic',
  'internal-error': 'QEMU internal error',
  watchdog: 'guest watchdog',
};

function ioErrorReason(d: Record<string, unknown>, diskId: string | undefined): string {
  let device = typeof d.device === 'string' && d.device !== '' ? d.device : typeof d['node-name'] === 'string' ? d['node-name'] : 'a disk';
  // QEMU names the drive by its -drive id: say which disk that is (a full state directory, mostly).
  if (diskId !== undefined && device === diskId) device = `the VM's disk ${device}`;
  const what = d.nospace === true ? 'no space left' : typeof d.reason === 'string' ? d.reason : 'error';
  return `I/O error on ${device} (${typeof d.operation === 'string' ? `${d.operation}, ` : ''}${what})`;
}

function causeOf(exit: ProcessExit | null, shutdownReason: string | undefined, panicked: boolean, stopRequested: boolean): ExitCause {
  // Nothing else sends SIGSYS: whatever QEMU was doing, its filter stopped it.
  if (exit?.signal === 'SIGSYS') return SECCOMP_KILL;
  if (panicked) return 'guest panic';
  if (shutdownReason === 'guest-shutdown' || shutdownReason === 'guest-reset') return 'guest shutdown';
  if (stopRequested) return 'killed by the manager';
  if (shutdownReason === 'host-signal' || (exit?.signal ?? null) !== null) return 'host signal';
  if (exit && exit.code !== null) return `exited with code ${exit.code}`;
  return 'unknown';
}

function isCrash(cause: ExitCause, exit: ProcessExit | null): boolean {
  if (cause === 'guest panic' || cause === SECCOMP_KILL) return true;
  if (cause.startsWith('exited with code ')) return exit?.code !== 0;
  // Killed by a signal nobody announced to QEMU (no SHUTDOWN event): e.g. SIGKILL, OOM.
  if (cause === 'host signal') return exit?.signal === 'SIGKILL' || exit?.signal === 'SIGSEGV' || exit?.signal === 'SIGABRT';
  return false;
}

/**
 * One QEMU process: spawned by us (execa, no shell) or re-adopted after a daemon restart.
 * QEMU's stdout (the serial console) and stderr go straight to files in the VM's directory,
 * not through pipes, so QEMU never depends on the daemon staying alive.
 */
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { ConsoleBudget } from './console-budget.js';
import { OutputTail } from './output-tail.js';
import { loadExeca } from './spawner.js';
import { processStartTime } from './proc.js';
import type { QmpChannel } from './qmp.js';

export interface ExitInfo {
  code: number | null;
  signal: string | null;
}

export interface QemuOutput {
  consoleLog: string;
  qemuLog: string;
}

/** What a VM's output may cost: file size (one rotated copy besides) and log lines per second. */
export interface OutputLimits {
  vmId: string;
  logMaxBytes: number;
  linesPerSecond: number;
}

const DEFAULT_LIMITS: Omit<OutputLimits, 'vmId'> = { logMaxBytes: 8 * 1024 * 1024, linesPerSecond: 100 };

const ERROR_LIKE = /\b(error|failed|fatal|cannot|could not|unable|not supported|invalid)\b/i;

interface Tails {
  tails: OutputTail[];
  budgets: ConsoleBudget[];
}

/**
 * How often a re-adopted QEMU's /proc entry is looked at. A lost QMP connection (the first sign
 * of an exit) makes it every 20 ms for a while, so this is only the fallback for a QEMU that
 * exits long after its QMP channel went down; a short period costs CPU at scale for nothing
 * (bench/README.md, "restart at scale").
 */
const ADOPTED_POLL_MS = 5_000;
/** The same while an exit is awaited (RemoveVm, a kill) or QMP has just gone: an exit is seen at once. */
const ADOPTED_STOP_POLL_MS = 20;
/** How long the short period lasts after QMP went away. */
const ADOPTED_HURRY_MS = 30_000;
/** How long a SIGKILLed QEMU may take to be reaped before the stop is reported as failed. */
const KILL_WAIT_MS = 5_000;
/** How long a stop waits for a QMP channel that is down to come back (QEMU retries every second). */
const RECONNECT_WAIT_MS = 2_500;

export class QemuProcess {
  readonly exited: Promise<ExitInfo>;
  private exitInfo: ExitInfo | undefined;
  private readonly tails: OutputTail[];
  /** Adopted QEMUs only: shortens the /proc poll for so long (an exit is awaited). */
  private exitAwaited: ((forMs: number) => void) | undefined;

  private constructor(
    readonly pid: number,
    readonly startTime: string,
    exited: Promise<ExitInfo>,
    { tails, budgets }: Tails,
    /** QEMU's QMP channel; its owner closes it. */
    readonly qmp: QmpChannel | undefined,
  ) {
    this.tails = tails;
    this.exited = exited.then(async (info) => {
      this.exitInfo = info;
      await Promise.all(this.tails.map((t) => t.close()));
      for (const b of budgets) b.close();
      return info;
    });
  }

  get hasExited(): boolean {
    return this.exitInfo !== undefined;
  }

  /** The last lines QEMU wrote to stderr (falling back to the console), for error messages. */
  lastOutput(max = 10): string[] {
    const stderr = this.tails[1]?.recent ?? [];
    const lines = stderr.length > 0 ? stderr : (this.tails[0]?.recent ?? []);
    return lines.slice(-max);
  }

  static async spawn(file: string, args: string[], out: QemuOutput, qmp: QmpChannel, log: Logger, limits?: OutputLimits): Promise<QemuProcess> {
    const { execa } = await loadExeca();
    const stdout = fs.openSync(out.consoleLog, 'a', 0o600);
    const stderr = fs.openSync(out.qemuLog, 'a', 0o600);
    const spawnWith = (stdoutFd: number, stderrFd: number) =>
      execa(file, args, {
        stdin: 'ignore',
        // execa passes any file descriptor through; its types only spell out 3..9.
        stdout: stdoutFd as 3,
        stderr: stderrFd as 3,
        detached: true, // its own process group: a Ctrl-C to the daemon's terminal does not reach QEMU
        cleanup: false, // QEMU outlives the daemon; the next start re-adopts it
        reject: false,
        buffer: false,
      });
    let child: ReturnType<typeof spawnWith>;
    try {
      child = spawnWith(stdout, stderr);
    } finally {
      fs.closeSync(stdout);
      fs.closeSync(stderr);
    }
    // The 'exit' event itself, not execa's result promise: it comes a few ticks sooner.
    const exited = new Promise<ExitInfo>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', () => resolve({ code: null, signal: null }));
    });
    void child.catch(() => undefined);
    const pid = child.pid;
    if (pid === undefined) {
      const r = await child;
      const code = (r as { code?: string }).code;
      const why = code === 'ENOENT' ? 'no such file (check MANAGER_QEMU_BIN_PATH)' : code === 'EACCES' ? 'permission denied' : (r.originalMessage ?? 'spawn failed');
      throw new Error(`cannot run ${JSON.stringify(file)}: ${why}`);
    }
    const tails = QemuProcess.tails(out, log, limits);
    // Following the output needs no waiting for; the start time is needed before any signal.
    for (const t of tails.tails) void t.start(false);
    const startTime = (await processStartTime(pid)) ?? '';
    return new QemuProcess(pid, startTime, exited, tails, qmp);
  }

  /**
   * Takes over a QEMU started by an earlier run of the daemon. Its exit is noticed by polling
   * /proc (it is not our child), comparing the start time so a reused PID reads as "exited".
   */
  static async adopt(pid: number, startTime: string, out: QemuOutput, qmp: QmpChannel, log: Logger, limits?: OutputLimits): Promise<QemuProcess> {
    // Looked at often until this time: after QMP went away, or while an exit is awaited.
    let hurryUntil = 0;
    let wake: (() => void) | undefined;
    const hurry = (forMs: number) => {
      hurryUntil = Math.max(hurryUntil, Date.now() + forMs);
      wake?.();
    };
    // A lost QMP connection is the first sign of an exit. QEMU closes it while it cleans up,
    // before the process is gone (freeing a large guest's memory takes a while): look often.
    qmp.onDisconnect(() => hurry(ADOPTED_HURRY_MS));
    // Until QEMU's QMP channel is back (it reconnects within a second or so), nothing else would
    // tell of an exit: a QEMU that dies right after a daemon restart is looked for often too.
    let qmpBack = qmp.isConnected;
    qmp.onReady(() => {
      qmpBack = true;
    });
    const adoptedAt = Date.now();
    const often = () => Date.now() < hurryUntil || (!qmpBack && Date.now() - adoptedAt < ADOPTED_HURRY_MS);
    // Recovery has just read the start time: the first look is after a wait (or a wake).
    const exited = (async (): Promise<ExitInfo> => {
      do {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, often() ? ADOPTED_STOP_POLL_MS : ADOPTED_POLL_MS);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
      } while ((await processStartTime(pid)) === startTime);
      return { code: null, signal: null };
    })();
    const tails = QemuProcess.tails(out, log, limits);
    const proc = new QemuProcess(pid, startTime, exited, tails, qmp);
    proc.exitAwaited = hurry;
    await Promise.all(tails.tails.map((t) => t.start(true)));
    return proc;
  }

  /**
   * The console (what the guest prints) and QEMU's stderr, each rate-limited into the log and
   * capped on disk: a guest flooding its console must not starve the daemon or fill the disk.
   */
  private static tails(out: QemuOutput, log: Logger, limits?: OutputLimits): Tails {
    const { vmId, logMaxBytes, linesPerSecond } = { vmId: '?', ...DEFAULT_LIMITS, ...limits };
    const consoleBudget = new ConsoleBudget(vmId, 'console', linesPerSecond, log);
    const qemuBudget = new ConsoleBudget(vmId, 'qemu', linesPerSecond, log);
    return {
      tails: [
        new OutputTail(out.consoleLog, (line) => log.info({ stream: 'console' }, line), logMaxBytes, consoleBudget),
        new OutputTail(
          out.qemuLog,
          (line) => (ERROR_LIKE.test(line) ? log.error({ stream: 'qemu' }, line) : log.warn({ stream: 'qemu' }, line)),
          logMaxBytes,
          qemuBudget,
        ),
      ],
      budgets: [consoleBudget, qemuBudget],
    };
  }

  /** Sends a signal only while the PID is still this QEMU (never to a process that reused it). */
  private async signal(sig: NodeJS.Signals): Promise<void> {
    if (this.hasExited) return;
    if ((await processStartTime(this.pid)) !== this.startTime) return;
    try {
      process.kill(this.pid, sig);
    } catch (err) {
      // ESRCH: gone meanwhile. EPERM (a root QEMU under sudo) is not "gone": say so.
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') {
        throw new Error(`cannot send ${sig} to QEMU (pid ${this.pid}): ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
    }
  }

  /**
   * Resolves 'ready' once QEMU has finished starting, as QEMU itself says: QMP has greeted, our
   * capabilities are accepted and query-status answers "running". QEMU connects its QMP
   * channel and answers commands only from its main loop, i.e. after qemu_init() (firmware
   * and kernel loaded, devices realized, host forwards bound). 'exited' if it dies first,
   * 'timeout' after timeoutMs; `status` is QEMU's answer when it is up but not running.
   */
  async waitReady(timeoutMs: number): Promise<{ outcome: 'ready' | 'exited' | 'timeout'; status?: string }> {
    const qmp = this.qmp;
    if (!qmp) throw new Error('no QMP channel');
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<{ outcome: 'timeout' }>((resolve) => {
      timer = setTimeout(() => resolve({ outcome: 'timeout' }), timeoutMs);
    });
    const exited = this.exited.then(() => ({ outcome: 'exited' as const }));
    const ready = (async () => {
      // A connection that drops before answering (QEMU dying) is retried until exit or timeout.
      for (;;) {
        try {
          await qmp.whenConnected();
          const st = await qmp.queryStatus(timeoutMs);
          return { outcome: 'ready' as const, status: st.status };
        } catch {
          if (this.hasExited) return { outcome: 'exited' as const };
          await sleep(5);
        }
      }
    })();
    try {
      const r = await Promise.race([ready, exited, timeout]);
      // QEMU may have exited in the same instant it answered: trust the exit.
      if (r.outcome === 'ready' && this.hasExited) return { outcome: 'exited' };
      return r;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Waits up to timeoutMs for the process to end; true if it did. */
  async waitExit(timeoutMs: number): Promise<boolean> {
    if (this.hasExited) return true;
    this.exitAwaited?.(timeoutMs);
    const timer = new AbortController();
    const done = await Promise.race([
      this.exited.then(() => true),
      sleep(timeoutMs, false, { signal: timer.signal }).catch(() => false),
    ]);
    timer.abort();
    return done;
  }

  /**
   * Stops QEMU: QMP `quit` where QMP is up (it also reaches a root QEMU the daemon cannot
   * signal), else SIGTERM; SIGKILL after timeoutMs. Every wait is bounded: rejects if QEMU is
   * still there after the kill (a signal refused with EPERM, a process in uninterruptible sleep).
   */
  async stop(timeoutMs: number): Promise<{ info: ExitInfo; killed: boolean; via: 'qmp' | 'signal' }> {
    const deadline = Date.now() + timeoutMs;
    let via: 'qmp' | 'signal' = 'signal';
    // A QEMU re-adopted a moment ago may not have reconnected yet (it retries every second):
    // wait for it a little, since a signal may not reach it (root QEMU under sudo).
    if (this.qmp && !this.qmp.isConnected && !this.hasExited) {
      const timer = new AbortController();
      await Promise.race([
        this.qmp.whenConnected().catch(() => undefined),
        this.exited,
        sleep(Math.min(timeoutMs, RECONNECT_WAIT_MS), undefined, { signal: timer.signal }).catch(() => undefined),
      ]);
      timer.abort();
    }
    if (this.qmp?.isConnected) {
      // QEMU answers quit and then exits; it may also exit before the answer is read.
      const asked = this.qmp.quit(timeoutMs).then(
        () => true,
        () => false,
      );
      if ((await Promise.race([asked, this.exited.then(() => true)])) || this.hasExited) via = 'qmp';
    }
    if (via === 'signal' && !this.hasExited) await this.signal('SIGTERM');
    if (await this.waitExit(Math.max(0, deadline - Date.now()))) return { info: await this.exited, killed: false, via };
    await this.signal('SIGKILL');
    if (await this.waitExit(KILL_WAIT_MS)) return { info: await this.exited, killed: true, via };
    throw new Error(`QEMU (pid ${this.pid}) is still running ${KILL_WAIT_MS} ms after SIGKILL`);
  }

  /** Ends QEMU at once (rollback): QMP quit where it is up, SIGKILL otherwise; bounded. */
  async kill(): Promise<ExitInfo> {
    if (this.qmp?.isConnected) {
      await this.qmp.quit(1_000).catch(() => undefined);
      if (await this.waitExit(1_000)) return this.exited;
    }
    await this.signal('SIGKILL');
    if (await this.waitExit(KILL_WAIT_MS)) return this.exited;
    throw new Error(`QEMU (pid ${this.pid}) is still running ${KILL_WAIT_MS} ms after SIGKILL`);
  }
}

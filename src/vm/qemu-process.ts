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
import { listeningOwner, mainThreadIsPolling, processStartTime } from './proc.js';

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

const ADOPTED_POLL_MS = 250;
const FALLBACK_SETTLE_MS = 300;

export class QemuProcess {
  readonly exited: Promise<ExitInfo>;
  private exitInfo: ExitInfo | undefined;
  private readonly tails: OutputTail[];

  private constructor(
    readonly pid: number,
    readonly startTime: string,
    exited: Promise<ExitInfo>,
    { tails, budgets }: Tails,
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

  static async spawn(file: string, args: string[], out: QemuOutput, log: Logger, limits?: OutputLimits): Promise<QemuProcess> {
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
    return new QemuProcess(pid, startTime, exited, tails);
  }

  /**
   * Takes over a QEMU started by an earlier run of the daemon. Its exit is noticed by polling
   * /proc (it is not our child), comparing the start time so a reused PID reads as "exited".
   */
  static async adopt(pid: number, startTime: string, out: QemuOutput, log: Logger, limits?: OutputLimits): Promise<QemuProcess> {
    const exited = (async (): Promise<ExitInfo> => {
      while ((await processStartTime(pid)) === startTime) await sleep(ADOPTED_POLL_MS);
      return { code: null, signal: null };
    })();
    const tails = QemuProcess.tails(out, log, limits);
    const proc = new QemuProcess(pid, startTime, exited, tails);
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
    } catch {
      /* already gone */
    }
  }

  /**
   * Resolves 'ready' once QEMU itself listens on the forwarded port and has finished starting
   * (its main loop waits for events), 'exited' if it dies first, 'timeout' after timeoutMs.
   * The port alone is not enough: QEMU opens its network forwards before it loads the kernel,
   * so a QEMU about to fail on a missing kernel would otherwise look ready.
   */
  async waitListening(port: number, timeoutMs: number): Promise<'ready' | 'exited' | 'timeout'> {
    const deadline = Date.now() + timeoutMs;
    let done = false;
    const exited = this.exited.then(() => 'exited' as const);
    const ready = (async () => {
      const started = Date.now();
      let owner: number | undefined;
      while (!done && Date.now() < deadline) {
        // Once QEMU is seen holding the port, only its settling is left to watch.
        owner ??= await listeningOwner(this.pid, port);
        if (owner !== undefined && (await this.settled(owner))) return 'ready' as const;
        // Fine-grained while a launch is typically finishing, coarser for slow starts (TCG).
        const elapsed = Date.now() - started;
        const step = elapsed < 500 ? 2 : elapsed < 5_000 ? 10 : 50;
        await sleep(Math.min(step, Math.max(0, deadline - Date.now())));
      }
      return 'timeout' as const;
    })();
    try {
      const result = await Promise.race([ready, exited]);
      // QEMU may have exited in the same instant its port was seen: trust the exit.
      return result === 'ready' && this.hasExited ? 'exited' : result;
    } finally {
      done = true;
    }
  }

  /**
   * Two looks in a row at the main thread blocked in a poll-like call. Where /proc will not say
   * (no permission), a fixed settle time stands in for it.
   */
  private async settled(qemuPid: number): Promise<boolean> {
    const first = await mainThreadIsPolling(qemuPid);
    if (first === undefined) {
      await sleep(FALLBACK_SETTLE_MS);
      return !this.hasExited;
    }
    if (!first) return false;
    await sleep(1);
    return (await mainThreadIsPolling(qemuPid)) === true;
  }

  /** SIGTERM, then SIGKILL after timeoutMs; resolves once the process is gone. */
  async stop(timeoutMs: number): Promise<{ info: ExitInfo; killed: boolean }> {
    await this.signal('SIGTERM');
    const timer = new AbortController();
    const graceful = await Promise.race([
      this.exited,
      sleep(timeoutMs, undefined, { signal: timer.signal }).catch(() => undefined),
    ]);
    timer.abort(); // no stop timeout left pending once QEMU is gone
    if (graceful) return { info: graceful, killed: false };
    await this.signal('SIGKILL');
    return { info: await this.exited, killed: true };
  }

  async kill(): Promise<ExitInfo> {
    await this.signal('SIGKILL');
    return this.exited;
  }
}

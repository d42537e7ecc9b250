/**
 * How many of a VM's console lines reach the daemon's log: a token bucket per VM and stream, and
 * one summary line per window for what was left out. The whole console stays in the VM's
 * console.log (capped and rotated by OutputTail).
 */
import type { Logger } from 'pino';
import { TokenBucket } from '../util/token-bucket.js';
import type { LineBudget } from './output-tail.js';

export const SUMMARY_WINDOW_MS = 10_000;

export class ConsoleBudget implements LineBudget {
  private readonly bucket: TokenBucket;
  private droppedLines = 0;
  private unreadBytes = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly vmId: string,
    private readonly stream: 'console' | 'qemu',
    linesPerSecond: number,
    private readonly log: Logger,
  ) {
    // A boot prints a few hundred lines at once: ten seconds' worth may come in one go.
    this.bucket = new TokenBucket(linesPerSecond, Math.max(1, linesPerSecond * 10));
    this.timer = setInterval(() => this.summarize(), SUMMARY_WINDOW_MS).unref();
  }

  take(): boolean {
    return this.bucket.take();
  }

  spent(): boolean {
    return this.bucket.empty();
  }

  dropped(lines: number): void {
    this.droppedLines += lines;
  }

  skippedBytes(bytes: number): void {
    this.unreadBytes += bytes;
  }

  private summarize(): void {
    if (this.droppedLines === 0 && this.unreadBytes === 0) return;
    const n = this.droppedLines;
    const unread = this.unreadBytes;
    this.droppedLines = 0;
    this.unreadBytes = 0;
    const also = unread > 0 ? `; ${(unread / 2 ** 20).toFixed(1)} MiB more were written faster than they could be read` : '';
    this.log.warn(
      { stream: this.stream, lines_not_logged: n, bytes_not_read: unread, window_s: SUMMARY_WINDOW_MS / 1000 },
      `VM ${this.vmId}: ${n.toLocaleString('en-US')} ${this.stream} lines not logged in the last ${SUMMARY_WINDOW_MS / 1000} s${also} (rate limit; the recent output is in the VM's log files, capped by MANAGER_CONSOLE_LOG_MAX_SIZE)`,
    );
  }

  /** The last summary, then no more timers. */
  close(): void {
    clearInterval(this.timer);
    this.summarize();
  }
}

/**
 * Follows a file QEMU writes (its stdout or stderr, opened O_APPEND and handed to it directly so
 * QEMU keeps running when the daemon restarts), forwards complete lines and keeps the file under
 * a size cap by rotating it to `<file>.1` (copy, then truncate: QEMU keeps its descriptor, and
 * O_APPEND puts its next write at the new end).
 *
 * A guest controls what its console says and how fast. Lines reach `onLine` only while the
 * budget allows; the rest are counted without being decoded, so a flood costs a scan for
 * newlines, not a string, a regex and a log line per line.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';

const ANSI_ESCAPE = /\x1b\[[0-9;=?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1bc/g;
const NEWLINE = 0x0a;
const READ_CHUNK = 256 * 1024;
const MAX_LINE = 16 * 1024;
/** Unread output beyond this is skipped rather than read: nobody could log it anyway. */
const SKIP_BEYOND = 1024 * 1024;
const SKIP_BEYOND_WHEN_SPENT = 64 * 1024;
const SPENT_POLL_MS = 100;

/**
 * Read buffers, shared by every tail: a buffer is only in use while one read round runs, and
 * the rounds of hundreds of idle VMs need a handful, not 256 KiB each (500 VMs held 250 MiB).
 */
const spareChunks: Buffer[] = [];
const MAX_SPARE_CHUNKS = 4;
function takeChunk(): Buffer {
  return spareChunks.pop() ?? Buffer.allocUnsafe(READ_CHUNK);
}
function giveChunk(b: Buffer): void {
  if (spareChunks.length < MAX_SPARE_CHUNKS) spareChunks.push(b);
}

/** Decides, line by line, whether a line is passed on; told how many were not. */
export interface LineBudget {
  take(): boolean;
  /** No line could be passed on now (nothing is taken). */
  spent(): boolean;
  dropped(lines: number): void;
  /** Output skipped unread (the writer is far ahead). */
  skippedBytes(bytes: number): void;
}

function sizeOf(fd: number): number | undefined {
  try {
    return fs.fstatSync(fd).size;
  } catch {
    return undefined;
  }
}

const UNLIMITED: LineBudget = { take: () => true, spent: () => false, dropped: () => undefined, skippedBytes: () => undefined };

export class OutputTail {
  private position = 0;
  private partial: Buffer = Buffer.alloc(0);
  private watcher: fs.FSWatcher | undefined;
  private reading: Promise<void> | undefined;
  private again = false;
  private closed = false;
  /** After a skip: the first (cut) line is not a line. */
  private resync = false;
  /** Held open (read-write: ftruncate needs it) so the check on each change is one fstat. */
  private capFd: number | undefined;
  private rotating = false;
  private truncatedDuringCopy = false;
  private truncating = false;
  /** The descriptor to close once no copy or truncation can still use its number. */
  private closingFd: number | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  /** The last lines seen, for error messages when QEMU fails to start. */
  readonly recent: string[] = [];
  /**
   * Rotation starts at three quarters of the cap: the writer keeps writing while a rotation
   * runs, and the last quarter is its room to do so without passing the cap.
   */
  private readonly rotateAt: number;
  private readonly capBytes: number;

  constructor(
    private readonly file: string,
    private readonly onLine: (line: string) => void,
    capBytes = 1024 * 1024,
    private readonly budget: LineBudget = UNLIMITED,
    private readonly keepRecent = 20,
  ) {
    this.capBytes = capBytes;
    this.rotateAt = Math.floor((capBytes * 3) / 4);
  }

  /** Starts following; `fromEnd` skips what is already there (a re-adopted VM's old output). */
  async start(fromEnd: boolean): Promise<void> {
    if (fromEnd) {
      try {
        this.position = (await fsp.stat(this.file)).size;
      } catch {
        this.position = 0;
      }
    }
    try {
      this.capFd = fs.openSync(this.file, 'r+');
    } catch {
      /* not there or not ours to write: followed, not rotated */
    }
    try {
      this.watcher = fs.watch(this.file, { persistent: false }, () => {
        this.rotateIfFull();
        this.pollSoon();
      });
      this.watcher.on('error', () => undefined);
    } catch {
      /* file gone: nothing to follow */
    }
    await this.poll();
  }

  /**
   * A poll on each change, except while the budget is spent: then at most one per
   * SPENT_POLL_MS (nothing read could be logged; the rotation check above still runs each time).
   */
  private pollSoon(): void {
    if (!this.budget.spent()) {
      void this.poll();
      return;
    }
    if (this.pollTimer) return;
    this.pollTimer = setTimeout(() => {
      this.pollTimer = undefined;
      void this.poll();
    }, SPENT_POLL_MS);
    this.pollTimer.unref();
  }

  /** Reads what was appended since the last call; concurrent calls coalesce. */
  poll(): Promise<void> {
    if (this.reading) {
      this.again = true;
      return this.reading;
    }
    this.reading = (async () => {
      do {
        this.again = false;
        await this.readNew();
      } while (this.again && !this.closed);
    })().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  private async readNew(): Promise<void> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.file, 'r');
    } catch {
      return;
    }
    try {
      const { size } = await fh.stat();
      if (size < this.position) this.position = 0; // rotated or truncated
      // Over the threshold: rotate first, read afterwards (what was not read yet is in <file>.1).
      if (size >= this.rotateAt && this.rotateIfFull()) return;
      // Far behind (a flood): what lies beyond the last window is not read, only counted. With
      // the budget spent, the window is small: reading only to count lines costs CPU too.
      const window = this.budget.spent() ? SKIP_BEYOND_WHEN_SPENT : SKIP_BEYOND;
      if (size - this.position > window) {
        this.budget.skippedBytes(size - window - this.position);
        this.position = size - window;
        this.resync = true;
      }
      if (this.position < size) {
        const chunk = takeChunk();
        try {
          while (this.position < size) {
            const { bytesRead } = await fh.read(chunk, 0, Math.min(READ_CHUNK, size - this.position), this.position);
            if (bytesRead === 0) break;
            this.position += bytesRead;
            this.consume(chunk.subarray(0, bytesRead));
          }
        } finally {
          giveChunk(chunk);
        }
      }
    } catch {
      /* file removed under us (VM removed) */
    } finally {
      await fh.close();
    }
  }

  /**
   * When the file has reached the rotation threshold: `<file>.1` gets the file as it is, then
   * the file is emptied. Checked on every change QEMU makes (one fstat on a descriptor held
   * open); the copy is one kernel-side operation off the event loop, the truncation follows it
   * at once. A round through several thread-pool operations took long enough on a loaded
   * machine for a flood to run far past the cap. What the writer adds between the copy and the
   * truncation is lost (an instant's worth).
   */
  private rotateIfFull(): boolean {
    const fd = this.capFd;
    if (fd === undefined) return false;
    let size: number;
    try {
      size = fs.fstatSync(fd).size; // microseconds; everything that frees pages runs off the loop
    } catch {
      return false;
    }
    if (this.rotating) {
      // The copy is slower than the writer (a loaded disk): the cap is kept at the cost of what
      // the copy did not get, which is counted as not read.
      if (size >= this.capBytes && !this.truncating) {
        this.truncatedDuringCopy = true;
        this.truncate(fd, size);
      }
      return true;
    }
    if (size < this.rotateAt) return false;
    this.rotating = true;
    this.truncatedDuringCopy = false;
    const tmp = `${this.file}.1.tmp`;
    void (async () => {
      try {
        await fsp.copyFile(this.file, tmp);
        if (this.capFd === undefined) return;
        // The copy may have caught some of what was written while it ran: at most the cap is kept.
        if ((await fsp.stat(tmp)).size > this.capBytes) await fsp.truncate(tmp, this.capBytes);
        await fsp.rename(tmp, `${this.file}.1`);
        if (!this.truncatedDuringCopy && !this.truncating) await this.truncate(fd, fs.fstatSync(fd).size);
      } catch {
        /* removed (VM removed) or unwritable: the next change tries again */
      } finally {
        this.rotating = false;
        this.closeFdWhenIdle();
      }
    })();
    return true;
  }

  private closeFdWhenIdle(): void {
    if (this.closingFd === undefined || this.rotating || this.truncating) return;
    fs.closeSync(this.closingFd);
    this.closingFd = undefined;
  }

  /** Empties the file (QEMU's descriptor is O_APPEND: its next write lands at the new end). */
  private async truncate(fd: number, upTo: number): Promise<void> {
    if (this.capFd !== fd) return; // closed meanwhile: the number may belong to another file soon
    this.truncating = true;
    try {
      await new Promise<void>((resolve, reject) => fs.ftruncate(fd, 0, (err) => (err ? reject(err) : resolve())));
    } catch {
      return;
    } finally {
      this.truncating = false;
      this.closeFdWhenIdle();
    }
    if (upTo > this.position) this.budget.skippedBytes(upTo - this.position);
    this.position = 0;
    this.resync = this.partial.length > 0;
    this.partial = Buffer.alloc(0);
    this.again = this.reading !== undefined; // a round in progress reads again from the start
  }

  private consume(buf: Buffer): void {
    let start = 0;
    let nl = buf.indexOf(NEWLINE, start);
    let skipped = 0;
    if (this.resync && nl !== -1) {
      this.resync = false;
      this.partial = Buffer.alloc(0);
      start = nl + 1;
      nl = buf.indexOf(NEWLINE, start);
    }
    while (nl !== -1) {
      if (this.budget.take()) {
        const line = this.partial.length > 0 ? Buffer.concat([this.partial, buf.subarray(start, nl)]) : buf.subarray(start, nl);
        this.emit(line.toString('utf8'));
      } else {
        skipped++;
      }
      this.partial = Buffer.alloc(0);
      start = nl + 1;
      nl = buf.indexOf(NEWLINE, start);
    }
    if (skipped > 0) this.budget.dropped(skipped);
    if (start < buf.length) {
      // Copied: the read buffer is reused.
      const rest = Buffer.from(buf.subarray(start));
      this.partial = this.partial.length > 0 ? Buffer.concat([this.partial, rest]) : rest;
      if (this.partial.length > MAX_LINE) {
        const line = this.partial;
        this.partial = Buffer.alloc(0);
        if (this.budget.take()) this.emit(line.toString('utf8'));
        else this.budget.dropped(1);
      }
    }
  }

  private emit(raw: string): void {
    // The firmware paints the serial console with terminal escapes; the log gets the text.
    const line = raw.replace(/\r$/, '').replace(ANSI_ESCAPE, '');
    if (line.trim() === '') return;
    this.recent.push(line);
    if (this.recent.length > this.keepRecent) this.recent.shift();
    this.onLine(line);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watcher?.close();
    clearTimeout(this.pollTimer);
    // Usually everything was read already: then no round of reads (four thread-pool hops on
    // RemoveVm's path once QEMU has exited) is needed to find that out.
    const unread = this.reading !== undefined || this.rotating || this.truncating || this.capFd === undefined || sizeOf(this.capFd) !== this.position;
    this.closingFd = this.capFd;
    this.capFd = undefined;
    this.closeFdWhenIdle();
    if (unread) await this.poll();
    if (this.partial.length > 0) {
      const line = this.partial.toString('utf8');
      this.partial = Buffer.alloc(0);
      if (line.trim() !== '') {
        this.recent.push(line);
        this.onLine(line);
      }
    }
  }
}

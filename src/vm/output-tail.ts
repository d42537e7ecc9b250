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

/** Decides, line by line, whether a line is passed on; told how many were not. */
export interface LineBudget {
  take(): boolean;
  dropped(lines: number): void;
}

const UNLIMITED: LineBudget = { take: () => true, dropped: () => undefined };

export class OutputTail {
  private position = 0;
  private partial: Buffer = Buffer.alloc(0);
  private watcher: fs.FSWatcher | undefined;
  private reading: Promise<void> | undefined;
  private again = false;
  private closed = false;
  private readonly chunk = Buffer.allocUnsafe(READ_CHUNK);
  /** The last lines seen, for error messages when QEMU fails to start. */
  readonly recent: string[] = [];

  constructor(
    private readonly file: string,
    private readonly onLine: (line: string) => void,
    private readonly capBytes = 1024 * 1024,
    private readonly budget: LineBudget = UNLIMITED,
    private readonly keepRecent = 20,
  ) {}

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
      this.watcher = fs.watch(this.file, { persistent: false }, () => void this.poll());
      this.watcher.on('error', () => undefined);
    } catch {
      /* file gone: nothing to follow */
    }
    await this.poll();
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
      let { size } = await fh.stat();
      if (size < this.position) this.position = 0; // rotated or truncated
      while (this.position < size) {
        const { bytesRead } = await fh.read(this.chunk, 0, Math.min(READ_CHUNK, size - this.position), this.position);
        if (bytesRead === 0) break;
        this.position += bytesRead;
        this.consume(this.chunk.subarray(0, bytesRead));
        // Rotate as soon as the cap is passed, not after catching up with a flood.
        if (this.position > this.capBytes) break;
      }
      ({ size } = await fh.stat());
      if (size > this.capBytes) {
        await fsp.copyFile(this.file, `${this.file}.1`);
        await fh.truncate(0); // QEMU's descriptor is O_APPEND: its next write lands at the new end
        this.position = 0;
        this.again = true; // what was written meanwhile is read on the next round
      }
    } catch {
      /* file removed under us (VM removed) */
    } finally {
      await fh.close();
    }
  }

  private consume(buf: Buffer): void {
    let start = 0;
    let nl = buf.indexOf(NEWLINE, start);
    let skipped = 0;
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
    await this.poll();
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

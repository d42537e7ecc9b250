/**
 * Follows a file QEMU writes (its stdout or stderr, opened O_APPEND and handed to it directly so
 * QEMU keeps running when the daemon restarts), forwards each complete line and keeps the file
 * under a size cap by rotating it to `<file>.1`.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';

const ANSI_ESCAPE = /\x1b\[[0-9;=?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1bc/g;

export class OutputTail {
  private position = 0;
  private partial = '';
  private watcher: fs.FSWatcher | undefined;
  private reading: Promise<void> | undefined;
  private again = false;
  private closed = false;
  /** The last lines seen, for error messages when QEMU fails to start. */
  readonly recent: string[] = [];

  constructor(
    private readonly file: string,
    private readonly onLine: (line: string) => void,
    private readonly capBytes = 1024 * 1024,
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
      const { size } = await fh.stat();
      if (size < this.position) this.position = 0; // rotated or truncated
      while (this.position < size) {
        const buf = Buffer.alloc(Math.min(64 * 1024, size - this.position));
        const { bytesRead } = await fh.read(buf, 0, buf.length, this.position);
        if (bytesRead === 0) break;
        this.position += bytesRead;
        this.consume(buf.subarray(0, bytesRead).toString('utf8'));
      }
      if (size > this.capBytes) {
        await fsp.copyFile(this.file, `${this.file}.1`);
        await fh.truncate(0); // QEMU's descriptor is O_APPEND: its next write lands at the new end
        this.position = 0;
      }
    } catch {
      /* file removed under us (VM removed) */
    } finally {
      await fh.close();
    }
  }

  private consume(text: string): void {
    const parts = (this.partial + text).split(/\r?\n/);
    this.partial = parts.pop() ?? '';
    if (this.partial.length > 16 * 1024) {
      parts.push(this.partial);
      this.partial = '';
    }
    for (const raw of parts) {
      // The firmware paints the serial console with terminal escapes; the log gets the text.
      const line = raw.replace(ANSI_ESCAPE, '');
      if (line.trim() === '') continue;
      this.recent.push(line);
      if (this.recent.length > this.keepRecent) this.recent.shift();
      this.onLine(line);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watcher?.close();
    await this.poll();
    if (this.partial.trim() !== '') {
      this.recent.push(this.partial);
      this.onLine(this.partial);
      this.partial = '';
    }
  }
}

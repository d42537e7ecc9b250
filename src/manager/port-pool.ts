/**
 * Host ports for the agents' forwards, from MANAGER_QEMU_HOST_FWD_RANGE. A port is handed out
 * only if no VM of this manager holds it and no other process listens on it. Reservation is
 * synchronous before the (async) probe, so two concurrent CreateVm never get the same port.
 * Allocation goes round the range, so a port just freed is the last to be reused.
 */
import type { PortRange } from '../config/types.js';

export type PortProbe = (port: number) => Promise<boolean>;

export class PortPool {
  private readonly held = new Set<number>();
  private cursor: number;

  constructor(
    private readonly range: PortRange,
    private readonly isFree: PortProbe,
  ) {
    this.cursor = range.first;
  }

  get size(): number {
    return this.range.last - this.range.first + 1;
  }

  get heldCount(): number {
    return this.held.size;
  }

  /** Resolves a free port, or undefined when every port of the range is taken. */
  async acquire(): Promise<number | undefined> {
    for (let tried = 0; tried < this.size; tried++) {
      const port = this.cursor;
      this.cursor = port >= this.range.last ? this.range.first : port + 1;
      if (this.held.has(port)) continue;
      this.held.add(port);
      let free = false;
      try {
        free = await this.isFree(port);
      } catch {
        free = false;
      }
      if (free) return port;
      this.held.delete(port);
    }
    return undefined;
  }

  /** Marks a port as held by a re-adopted VM. */
  hold(port: number): void {
    this.held.add(port);
  }

  release(port: number): void {
    this.held.delete(port);
  }

  isHeld(port: number): boolean {
    return this.held.has(port);
  }
}

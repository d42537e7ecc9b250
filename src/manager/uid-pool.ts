/**
 * The uids of MANAGER_VM_UID_RANGE, one per VM while the VM exists (its QEMU runs as it and its
 * files belong to it).
 *
 * A uid is handed out only if no VM of this daemon holds it and no process runs as it (another
 * daemon sharing the range, or something a QEMU left behind). A released uid is retired first:
 * every process still running as it is killed (an escaped QEMU's detached child would otherwise
 * share the next tenant's uid), and it is free again only once none is left. Allocation goes
 * round the range, so a uid just freed is the last to be reused.
 */
export interface UidProcesses {
  /** The uids that own a process now. */
  inUse(): Set<number>;
  /** SIGKILLs every process running as `uid`; how many were still there. */
  killAll(uid: number): number;
}

const RETIRE_RETRY_MS = 1_000;

export class UidPool {
  private readonly held = new Set<number>();
  private cursor: number;

  constructor(
    private readonly range: { first: number; last: number },
    private readonly processes: UidProcesses,
    /** Told when a uid cannot be freed because processes of it survive SIGKILL. */
    private readonly onStuck: (uid: number, left: number) => void = () => undefined,
  ) {
    this.cursor = range.first;
  }

  get size(): number {
    return this.range.last - this.range.first + 1;
  }

  includes(uid: number): boolean {
    return uid >= this.range.first && uid <= this.range.last;
  }

  /** A free uid, now held; undefined when every uid of the range is held or busy. */
  acquire(): number | undefined {
    const busy = this.processes.inUse();
    for (let tried = 0; tried < this.size; tried++) {
      const uid = this.cursor;
      this.cursor = uid >= this.range.last ? this.range.first : uid + 1;
      if (this.held.has(uid) || busy.has(uid)) continue;
      this.held.add(uid);
      return uid;
    }
    return undefined;
  }

  /** Marks a uid as held by a VM an earlier run started. */
  hold(uid: number): void {
    this.held.add(uid);
  }

  /**
   * The VM is gone: its uid is retired (its processes killed) and then free again. Off the
   * caller's path (a look at every process's status), the uid held until it is done.
   */
  release(uid: number): void {
    const attempt = (n: number) => {
      const left = this.processes.killAll(uid);
      if (left === 0) {
        this.held.delete(uid);
        return;
      }
      // Killed now; reaped (or stuck in the kernel) shortly. Held until nothing runs as it.
      if (n === 5) this.onStuck(uid, left);
      setTimeout(() => attempt(n + 1), RETIRE_RETRY_MS).unref();
    };
    setImmediate(() => attempt(0));
  }
}

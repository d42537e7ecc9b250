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
  /** SIGKILLs every process running as one of `uids` (one look at every process): how many of each were still there. */
  killAll(uids: ReadonlySet<number>): Map<number, number>;
}

const RETIRE_RETRY_MS = 1_000;

export class UidPool {
  private readonly held = new Set<number>();
  /** Released uids whose processes are still to be killed (held meanwhile). */
  private readonly retiring = new Map<number, number>();
  /** The retirement due in this turn's check phase, or the retry of one that left processes. */
  private retireSoon: NodeJS.Immediate | undefined;
  private retireRetry: NodeJS.Timeout | undefined;
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
    const uid = this.pick();
    if (uid !== undefined || this.retiring.size === 0) return uid;
    // None free but some being retired: retire them now rather than refuse the VM.
    this.retireNow();
    return this.pick();
  }

  /** Retires the uids released and not retired yet, now (before the daemon exits, say). */
  retireNow(): void {
    if (this.retiring.size === 0) return;
    this.retire();
  }

  private pick(): number | undefined {
    // Looked at for every VM: another daemon's QEMU may have started as any uid a moment ago.
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
   * The VM is gone: its uid is retired (its processes killed) and then free again, the uid held
   * until it is done; the uids released in the same turn (a burst of RemoveVm) share one look at
   * every process. In the same turn of the event loop, so the processes are listed before the
   * RemoveVm caller can act on the answer, although the look then costs RemoveVm ~1.5 ms on a
   * loaded 2-core host: once its QEMU is gone the uid looks free to another daemon wrongly
   * sharing the range, and a QEMU that daemon started as it before the listing would be killed
   * (seen with a retirement 50 ms later: two daemons of one bench figure).
   */
  release(uid: number): void {
    if (!this.retiring.has(uid)) this.retiring.set(uid, 0);
    this.retireSoon ??= setImmediate(() => this.retire());
  }

  private retire(): void {
    clearImmediate(this.retireSoon);
    clearTimeout(this.retireRetry);
    this.retireSoon = undefined;
    this.retireRetry = undefined;
    const left = this.processes.killAll(new Set(this.retiring.keys()));
    for (const [uid, tries] of this.retiring) {
      const n = left.get(uid) ?? 0;
      if (n === 0) {
        this.retiring.delete(uid);
        this.held.delete(uid);
        continue;
      }
      // Killed now; reaped (or stuck in the kernel) shortly. Held until nothing runs as it.
      if (tries === 5) this.onStuck(uid, n);
      this.retiring.set(uid, tries + 1);
    }
    if (this.retiring.size > 0) this.retireRetry = setTimeout(() => this.retire(), RETIRE_RETRY_MS).unref();
  }
}

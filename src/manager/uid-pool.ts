/**
 * The uids of MANAGER_VM_UID_RANGE, one per VM while the VM exists (its QEMU runs as it and its
 * files belong to it), free again once the VM is gone. Lowest free first: uids are not secrets,
 * and a small working set keeps `ps` and the firewall's counters readable.
 */
export class UidPool {
  private readonly held = new Set<number>();

  constructor(private readonly range: { first: number; last: number }) {}

  get size(): number {
    return this.range.last - this.range.first + 1;
  }

  includes(uid: number): boolean {
    return uid >= this.range.first && uid <= this.range.last;
  }

  /** A free uid, now held; undefined when every uid of the range is. */
  acquire(): number | undefined {
    for (let uid = this.range.first; uid <= this.range.last; uid++) {
      if (this.held.has(uid)) continue;
      this.held.add(uid);
      return uid;
    }
    return undefined;
  }

  /** Marks a uid as held by a VM an earlier run started. */
  hold(uid: number): void {
    this.held.add(uid);
  }

  release(uid: number): void {
    this.held.delete(uid);
  }
}

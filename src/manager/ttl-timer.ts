/**
 * A timer for a wall-clock deadline, never early: Node's setTimeout fires at once beyond 2^31-1 ms
 * (24.8 days), so long TTLs re-arm, and it can fire before the deadline on a busy loop (below).
 */
const MAX_DELAY = 2_147_483_647;

export class TtlTimer {
  private handle: NodeJS.Timeout | undefined;

  constructor(
    private readonly at: number,
    private readonly fire: () => void,
    private readonly now: () => number = Date.now,
  ) {
    this.arm();
  }

  private arm(): void {
    const left = this.at - this.now();
    if (left <= 0) {
      this.handle = setTimeout(this.fire, 0);
    } else {
      // Node measures a timeout from the event loop's cached time, which on a busy loop lags the
      // clock: the callback can come before `at` by as much. Then it waits for the rest.
      this.handle = setTimeout(() => this.arm(), Math.min(left, MAX_DELAY));
    }
    this.handle.unref();
  }

  cancel(): void {
    if (this.handle) clearTimeout(this.handle);
    this.handle = undefined;
  }
}

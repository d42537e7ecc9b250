/** A token bucket: `ratePerSecond` tokens a second, at most `burst` saved up. Pure (the clock is given). */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.last = now();
  }

  take(): boolean {
    if (this.empty()) return false;
    this.tokens--;
    return true;
  }

  /** No token now (refilled first; nothing is taken). */
  empty(): boolean {
    if (this.tokens < 1) {
      const t = this.now();
      this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.ratePerSecond);
      this.last = t;
    }
    return this.tokens < 1;
  }
}

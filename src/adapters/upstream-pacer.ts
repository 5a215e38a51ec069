import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';

/**
 * Paces upstream calls for the gateway as a whole: every instance takes its slots from the same limiter,
 * so when the limiter lives in a shared store (Redis, PostgreSQL) all instances together stay under the limit.
 */
export class UpstreamPacer {
  private readonly key = 'duplicate';

  constructor(private readonly limiter: RateLimiterAbstract) {}

  /** Takes a slot: 0 when granted, otherwise how long until the next one. Rejects when the limiter's store fails. */
  async take(): Promise<number> {
    try {
      await this.limiter.consume(this.key);
      return 0;
    } catch (rejection) {
      // rate-limiter-flexible rejects with a RateLimiterRes when the window is spent, with an Error when its store fails.
      if (rejection instanceof RateLimiterRes) return Math.max(1, rejection.msBeforeNext);
      throw rejection;
    }
  }

  /**
   * The upstream said its own window is spent: no instance sends anything before `ms` have passed (0 when the
   * upstream gave no time), nor before the current window ends. Blocking replaces the window, and a block shorter
   * than what is left of it would open a fresh one early, with every slot free again. Resolves to how long
   * sending is held back.
   */
  async pause(ms: number): Promise<number> {
    const current = await this.limiter.get(this.key);
    if (current && current.consumedPoints > this.limiter.points && current.msBeforeNext >= ms) return current.msBeforeNext;
    const windowLeft = current && current.msBeforeNext > 0 ? current.msBeforeNext : 0;
    // With neither a time from the upstream nor a window under way, the window a call would open now is the one to wait out.
    const holdMs = ms > 0 || windowLeft > 0 ? Math.max(ms, windowLeft) : this.limiter.duration * 1000;
    // At least a second: a block of 0 seconds never ends.
    const seconds = Math.max(1, Math.ceil(holdMs / 1000));
    await this.limiter.block(this.key, seconds);
    return seconds * 1000;
  }
}

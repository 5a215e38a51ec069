import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';

/**
 * Paces upstream calls for the gateway as a whole: every instance takes its slots from the same limiter,
 * so when the limiter lives in a shared store (Redis, PostgreSQL) all instances together stay under the limit.
 */
export class UpstreamPacer {
  constructor(
    private readonly limiter: RateLimiterAbstract,
    private readonly key = 'duplicate',
  ) {}

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
   * The upstream said its own window is spent: no instance sends anything before `ms` have passed, nor before
   * the current window ends. Blocking replaces the window, and a block shorter than what is left of it would
   * open a fresh one early, with every slot free again.
   */
  async pause(ms: number): Promise<void> {
    const current = await this.limiter.get(this.key);
    if (current && current.consumedPoints > this.limiter.points && current.msBeforeNext >= ms) return;
    await this.limiter.block(this.key, Math.ceil(Math.max(ms, current?.msBeforeNext ?? 0) / 1000));
  }
}

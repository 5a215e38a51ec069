import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { UpstreamPause } from '../domain/ports.js';

/**
 * Paces upstream calls for the gateway as a whole: every instance takes its slots from the same limiter,
 * so when the limiter lives in a shared store (Redis, PostgreSQL) all instances together stay under the limit.
 */
export class UpstreamPacer implements UpstreamPause {
  private readonly key = 'duplicate';
  /**
   * Set, in the same limiter, while a hold the upstream asked for may last. The window's own key cannot say it:
   * a window merely spent, with more calls refused since, counts past the limit as a hold does.
   */
  private readonly pausedKey = 'paused';

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
    let heldMs: number;
    if (current && current.consumedPoints > this.limiter.points && current.msBeforeNext >= ms) {
      heldMs = current.msBeforeNext;
    } else {
      const windowLeft = current && current.msBeforeNext > 0 ? current.msBeforeNext : 0;
      // With neither a time from the upstream nor a window under way, the window a call would open now is the one to wait out.
      const holdMs = ms > 0 || windowLeft > 0 ? Math.max(ms, windowLeft) : this.limiter.duration * 1000;
      // At least a second: a block of 0 seconds never ends.
      const seconds = Math.max(1, Math.ceil(holdMs / 1000));
      await this.limiter.block(this.key, seconds);
      heldMs = seconds * 1000;
    }
    // The mark may outlast the hold by part of a second (blocks are whole seconds): remainingMs reads the hold itself.
    const marked = await this.limiter.get(this.pausedKey);
    if (!marked || marked.msBeforeNext < heldMs) await this.limiter.block(this.pausedKey, Math.max(1, Math.ceil(heldMs / 1000)));
    return heldMs;
  }

  /**
   * What is left of the hold the upstream asked for, read from the shared limiter, so a pause another instance met
   * counts here too. A window that is only spent is no pause: the gateway's own pace, not the upstream's word.
   */
  async remainingMs(): Promise<number> {
    if (!(await this.limiter.get(this.pausedKey))) return 0;
    const hold = await this.limiter.get(this.key);
    return hold && hold.consumedPoints > this.limiter.points ? Math.max(0, hold.msBeforeNext) : 0;
  }
}

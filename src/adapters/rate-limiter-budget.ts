import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Budget } from '../domain/ports.js';

/** A budget on any rate-limiter-flexible limiter: its `points` per `duration`. */
export class RateLimiterBudget implements Budget {
  constructor(private readonly limiter: RateLimiterAbstract) {}

  async take(name: string, points = 1): ReturnType<Budget['take']> {
    try {
      await this.limiter.consume(name, points);
      return { granted: true };
    } catch (rejection) {
      if (rejection instanceof RateLimiterRes) {
        // The library counts a refused take too: given back, a smaller take still fits what was left. A take of one
        // point leaves nothing smaller to fit, and is not worth another write to a shared store on every refusal.
        if (points > 1) await this.limiter.reward(name, points).catch(() => undefined);
        return { granted: false, retryAfterMs: rejection.msBeforeNext };
      }
      // The limiter's store failed: a refusal is still worth recording, a download still worth serving.
      return { granted: true };
    }
  }
}

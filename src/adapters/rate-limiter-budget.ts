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
      if (rejection instanceof RateLimiterRes) return { granted: false, retryAfterMs: rejection.msBeforeNext };
      // The limiter's store failed: a refusal is still worth recording, a download still worth serving, a read still
      // worth answering.
      return { granted: true };
    }
  }
}

import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Budget } from '../domain/ports.js';
import { windowOf } from './limiter-window.js';

/** A budget on any rate-limiter-flexible limiter: its `points` per `duration`. */
export class RateLimiterBudget implements Budget {
  constructor(private readonly limiter: RateLimiterAbstract) {}

  async take(name: string, points = 1): ReturnType<Budget['take']> {
    try {
      // The library counts a take it refuses, which would refuse the smaller takes that still fit: one that cannot fit
      // is refused here without being counted. A take of one point leaves nothing smaller to fit.
      if (points > 1) {
        const spent = await this.limiter.get(name);
        if (spent && spent.consumedPoints + points > this.limiter.points) return { granted: false, retryAfterMs: spent.msBeforeNext };
      }
      await this.limiter.consume(name, points);
      return { granted: true };
    } catch (rejection) {
      if (rejection instanceof RateLimiterRes) {
        // A take that raced another past the check: given back while its window lasts, never to the next one.
        if (points > 1) await windowOf(rejection)?.giveBack(points).catch(() => undefined);
        return { granted: false, retryAfterMs: rejection.msBeforeNext };
      }
      // The limiter's store failed: a refusal is still worth recording, a download still worth serving.
      return { granted: true };
    }
  }
}

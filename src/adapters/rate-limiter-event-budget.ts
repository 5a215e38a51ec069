import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { EventBudget } from '../domain/ports.js';

/** An event budget on any rate-limiter-flexible limiter: its `points` events per `duration`. */
export class RateLimiterEventBudget implements EventBudget {
  constructor(private readonly limiter: RateLimiterAbstract) {}

  async take(name: string): ReturnType<EventBudget['take']> {
    try {
      await this.limiter.consume(name);
      return { granted: true };
    } catch (rejection) {
      if (rejection instanceof RateLimiterRes) return { granted: false, retryAfterMs: rejection.msBeforeNext };
      // The limiter's store failed: a refusal is still worth recording, a download still worth serving.
      return { granted: true };
    }
  }
}

import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { EventBudget } from '../domain/ports.js';

/** An event budget on any rate-limiter-flexible limiter: its `points` events per `duration`. */
export class RateLimiterEventBudget implements EventBudget {
  constructor(private readonly limiter: RateLimiterAbstract) {}

  async take(name: string): Promise<boolean> {
    try {
      await this.limiter.consume(name);
      return true;
    } catch (rejection) {
      if (rejection instanceof RateLimiterRes) return false;
      // The limiter's store failed: a refusal is still worth recording.
      return true;
    }
  }
}

import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { GatewayError } from '../domain/errors.js';
import type { AuthFailureLimiter } from '../domain/ports.js';

/**
 * Failed authentications counted with any rate-limiter-flexible limiter (memory, Redis, PostgreSQL).
 * Give the limiter a `blockDuration` to keep a client out for longer than the counting window.
 */
export class RateLimiterAuthFailures implements AuthFailureLimiter {
  constructor(private readonly limiter: RateLimiterAbstract) {}

  async check(client: string): Promise<void> {
    const state = await this.limiter.get(client);
    if (state && state.consumedPoints > this.limiter.points && state.msBeforeNext > 0) {
      throw new GatewayError('RATE_LIMITED', 'Too many failed authentications; try again later', {
        retryAfterSeconds: Math.max(1, Math.ceil(state.msBeforeNext / 1000)),
      });
    }
  }

  async recordFailure(client: string): Promise<void> {
    try {
      await this.limiter.consume(client);
    } catch (rejection) {
      // A RateLimiterRes only says the limit is now reached, which check() enforces from the next request on;
      // an Error is the limiter's store failing, and propagates like any store failure.
      if (!(rejection instanceof RateLimiterRes)) throw rejection;
    }
  }
}

import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { limitsUnavailable, GatewayError, rethrowAsLimitsUnavailable } from '../domain/errors.js';
import type { AuthFailureLimiter } from '../domain/ports.js';

/**
 * Failed authentications counted with any rate-limiter-flexible limiter (memory, Redis, PostgreSQL): the
 * limiter's `points` failures per `duration` are allowed; the failure that reaches them blocks the client
 * for `blockSeconds`.
 */
export class RateLimiterAuthFailures implements AuthFailureLimiter {
  constructor(
    private readonly limiter: RateLimiterAbstract,
    private readonly blockSeconds: number,
  ) {}

  async check(client: string): Promise<void> {
    const state = await this.limiter.get(client).catch(rethrowAsLimitsUnavailable);
    if (state && state.consumedPoints > this.limiter.points && state.msBeforeNext > 0) {
      throw new GatewayError('AUTH_BLOCKED', undefined, { retryAfterSeconds: Math.max(1, Math.ceil(state.msBeforeNext / 1000)) });
    }
  }

  async recordFailure(client: string): Promise<number | null> {
    let state: RateLimiterRes;
    try {
      state = await this.limiter.consume(client);
    } catch (rejection) {
      // Failures racing past the limit: the block is already in place. An Error is the limiter's store failing.
      if (rejection instanceof RateLimiterRes) return null;
      throw limitsUnavailable(rejection);
    }
    if (state.consumedPoints < this.limiter.points) return null;
    await this.limiter.block(client, this.blockSeconds).catch(rethrowAsLimitsUnavailable);
    return this.blockSeconds;
  }

  async unblock(client: string): Promise<boolean> {
    return this.limiter.delete(client).catch(rethrowAsLimitsUnavailable);
  }
}

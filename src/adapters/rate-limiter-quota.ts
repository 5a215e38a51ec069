import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { limitsUnavailable, GatewayError, rethrowAsLimitsUnavailable, type RateLimitState } from '../domain/errors.js';
import type { Quota } from '../domain/ports.js';

/** A quota over any rate-limiter-flexible limiter (memory, Redis, PostgreSQL). */
export class RateLimiterQuota implements Quota {
  constructor(private readonly limiter: RateLimiterAbstract) {}

  get limit(): number {
    return this.limiter.points;
  }

  private state(result: RateLimiterRes | null): RateLimitState {
    const consumed = result?.consumedPoints ?? 0;
    const msBeforeNext = result?.msBeforeNext ?? this.limiter.duration * 1000;
    return {
      limit: this.limit,
      remaining: Math.max(0, this.limit - consumed),
      resetAt: new Date(Date.now() + Math.max(0, msBeforeNext)),
    };
  }

  async consume(key: string, points = 1): Promise<RateLimitState> {
    try {
      return this.state(await this.limiter.consume(key, points));
    } catch (rejection) {
      // rate-limiter-flexible rejects with a RateLimiterRes when the quota is spent, with an Error when its store fails.
      if (rejection instanceof RateLimiterRes) {
        const rateLimit = this.state(rejection);
        throw new GatewayError('RATE_LIMITED', undefined, {
          rateLimit,
          retryAfterSeconds: Math.max(1, Math.ceil(rejection.msBeforeNext / 1000)),
        });
      }
      throw limitsUnavailable(rejection);
    }
  }

  async refund(key: string, points = 1): Promise<void> {
    await this.limiter.reward(key, points).catch(rethrowAsLimitsUnavailable);
  }

  async peek(key: string): Promise<RateLimitState> {
    const state = await this.limiter.get(key).catch(rethrowAsLimitsUnavailable);
    return this.state(state);
  }
}

import { RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { limitsUnavailable, GatewayError, rethrowAsLimitsUnavailable, type RateLimitState } from '../domain/errors.js';
import type { Quota, QuotaTaken } from '../domain/ports.js';
import { windowOf, type LimiterWindow } from './limiter-window.js';

/** A quota over any rate-limiter-flexible limiter (memory, Redis, PostgreSQL). */
export class RateLimiterQuota implements Quota {
  constructor(private readonly limiter: RateLimiterAbstract) {}

  get limit(): number {
    return this.limiter.points;
  }

  /**
   * The window's end as its store keeps it, one value for the whole window whichever answer or instance reads it;
   * a count given back below zero never shows more than the limit left.
   */
  private state(result: RateLimiterRes | null): RateLimitState {
    const consumed = result?.consumedPoints ?? 0;
    const end = windowOf(result)?.end ?? Date.now() + Math.max(0, result?.msBeforeNext ?? this.limiter.duration * 1000);
    return {
      limit: this.limit,
      remaining: Math.min(this.limit, Math.max(0, this.limit - consumed)),
      resetAt: new Date(end),
    };
  }

  async consume(key: string, points = 1): Promise<QuotaTaken> {
    try {
      const result = await this.limiter.consume(key, points);
      return { ...this.state(result), window: windowOf(result) };
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

  async refund(taken: QuotaTaken, points = 1): Promise<boolean> {
    const window = taken.window as LimiterWindow | undefined;
    return window ? window.giveBack(points).catch(rethrowAsLimitsUnavailable) : false;
  }

  async peek(key: string): Promise<RateLimitState> {
    const state = await this.limiter.get(key).catch(rethrowAsLimitsUnavailable);
    return this.state(state);
  }
}

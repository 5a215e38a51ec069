import type { RateLimitState } from '../domain/errors.js';

/** X-RateLimit-* as Braze sends them: points per window, points left, window end in UTC epoch seconds. */
export function rateLimitHeaders(state: RateLimitState | undefined): Record<string, string> {
  if (!state) return {};
  return {
    'x-ratelimit-limit': String(state.limit),
    'x-ratelimit-remaining': String(state.remaining),
    'x-ratelimit-reset': String(Math.ceil(state.resetAt.getTime() / 1000)),
  };
}

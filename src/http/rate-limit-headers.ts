import type { FastifyRequest } from 'fastify';
import type { RateLimitState } from '../domain/errors.js';
import type { GatewayService } from '../domain/service.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route takes quota points: every answer to a known caller carries X-RateLimit-*. */
    quotaBearing?: boolean;
  }
}

/** X-RateLimit-* as Braze sends them: points per window, points left, window end in UTC epoch seconds. */
export function rateLimitHeaders(state: RateLimitState | undefined): Record<string, string> {
  if (!state) return {};
  return {
    'x-ratelimit-limit': String(state.limit),
    'x-ratelimit-remaining': String(state.remaining),
    'x-ratelimit-reset': String(Math.ceil(state.resetAt.getTime() / 1000)),
  };
}

/**
 * The caller's quota, untouched, for an answer on a quota-bearing route that was refused before the service
 * saw the request: a body too large, empty, not JSON or not UTF-8, in a charset or content coding the gateway
 * does not read, more than one Idempotency-Key header (the service's own refusals carry their state). None for
 * a caller not yet known (401), and none when the quota cannot be read: the answer stands without them.
 */
export async function quotaStateFor(request: FastifyRequest, service: Pick<GatewayService, 'duplicationQuota'>): Promise<RateLimitState | undefined> {
  if (!request.routeOptions.config?.quotaBearing || !request.principal) return undefined;
  return (await service.duplicationQuota(request.principal)) ?? undefined;
}

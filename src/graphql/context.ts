import type { RateLimitState } from '../domain/errors.js';
import type { GatewayService, RequestContext } from '../domain/service.js';
import type { Principal } from '../domain/types.js';

export interface GraphQLContext {
  service: GatewayService;
  request: RequestContext;
  requestId: string;
  /** Authenticates once per request, on first use. */
  principal(): Promise<Principal>;
  /** The quota after the last point this request took, for the X-RateLimit-* headers. */
  rateLimit?: RateLimitState;
}

/** Keeps the state with the fewest points left, whichever field finished last. */
export function recordRateLimit(context: GraphQLContext, state: RateLimitState | undefined): void {
  if (state && (!context.rateLimit || state.remaining <= context.rateLimit.remaining)) context.rateLimit = state;
}

export function createContext(service: GatewayService, request: RequestContext, requestId: string): GraphQLContext {
  let principal: Promise<Principal> | undefined;
  return {
    service,
    request,
    requestId,
    principal: () => (principal ??= service.authenticate(request)),
  };
}

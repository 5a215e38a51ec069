import { isGatewayError, type ErrorCode, type GatewayError, type RateLimitState } from '../domain/errors.js';
import { AUTH_REFUSALS, type GatewayService, type RequestContext } from '../domain/service.js';
import type { Principal } from '../domain/types.js';

export interface GraphQLContext {
  service: GatewayService;
  request: RequestContext;
  requestId: string;
  /** Authenticates once per request, on first use. */
  principal(): Promise<Principal>;
  /**
   * Why the request's key was refused, once principal() has failed: decides the HTTP status. An object of its
   * own because Apollo hands resolvers and plugins a shallow copy of the context.
   */
  authentication: {
    error?: GatewayError;
    /**
     * Set when the request was refused before anything ran (a persisted query asked for without a key that was
     * accepted): its answer is `error` alone, whatever the error.
     */
    refusesRequest?: boolean;
  };
  /**
   * What is left of an upstream pause, read from the shared limiter once per request, on first use: a page of
   * pending jobs asks it for each job's pollAfterSeconds.
   */
  upstreamPausedMs(): Promise<number>;
  /** The quota after the last point this request took, for the X-RateLimit-* headers. */
  rateLimit?: RateLimitState;
}

/** Keeps the state with the fewest points left, whichever field finished last. */
export function recordRateLimit(context: GraphQLContext, state: RateLimitState | undefined): void {
  if (state && (!context.rateLimit || state.remaining <= context.rateLimit.remaining)) context.rateLimit = state;
}

/**
 * What refuses a request's key or its client: a failed authentication, or a client blocked after too many.
 * Not an authentication that could not be done (a store outage, a fault of ours), which each field reports.
 */
const REFUSAL_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([...AUTH_REFUSALS, 'AUTH_BLOCKED']);

/** Whether `error` refuses a request's key or its client, rather than saying the key could not be checked. */
export const refusesKey = (error: unknown): boolean => isGatewayError(error) && REFUSAL_CODES.has(error.code);

/** The refusals of requests' keys: each request's answer carries its own once, whatever number of fields met it. */
const authenticationRefusals = new WeakSet<GatewayError>();

/** Whether `error` is the refusal of a request's key, as principal() raised it to each field that asked. */
export const isAuthenticationRefusal = (error: unknown): boolean => isGatewayError(error) && authenticationRefusals.has(error);

/**
 * `checked`: the principal the request's headers were authenticated as before its body was read, if they were;
 * checked again on first use when the body came late.
 */
export function createContext(service: GatewayService, request: RequestContext, checked?: Principal): GraphQLContext {
  // Kept in closures, like the authentication object, so that Apollo's shallow copies of the context share them.
  let principal: Promise<Principal> | undefined;
  let upstreamPaused: Promise<number> | undefined;
  const authentication: GraphQLContext['authentication'] = {};
  return {
    service,
    request,
    requestId: request.requestId,
    authentication,
    principal: () =>
      (principal ??= (checked ? service.reauthenticate(checked, request) : service.authenticate(request)).catch((error: unknown) => {
        if (isGatewayError(error)) {
          authentication.error = error;
          if (REFUSAL_CODES.has(error.code)) authenticationRefusals.add(error);
        }
        throw error;
      })),
    upstreamPausedMs: () => (upstreamPaused ??= service.upstreamPausedMs()),
  };
}

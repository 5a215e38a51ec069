/**
 * A client blocked after too many failed authentications: a 429 like a spent quota, but worded apart, so that a
 * person, or a UI, can tell that no key from this address will do for a while.
 */
const AUTHENTICATION_BLOCKED_MESSAGE = 'Too many failed authentications from this address; retry later';

/**
 * The closed set of error codes. Each transport maps them in exactly one place; REST bodies carry the code itself,
 * GraphQL errors their `graphqlCode`, and the code itself as `reason` where the two differ.
 */
export const ERROR_CODES = {
  BAD_USER_INPUT: { httpStatus: 400, graphqlCode: 'BAD_USER_INPUT', message: 'Bad request' },
  UNAUTHENTICATED: { httpStatus: 401, graphqlCode: 'UNAUTHENTICATED', message: 'Invalid API key' },
  FORBIDDEN: { httpStatus: 403, graphqlCode: 'FORBIDDEN', message: 'Access Denied' },
  NOT_FOUND: { httpStatus: 404, graphqlCode: 'NOT_FOUND', message: 'Not Found' },
  METHOD_NOT_ALLOWED: { httpStatus: 405, graphqlCode: 'BAD_REQUEST', message: 'Method Not Allowed' },
  IDEMPOTENCY_IN_FLIGHT: { httpStatus: 409, graphqlCode: 'CONFLICT', message: 'A request with this idempotency key is still being processed' },
  IDEMPOTENCY_MISMATCH: { httpStatus: 422, graphqlCode: 'CONFLICT', message: 'This idempotency key was already used with a different request' },
  PAYLOAD_TOO_LARGE: { httpStatus: 413, graphqlCode: 'BAD_USER_INPUT', message: 'Request body is too large' },
  UNSUPPORTED_MEDIA_TYPE: { httpStatus: 415, graphqlCode: 'BAD_USER_INPUT', message: 'Content-Type must be application/json' },
  RATE_LIMITED: { httpStatus: 429, graphqlCode: 'RATE_LIMITED', message: 'Rate limit exceeded' },
  // Braze's 429 and GraphQL's RATE_LIMITED, as before it had a code of its own; REST's code and GraphQL's reason tell it from a spent quota.
  AUTH_BLOCKED: { httpStatus: 429, graphqlCode: 'RATE_LIMITED', message: AUTHENTICATION_BLOCKED_MESSAGE },
  // The workspace's reads, not its duplications: a spent read budget leaves the quota as it is, and the other way round.
  READ_BUDGET_EXCEEDED: { httpStatus: 429, graphqlCode: 'RATE_LIMITED', message: 'Read budget exceeded; retry later' },
  UPSTREAM_ERROR: { httpStatus: 502, graphqlCode: 'UPSTREAM_ERROR', message: 'The upstream service failed' },
  UNAVAILABLE: { httpStatus: 503, graphqlCode: 'SERVICE_UNAVAILABLE', message: 'Service unavailable' },
  INTERNAL: { httpStatus: 500, graphqlCode: 'INTERNAL_SERVER_ERROR', message: 'Internal server error' },
  // Refused by Node's HTTP parser before any route (src/http/errors.ts CLIENT_ERRORS): never a GraphQL answer.
  REQUEST_TIMEOUT: { httpStatus: 408, graphqlCode: 'BAD_REQUEST', message: 'Request timeout' },
  HEADERS_TOO_LARGE: { httpStatus: 431, graphqlCode: 'BAD_REQUEST', message: 'Request headers are too large' },
  // An Expect header other than 100-continue, answered by the HTTP server before any route: never a GraphQL answer.
  EXPECTATION_FAILED: { httpStatus: 417, graphqlCode: 'BAD_REQUEST', message: 'Only Expect: 100-continue is supported' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** One problem with one input field; transports name the field in their own convention. */
export interface FieldIssue {
  field: string;
  message: string;
}

export interface RateLimitState {
  limit: number;
  remaining: number;
  /** When the current window ends. */
  resetAt: Date;
}

export interface GatewayErrorOptions {
  issues?: FieldIssue[];
  retryAfterSeconds?: number;
  rateLimit?: RateLimitState;
  /** What went wrong underneath (a dependency's own error): for the log, never for the caller. */
  cause?: unknown;
}

/** A failure the caller may see. Its message is safe to return; anything else becomes INTERNAL. */
export class GatewayError extends Error {
  readonly issues: FieldIssue[];
  readonly retryAfterSeconds?: number;
  rateLimit?: RateLimitState;

  constructor(
    readonly code: ErrorCode,
    message: string = ERROR_CODES[code].message,
    options: GatewayErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'GatewayError';
    this.issues = options.issues ?? [];
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.rateLimit = options.rateLimit;
  }
}

export const isGatewayError = (error: unknown): error is GatewayError => error instanceof GatewayError;

/**
 * A failure of ours, as a refusal that can carry what the caller is still owed (the quota state). The failure
 * is its cause: for the log, never for the caller.
 */
export const internalError = (cause: unknown): GatewayError => new GatewayError('INTERNAL', undefined, { cause });

/** The failure behind an internalError; any other error as it is. */
export const internalCause = (error: unknown): unknown =>
  isGatewayError(error) && error.code === 'INTERNAL' && error.cause !== undefined ? error.cause : error;

/**
 * A dependency of this instance (the database, a limiter's store) that cannot be reached right now: 503, and
 * come back in a few seconds, the time a database restart usually takes. Unlike an upstream outage, which every
 * instance shares, it says to come back or go to another instance. `cause` is the dependency's own error, for
 * the log.
 */
export class DependencyUnavailableError extends GatewayError {
  constructor(
    cause: unknown,
    readonly dependency: Dependency,
    /** It answers, but gave up waiting for a lock that another transaction or process keeps: busy, not down. */
    readonly busy = false,
  ) {
    super('UNAVAILABLE', undefined, { retryAfterSeconds: 5, cause });
  }
}

/** Which dependency of the instance, by its name in /readyz: its store, or the store its limiters count in. */
export type Dependency = 'store' | 'quota';

export const dependencyUnavailable = (cause: unknown): GatewayError => new DependencyUnavailableError(cause, 'store');

/** The store gave up waiting for a lock another keeps (`cause` says which): answered as an outage, logged apart from one. */
export const storeBusy = (cause: unknown): GatewayError => new DependencyUnavailableError(cause, 'store', true);

export const isStoreBusy = (error: unknown): boolean => error instanceof DependencyUnavailableError && error.busy;

export const limitsUnavailable = (cause: unknown): GatewayError => new DependencyUnavailableError(cause, 'quota');

export const isDependencyOutage = (error: unknown): error is DependencyUnavailableError => error instanceof DependencyUnavailableError;

/** The quota's own store failed to answer: nothing more should be asked of it for the same answer. */
export const isQuotaOutage = (error: unknown): boolean => isDependencyOutage(error) && error.dependency === 'quota';

export const rethrowAsLimitsUnavailable = (cause: unknown): never => {
  throw limitsUnavailable(cause);
};

/**
 * A shared store's refusal of a command its user is not granted (a Redis ACL without it): no outage, which ends by
 * itself, but a grant an operator has to add. Its message names what is refused, never the store's own answer.
 */
export class CommandRefusedError extends Error {}

/** A dependency that cannot be reached, whether or not its own error came with it. */
export const isUnavailable = (error: unknown): error is GatewayError => isGatewayError(error) && error.code === 'UNAVAILABLE';

/** The dependency's own error behind an UNAVAILABLE answer, when there is one: what the log should show. */
export const unavailableCause = (error: unknown): unknown => (isUnavailable(error) ? error.cause : undefined);

/**
 * What an operator asked to make exists already (a workspace of that name, a file the CLI would write): a refused
 * value (BAD_USER_INPUT) to the closed set above, which no transport ever answers with it, and ALREADY_EXISTS to
 * the CLI's --json, so that a script can tell "already there" from "failed" without reading English.
 */
export class AlreadyExistsError extends GatewayError {
  constructor(message: string) {
    super('BAD_USER_INPUT', message);
  }
}

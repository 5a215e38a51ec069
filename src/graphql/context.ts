import { isGatewayError, type ErrorCode, type GatewayError, type RateLimitState } from '../domain/errors.js';
import { AUTH_REFUSALS, type GatewayService, type RequestContext } from '../domain/service.js';
import type { Campaign, DuplicationJob, Principal } from '../domain/types.js';

export interface GraphQLContext {
  service: GatewayService;
  request: RequestContext;
  requestId: string;
  /** Authenticates once per request, on first use. */
  principal(): Promise<Principal>;
  /** Records the estimated cost of the operation about to run, which its reads take from the read budget. */
  setOperationCost(cost: number): void;
  /**
   * principal(), once the operation's estimated cost is taken from its workspace's read budget: every root query
   * field reads through it, so that the operation is charged once, before its first read, however many fields ask.
   */
  reader(): Promise<Principal>;
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
  /**
   * The details of a partial entry of the campaign list (upstream mode), read once per campaign per request
   * however many entries and fields ask, and at most LISTED_DETAILS_CONCURRENCY at once.
   */
  listedCampaignDetails(id: string): Promise<Campaign | null>;
  /**
   * The job of an event, as duplicationJob(id) answers it: the jobs the request's events ask for in one turn are
   * read together, in one statement, and each once.
   */
  eventJob(id: string): Promise<DuplicationJob | null>;
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

/** Upstream reads of one request's list entries in flight at once: a page of 200 does not open 200 connections. */
export const LISTED_DETAILS_CONCURRENCY = 4;

/** `load` called once per id, its promise (a failure too) kept for the request's later asks. */
function memoizedById<T>(load: (id: string) => Promise<T>): (id: string) => Promise<T> {
  const loaded = new Map<string, Promise<T>>();
  return (id) => {
    let promise = loaded.get(id);
    if (!promise) {
      promise = load(id);
      loaded.set(id, promise);
    }
    return promise;
  };
}

/** Each id loaded once (a failure too: asking again would spend another read), `concurrency` loads at a time. */
export function onceEach<T>(load: (id: string) => Promise<T>, concurrency: number): (id: string) => Promise<T> {
  const waiting: (() => void)[] = [];
  let running = 0;
  return memoizedById(async (id) => {
    if (running < concurrency) running += 1;
    else await new Promise<void>((resolve) => waiting.push(resolve));
    try {
      return await load(id);
    } finally {
      // The slot passes to the next load waiting, if any.
      const next = waiting.shift();
      if (next) next();
      else running -= 1;
    }
  });
}

/**
 * Each id loaded once (a failure too), and the ids asked for until the turn's promise jobs have all run loaded
 * together, by one call of `loadMany` that answers them in the order given. Still within the turn: SQLite's reads
 * of one turn see one moment (read-snapshot.ts), the events' read included.
 */
export function batchedOnce<T>(loadMany: (ids: string[]) => Promise<T[]>): (id: string) => Promise<T> {
  let waiting: { id: string; resolve: (value: T) => void; reject: (error: unknown) => void }[] = [];
  const load = () => {
    const batch = waiting;
    waiting = [];
    new Promise<T[]>((resolve) => resolve(loadMany(batch.map(({ id }) => id)))).then(
      (values) => batch.forEach(({ resolve }, index) => resolve(values[index])),
      (error: unknown) => batch.forEach(({ reject }) => reject(error)),
    );
  };
  return memoizedById(
    (id) =>
      new Promise<T>((resolve, reject) => {
        // A tick queued from a promise job runs once every promise job queued meanwhile has run: the fields that
        // other lists' resolutions reach in this turn ask first.
        if (waiting.length === 0) void Promise.resolve().then(() => process.nextTick(load));
        waiting.push({ id, resolve, reject });
      }),
  );
}

/**
 * `checked`: the principal the request's headers were authenticated as before its body was read, if they were;
 * checked again on first use when the body came late.
 */
export function createContext(service: GatewayService, request: RequestContext, checked?: Principal): GraphQLContext {
  // Kept in closures, like the authentication object, so that Apollo's shallow copies of the context share them.
  let principal: Promise<Principal> | undefined;
  let operationCost: number | undefined;
  let reader: Promise<Principal> | undefined;
  let upstreamPaused: Promise<number> | undefined;
  const authentication: GraphQLContext['authentication'] = {};
  const context: GraphQLContext = {
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
    setOperationCost: (cost) => {
      operationCost = cost;
    },
    reader: () =>
      (reader ??= context.principal().then(async (caller) => {
        // Both GraphQL paths estimate an operation before running it; one that did not would read for free.
        if (operationCost === undefined) throw new Error('a query ran without its estimated cost');
        await service.takeReadBudget(caller, operationCost);
        return caller;
      })),
    upstreamPausedMs: () => (upstreamPaused ??= service.upstreamPausedMs()),
    listedCampaignDetails: onceEach(async (id) => service.listedCampaignDetails(await context.principal(), id), LISTED_DETAILS_CONCURRENCY),
    eventJob: batchedOnce(async (ids) => service.getJobs(await context.principal(), ids)),
  };
  return context;
}

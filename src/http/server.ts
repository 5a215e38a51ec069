import { maxHeaderSize } from 'node:http';
import fastifySwagger from '@fastify/swagger';
import cors from '@fastify/cors';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import type { GraphQLFormattedError } from 'graphql';
import type { Config } from '../config.js';
import { GatewayError, internalCause, isQuotaOutage, unavailableCause } from '../domain/errors.js';
import { trustedProxies } from '../domain/ip-allowlist.js';
import type { Clock } from '../domain/ports.js';
import type { GatewayService } from '../domain/service.js';
import { graphqlErrorBody, stringifyGraphQLResult } from '../graphql/apollo.js';
import { refusalResponseType } from '../graphql/prepared.js';
import { graphqlRoute } from '../graphql/route.js';
import { summarizeError } from '../failure-log.js';
import type { ReadinessReport } from '../readiness.js';
import { requestIdOf, watchConnections, type Connections } from './connections.js';
import { DependencyRefusals, REQUESTS_COMPONENT } from './dependency-refusals.js';
import { toRestError } from './errors.js';
import { healthRoutes } from './health.js';
import type { InFlight } from './in-flight.js';
import { jsonBodies } from './json-body.js';
import { loggerOptions } from './logging.js';
import { metricsRoutes, type GatewayMetrics } from './metrics.js';
import { openapiOptions, openapiRoutes, schemasOnlyDocument } from './openapi.js';
import { quotaStateFor, rateLimitHeaders } from './rate-limit-headers.js';
import { restRoutes } from './rest.js';
import { securityEventsDownloadRoutes, type DownloadClientLimits } from './security-events-download.js';

export interface HttpDeps {
  config: Config;
  service: GatewayService;
  metrics: GatewayMetrics;
  /** Kept up to date with the requests being answered and the connections held, for the shutdown. */
  inFlight: InFlight;
  clock: Clock;
  /** How each dependency (store, quota, …) is doing; the instance is ready when none is down. */
  checkReady: () => Promise<ReadinessReport>;
  /** Why the process cannot serve again until it is restarted, or null (liveness). */
  checkLive: () => string | null;
  logger?: FastifyServerOptions['logger'];
  /** Where JSON log lines go (default stdout); tests read them here. */
  logDestination?: NodeJS.WritableStream;
  /** What a security event download asks of its client, scaled down for a test (the DOWNLOAD_ constants by default). */
  downloadClientLimits?: Partial<DownloadClientLimits>;
  /** Whether the store reads a query's fields in one view of its own (PostgreSQL): see GraphQLRouteOptions. */
  queryReadScopes: boolean;
}


/** Routes that load balancers probe and Prometheus scrapes every few seconds, whatever the traffic. */
const PROBE_ROUTES = new Set(['/healthz', '/readyz', '/metrics']);

/** HTTP/1.1 requires the header (RFC 9112, 3.2); HTTP/1.0 requests may go without, as Node lets them. */
const MISSING_HOST = 'An HTTP/1.1 request must have a Host header';

/** Builds the HTTP server without listening, so tests and main.ts share it. */
export async function buildHttpServer(deps: HttpDeps): Promise<FastifyInstance> {
  const { config, service } = deps;
  /** Every error a GraphQL answer carries is counted, whichever path made the answer. */
  const observeGraphQLError = (error: GraphQLFormattedError) => deps.metrics.graphqlError(error.extensions?.code);

  /** Every error becomes one answer here, in its transport's shape. */
  const sendError = async (error: FastifyError | Error, request: FastifyRequest, reply: FastifyReply) => {
    const mapped = toRestError(error);
    const { gatewayError } = mapped;
    request.refusal = gatewayError.code;
    if (mapped.unexpected) request.log.error({ err: internalCause(error) }, 'unexpected error');
    if (!refusals.refused(error, request.id)) {
      const cause = unavailableCause(error);
      if (cause !== undefined) request.log.warn({ ...REQUESTS_COMPONENT, cause: summarizeError(cause) }, 'a dependency is unavailable');
    }
    // Not after the quota's store failed to answer: asked again, a silent one would hold the answer as long again.
    reply.headers(rateLimitHeaders(gatewayError.rateLimit ?? (isQuotaOutage(gatewayError) ? undefined : await quotaStateFor(request, service))));
    reply.headers(mapped.headers);
    if (request.routeOptions.url !== '/graphql') return reply.status(mapped.status).send(mapped.body);
    const body = graphqlErrorBody(gatewayError, request.id);
    body.errors.forEach(observeGraphQLError);
    // As Apollo answers, byte for byte: in the media type the client accepts, never cached, its JSON and a newline.
    reply.type(refusalResponseType(request.headers.accept)).header('cache-control', 'no-store');
    return reply.status(mapped.status).send(stringifyGraphQLResult(body));
  };

  const app = Fastify({
    logger: deps.logger ?? loggerOptions(config, deps.logDestination),
    bodyLimit: config.bodyLimitBytes,
    // fastify turns Node's request timeout off: a client sending a byte now and then would hold its connection
    // for ever. Node checks the timeouts of open connections every `connectionsCheckingInterval`.
    requestTimeout: config.requestTimeoutMs,
    http: {
      headersTimeout: Math.min(60_000, config.requestTimeoutMs),
      requestTimeout: config.requestTimeoutMs,
      connectionsCheckingInterval: Math.min(30_000, config.requestTimeoutMs / 4),
      // Node answers an HTTP/1.1 request without a Host header with an empty 400 no hook sees, unlogged and without a
      // request id; the hook below refuses it as every other bad request is.
      requireHostHeader: false,
    },
    trustProxy: config.trustProxy && trustedProxies(config.trustProxy),
    forceCloseConnections: 'idle',
    // Requests that arrive while closing are refused by the hook below, in the gateway's shape, not fastify's.
    return503OnClosing: false,
    requestIdHeader: false,
    // No URL is longer than Node's header limit, so the router never refuses a path segment for its length
    // (fastify's own 414, in its own shape): each route decides what a long one means. A base URL that ends in
    // a slash makes `//campaigns/duplicate`, and some clients add one at the end: both reach the route.
    routerOptions: { maxParamLength: maxHeaderSize, ignoreTrailingSlash: true, ignoreDuplicateSlashes: true },
    // A URL fastify cannot decode fails before routing, where no hook runs and fastify, having logged `incoming
    // request`, neither times the response nor logs its `request completed`: both are done here, as fastify does,
    // and it is answered like every other error, and counted like every other unmatched request. Its body may still
    // be arriving: one Node cannot parse is this request's, answered once (by the parser if its answer has not
    // begun), as a route's request is.
    frameworkErrors: (error, request, reply) => {
      connections.unrouted(request, reply);
      // Fastify awaits the error handler of a routed request, not this: a failure here would end the process.
      sendError(error, request, reply).catch((failure: unknown) => request.log.error({ err: failure }, 'unexpected error while answering a request refused before routing'));
    },
    // A request Node cannot parse never reaches fastify: answered on the socket, logged without what was sent.
    clientErrorHandler: (error, socket) => connections.clientError(error, socket),
    genReqId: requestIdOf,
  });
  const refusals = new DependencyRefusals(app.log, deps.clock);
  // First, so that every request that reaches a hook is counted, and waits for its turn on its connection.
  const connections: Connections = watchConnections(app, deps);

  // Two info lines per probe, whatever the traffic, all of an idle instance's log: at LOG_LEVEL=info the probe routes log only
  // warnings and errors. What their checks find is logged by the readiness component, once per failure, not per
  // probe. At debug and trace they log every request, as asked.
  const quietProbes = app.log.level === 'info';
  app.addHook('onRoute', (route) => {
    if (quietProbes && PROBE_ROUTES.has(route.url)) route.logLevel = 'warn';
  });

  // Node keeps a keep-alive connection open after a request that was in flight at close() finishes, and
  // close() waits for it; telling the client to hang up lets shutdown complete once the response is out.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  // Callbacks, not async hooks, here and in every hook below that runs on each request: none has anything to wait for,
  // and an async hook costs each request a promise and its turns through the microtask queue.
  app.addHook('onSend', (request, reply, _payload, done) => {
    reply.header('x-request-id', request.id);
    if (closing) reply.header('connection', 'close');
    done();
  });
  app.addHook('onRequest', (request, _reply, done) => {
    if (closing) done(new GatewayError('UNAVAILABLE', 'The gateway is shutting down', { retryAfterSeconds: 1 }));
    else if (request.headers.host === undefined && request.raw.httpVersion === '1.1') done(new GatewayError('BAD_USER_INPUT', MISSING_HOST));
    else done();
  });

  // Only JSON is parsed: any other body is refused with 415 before a handler runs.
  app.removeContentTypeParser('text/plain');
  jsonBodies(app);
  const allowedOrigins = new Set(config.corsOrigins);
  // A preflight the gateway will not allow gets 204 and no CORS headers, on every route, so that the browser
  // reports the CORS failure it is. Left to the routes it met Apollo's CSRF refusal (400) or a 404, which send
  // a developer looking for the wrong cause. Allowed origins are answered by @fastify/cors, registered after.
  const isRefusedPreflight = ({ method, headers }: FastifyRequest): boolean =>
    method === 'OPTIONS' && headers.origin !== undefined && headers['access-control-request-method'] !== undefined && !allowedOrigins.has(headers.origin);
  app.addHook('onRequest', (request, reply, done) => {
    if (!isRefusedPreflight(request)) done();
    // Content-Length as @fastify/cors sends it: Safari waits for a body on a 204 without one.
    else reply.code(204).headers({ vary: 'origin', 'content-length': '0' }).send();
  });
  if (allowedOrigins.size > 0) await app.register(cors, corsOptions(allowedOrigins));

  app.setErrorHandler(sendError);

  app.setNotFoundHandler((request, reply) => {
    request.refusal = 'NOT_FOUND';
    const { status, body } = toRestError(new GatewayError('NOT_FOUND'));
    return reply.status(status).send(body);
  });

  app.addHook('onResponse', (request, reply, done) => {
    // A request with a key had its client checked against the failed authentications (in the quota's store) and
    // its key looked up in the store, which it would otherwise have been refused for.
    if (reply.statusCode < 500 && request.headers.authorization !== undefined) refusals.served();
    done();
  });

  await app.register(fastifySwagger, openapiOptions);
  await app.register(async (api) => {
    schemasOnlyDocument(api);
    await api.register(restRoutes, { service, idempotencyTtlHours: config.idempotencyTtlMs / 3_600_000 });
    await api.register(securityEventsDownloadRoutes, { service, clientLimits: deps.downloadClientLimits });
    await api.register(healthRoutes, { checkReady: deps.checkReady, checkLive: deps.checkLive });
    await api.register(metricsRoutes, { metrics: deps.metrics });
    await api.register(openapiRoutes);
  });

  await app.register(graphqlRoute, { config, service, metrics: deps.metrics, refusals, observeGraphQLError, queryReadScopes: deps.queryReadScopes });

  return app;
}

/**
 * Browser frontends on the configured origins only. A request from any other origin gets no CORS headers at
 * all, and credentials (cookies) are never allowed: callers authenticate with the Authorization header.
 */
function corsOptions(allowed: ReadonlySet<string>) {
  return {
    origin: (origin: string | undefined, callback: (error: Error | null, allow: string | false) => void) =>
      callback(null, origin !== undefined && allowed.has(origin) ? origin : false),
    credentials: false,
    strictPreflight: false,
    methods: ['GET', 'POST'],
    // Apollo Client sends its name and version (its `name` and `version` options) in the last two.
    allowedHeaders: [
      'authorization',
      'content-type',
      'idempotency-key',
      'apollo-require-preflight',
      'x-apollo-operation-name',
      'x-request-id',
      'apollographql-client-name',
      'apollographql-client-version',
    ],
    exposedHeaders: ['x-request-id', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'retry-after', 'location'],
    maxAge: 600,
  };
}

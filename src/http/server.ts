import { randomUUID } from 'node:crypto';
import { maxHeaderSize, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import fastifySwagger from '@fastify/swagger';
import { fastifyApolloHandler } from '@as-integrations/fastify';
import cors from '@fastify/cors';
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifySchema,
  type FastifyServerOptions,
} from 'fastify';
import type { DocumentNode, GraphQLFormattedError } from 'graphql';
import type { Config } from '../config.js';
import { GatewayError, internalCause, unavailableCause } from '../domain/errors.js';
import { trustedProxies } from '../domain/ip-allowlist.js';
import type { Clock, Quota } from '../domain/ports.js';
import type { GatewayService } from '../domain/service.js';
import { createApollo, graphqlErrorBody, graphQLErrorFormatter, stringifyGraphQLResult } from '../graphql/apollo.js';
import { createContext, refusesKey } from '../graphql/context.js';
import { DocumentCache, QUERY_TEXT_CACHE_BYTES } from '../graphql/document-cache.js';
import { OperationLimits } from '../graphql/limits.js';
import { PreparedOperations, refusalResponseType } from '../graphql/prepared.js';
import { gatewaySchema } from '../graphql/schema.js';
import { summarizeError } from '../jobs/failure-log.js';
import type { ReadinessReport } from '../readiness.js';
import { DependencyRefusals, REQUESTS_COMPONENT } from './dependency-refusals.js';
import { clientError, clientErrorResponse, serverRefusal, serverRefusalHeaders, toRestError } from './errors.js';
import { explorerAssetRoutes, sendExplorer, sendExplorerOff, wantsExplorer } from './explorer.js';
import { healthRoutes } from './health.js';
import type { InFlight } from './in-flight.js';
import { jsonBodies } from './json-body.js';
import { loggableHeader, loggerOptions } from './logging.js';
import { metricsRoutes, type GatewayMetrics } from './metrics.js';
import { openapiOptions, openapiRoutes, schemasOnlyDocument } from './openapi.js';
import { quotaStateFor, rateLimitHeaders } from './rate-limit-headers.js';
import { httpRequestContext, restRoutes } from './rest.js';
import { securityEventsDownloadRoutes, type DownloadClientLimits } from './security-events-download.js';

export interface HttpDeps {
  config: Config;
  service: GatewayService;
  /** Read, never consumed, for the rate-limit headers of errors raised before the service took a point. */
  quota: Pick<Quota, 'peek'>;
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
}

// GraphQL is documented by its own schema (schema.graphql, the explorer's Docs), not by the OpenAPI document.
const hiddenFromOpenapi: FastifySchema = { hide: true };

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** An incoming x-request-id is kept when it is safe to log; otherwise one is made. */
const requestIdOf = (request: IncomingMessage): string => {
  const incoming = request.headers['x-request-id'];
  return typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
};

/**
 * The status a request is counted with when its response was cut short: its client went away, or the gateway ended
 * it (a download's client too slow, a shutdown whose grace ran out), whatever status its headers carried. nginx's
 * "client closed request": a status_code value rather than another label, so every existing query on the request
 * series keeps its meaning, and a cut download is no longer counted as a 200 or left out.
 */
export const CUT_SHORT_STATUS = 499;

/** Where a raw response keeps its fastify reply, for the listener of its close. */
const REPLY = Symbol('reply');

/** Routes that load balancers probe and Prometheus scrapes every few seconds, whatever the traffic. */
const PROBE_ROUTES = new Set(['/healthz', '/readyz', '/metrics']);

/** Builds the HTTP server without listening, so tests and main.ts share it. */
export async function buildHttpServer(deps: HttpDeps): Promise<FastifyInstance> {
  const { config, service } = deps;
  /** Every error a GraphQL answer carries is counted, whichever path made the answer. */
  const observeGraphQLError = (error: GraphQLFormattedError) => deps.metrics.graphqlError(error.extensions?.code);

  /** Every error becomes one answer here, in its transport's shape. */
  const sendError = async (error: FastifyError | Error, request: FastifyRequest, reply: FastifyReply) => {
    const mapped = toRestError(error);
    request.refusal = mapped.gatewayError.code;
    if (mapped.unexpected) request.log.error({ err: internalCause(error) }, 'unexpected error');
    if (!refusals.refused(error, request.id)) {
      const cause = unavailableCause(error);
      if (cause !== undefined) request.log.warn({ ...REQUESTS_COMPONENT, cause: summarizeError(cause) }, 'a dependency is unavailable');
    }
    reply.headers(rateLimitHeaders(mapped.gatewayError.rateLimit ?? (await quotaStateFor(request, deps.quota))));
    reply.headers(mapped.headers);
    if (request.routeOptions.url !== '/graphql') return reply.status(mapped.status).send(mapped.body);
    const body = graphqlErrorBody(mapped.gatewayError, request.id);
    body.errors.forEach(observeGraphQLError);
    // As Apollo answers, byte for byte: in the media type the client accepts, never cached, its JSON and a newline.
    reply.type(refusalResponseType(request.headers.accept)).header('cache-control', 'no-store');
    return reply.status(mapped.status).send(stringifyGraphQLResult(body));
  };

  // Connections whose request was answered before its body had all arrived (a key refused before the body is
  // read, a body over the limit), until the rest of the body has been read. Should it never arrive, or arrive
  // malformed, the client error that follows ends the connection without a second answer (a 408 or a 400).
  const answeredBeforeItsBody = new WeakSet<Socket>();
  const answered = (request: IncomingMessage) => {
    if (request.complete) return;
    answeredBeforeItsBody.add(request.socket);
    request.once('end', () => answeredBeforeItsBody.delete(request.socket));
  };
  // The request each connection has in fastify, until its response is over: a body Node then cannot parse (a bad
  // chunk, one that stops arriving) is that request's answer, under its id, not another request's.
  const requestOn = new WeakMap<Socket, FastifyReply>();
  // Responses answered on their socket that way, with the status they were answered: they end without finishing,
  // not cut short, and what fastify was still doing for the request (a key being checked) may set another.
  const answeredByTheParser = new WeakMap<ServerResponse, number>();
  // Connections whose request Node could not parse, refused once the responses before it are over.
  const refusalWaits = new WeakSet<Socket>();
  /** A request none of fastify's: refused under an id of its own, then the connection is closed. */
  const refuseUnmatched = (error: NodeJS.ErrnoException, socket: Socket) => {
    if (!socket.writable) {
      // The client hung up, or sent more after its own `Connection: close`: no refusal can reach it, and none is
      // said to have been sent.
      app.log.info({ code: error.code }, 'malformed HTTP request not answered: its connection was closing');
    } else {
      const { status } = clientError(error.code);
      const requestId = randomUUID();
      // A client too slow to send its request in time (a bad link, often) did nothing malformed.
      const timedOut = status === 408;
      app.log.info({ reqId: requestId, code: error.code }, timedOut ? 'request timed out before it arrived in full' : 'malformed HTTP request refused');
      socket.write(clientErrorResponse(error.code, requestId));
      deps.metrics.malformedRequest(status);
    }
    // Once what was written has gone: the response before the refusal may still be on its way.
    socket.destroySoon();
  };
  /** A request whose head fastify has, whose body Node cannot parse: the answer is that request's, under its id. */
  const refuseInFlight = (error: NodeJS.ErrnoException, socket: Socket, reply: FastifyReply) => {
    // Its response has begun (a download streaming) or was made before its body: nothing may be written into it,
    // and Node's own handler then only hangs up. The response is counted as cut short.
    if (reply.raw.headersSent) {
      socket.destroy();
      return;
    }
    // It has its `incoming request` line, and gets its `request completed` here, where the response closing counts
    // it, with its method and route.
    const { status, body } = clientError(error.code);
    reply.request.refusal = body.code;
    reply.code(status);
    answeredByTheParser.set(reply.raw, status);
    if (socket.writable) socket.write(clientErrorResponse(error.code, reply.request.id));
    reply.log.info({ res: reply, responseTime: reply.elapsedTime, code: error.code }, 'request completed');
    socket.destroy();
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
      const started = performance.now();
      const { socket } = request.raw;
      requestOn.set(socket, reply);
      reply.header('x-request-id', request.id);
      reply.raw.once('close', () => {
        if (requestOn.get(socket) === reply) requestOn.delete(socket);
        const responseTime = performance.now() - started;
        if (reply.raw.writableFinished) {
          answered(request.raw);
          reply.log.info({ res: reply, responseTime }, 'request completed');
        }
        const status = answeredByTheParser.get(reply.raw) ?? (reply.raw.writableFinished ? reply.statusCode : CUT_SHORT_STATUS);
        deps.metrics.observeRequest(request.method, 'unmatched', status, responseTime / 1000);
      });
      void sendError(error, request, reply);
    },
    // A request Node cannot parse never reaches fastify: answered on the socket, logged without what was sent.
    // Node reads pipelined requests on while the responses before them go out, and nothing may be written on the
    // connection before those are over: the answer waits for them.
    clientErrorHandler: (error, socket) => {
      if (error.code === 'ECONNRESET' || socket.destroyed || refusalWaits.has(socket)) return;
      if (answeredBeforeItsBody.has(socket)) {
        socket.destroy();
        return;
      }
      const reply = requestOn.get(socket);
      if (reply === undefined) {
        refuseUnmatched(error, socket);
      } else if (reply.request.raw.complete) {
        // Its request arrived in full: the error is a pipelined request's after it, whose head Node could not parse.
        refusalWaits.add(socket);
        reply.raw.once('close', () => refuseUnmatched(error, socket));
      } else if (reply.raw.socket !== socket) {
        // Its response's turn has not come (Node gives it the socket then).
        refusalWaits.add(socket);
        reply.raw.once('socket', () => refuseInFlight(error, socket, reply));
      } else {
        refuseInFlight(error, socket, reply);
      }
    },
    genReqId: requestIdOf,
  });
  const refusals = new DependencyRefusals(app.log, deps.clock);
  // Node answers `Expect: 100-continue` with 100 Continue as the request arrives, so that its client sends the body
  // a refused key or a Content-Length over the limit then refuses. Sent instead once the body is read, which is
  // after those checks: a request refused before is answered at once, and Node closes its connection, whose
  // client may have sent no body.
  app.server.on('checkContinue', (request: IncomingMessage, response: ServerResponse) => {
    // Node reads and drops the body of a request answered without it, after the answer: no 100 then.
    request.once('resume', () => {
      if (!response.headersSent) response.writeContinue();
    });
    app.server.emit('request', request, response);
  });
  // Any other expectation cannot be met (RFC 9110 §10.1.1): refused before any route, as a request Node cannot
  // parse is, in the error shape rather than Node's bare 417.
  app.server.on('checkExpectation', (request: IncomingMessage, response: ServerResponse) => {
    const requestId = requestIdOf(request);
    const { status, body } = serverRefusal('EXPECTATION_FAILED');
    const text = JSON.stringify(body);
    app.log.info({ reqId: requestId, expect: loggableHeader(request.headers.expect ?? '') }, 'request with an expectation the gateway cannot meet refused');
    // Parsed whole, so the connection goes on as Node's own 417 leaves it: a request pipelined behind this one was
    // parsed and is being handled already, and closing would drop its answer after its job was made.
    response.writeHead(status, STATUS_CODES[status], serverRefusalHeaders(text, requestId, true)).end(text);
    deps.metrics.malformedRequest(status);
  });
  deps.inFlight.watch(app.server);
  // Node emits an accept that failed (out of file descriptors beyond what libuv absorbs, say) on the server, where an
  // error without a listener ends the process. An error while not listening is listen()'s, which fastify reports.
  app.server.on('error', (error) => {
    if (app.server.listening) app.log.error({ err: error }, 'the HTTP server failed to accept a connection; it keeps listening');
  });

  // First, so that every request that reaches a hook is counted, once, when its response is over however it ended:
  // fastify's onResponse never comes for a response cut short (a download whose client went away, or that was ended).
  // One listener made once, not a closure per request: it finds the request through the reply kept on the response.
  function responseClosed(this: ServerResponse & { [REPLY]?: FastifyReply }): void {
    const reply = this[REPLY]!;
    requestOver(reply, answeredByTheParser.get(this) ?? (this.writableFinished ? reply.statusCode : CUT_SHORT_STATUS));
  }
  const requestOver = (reply: FastifyReply, status: number) => {
    const { request } = reply;
    deps.inFlight.ended(request);
    if (requestOn.get(request.raw.socket) === reply) requestOn.delete(request.raw.socket);
    // The route template, never the raw URL: label values must stay few.
    deps.metrics.observeRequest(request.method, request.routeOptions.url ?? 'unmatched', status, reply.elapsedTime / 1000);
  };
  // A request pipelined behind a response not yet over is answered once Node hands it the connection, when that
  // response is over; never, if that response closes the connection (an `Expect: 100-continue` request answered
  // without 100 Continue, which Node closes on, or a response with `Connection: close`, as during a shutdown),
  // whether it ended before this request arrived (the connection is no longer writable) or ends after. Nothing is
  // done for the request before its turn, so that none is carried out (a job made) whose answer cannot be sent.
  const awaitTurn = (reply: FastifyReply, socket: Socket, done: () => void) => {
    if (reply.raw.socket === socket) {
      if (socket.writable) done();
      else drop(reply, done);
      return;
    }
    const turn = () => {
      socket.off('close', closed);
      awaitTurn(reply, socket, done);
    };
    const closed = () => {
      reply.raw.off('socket', turn);
      drop(reply, done);
    };
    reply.raw.once('socket', turn);
    if (socket.closed) closed();
    else socket.once('close', closed);
  };
  /** A request whose answer cannot be sent: neither carried out nor answered, and counted as cut short. */
  const drop = (reply: FastifyReply, done: () => void) => {
    reply.raw.off('close', responseClosed);
    reply.code(CUT_SHORT_STATUS).hijack();
    reply.log.info({ res: reply, responseTime: reply.elapsedTime }, 'request dropped: its connection closed before its turn to be answered');
    requestOver(reply, CUT_SHORT_STATUS);
    done();
  };
  app.addHook('onRequest', (request, reply, done) => {
    const { socket } = request.raw;
    deps.inFlight.started(request);
    requestOn.set(socket, reply);
    (reply.raw as ServerResponse & { [REPLY]?: FastifyReply })[REPLY] = reply;
    // A response closes once: `on`, which, unlike `once`, wraps nothing.
    reply.raw.on('close', responseClosed);
    awaitTurn(reply, socket, done);
  });

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
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
    if (closing) reply.header('connection', 'close');
  });
  // A callback, not an async hook: it runs on every request and has nothing to wait for.
  app.addHook('onRequest', (_request, _reply, done) => {
    done(closing ? new GatewayError('UNAVAILABLE', 'The gateway is shutting down', { retryAfterSeconds: 1 }) : undefined);
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

  app.addHook('onResponse', async (request, reply) => {
    answered(request.raw);
    // A request with a key had its client checked against the failed authentications (in the quota's store) and
    // its key looked up in the store, which it would otherwise have been refused for.
    if (reply.statusCode < 500 && request.headers.authorization !== undefined) refusals.served();
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

  const schema = await gatewaySchema();
  const limits = new OperationLimits(schema, {
    maxDepth: config.graphqlMaxDepth,
    maxCost: config.graphqlMaxCost,
    maxAliases: config.graphqlMaxAliases,
    maxDuplicatesPerOperation: config.graphqlMaxDuplicatesPerOperation,
  });
  const prepared = new PreparedOperations(schema, limits, app.log, refusals, graphQLErrorFormatter(config.production), observeGraphQLError);
  const documents = new DocumentCache<DocumentNode>();
  const persistedQueries = new DocumentCache<string>(QUERY_TEXT_CACHE_BYTES);
  deps.metrics.watchDocumentCaches({ apollo: documents, prepared, persisted: persistedQueries });
  const apollo = createApollo({
    schema,
    introspection: config.explorer,
    hideSchemaDetails: config.production,
    limits,
    logger: app.log,
    refusals,
    documents,
    persistedQueries,
    plugins: [prepared.plugin()],
    observeError: observeGraphQLError,
  });
  await apollo.start();
  app.addHook('onClose', () => apollo.stop());
  const requestUrls = new RequestUrls();
  const graphqlContext = (request: FastifyRequest) => createContext(service, httpRequestContext(request, 'GRAPHQL'), request.principal);
  // With introspection off, a request without a key can only be refused (it guesses no key, so that is no failed
  // authentication); a key refused, or a client blocked after too many failed authentications, is refused whatever
  // the request asks. Either is refused before the body is read, as REST does, so that a client without a valid key
  // cannot have bodies held in memory or parsed.
  const authenticatesBeforeBody = (request: FastifyRequest) =>
    request.method !== 'OPTIONS' && (request.headers.authorization !== undefined || !config.explorer);
  const apolloHandler = fastifyApolloHandler(apollo, { context: async (request) => graphqlContext(request) });
  if (config.explorer) await app.register(explorerAssetRoutes);
  app.route<{ Reply: string }>({
    url: '/graphql',
    method: ['GET', 'POST', 'OPTIONS'],
    schema: hiddenFromOpenapi,
    // A browser gets the explorer, or word that it is off; GraphQL clients, GET ones included, get Apollo. A
    // callback: every GraphQL request passes here, and a reply sent here ends the request without done().
    onRequest: (request, reply, done) => {
      if (wantsExplorer(request)) {
        if (config.explorer) sendExplorer(reply);
        else sendExplorerOff(reply);
      } else if (!authenticatesBeforeBody(request)) {
        done();
      } else {
        // A key that could not be checked (a store outage) is left to the fields, which each report it.
        const context = httpRequestContext(request, 'GRAPHQL');
        (request.headers.authorization === undefined ? service.refuseWithoutKey(context) : service.authenticate(context)).then(
          (principal) => {
            request.principal = principal;
            done();
          },
          (error: unknown) => done(refusesKey(error) ? (error as Error) : undefined),
        );
      }
    },
    // An operation Apollo has accepted before is answered without it, identically (src/graphql/prepared.ts).
    handler: async (request, reply) => {
      if (!requestUrls.parses(request)) throw new GatewayError('BAD_USER_INPUT', 'The Host header is not a valid host name');
      const answer = await prepared.answer(request, () => graphqlContext(request));
      if (answer) {
        deps.metrics.graphqlRequest('prepared');
        for (const [name, value] of answer.headers) reply.header(name, value);
        return reply.code(answer.status).send(answer.body);
      }
      deps.metrics.graphqlRequest('apollo');
      return apolloHandler.call(app, request, reply);
    },
  });

  return app;
}

/**
 * Apollo's fastify integration makes a URL of the request's path and Host header, and answers 500 (logged as
 * a fault of ours) when it cannot: a Host header that is no host name is the caller's mistake, answered 400
 * before either GraphQL path. A server sees few hosts and paths, so their verdicts are kept: parsing costs
 * more than every other check a prepared operation makes.
 */
class RequestUrls {
  private static readonly MAX_ENTRIES = 64;
  private readonly verdicts = new Map<string, boolean>();

  parses(request: FastifyRequest): boolean {
    const base = `${request.protocol}://${request.hostname}/`;
    const key = `${base} ${request.url}`;
    let parses = this.verdicts.get(key);
    if (parses === undefined) {
      parses = URL.canParse(request.url, base);
      if (this.verdicts.size < RequestUrls.MAX_ENTRIES) this.verdicts.set(key, parses);
    }
    return parses;
  }
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

import { randomUUID } from 'node:crypto';
import { fastifyApolloHandler } from '@as-integrations/fastify';
import cors from '@fastify/cors';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Config } from '../config.js';
import { GatewayError } from '../domain/errors.js';
import type { GatewayService } from '../domain/service.js';
import { createApollo, graphqlErrorBody } from '../graphql/apollo.js';
import { createContext } from '../graphql/context.js';
import { gatewaySchema } from '../graphql/schema.js';
import { toRestError } from './errors.js';
import { rateLimitHeaders } from './rate-limit-headers.js';
import { restContext, restRoutes } from './rest.js';

export interface HttpDeps {
  config: Config;
  service: GatewayService;
  /** Readiness of the parts the gateway depends on; throws when one is not ready. */
  checkReady: () => Promise<void>;
  logger?: FastifyServerOptions['logger'];
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export function loggerOptions(config: Config): FastifyServerOptions['logger'] {
  return {
    level: config.logLevel,
    redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization'], censor: '[redacted]' },
  };
}

/** Builds the HTTP server without listening, so tests and main.ts share it. */
export async function buildHttpServer(deps: HttpDeps): Promise<FastifyInstance> {
  const { config, service } = deps;
  const app = Fastify({
    logger: deps.logger ?? loggerOptions(config),
    bodyLimit: config.bodyLimitBytes,
    trustProxy: config.trustProxy,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    requestIdHeader: false,
    // An incoming x-request-id is kept when it is safe to log; otherwise one is made.
    genReqId: (request) => {
      const incoming = request.headers['x-request-id'];
      return typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    },
  });

  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  // Only JSON is parsed: any other body is refused with 415 before a handler runs.
  app.removeContentTypeParser('text/plain');
  if (config.corsOrigins.length > 0) await app.register(cors, corsOptions(config.corsOrigins));

  app.setErrorHandler((error, request, reply) => {
    const mapped = toRestError(error);
    if (mapped.unexpected) request.log.error({ err: error }, 'unexpected error');
    reply.headers(rateLimitHeaders(mapped.gatewayError.rateLimit));
    if (mapped.gatewayError.retryAfterSeconds !== undefined) reply.header('retry-after', String(mapped.gatewayError.retryAfterSeconds));
    const body = request.routeOptions.url === '/graphql' ? graphqlErrorBody(mapped.gatewayError, request.id) : mapped.body;
    return reply.status(mapped.status).send(body);
  });

  app.setNotFoundHandler((request, reply) => reply.status(404).send({ message: 'Not Found' }));

  await app.register(restRoutes, { service });

  const apollo = createApollo({
    schema: await gatewaySchema(),
    introspection: config.explorer,
    hideSchemaDetails: config.production,
    limits: {
      maxDepth: config.graphqlMaxDepth,
      maxCost: config.graphqlMaxCost,
      maxAliases: config.graphqlMaxAliases,
      maxDuplicatesPerOperation: config.graphqlMaxDuplicatesPerOperation,
    },
    logger: app.log,
  });
  await apollo.start();
  app.addHook('onClose', () => apollo.stop());
  app.route({
    url: '/graphql',
    method: ['GET', 'POST', 'OPTIONS'],
    handler: fastifyApolloHandler(apollo, {
      context: async (request) => createContext(service, restContext(request, 'GRAPHQL'), request.id),
    }),
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (request, reply) => {
    try {
      await deps.checkReady();
      return { status: 'ready' };
    } catch (error) {
      request.log.warn({ err: error }, 'not ready');
      const message = error instanceof GatewayError ? error.message : 'A dependency is not ready';
      return reply.status(503).send({ status: 'not ready', message });
    }
  });

  return app;
}

/**
 * Browser frontends on the configured origins only. A request from any other origin gets no CORS headers at
 * all, and credentials (cookies) are never allowed: callers authenticate with the Authorization header.
 */
function corsOptions(origins: string[]) {
  const allowed = new Set(origins);
  return {
    origin: (origin: string | undefined, callback: (error: Error | null, allow: string | false) => void) =>
      callback(null, origin !== undefined && allowed.has(origin) ? origin : false),
    credentials: false,
    strictPreflight: false,
    methods: ['GET', 'POST'],
    allowedHeaders: ['authorization', 'content-type', 'idempotency-key', 'apollo-require-preflight', 'x-apollo-operation-name', 'x-request-id'],
    exposedHeaders: ['x-request-id', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'retry-after', 'location'],
    maxAge: 600,
  };
}

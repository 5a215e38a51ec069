import { randomUUID } from 'node:crypto';
import { fastifyApolloHandler } from '@as-integrations/fastify';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Config } from '../config.js';
import type { GatewayService } from '../domain/service.js';
import { createApollo } from '../graphql/apollo.js';
import { createContext } from '../graphql/context.js';
import { gatewaySchema } from '../graphql/schema.js';
import type { ReadinessReport } from '../readiness.js';
import { toRestError } from './errors.js';
import { rateLimitHeaders } from './rate-limit-headers.js';
import { restContext, restRoutes } from './rest.js';

export interface HttpDeps {
  config: Config;
  service: GatewayService;
  /** How each dependency (store, quota, …) is doing; the instance is ready when none is down. */
  checkReady: () => Promise<ReadinessReport>;
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
    trustProxy: false,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    requestIdHeader: false,
    // An incoming x-request-id is kept when it is safe to log; otherwise one is made.
    genReqId: (request) => {
      const incoming = request.headers['x-request-id'];
      return typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    },
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

  app.setErrorHandler((error, request, reply) => {
    const mapped = toRestError(error);
    if (mapped.unexpected) request.log.error({ err: error }, 'unexpected error');
    reply.headers(rateLimitHeaders(mapped.gatewayError.rateLimit));
    if (mapped.gatewayError.retryAfterSeconds !== undefined) reply.header('retry-after', String(mapped.gatewayError.retryAfterSeconds));
    return reply.status(mapped.status).send(mapped.body);
  });

  app.setNotFoundHandler((request, reply) => reply.status(404).send({ message: 'Not Found' }));

  await app.register(restRoutes, { service });

  const apollo = createApollo({ schema: await gatewaySchema(), introspection: config.explorer, logger: app.log });
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
    const { ready, checks } = await deps.checkReady();
    const troubled = Object.entries(checks).filter(([, check]) => check.status !== 'ok');
    const message = troubled.map(([name, check]) => `${name}: ${check.message ?? check.status}`).join('; ') || undefined;
    if (ready) return { status: troubled.length > 0 ? 'degraded' : 'ready', message, checks };
    request.log.warn({ checks }, 'not ready');
    return reply.status(503).send({ status: 'not ready', message, checks });
  });

  return app;
}

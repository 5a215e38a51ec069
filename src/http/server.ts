import { randomUUID } from 'node:crypto';
import { fastifyApolloHandler } from '@as-integrations/fastify';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Config } from '../config.js';
import { GatewayError } from '../domain/errors.js';
import type { GatewayService } from '../domain/service.js';
import { createApollo } from '../graphql/apollo.js';
import { createContext } from '../graphql/context.js';
import { gatewaySchema } from '../graphql/schema.js';
import { toRestError } from './errors.js';
import { rateLimitHeaders } from './rate-limit-headers.js';
import { restContext, restRoutes } from './rest.js';

export interface HttpDeps {
  config: Config;
  service: GatewayService;
  /** One check per dependency (store, quota, upstream, …), each throwing when its dependency is not ready. */
  readinessChecks: Record<string, () => Promise<void>>;
  logger?: FastifyServerOptions['logger'];
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** A dependency that does not answer a readiness check within this is reported down, so /readyz never hangs. */
const READINESS_TIMEOUT_MS = 3000;

type DependencyStatus = { status: 'up' } | { status: 'down'; message: string };

async function checkDependency(check: () => Promise<void>, onDown: (error: unknown) => void): Promise<DependencyStatus> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      check(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new GatewayError('UNAVAILABLE', 'No answer in time')), READINESS_TIMEOUT_MS);
      }),
    ]);
    return { status: 'up' };
  } catch (error) {
    onDown(error);
    return { status: 'down', message: error instanceof GatewayError ? error.message : 'Not ready' };
  } finally {
    clearTimeout(timer);
  }
}

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
    forceCloseConnections: 'idle',
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
  // Readiness only: an unreachable dependency takes the instance out of rotation, never fails liveness.
  app.get('/readyz', async (request, reply) => {
    const names = Object.keys(deps.readinessChecks);
    const results = await Promise.all(
      names.map((name) => checkDependency(deps.readinessChecks[name], (error) => request.log.warn({ err: error, dependency: name }, 'not ready'))),
    );
    const checks = Object.fromEntries(names.map((name, index) => [name, results[index]]));
    const ready = results.every((result) => result.status === 'up');
    return reply.status(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks });
  });

  return app;
}

import type { FastifyInstance } from 'fastify';
import type { ReadinessReport } from '../readiness.js';
import { schemaRef } from './openapi.js';

const dependency = {
  $id: 'DependencyCheck',
  type: 'object',
  required: ['status'],
  properties: {
    status: { type: 'string', enum: ['up', 'degraded', 'down'] },
    backend: { type: 'string', description: 'The implementation in use: sqlite, postgres, redis, memory, braze' },
    message: { type: 'string', description: 'What is wrong, when something is; for an upstream that is up, the pause it asked for (429), if any' },
  },
} as const;

const readinessBody = {
  $id: 'Readiness',
  type: 'object',
  required: ['status', 'checks'],
  properties: {
    status: { type: 'string', enum: ['ready', 'degraded', 'not ready', 'stopping'] },
    message: { type: 'string', description: 'That the instance is stopping, and every dependency that is not up, and why' },
    checks: { type: 'object', description: 'Each dependency by name', additionalProperties: schemaRef(dependency.$id) },
  },
} as const;

const healthBody = {
  $id: 'Health',
  type: 'object',
  required: ['status'],
  properties: {
    status: { type: 'string', enum: ['ok', 'failing'] },
    message: { type: 'string', description: 'Why the process cannot serve again until it is restarted, when it cannot' },
  },
} as const;

export interface HealthOptions {
  checkReady: () => Promise<ReadinessReport>;
  /** Why the process cannot serve again until it is restarted, or null: never a dependency's outage, which passes. */
  checkLive: () => string | null;
}

/** GET /healthz (the process answers, and can serve without a restart) and GET /readyz (what it depends on answers too). */
export async function healthRoutes(app: FastifyInstance, options: HealthOptions): Promise<void> {
  for (const schema of [healthBody, dependency, readinessBody]) app.addSchema(schema);
  app.get(
    '/healthz',
    {
      schema: {
        operationId: 'getHealth',
        tags: ['operations'],
        summary: 'Liveness',
        security: [],
        response: {
          200: { description: 'The process is serving, or will once its dependencies are back', ...schemaRef(healthBody.$id) },
          503: {
            description: 'The process is in a state only a restart ends (the embedded store damaged, its writer thread gone, another file at its path): restart it',
            ...schemaRef(healthBody.$id),
          },
        },
      },
    },
    async (_request, reply) => {
      const failing = options.checkLive();
      return failing === null ? { status: 'ok' } : reply.status(503).send({ status: 'failing', message: failing });
    },
  );

  // Readiness only: an unreachable dependency takes the instance out of rotation, never fails liveness.
  app.get(
    '/readyz',
    {
      schema: {
        operationId: 'getReadiness',
        tags: ['operations'],
        summary: 'Readiness: the store, the quota backend and, in upstream mode, the upstream',
        security: [],
        response: {
          200: {
            description: 'Every dependency is up, or degraded but serving (e.g. Redis down: in-process limits; the upstream down: jobs wait)',
            ...schemaRef(readinessBody.$id),
          },
          503: {
            description:
              'A dependency the instance needs to serve (the store, the quota backend) is down, and `checks` says which; or the instance is stopping (`SHUTDOWN_DRAIN_SECONDS`)',
            ...schemaRef(readinessBody.$id),
          },
        },
      },
    },
    async (_request, reply) => {
      // The errors behind failing checks are logged where the checks run, once per failure, not per probe.
      const { ready, stopping, checks } = await options.checkReady();
      const troubled = Object.entries(checks).filter(([, check]) => check.status !== 'up');
      const message =
        [...(stopping ? ['The gateway is shutting down'] : []), ...troubled.map(([name, check]) => `${name}: ${check.message ?? check.status}`)].join('; ') ||
        undefined;
      const status = stopping ? 'stopping' : !ready ? 'not ready' : troubled.length > 0 ? 'degraded' : 'ready';
      // `slow` is for the metrics: the body's status and message already say it.
      const shown = Object.fromEntries(Object.entries(checks).map(([name, { slow: _slow, ...check }]) => [name, check]));
      return reply.status(ready ? 200 : 503).send({ status, ...(message ? { message } : {}), checks: shown });
    },
  );
}

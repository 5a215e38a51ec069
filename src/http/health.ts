import type { FastifyInstance } from 'fastify';
import type { ReadinessReport } from '../readiness.js';

const dependency = {
  type: 'object',
  required: ['status'],
  properties: {
    status: { enum: ['up', 'degraded', 'down'] },
    backend: { type: 'string', description: 'The implementation in use: sqlite, postgres, redis, memory, braze' },
    message: { type: 'string', description: 'What is wrong, when something is; for an upstream that is up, the pause it asked for (429), if any' },
  },
} as const;

const readinessBody = {
  type: 'object',
  required: ['status', 'checks'],
  properties: {
    status: { enum: ['ready', 'degraded', 'not ready', 'stopping'] },
    message: { type: 'string', description: 'That the instance is stopping, and every dependency that is not up, and why' },
    checks: { type: 'object', description: 'Each dependency by name', additionalProperties: dependency },
  },
} as const;

/** GET /healthz (the process answers) and GET /readyz (what it depends on answers too). */
export async function healthRoutes(app: FastifyInstance, options: { checkReady: () => Promise<ReadinessReport> }): Promise<void> {
  app.get(
    '/healthz',
    {
      schema: {
        tags: ['operations'],
        summary: 'Liveness',
        response: { 200: { description: 'The process is serving', type: 'object', required: ['status'], properties: { status: { const: 'ok' } } } },
      },
    },
    async () => ({ status: 'ok' }),
  );

  // Readiness only: an unreachable dependency takes the instance out of rotation, never fails liveness.
  app.get(
    '/readyz',
    {
      schema: {
        tags: ['operations'],
        summary: 'Readiness: the store, the quota backend and, in upstream mode, the upstream',
        response: {
          200: {
            description: 'Every dependency is up, or degraded but serving (e.g. Redis down: in-process limits; the upstream down: jobs wait)',
            ...readinessBody,
          },
          503: {
            description:
              'A dependency the instance needs to serve (the store, the quota backend) is down, and `checks` says which; or the instance is stopping (`SHUTDOWN_DRAIN_SECONDS`)',
            ...readinessBody,
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
      return reply.status(ready ? 200 : 503).send({ status, ...(message ? { message } : {}), checks });
    },
  );
}

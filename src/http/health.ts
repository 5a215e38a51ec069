import type { FastifyInstance } from 'fastify';
import { GatewayError } from '../domain/errors.js';

/** A named check of something the gateway needs (store, quota backend, upstream); it throws when that is not ready. */
export type ReadinessChecks = Record<string, () => Promise<void>>;

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

const readinessBody = {
  type: 'object',
  required: ['status', 'checks'],
  properties: {
    status: { enum: ['ready', 'not ready'] },
    checks: {
      type: 'object',
      description: 'Each dependency by name: up, or down with what is wrong.',
      additionalProperties: {
        type: 'object',
        required: ['status'],
        properties: { status: { enum: ['up', 'down'] }, message: { type: 'string' } },
      },
    },
  },
} as const;

/** GET /healthz (the process answers) and GET /readyz (what it depends on answers too). */
export async function healthRoutes(app: FastifyInstance, options: { readinessChecks: ReadinessChecks }): Promise<void> {
  const { readinessChecks } = options;
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
          200: { description: 'Every dependency is up', ...readinessBody },
          503: { description: 'At least one dependency is down; `checks` says which', ...readinessBody },
        },
      },
    },
    async (request, reply) => {
      const names = Object.keys(readinessChecks);
      const results = await Promise.all(
        names.map((name) => checkDependency(readinessChecks[name], (error) => request.log.warn({ err: error, dependency: name }, 'not ready'))),
      );
      const checks = Object.fromEntries(names.map((name, index) => [name, results[index]]));
      const ready = results.every((result) => result.status === 'up');
      return reply.status(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks });
    },
  );
}

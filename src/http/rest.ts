import type { FastifyInstance, FastifyRequest } from 'fastify';
import { GatewayError } from '../domain/errors.js';
import type { GatewayService, RequestContext } from '../domain/service.js';
import type { Principal } from '../domain/types.js';
import { rateLimitHeaders } from './rate-limit-headers.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
}

/** Node keeps only the first of repeated Authorization headers; the raw headers show every one. */
function authorization(request: FastifyRequest): RequestContext['authorization'] {
  const raw = request.raw.rawHeaders;
  const values: string[] = [];
  for (let index = 0; index < raw.length; index += 2) {
    if (raw[index].toLowerCase() === 'authorization') values.push(raw[index + 1]);
  }
  return values.length > 1 ? values : request.headers.authorization;
}

export const restContext = (request: FastifyRequest, channel: RequestContext['channel']): RequestContext => ({
  authorization: authorization(request),
  ip: request.ip,
  channel,
});

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** Braze's snake_case body to the service's input; anything else is passed on for the service to refuse. */
function toDuplicateInput(body: unknown): unknown {
  if (!isObject(body)) return body;
  return { campaignId: body.campaign_id, name: body.name, description: body.description, tagNames: body.tag_names };
}

/** The Braze-compatible routes. Thin: parse, call the service, map the result. */
export async function restRoutes(app: FastifyInstance, options: { service: GatewayService }): Promise<void> {
  const { service } = options;

  app.post(
    '/campaigns/duplicate',
    {
      // Who is calling and whether they may duplicate is settled before the body is read, as Braze does.
      onRequest: async (request) => {
        request.principal = await service.authorizeDuplication(restContext(request, 'REST'));
      },
    },
    async (request, reply) => {
      const idempotencyKey = request.headers['idempotency-key'];
      if (Array.isArray(idempotencyKey)) throw new GatewayError('BAD_USER_INPUT', 'Send at most one Idempotency-Key header');
      const { job, rateLimit } = await service.acceptDuplication(
        request.principal as Principal,
        toDuplicateInput(request.body),
        idempotencyKey,
      );
      reply.headers(rateLimitHeaders(rateLimit));
      reply.header('location', `/duplication_jobs/${job.id}`);
      return reply.status(202).send({ message: 'success', job_id: job.id, status: 'pending' });
    },
  );

  app.get<{ Params: { job_id: string } }>('/duplication_jobs/:job_id', async (request, reply) => {
    const principal = await service.authenticate(restContext(request, 'REST'));
    const job = await service.getJob(principal, request.params.job_id);
    if (!job) throw new GatewayError('NOT_FOUND', 'Job not found');
    if (job.status === 'PENDING' || job.status === 'RUNNING') reply.header('retry-after', '1');
    return {
      job_id: job.id,
      status: job.status.toLowerCase(),
      source_campaign_id: job.sourceCampaignId,
      name: job.name,
      description: job.description,
      tag_names: job.tagNames ?? [],
      channel: job.channel,
      api_key_id: job.apiKeyId,
      attempts: job.attempts,
      created_at: job.createdAt.toISOString(),
      updated_at: job.updatedAt.toISOString(),
      finished_at: job.finishedAt?.toISOString() ?? null,
      result_campaign_id: job.resultCampaignId,
      error: job.error,
    };
  });
}

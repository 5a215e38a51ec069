import { METHODS } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteShorthandOptions } from 'fastify';
import { GatewayError } from '../domain/errors.js';
import { JOB_READ_COST } from '../domain/read-budget.js';
import type { GatewayService, RequestContext } from '../domain/service.js';
import { keepsSourceTags, type Principal } from '../domain/types.js';
import { isRecord } from '../domain/validation.js';
import { emptyBodyError } from './errors.js';
import { ALLOWED_METHODS } from './openapi.js';
import { rateLimitHeaders } from './rate-limit-headers.js';
import { headerValues, httpRequestContext } from './request-context.js';
import { duplicateSchema, jobSchema, REST_NAMED_SCHEMAS } from './rest-schemas.js';

/** Braze's snake_case body to the service's input; anything else is passed on for the service to refuse. */
function toDuplicateInput(body: unknown): unknown {
  if (!isRecord(body)) return body;
  return { campaignId: body.campaign_id, name: body.name, description: body.description, tagNames: body.tag_names };
}

/**
 * Every method Node's parser hands on as a request (WebDAV's, PURGE, QUERY… included): CONNECT goes to the server's
 * `connect` event, which nothing listens for, so Node closes its connection.
 */
const REQUEST_METHODS = METHODS.filter((method) => method !== 'CONNECT');

/**
 * Answers every other method of a route with 405 and the methods it has (RFC 9110 §15.5.6), as the request
 * arrives: before fastify would read its body and refuse that instead. Fastify needs a handler, which the
 * refusal in onRequest leaves unreached. A CORS preflight (OPTIONS) is answered before it, by the server's
 * hooks that run first.
 */
function methodNotAllowed(app: FastifyInstance, url: string, allowed: readonly string[]): void {
  const refuse = async (_request: FastifyRequest, reply: FastifyReply) => {
    reply.header('allow', allowed.join(', '));
    throw new GatewayError('METHOD_NOT_ALLOWED');
  };
  // HEAD is made from GET by fastify (exposeHeadRoutes), so it is never named here.
  const methods = REQUEST_METHODS.filter((method) => method !== 'HEAD' && !allowed.includes(method));
  app.route({ method: methods, url, schema: { hide: true }, onRequest: refuse, handler: refuse });
}

/**
 * Where the job an accepted request made is, relative to the request's own URL, so that it stays right behind a proxy
 * that adds a path prefix, as the OpenAPI document's server URL `.` does: one `../` for each slash after the route's
 * first segment, which the request reached with or without a trailing or doubled slash (`/campaigns//duplicate/`
 * gives `../../../duplication_jobs/…`).
 */
function jobLocation(requestUrl: string, jobId: string): string {
  const path = requestUrl.split('?', 1)[0].replace(/^\/+/, '');
  return `${'../'.repeat(path.split('/').length - 1)}duplication_jobs/${jobId}`;
}

/** How a keyed route checks its caller: before the body is read, and again once it is in. */
export interface KeyCheck {
  authorize(context: RequestContext): Promise<Principal>;
  /**
   * The principal `authorize` gave, or the key checked again when the body came late; `refusedAlready` when the
   * request's answer is already a refusal, so that the check counts as no outcome of its own.
   */
  reauthorize(principal: Principal, context: RequestContext, options?: { refusedAlready: boolean }): Promise<Principal>;
}

/**
 * Everything a quota-bearing REST route whose key is checked before its body needs, in one place so that no such
 * route forgets a part: the key checked as the request arrives (`onRequest`), `principal` for the handler, which
 * checks the key again when the body came late, and an `onError` that does so for a late body refused before the
 * handler ran (not JSON, not UTF-8, too large), so that a key refused meanwhile is unknown to the answer, which
 * shows it no quota, as before its body.
 */
export function keyedRoute(check: KeyCheck): {
  options: Pick<RouteShorthandOptions, 'config' | 'onRequest' | 'onError'>;
  principal(request: FastifyRequest): Promise<Principal>;
} {
  const principal = async (request: FastifyRequest, options?: { refusedAlready: boolean }): Promise<Principal> => {
    const checkedBefore = request.principal as Principal;
    request.principal = undefined;
    request.principal = await check.reauthorize(checkedBefore, httpRequestContext(request, 'REST'), options);
    return request.principal;
  };
  return {
    options: {
      config: { quotaBearing: true },
      onRequest: async (request) => {
        request.principal = await check.authorize(httpRequestContext(request, 'REST'));
      },
      onError: async (request) => {
        if (request.principal) await principal(request, { refusedAlready: true }).catch(() => undefined);
      },
    },
    principal,
  };
}

/** The Braze-compatible routes. Thin: parse, call the service, map the result. */
export async function restRoutes(app: FastifyInstance, options: { service: GatewayService; idempotencyTtlHours: number }): Promise<void> {
  const { service, idempotencyTtlHours } = options;
  for (const schema of REST_NAMED_SCHEMAS) app.addSchema(schema);
  // Fastify routes a few methods unless told of the others; being told makes no route answer them.
  for (const method of REQUEST_METHODS) if (!app.supportedMethods.includes(method)) app.addHttpMethod(method);
  for (const [url, allowed] of Object.entries(ALLOWED_METHODS)) methodNotAllowed(app, url, allowed);
  const duplication = keyedRoute({
    authorize: (context) => service.authorizeDuplication(context),
    reauthorize: (principal, context, options) => service.reauthorizeDuplication(principal, context, options),
  });
  app.post(
    '/campaigns/duplicate',
    { schema: duplicateSchema(idempotencyTtlHours), ...duplication.options },
    async (request, reply) => {
      // No Content-Type and no body: nothing for fastify to parse, refused as the empty JSON body is.
      if (request.body === undefined) throw emptyBodyError();
      const idempotencyKeys = headerValues(request, 'idempotency-key');
      if (idempotencyKeys.length > 1) throw new GatewayError('BAD_USER_INPUT', 'Send at most one Idempotency-Key header');
      const [idempotencyKey] = idempotencyKeys;
      const principal = await duplication.principal(request);
      const { job, rateLimit } = await service.acceptDuplication(principal, toDuplicateInput(request.body), idempotencyKey);
      request.jobId = job.id;
      reply.headers(rateLimitHeaders(rateLimit));
      reply.header('location', jobLocation(request.url, job.id));
      return reply.status(202).send({ message: 'success', job_id: job.id, status: job.status.toLowerCase() });
    },
  );

  app.get<{ Params: { job_id: string } }>('/duplication_jobs/:job_id', { schema: jobSchema }, async (request, reply) => {
    const principal = await service.authenticate(httpRequestContext(request, 'REST'));
    await service.takeReadBudget(principal, JOB_READ_COST);
    const job = await service.getJob(principal, request.params.job_id);
    if (!job) throw new GatewayError('NOT_FOUND', 'Job not found');
    const pollAfter = await service.pollAfterSeconds(job);
    if (pollAfter !== null) reply.header('retry-after', String(pollAfter));
    return {
      job_id: job.id,
      status: job.status.toLowerCase(),
      source_campaign_id: job.sourceCampaignId,
      name: job.name,
      description: job.description,
      tag_names: job.tagNames ?? [],
      keeps_source_tags: keepsSourceTags(job),
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

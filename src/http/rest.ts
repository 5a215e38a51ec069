import { METHODS } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteShorthandOptions } from 'fastify';
import { GatewayError } from '../domain/errors.js';
import type { GatewayService, RequestContext, RequestLog, RequestTrace } from '../domain/service.js';
import { withoutPort } from '../domain/ip-allowlist.js';
import { CHANNELS, JOB_STATUSES, keepsSourceTags, type Principal } from '../domain/types.js';
import { CHARACTERS, isRecord, LIMITS } from '../domain/validation.js';
import { emptyBodyError } from './errors.js';
import { ACCEPT_ENCODING_HEADER, ALLOWED_METHODS, ALLOWLIST_ONLY_403, AUTH_BLOCK_ONLY_429, authenticatedErrorResponses, errorResponses, RETRY_AFTER_HEADER, schemaRef } from './openapi.js';
import { rateLimitHeaders } from './rate-limit-headers.js';

declare module 'fastify' {
  interface FastifyRequest extends RequestTrace {
    principal?: Principal;
    /** The job an accepted duplication made, or an idempotent repeat answered with, for the request's log line. */
    jobId?: string;
  }
}

/**
 * Every value of a header, as many times as it was sent: Node keeps only the first of some repeated headers
 * (Authorization) and joins others into one value (`a, b`); the raw headers show each one.
 */
function headerValues(request: FastifyRequest, name: string): string[] {
  const raw = request.raw.rawHeaders;
  const values: string[] = [];
  for (let index = 0; index < raw.length; index += 2) {
    if (raw[index].toLowerCase() === name) values.push(raw[index + 1]);
  }
  return values;
}

function authorization(request: FastifyRequest): RequestContext['authorization'] {
  const values = headerValues(request, 'authorization');
  return values.length > 1 ? values : request.headers.authorization;
}

/**
 * What the service needs to know of an HTTP request, REST or GraphQL: its key(s), the client address, the transport,
 * and its id.
 */
export const httpRequestContext = (request: FastifyRequest, channel: RequestContext['channel']): RequestContext => ({
  authorization: authorization(request),
  ip: withoutPort(request.ip),
  channel,
  requestId: request.id,
  // On the request's lines from here on, `request completed` with its 401 included. Fastify's logger here is always
  // pino's (built from options), whose children take more bindings.
  log: request.log as typeof request.log & RequestLog,
  trace: request,
});

/** Braze's snake_case body to the service's input; anything else is passed on for the service to refuse. */
function toDuplicateInput(body: unknown): unknown {
  if (!isRecord(body)) return body;
  return { campaignId: body.campaign_id, name: body.name, description: body.description, tagNames: body.tag_names };
}

const RATE_LIMIT_HEADERS = {
  'x-ratelimit-limit': {
    type: 'integer',
    description:
      'Points per window of the workspace quota. These headers come with every answer once the key is accepted ' +
      '(not with a 401, a 403 for the IP allowlist or a 429 for failed authentications), unless the quota cannot be read',
  },
  'x-ratelimit-remaining': { type: 'integer', description: 'Points left in the current window' },
  'x-ratelimit-reset': { type: 'integer', description: 'UTC epoch seconds when the window resets' },
} as const;

const nullableString = { type: ['string', 'null'] } as const;

const jobStatusSchema = { $id: 'DuplicationJobStatus', type: 'string', enum: JOB_STATUSES.map((status) => status.toLowerCase()) } as const;

/**
 * Text the service takes (src/domain/validation.ts): at least one character that is not a space, as many as `max`
 * code points (JSON Schema counts them so too). The service refuses more than a pattern can say plainly (control
 * characters, text that draws nothing, such as a zero-width space alone), so the schema is looser than the service
 * there, never stricter.
 */
const visibleText = (max: number, description: string) =>
  ({ type: 'string', minLength: 1, maxLength: max, pattern: '\\S', description: `${description}: at most ${max} ${CHARACTERS}` }) as const;

/**
 * Text whose spaces around it are dropped, and not counted: from its first character that is not a space (`\s`, the
 * spaces JavaScript's trim drops) to its last, as many as `max` code points.
 */
const trimmedText = (max: number, description: string) =>
  ({
    type: 'string',
    pattern: `^\\s*\\S(?:[\\s\\S]{0,${max - 2}}\\S)?\\s*$`,
    description: `${description}: at most ${max} ${CHARACTERS}, not counting the spaces around it, which are dropped`,
  }) as const;

const tagName = trimmedText(LIMITS.tagLength, 'An existing tag');

const duplicateRequestSchema = {
  $id: 'DuplicateCampaignRequest',
  type: 'object',
  required: ['campaign_id', 'name'],
  properties: {
    campaign_id: visibleText(LIMITS.campaignIdLength, 'The campaign to copy'),
    name: trimmedText(LIMITS.nameLength, 'Name of the new campaign'),
    description: {
      type: ['string', 'null'],
      maxLength: LIMITS.descriptionLength,
      description: `Description of the new campaign, at most ${LIMITS.descriptionLength} ${CHARACTERS}; the source's when omitted`,
    },
    tag_names: {
      description: "Existing tags; when given they replace the source campaign's tags. A single string is one tag.",
      anyOf: [{ type: 'array', maxItems: LIMITS.tagCount, items: tagName }, tagName, { type: 'null' }],
    },
  },
} as const;

const duplicationAcceptedSchema = {
  $id: 'DuplicationAccepted',
  type: 'object',
  description: 'The job, `pending` unless this repeats an earlier request',
  required: ['message', 'job_id', 'status'],
  properties: { message: { type: 'string', const: 'success' }, job_id: { type: 'string' }, status: schemaRef(jobStatusSchema.$id) },
} as const;

/** The schema of POST /campaigns/duplicate, which says how long an Idempotency-Key is kept as configured. */
const duplicateSchema = (idempotencyTtlHours: number) => ({
  operationId: 'duplicateCampaign',
  tags: ['campaigns'],
  summary: 'Duplicate a campaign (asynchronously)',
  description:
    "Braze's `POST /campaigns/duplicate`. Needs the permission campaigns.duplicate, checked before the body is read (and again once it is in, when it came more than 0.1 s later). " +
    'Takes one point of the workspace quota. Answers 202 at once with the job; follow it with GET /duplication_jobs/{job_id}. ' +
    "A repeat with the same Idempotency-Key and body answers 202 with the same job in its current status, and takes no point.",
  security: [{ apiKey: [] }],
  headers: {
    type: 'object',
    properties: {
      'idempotency-key': {
        type: 'string',
        minLength: 1,
        maxLength: LIMITS.idempotencyKeyLength,
        pattern: `^[\\x21-\\x7E]{1,${LIMITS.idempotencyKeyLength}}$`,
        description: `Repeating a request with the same key and body returns the same job without taking quota (kept ${idempotencyTtlHours} h, per workspace)`,
      },
    },
  },
  body: schemaRef(duplicateRequestSchema.$id),
  response: {
    202: {
      description: 'Accepted: the job is committed and will run',
      ...schemaRef(duplicationAcceptedSchema.$id),
      headers: {
        ...RATE_LIMIT_HEADERS,
        location: {
          type: 'string',
          required: true,
          description:
            "The job, relative to the request's URL so that it keeps a proxy's path prefix: `../duplication_jobs/{job_id}` " +
            '(one more `../` for each trailing slash, or doubled slash after the first segment, the request path had)',
        },
      },
    },
    ...authenticatedErrorResponses([400, 413, 422], RATE_LIMIT_HEADERS, {
      400:
        'The request is invalid. `errors` names each invalid field, one line each (a bad Idempotency-Key is checked first, ' +
        'and named alone); a request refused before its fields are read (a body that is not JSON, no body, two Idempotency-Key ' +
        'headers) has only `message`. Whether the campaign and the tags exist ' +
        'is checked only once every field is valid: then `Invalid Campaign ID`, or a line per unknown tag (not in upstream ' +
        'mode, where the job fails instead)',
    }),
    ...errorResponses([415], { ...RATE_LIMIT_HEADERS, ...ACCEPT_ENCODING_HEADER }),
    ...errorResponses([409], { ...RATE_LIMIT_HEADERS, ...RETRY_AFTER_HEADER }),
  },
});

/** Every field of a job, always present (null when it has no value): all are required. */
const jobProperties = {
  job_id: { type: 'string' },
  status: schemaRef(jobStatusSchema.$id),
  source_campaign_id: { type: 'string' },
  name: { type: 'string' },
  description: { ...nullableString, description: "The new campaign's description; null when the source campaign's is kept" },
  tag_names: { type: 'array', items: { type: 'string' }, description: 'The tags the request named; empty when keeps_source_tags' },
  keeps_source_tags: { type: 'boolean', description: "True when the request named no tags: the new campaign keeps the source campaign's tags" },
  channel: { type: 'string', enum: CHANNELS },
  api_key_id: { type: 'string' },
  attempts: { type: 'integer' },
  created_at: { type: 'string', format: 'date-time' },
  updated_at: { type: 'string', format: 'date-time' },
  finished_at: { type: ['string', 'null'], format: 'date-time' },
  result_campaign_id: nullableString,
  error: {
    type: ['object', 'null'],
    required: ['code', 'message'],
    properties: { code: { type: 'string' }, message: { type: 'string' } },
  },
} as const;

const duplicationJobSchema = { $id: 'DuplicationJob', type: 'object', required: Object.keys(jobProperties), properties: jobProperties } as const;

const jobSchema = {
  operationId: 'getDuplicationJob',
  tags: ['campaigns'],
  summary: 'A duplication job',
  description: 'A job of the calling key, or of its workspace with security_events.read. Retry-After is set while it is not finished.',
  security: [{ apiKey: [] }],
  params: { type: 'object', required: ['job_id'], properties: { job_id: { type: 'string' } } },
  response: {
    200: {
      description: 'The job',
      ...schemaRef(duplicationJobSchema.$id),
      headers: {
        'retry-after': {
          type: 'integer',
          description:
            'While the job is pending or running: seconds before asking again. For a pending job whose next attempt is ' +
            'scheduled later (a retry delay, a wait for an upstream slot), the whole seconds until then, or, in upstream mode, ' +
            'until the end of a pause the upstream asked for when that is later still; otherwise 1',
        },
      },
    },
    ...authenticatedErrorResponses([400, 404], {}, {
      400: 'The job id in the path is not valid percent-encoding',
      403: ALLOWLIST_ONLY_403,
      404: 'No such job, or not one this key may see (another key\'s job, without security_events.read)',
      429: AUTH_BLOCK_ONLY_429,
    }),
  },
};

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
export function jobLocation(requestUrl: string, jobId: string): string {
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
  for (const schema of [jobStatusSchema, duplicateRequestSchema, duplicationAcceptedSchema, duplicationJobSchema]) app.addSchema(schema);
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

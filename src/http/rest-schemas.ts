/** The OpenAPI (JSON Schema) declarations of the Braze-compatible routes: they document, never validate (openapi.ts). */
import { CHANNELS, JOB_STATUSES } from '../domain/types.js';
import { CHARACTERS, LIMITS } from '../domain/validation.js';
import { ACCEPT_ENCODING_HEADER, ALLOWLIST_ONLY_403, READ_429, authenticatedErrorResponses, errorResponses, RETRY_AFTER_HEADER, schemaRef } from './openapi.js';

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
export const duplicateSchema = (idempotencyTtlHours: number) => ({
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

export const jobSchema = {
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
      429: READ_429,
    }),
  },
};

/** The named schemas the routes' schemas refer to, added to the REST routes' instance. */
export const REST_NAMED_SCHEMAS = [jobStatusSchema, duplicateRequestSchema, duplicationAcceptedSchema, duplicationJobSchema];

/**
 * The gateway's two transports behind one interface: a duplication and a job lookup over REST or GraphQL,
 * with any request headers (a client address in X-Forwarded-For, odd Authorization headers), answered in one
 * vocabulary: the HTTP status and the error code in GraphQL's names (REST's own code beside it, which GraphQL gives as
 * extensions.reason where its name differs).
 */
import type { Dispatcher } from 'undici';
import { ERROR_CODES } from '../../src/domain/errors.js';
import { bearer, graphql, http, json, type HttpResult } from './gateway.js';

/** Input in the service's terms; each transport sends it in its own form. */
export interface DuplicateArgs {
  campaignId?: unknown;
  name?: unknown;
  description?: unknown;
  tagNames?: unknown;
}

export interface RequestOptions {
  /** Sent after the bearer of `key`, so they replace it; undefined entries are left out. */
  headers?: Record<string, string | undefined>;
  idempotencyKey?: string;
  /** The undici dispatcher to send through, e.g. an Agent bounding the sockets of a load test. */
  dispatcher?: Dispatcher;
}

export interface Outcome {
  status: number;
  /** GraphQL's extensions.code, or the GraphQL name of the code REST's body carries; null on success. */
  code: string | null;
  /** The code REST's body carries, in the gateway's names (ERROR_CODES): over GraphQL its extensions.reason, or its code when it has none; null on success. */
  restCode: string | null;
  message: string | null;
  details: string[];
  response: HttpResult;
}

export interface DuplicateOutcome extends Outcome {
  jobId: string | null;
}

export interface JobOutcome extends Outcome {
  job: { id: string; status: string } | null;
}

export interface Transport {
  name: 'REST' | 'GRAPHQL';
  /** Where a duplication is posted, for requests sent as raw bytes. */
  endpoint: string;
  /** The JSON text a duplication is posted with; GraphQL carries the idempotency key in it, REST in a header. */
  body(args: DuplicateArgs, idempotencyKey?: string): string;
  duplicate(baseUrl: string, key: string | null, args: DuplicateArgs, options?: RequestOptions): Promise<DuplicateOutcome>;
  job(baseUrl: string, key: string | null, id: string, options?: RequestOptions): Promise<JobOutcome>;
}

function headersFor(key: string | null, options: RequestOptions, base: Record<string, string> = json): Record<string, string> {
  const headers: Record<string, string> = { ...base, ...(key ? bearer(key) : {}) };
  for (const [name, value] of Object.entries(options.headers ?? {})) if (value !== undefined) headers[name] = value;
  return headers;
}

/** A REST error's code, in GraphQL's names; a body without a known code is named by its status. */
const graphqlName = (code: unknown, status: number): string =>
  typeof code === 'string' && Object.hasOwn(ERROR_CODES, code) ? ERROR_CODES[code as keyof typeof ERROR_CODES].graphqlCode : `HTTP_${status}`;

function restOutcome(response: HttpResult): Outcome {
  const failed = response.status >= 400;
  return {
    status: response.status,
    code: failed ? graphqlName(response.body?.code, response.status) : null,
    restCode: failed ? response.body?.code ?? null : null,
    message: failed ? response.body?.message ?? null : null,
    details: response.body?.errors ?? [],
    response,
  };
}

export const rest: Transport = {
  name: 'REST',
  endpoint: '/campaigns/duplicate',
  body: (args) => JSON.stringify({ campaign_id: args.campaignId, name: args.name, description: args.description, tag_names: args.tagNames }),
  async duplicate(baseUrl, key, args, options = {}) {
    const headers = headersFor(key, options);
    if (options.idempotencyKey !== undefined) headers['idempotency-key'] = options.idempotencyKey;
    const response = await http(baseUrl, 'POST', '/campaigns/duplicate', { headers, body: rest.body(args), dispatcher: options.dispatcher });
    return { ...restOutcome(response), jobId: response.status === 202 ? response.body.job_id : null };
  },
  async job(baseUrl, key, id, options = {}) {
    const response = await http(baseUrl, 'GET', `/duplication_jobs/${encodeURIComponent(id)}`, { headers: headersFor(key, options, {}) });
    const job = response.status === 200 ? { id: response.body.job_id, status: String(response.body.status).toUpperCase() } : null;
    // A job that is not there is a 404 over REST and a null over GraphQL: the same answer.
    if (response.status === 404) return { status: 404, code: null, restCode: null, message: null, details: [], response, job };
    return { ...restOutcome(response), job };
  },
};

export const DUPLICATE_MUTATION = `mutation Duplicate($input: DuplicateCampaignInput!) {
  duplicateCampaign(input: $input) { job { id status } }
}`;

export const JOB_QUERY = 'query Job($id: ID!) { duplicationJob(id: $id) { id status } }';

async function postGraphQL(baseUrl: string, key: string | null, options: RequestOptions, body: string) {
  const response = await http(baseUrl, 'POST', '/graphql', { headers: headersFor(key, options), body, dispatcher: options.dispatcher });
  const error = response.body?.errors?.[0];
  const outcome: Outcome = {
    status: response.status,
    code: error?.extensions?.code ?? null,
    restCode: error?.extensions?.reason ?? error?.extensions?.code ?? null,
    message: error?.message ?? null,
    details: (error?.extensions?.issues ?? []).map((issue: { field: string; message: string }) => `${issue.field}: ${issue.message}`),
    response,
  };
  return { outcome, data: response.body?.data };
}

export const graphQL: Transport = {
  name: 'GRAPHQL',
  endpoint: '/graphql',
  body(args, idempotencyKey) {
    const input: Record<string, unknown> = { ...args };
    if (idempotencyKey !== undefined) input.idempotencyKey = idempotencyKey;
    return JSON.stringify({ query: DUPLICATE_MUTATION, variables: { input } });
  },
  async duplicate(baseUrl, key, args, options = {}) {
    const { outcome, data } = await postGraphQL(baseUrl, key, options, graphQL.body(args, options.idempotencyKey));
    return { ...outcome, jobId: data?.duplicateCampaign?.job?.id ?? null };
  },
  async job(baseUrl, key, id, options = {}) {
    const { outcome, data } = await postGraphQL(baseUrl, key, options, JSON.stringify({ query: JOB_QUERY, variables: { id } }));
    return { ...outcome, job: data?.duplicationJob ?? null };
  },
};

export const transports: Transport[] = [rest, graphQL];

const JOB_EVENTS = `query Events($job: ID!) {
  securityEvents(filter: {jobId: $job}) { edges { node { type job { status resultCampaignId error { code message } } } } }
}`;

/** The job's events (newest first) and its status, as a polling client sees them. */
export async function jobEvents(baseUrl: string, key: string, jobId: string) {
  const response = await graphql(baseUrl, key, JOB_EVENTS, { job: jobId });
  const edges = response.body.data.securityEvents.edges as { node: { type: string; job: { status: string; resultCampaignId: string | null } | null } }[];
  return { types: edges.map((edge) => edge.node.type), job: edges[0]?.node.job ?? null };
}

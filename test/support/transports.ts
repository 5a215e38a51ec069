import { bearer, graphql, http, json, type HttpResult } from './gateway.js';

/** Input in the service's terms; each transport sends it in its own form. */
export interface DuplicateArgs {
  campaignId?: unknown;
  name?: unknown;
  description?: unknown;
  tagNames?: unknown;
}

export interface DuplicateOutcome {
  /** The HTTP status of the response. */
  httpStatus: number;
  jobId: string | null;
  /** GraphQL's extensions.code, or the code REST's status stands for. */
  code: string | null;
  message: string | null;
  details: string[];
  headers: HttpResult['headers'];
}

export interface Transport {
  name: 'REST' | 'GRAPHQL';
  duplicate(baseUrl: string, key: string | null, args: DuplicateArgs, options?: { idempotencyKey?: string; authorization?: string }): Promise<DuplicateOutcome>;
}

const REST_CODES: Record<number, string> = {
  400: 'BAD_USER_INPUT',
  401: 'UNAUTHENTICATED',
  403: 'FORBIDDEN',
  404: 'NOT_FOUND',
  409: 'CONFLICT',
  413: 'BAD_USER_INPUT',
  415: 'BAD_USER_INPUT',
  422: 'CONFLICT',
  429: 'RATE_LIMITED',
  500: 'INTERNAL_SERVER_ERROR',
};

export const rest: Transport = {
  name: 'REST',
  async duplicate(baseUrl, key, args, options = {}) {
    const body: Record<string, unknown> = {};
    if ('campaignId' in args) body.campaign_id = args.campaignId;
    if ('name' in args) body.name = args.name;
    if ('description' in args) body.description = args.description;
    if ('tagNames' in args) body.tag_names = args.tagNames;
    const headers: Record<string, string> = { ...json };
    if (options.authorization !== undefined) headers.authorization = options.authorization;
    else if (key) Object.assign(headers, bearer(key));
    if (options.idempotencyKey !== undefined) headers['idempotency-key'] = options.idempotencyKey;
    const response = await http(baseUrl, 'POST', '/campaigns/duplicate', { headers, body: JSON.stringify(body) });
    const ok = response.status === 202;
    return {
      httpStatus: response.status,
      jobId: ok ? response.body.job_id : null,
      code: ok ? null : (REST_CODES[response.status] ?? `HTTP_${response.status}`),
      message: ok ? null : response.body?.message ?? null,
      details: response.body?.errors ?? [],
      headers: response.headers,
    };
  },
};

const MUTATION = `mutation Duplicate($input: DuplicateCampaignInput!) {
  duplicateCampaign(input: $input) { job { id status sourceCampaignId name } }
}`;

export const graphQL: Transport = {
  name: 'GRAPHQL',
  async duplicate(baseUrl, key, args, options = {}) {
    const input: Record<string, unknown> = { ...args };
    if (options.idempotencyKey !== undefined) input.idempotencyKey = options.idempotencyKey;
    const headers: Record<string, string> = { ...json };
    if (options.authorization !== undefined) headers.authorization = options.authorization;
    else if (key) Object.assign(headers, bearer(key));
    const response = await http(baseUrl, 'POST', '/graphql', { headers, body: JSON.stringify({ query: MUTATION, variables: { input } }) });
    const error = response.body?.errors?.[0];
    return {
      httpStatus: response.status,
      jobId: response.body?.data?.duplicateCampaign?.job?.id ?? null,
      code: error?.extensions?.code ?? null,
      message: error?.message ?? null,
      details: (error?.extensions?.issues ?? []).map((issue: { field: string; message: string }) => `${issue.field}: ${issue.message}`),
      headers: response.headers,
    };
  },
};

export const transports: Transport[] = [rest, graphQL];

export const JOB_EVENTS = `query Events($job: ID!) {
  securityEvents(filter: {jobId: $job}) { edges { node { type job { status resultCampaignId error { code message } } } } }
}`;

/** The job's events (newest first) and its status, as a polling client sees them. */
export async function jobEvents(baseUrl: string, key: string, jobId: string) {
  const response = await graphql(baseUrl, key, JOB_EVENTS, { job: jobId });
  const edges = response.body.data.securityEvents.edges as { node: { type: string; job: { status: string; resultCampaignId: string | null } | null } }[];
  return { types: edges.map((edge) => edge.node.type), job: edges[0]?.node.job ?? null };
}

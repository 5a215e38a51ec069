/**
 * Callers for the security suites: a duplication and a job lookup over either transport, with any request
 * headers (a client address in X-Forwarded-For, odd Authorization headers) and one vocabulary for the answer.
 */
import { ERROR_CODES } from '../../src/domain/errors.js';
import { http, json, type HttpResult } from './gateway.js';

export interface DuplicateArgs {
  campaignId: unknown;
  name: unknown;
  description?: unknown;
  tagNames?: unknown;
  idempotencyKey?: string;
}

/** What either transport answered, in one vocabulary: the HTTP status and the error code (GraphQL's names). */
export interface Outcome {
  transport: 'REST' | 'GRAPHQL';
  status: number;
  /** null on success. */
  code: string | null;
  result: HttpResult;
}

export interface TransportClient {
  name: 'REST' | 'GRAPHQL';
  duplicate(headers: Record<string, string>, args: DuplicateArgs): Promise<Outcome & { jobId: string | null }>;
  job(headers: Record<string, string>, id: string): Promise<Outcome & { job: { id: string; status: string } | null }>;
}

const restCode = (status: number): string | null => {
  if (status < 400) return null;
  const entry = Object.values(ERROR_CODES).find((candidate) => candidate.httpStatus === status);
  return entry?.graphqlCode ?? `HTTP_${status}`;
};

const graphqlCode = (result: HttpResult): string | null => result.body?.errors?.[0]?.extensions?.code ?? null;

export const DUPLICATE_MUTATION = `mutation Duplicate($input: DuplicateCampaignInput!) {
  duplicateCampaign(input: $input) { job { id status } }
}`;

export const JOB_QUERY = 'query Job($id: ID!) { duplicationJob(id: $id) { id status } }';

export function restClient(baseUrl: string): TransportClient {
  return {
    name: 'REST',
    async duplicate(headers, args) {
      const result = await http(baseUrl, 'POST', '/campaigns/duplicate', {
        headers: { ...json, ...headers, ...(args.idempotencyKey ? { 'idempotency-key': args.idempotencyKey } : {}) },
        body: JSON.stringify({ campaign_id: args.campaignId, name: args.name, description: args.description, tag_names: args.tagNames }),
      });
      return { transport: 'REST', status: result.status, code: restCode(result.status), result, jobId: result.body?.job_id ?? null };
    },
    async job(headers, id) {
      const result = await http(baseUrl, 'GET', `/duplication_jobs/${encodeURIComponent(id)}`, { headers });
      const job = result.status === 200 ? { id: result.body.job_id, status: String(result.body.status).toUpperCase() } : null;
      // A job that is not there is a 404 over REST and a null over GraphQL: the same answer.
      const code = result.status === 404 ? null : restCode(result.status);
      return { transport: 'REST', status: result.status, code, result, job };
    },
  };
}

export function graphqlClient(baseUrl: string): TransportClient {
  const post = (headers: Record<string, string>, query: string, variables: Record<string, unknown>) =>
    http(baseUrl, 'POST', '/graphql', { headers: { ...json, ...headers }, body: JSON.stringify({ query, variables }) });
  return {
    name: 'GRAPHQL',
    async duplicate(headers, args) {
      const input: Record<string, unknown> = { campaignId: args.campaignId, name: args.name };
      if (args.description !== undefined) input.description = args.description;
      if (args.tagNames !== undefined) input.tagNames = args.tagNames;
      if (args.idempotencyKey !== undefined) input.idempotencyKey = args.idempotencyKey;
      const result = await post(headers, DUPLICATE_MUTATION, { input });
      return {
        transport: 'GRAPHQL',
        status: result.status,
        code: graphqlCode(result),
        result,
        jobId: result.body?.data?.duplicateCampaign?.job?.id ?? null,
      };
    },
    async job(headers, id) {
      const result = await post(headers, JOB_QUERY, { id });
      return { transport: 'GRAPHQL', status: result.status, code: graphqlCode(result), result, job: result.body?.data?.duplicationJob ?? null };
    },
  };
}

export const bothTransports = (baseUrl: string): TransportClient[] => [restClient(baseUrl), graphqlClient(baseUrl)];

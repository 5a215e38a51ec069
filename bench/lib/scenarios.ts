import type autocannon from 'autocannon';
import type { BenchWorkspace } from './store.js';
import { seededJobId } from './store.js';

const json = (key: string) => ({ 'content-type': 'application/json', authorization: `Bearer ${key}` });

const parse = (body: string): any => {
  try {
    return JSON.parse(body);
  } catch {
    return undefined;
  }
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The REST answer of an accepted duplication (the baseline answers the same). */
export const isRestAccepted = (body: string): boolean => {
  const answer = parse(body);
  return answer?.message === 'success' && answer.status === 'pending' && UUID.test(answer.job_id);
};

export const isGraphQLAccepted = (body: string): boolean => {
  const answer = parse(body);
  const job = answer?.data?.duplicateCampaign?.job;
  return answer?.errors === undefined && job?.status === 'PENDING' && UUID.test(job.id);
};

export function restDuplicate(workspace: BenchWorkspace): autocannon.Request {
  return {
    method: 'POST',
    path: '/campaigns/duplicate',
    headers: json(workspace.key),
    body: JSON.stringify({ campaign_id: workspace.campaignId, name: 'Welcome series (copy)', description: 'bench', tag_names: ['promo'] }),
  };
}

export function graphqlDuplicate(workspace: BenchWorkspace): autocannon.Request {
  return {
    method: 'POST',
    path: '/graphql',
    headers: json(workspace.key),
    body: JSON.stringify({
      query: 'mutation Duplicate($input: DuplicateCampaignInput!) { duplicateCampaign(input: $input) { job { id status } } }',
      variables: { input: { campaignId: workspace.campaignId, name: 'Welcome series (copy)', description: 'bench', tagNames: ['promo'] } },
    }),
  };
}

const POLL_JOB = 'query Poll($job: ID!) { securityEvents(filter: {jobId: $job}) { edges { node { id type occurredAt job { status resultCampaignId } } } pageInfo { hasNextPage } } }';

/** Polls a job picked at random among `jobs` seeded ones, as a caller waiting for its job does. */
export function pollJob(workspace: BenchWorkspace, jobs: number): autocannon.Request {
  return {
    method: 'POST',
    path: '/graphql',
    headers: json(workspace.key),
    setupRequest: (request) => ({
      ...request,
      body: JSON.stringify({ query: POLL_JOB, variables: { job: seededJobId(Math.floor(Math.random() * jobs)) } }),
    }),
  };
}

/** Both events of a finished job, newest first, with the job's state. */
export const isJobPolled = (body: string): boolean => {
  const answer = parse(body);
  const edges = answer?.data?.securityEvents?.edges;
  return (
    answer?.errors === undefined &&
    Array.isArray(edges) &&
    edges.length === 2 &&
    edges[0].node.type === 'CAMPAIGN_DUPLICATED' &&
    edges[1].node.job?.status === 'SUCCEEDED'
  );
};

export function firstPage(workspace: BenchWorkspace): autocannon.Request {
  return {
    method: 'POST',
    path: '/graphql',
    headers: json(workspace.key),
    body: JSON.stringify({
      query: 'query Page { securityEvents { edges { cursor node { id type occurredAt jobId channel apiKey { id name } details } } pageInfo { hasNextPage endCursor } } }',
    }),
  };
}

export const isFirstPage = (body: string): boolean => {
  const answer = parse(body);
  const connection = answer?.data?.securityEvents;
  return answer?.errors === undefined && connection?.edges?.length === 50 && connection.pageInfo.hasNextPage === true;
};

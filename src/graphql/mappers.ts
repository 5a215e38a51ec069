import type { KeyView } from '../domain/service.js';
import * as domain from '../domain/types.js';
import type { Campaign, DuplicationJob, SecurityEvent, Viewer } from './types.js';

export const toGraphQLJob = (job: domain.DuplicationJob): DuplicationJob => ({
  id: job.id,
  status: job.status,
  sourceCampaignId: job.sourceCampaignId,
  name: job.name,
  description: job.description,
  tagNames: job.tagNames ?? [],
  keepsSourceTags: domain.keepsSourceTags(job),
  channel: job.channel,
  apiKey: { id: job.apiKeyId, name: job.apiKeyName },
  attempts: job.attempts,
  createdAt: job.createdAt,
  updatedAt: job.updatedAt,
  finishedAt: job.finishedAt,
  resultCampaignId: job.resultCampaignId,
  error: job.error,
  runAt: job.runAt,
});

export const toGraphQLCampaign = (campaign: domain.ListedCampaign): Campaign => ({
  id: campaign.id,
  name: campaign.name,
  tagNames: campaign.tagNames,
  updatedAt: campaign.updatedAt,
  duplicatedFrom: campaign.duplicatedFrom,
  details: 'partial' in campaign ? null : { description: campaign.description, draft: campaign.draft, createdAt: campaign.createdAt },
});

export const toGraphQLEvent = (event: domain.SecurityEvent): SecurityEvent => ({
  id: event.id,
  type: event.type,
  occurredAt: event.occurredAt,
  apiKey: event.apiKeyId === null ? null : { id: event.apiKeyId, name: event.apiKeyName ?? '' },
  channel: event.channel,
  ip: event.ip,
  jobId: event.jobId,
  campaignId: event.campaignId,
  details: event.details,
});

export const toGraphQLViewer = (key: KeyView): Viewer => ({
  apiKey: { id: key.keyId, name: key.keyName },
  workspaceId: key.workspaceId,
  permissions: key.permissions,
});

export function toConnection<T, N>(page: domain.Page<T>, map: (item: T) => N) {
  return {
    edges: page.items.map((item, index) => ({ cursor: page.cursors[index], node: map(item) })),
    // Forward paging only: the Relay specification allows false here rather than a look back before `after`.
    pageInfo: { hasNextPage: page.hasNextPage, hasPreviousPage: false, startCursor: page.cursors[0] ?? null, endCursor: page.endCursor },
  };
}

import { randomUUID } from 'node:crypto';
import type { ApiKeyRecord, Campaign, DuplicationJob, NewSecurityEvent } from '../../src/domain/types.js';

/** Plain domain objects for store tests; every field can be overridden. */
export const at = (ms: number): Date => new Date(Date.UTC(2026, 0, 1) + ms);

export function workspaceFixture(name = `ws-${randomUUID().slice(0, 8)}`) {
  return { id: randomUUID(), name, createdAt: at(0) };
}

export function apiKeyFixture(workspaceId: string, overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return {
    id: randomUUID(),
    workspaceId,
    name: 'key',
    hash: randomUUID().replace(/-/g, '').padEnd(64, '0'),
    prefix: 'cgw_abcdef',
    permissions: ['campaigns.duplicate'],
    allowedCidrs: null,
    previousHash: null,
    previousHashExpiresAt: null,
    createdAt: at(0),
    lastUsedAt: null,
    expiresAt: null,
    revokedAt: null,
    ...overrides,
  };
}

export function campaignFixture(workspaceId: string, overrides: Partial<Campaign> = {}): Campaign {
  return {
    id: randomUUID(),
    workspaceId,
    name: 'Welcome',
    description: 'desc',
    tagNames: ['onboarding'],
    draft: false,
    body: { channels: ['email'], nested: { a: [1, 2] } },
    createdAt: at(0),
    updatedAt: at(0),
    duplicatedFrom: null,
    ...overrides,
  };
}

export function jobFixture(workspaceId: string, overrides: Partial<DuplicationJob> = {}): DuplicationJob {
  return {
    id: randomUUID(),
    workspaceId,
    status: 'PENDING',
    sourceCampaignId: randomUUID(),
    name: 'Copy',
    description: null,
    tagNames: null,
    channel: 'REST',
    apiKeyId: randomUUID(),
    apiKeyName: 'key',
    ip: '127.0.0.1',
    requestId: null,
    attempts: 0,
    runAt: at(0),
    leaseOwner: null,
    leaseExpiresAt: null,
    createdAt: at(0),
    updatedAt: at(0),
    finishedAt: null,
    resultCampaignId: null,
    error: null,
    ...overrides,
  };
}

export function eventFixture(workspaceId: string, overrides: Partial<NewSecurityEvent> = {}): NewSecurityEvent {
  return {
    id: randomUUID(),
    workspaceId,
    type: 'CAMPAIGN_DUPLICATION_REQUESTED',
    occurredAt: at(0),
    apiKeyId: null,
    apiKeyName: null,
    channel: 'REST',
    ip: '127.0.0.1',
    jobId: null,
    campaignId: null,
    details: { n: 1 },
    ...overrides,
  };
}

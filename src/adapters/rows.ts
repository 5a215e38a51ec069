import type { ApiKeyRecord, Campaign, DuplicationJob, IdempotencyRecord, SecurityEvent, Workspace } from '../domain/types.js';

/** Rows as the SQL stores return them, mapped to domain objects. Numbers that PostgreSQL returns as strings (bigint) are converted. */
export type Row = Record<string, unknown>;

// Dates arrive as epoch milliseconds (SQLite) or as Date objects (PostgreSQL timestamptz).
const date = (value: unknown): Date => new Date(Number(value));
const maybeDate = (value: unknown): Date | null => (value === null || value === undefined ? null : date(value));
// JSON arrives as text (SQLite) or already parsed (PostgreSQL jsonb).
const parse = <T>(value: unknown): T => (typeof value === 'string' ? JSON.parse(value) : value) as T;

export const rowToWorkspace = (row: Row): Workspace => ({
  id: String(row.id),
  name: String(row.name),
  createdAt: date(row.created_at),
});

export const rowToApiKey = (row: Row): ApiKeyRecord => ({
  id: String(row.id),
  workspaceId: String(row.workspace_id),
  name: String(row.name),
  hash: String(row.hash),
  prefix: String(row.prefix),
  permissions: parse(row.permissions),
  allowedCidrs: row.allowed_cidrs === null ? null : parse(row.allowed_cidrs),
  previousHash: (row.previous_hash as string | null) ?? null,
  previousHashExpiresAt: maybeDate(row.previous_hash_expires_at),
  createdAt: date(row.created_at),
  lastUsedAt: maybeDate(row.last_used_at),
  expiresAt: maybeDate(row.expires_at),
  revokedAt: maybeDate(row.revoked_at),
});

export const rowToCampaign = (row: Row): Campaign => ({
  id: String(row.id),
  workspaceId: String(row.workspace_id),
  name: String(row.name),
  description: row.description === null ? null : String(row.description),
  tagNames: parse(row.tag_names),
  draft: Boolean(row.draft),
  body: parse(row.body),
  createdAt: date(row.created_at),
  updatedAt: date(row.updated_at),
  duplicatedFrom: row.duplicated_from === null ? null : String(row.duplicated_from),
});

export const rowToJob = (row: Row): DuplicationJob => ({
  id: String(row.id),
  workspaceId: String(row.workspace_id),
  status: row.status as DuplicationJob['status'],
  sourceCampaignId: String(row.source_campaign_id),
  name: String(row.name),
  description: row.description === null ? null : String(row.description),
  tagNames: row.tag_names === null ? null : parse(row.tag_names),
  channel: row.channel as DuplicationJob['channel'],
  apiKeyId: String(row.api_key_id),
  apiKeyName: String(row.api_key_name),
  ip: String(row.ip),
  attempts: Number(row.attempts),
  runAt: date(row.run_at),
  leaseOwner: row.lease_owner === null ? null : String(row.lease_owner),
  leaseExpiresAt: maybeDate(row.lease_expires_at),
  createdAt: date(row.created_at),
  updatedAt: date(row.updated_at),
  finishedAt: maybeDate(row.finished_at),
  resultCampaignId: row.result_campaign_id === null ? null : String(row.result_campaign_id),
  error: row.error_code === null ? null : { code: String(row.error_code), message: String(row.error_message) },
});

export const rowToIdempotency = (row: Row): IdempotencyRecord => ({
  workspaceId: String(row.workspace_id),
  key: String(row.key),
  requestHash: String(row.request_hash),
  jobId: (row.job_id as string | null) ?? null,
  createdAt: date(row.created_at),
  expiresAt: date(row.expires_at),
});

export const rowToEvent = (row: Row): SecurityEvent => ({
  id: String(row.id),
  seq: Number(row.seq),
  workspaceId: String(row.workspace_id),
  type: row.type as SecurityEvent['type'],
  occurredAt: date(row.occurred_at),
  apiKeyId: (row.api_key_id as string | null) ?? null,
  apiKeyName: (row.api_key_name as string | null) ?? null,
  channel: (row.channel as SecurityEvent['channel']) ?? null,
  ip: (row.ip as string | null) ?? null,
  jobId: (row.job_id as string | null) ?? null,
  campaignId: (row.campaign_id as string | null) ?? null,
  details: parse(row.details),
});

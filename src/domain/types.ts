import type { Permission } from './permissions.js';

export const CHANNELS = ['REST', 'GRAPHQL'] as const;
export type Channel = (typeof CHANNELS)[number];
export type JobStatus = 'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED';
export const JOB_STATUSES: readonly JobStatus[] = ['PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED'];

export const SECURITY_EVENT_TYPES = [
  'CAMPAIGN_DUPLICATION_REQUESTED',
  'CAMPAIGN_DUPLICATED',
  'CAMPAIGN_DUPLICATION_FAILED',
  'PERMISSION_DENIED',
  'API_KEY_CREATED',
  'API_KEY_REVOKED',
  'API_KEY_ROTATED',
  'SECURITY_EVENTS_DOWNLOADED',
  'API_KEY_REJECTED',
] as const;
export type SecurityEventType = (typeof SECURITY_EVENT_TYPES)[number];

export interface Workspace {
  id: string;
  name: string;
  createdAt: Date;
}

export interface ApiKeyRecord {
  id: string;
  workspaceId: string;
  name: string;
  /** SHA-256 of the whole key, hex. The key itself is never stored. */
  hash: string;
  /** The first characters of the key, so people can tell keys apart. */
  prefix: string;
  permissions: Permission[];
  allowedCidrs: string[] | null;
  /** After a rotation, the replaced secret's hash, valid until `previousHashExpiresAt` (null: not at all). */
  previousHash: string | null;
  previousHashExpiresAt: Date | null;
  createdAt: Date;
  lastUsedAt: Date | null;
  expiresAt: Date | null;
  revokedAt: Date | null;
}

/** Who is calling: a key that authenticated, and from where. */
export interface Principal {
  keyId: string;
  keyName: string;
  workspaceId: string;
  permissions: ReadonlySet<Permission>;
  ip: string;
  channel: Channel;
  /** The id the gateway answers the request with (X-Request-Id) and logs it under, kept in the events it causes. */
  requestId: string;
  /** When the key was checked: a request whose body arrives long after its headers checks it again. */
  authenticatedAt: Date;
  /** Which of the key's secrets the request presented: the previous one only during a rotation's overlap. */
  secret: KeySecret;
}

export type KeySecret = 'current' | 'previous';

/** Why a key the store holds was refused: what an API_KEY_REJECTED event says. */
export type KeyRejection = 'revoked' | 'expired' | 'rotated_out';

export interface Campaign {
  id: string;
  workspaceId: string;
  name: string;
  description: string | null;
  tagNames: string[];
  draft: boolean;
  /** Everything else a campaign carries (messages, schedule, audience), copied as it is. */
  body: Record<string, unknown>;
  createdAt: Date;
  updatedAt: Date;
  duplicatedFrom: string | null;
}

/** What Braze's campaign list leaves out: only a campaign's own details say them. */
export type CampaignDetailField = 'description' | 'draft' | 'createdAt';

/**
 * A campaign as a list gives it: whole from the gateway's store; from Braze's list without what the list leaves
 * out (`partial`), which nothing may make up: a caller that asks for it gets it from the campaign's details.
 */
export type ListedCampaign = Campaign | (Omit<Campaign, CampaignDetailField> & { partial: true });

/** Every code a job's error can carry: local duplication, the worker, and upstream mode. */
export const JOB_ERROR_CODES = [
  'CAMPAIGN_NOT_FOUND',
  'TAG_NOT_FOUND',
  'ATTEMPTS_EXHAUSTED',
  'INTERNAL_ERROR',
  'UPSTREAM_BAD_REQUEST',
  'UPSTREAM_UNAUTHORIZED',
  'UPSTREAM_FORBIDDEN',
  'UPSTREAM_NOT_FOUND',
  'UPSTREAM_REJECTED',
  'UPSTREAM_NOT_API',
  'UPSTREAM_RATE_LIMITED',
  'UPSTREAM_UNAVAILABLE',
  'UPSTREAM_TIMEOUT',
  'UPSTREAM_UNREACHABLE',
  'UPSTREAM_PACING_UNAVAILABLE',
  // An operator failed the job before it ran (`jobs fail`), as after a restore a job Braze already had.
  'CANCELLED',
] as const;
export type JobErrorCode = (typeof JOB_ERROR_CODES)[number];

export interface JobError {
  code: JobErrorCode;
  message: string;
}

export interface DuplicationJob {
  id: string;
  workspaceId: string;
  status: JobStatus;
  sourceCampaignId: string;
  name: string;
  description: string | null;
  /** null: keep the source campaign's tags. */
  tagNames: string[] | null;
  channel: Channel;
  apiKeyId: string;
  apiKeyName: string;
  ip: string;
  /**
   * The id of the request that asked for the job (X-Request-Id, as Principal.requestId), so that the worker's lines
   * and the upstream call carry it; null for jobs accepted before the store kept it.
   */
  requestId: string | null;
  attempts: number;
  runAt: Date;
  leaseOwner: string | null;
  leaseExpiresAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
  finishedAt: Date | null;
  resultCampaignId: string | null;
  error: JobError | null;
}

/** Which jobs a listing (`jobs list`) shows: every condition given, newest first. */
export interface JobFilter {
  workspaceId?: string;
  status?: JobStatus;
  /** Jobs accepted with this key (`apiKeyId`). */
  apiKeyId?: string;
  /** Jobs accepted at or after this time. */
  createdSince?: Date;
}

/** A job whose request named no tags (tagNames null) gives the copy its source campaign's tags. */
export const keepsSourceTags = (job: Pick<DuplicationJob, 'tagNames'>): boolean => job.tagNames === null;

export interface SecurityEvent {
  id: string;
  /** Insertion order; the basis of stable cursors. */
  seq: number;
  workspaceId: string;
  type: SecurityEventType;
  occurredAt: Date;
  apiKeyId: string | null;
  apiKeyName: string | null;
  channel: Channel | null;
  ip: string | null;
  jobId: string | null;
  campaignId: string | null;
  details: Record<string, unknown>;
}

export type NewSecurityEvent = Omit<SecurityEvent, 'seq'>;

export interface SecurityEventFilter {
  jobId?: string;
  types?: SecurityEventType[];
  apiKeyId?: string;
  since?: Date;
  until?: Date;
  /**
   * Also the events of types this version does not know, which a newer version wrote to the store they share
   * during a rolling upgrade: their `type` is then any text. Without it they are left out, as where a type must
   * be one this version names (GraphQL's enum). Only a filter without `types` can match them.
   */
  unknownTypes?: boolean;
}

export interface Page<T> {
  items: T[];
  hasNextPage: boolean;
  /** Cursor of the last item, to pass as `after`. */
  endCursor: string | null;
  cursors: string[];
}

/** A workspace-scoped Idempotency-Key: the request it was first used with, and the job it produced. */
export interface IdempotencyRecord {
  workspaceId: string;
  key: string;
  /** Hash of the request's input; the same key with another input is refused. */
  requestHash: string;
  /** null while the first request is still being accepted. */
  jobId: string | null;
  createdAt: Date;
  expiresAt: Date;
}

import { createHash } from 'node:crypto';
import stableStringify from 'safe-stable-stringify';
import { decodeCursor, encodeCursor } from './cursor.js';
import { GatewayError, type RateLimitState } from './errors.js';
import { newId } from './ids.js';
import { hashApiKey, hashesEqual, isWellFormedApiKey } from './keys.js';
import type { Permission } from './permissions.js';
import type { CampaignReader, Clock, GatewayStore, Quota } from './ports.js';
import type {
  Campaign,
  Channel,
  DuplicationJob,
  IdempotencyRecord,
  NewSecurityEvent,
  Page,
  Principal,
  SecurityEvent,
  SecurityEventFilter,
} from './types.js';
import { LIMITS, parseDuplicateInput, validationError, type RawDuplicateCampaignInput } from './validation.js';

export const MAX_PAGE_SIZE = 200;

/** What a transport knows about a request before the service sees it. */
export interface RequestContext {
  /** The Authorization header as received, if any. */
  authorization: string | undefined;
  ip: string;
  channel: Channel;
}

export interface DuplicationAccepted {
  job: DuplicationJob;
  rateLimit: RateLimitState;
  /** True when an idempotency key returned the job of an earlier request. */
  replayed: boolean;
}

export interface GatewayServiceDeps {
  store: GatewayStore;
  quota: Quota;
  campaigns: CampaignReader;
  clock: Clock;
  /** Wakes the worker after a job was committed. */
  onJobEnqueued?: () => void;
  /** How long an idempotency key is kept (24 h by default). */
  idempotencyTtlMs?: number;
}

/** A reservation whose request never produced a job (the process died) is given up after this long. */
const IDEMPOTENCY_RESERVATION_MS = 60_000;
const DEFAULT_IDEMPOTENCY_TTL_MS = 24 * 3600_000;

function parseIdempotencyKey(key: string): string {
  if (key.length === 0 || key.length > LIMITS.idempotencyKeyLength || !/^[\x21-\x7e]+$/.test(key)) {
    throw validationError([
      { field: 'idempotencyKey', message: `must be 1 to ${LIMITS.idempotencyKeyLength} visible ASCII characters` },
    ]);
  }
  return key;
}

/** The same input, whatever the key order or transport, hashes the same. */
const hashRequest = (raw: unknown): string => createHash('sha256').update(stableStringify(raw) ?? 'null').digest('hex');

const BEARER = /^Bearer +(\S+) *$/i;

/**
 * The one service both transports call. Order of checks for a duplication, as Braze does it:
 * authenticate → authorize → quota → validate → enqueue.
 */
export class GatewayService {
  private readonly idempotencyTtlMs: number;

  constructor(private readonly deps: GatewayServiceDeps) {
    this.idempotencyTtlMs = deps.idempotencyTtlMs ?? DEFAULT_IDEMPOTENCY_TTL_MS;
  }

  async authenticate(context: RequestContext): Promise<Principal> {
    const match = context.authorization === undefined ? null : BEARER.exec(context.authorization);
    const key = match?.[1];
    if (!key || !isWellFormedApiKey(key)) throw new GatewayError('UNAUTHENTICATED');
    const hash = hashApiKey(key);
    const record = await this.deps.store.findApiKeyByHash(hash);
    const now = this.deps.clock.now();
    const matches =
      record !== null &&
      (hashesEqual(record.hash, hash) ||
        (record.previousHash !== null &&
          hashesEqual(record.previousHash, hash) &&
          record.previousHashExpiresAt !== null &&
          record.previousHashExpiresAt > now));
    if (
      !record ||
      !matches ||
      record.revokedAt !== null ||
      (record.expiresAt !== null && record.expiresAt <= now)
    ) {
      throw new GatewayError('UNAUTHENTICATED');
    }
    return {
      keyId: record.id,
      keyName: record.name,
      workspaceId: record.workspaceId,
      permissions: new Set(record.permissions),
      ip: context.ip,
      channel: context.channel,
    };
  }

  /** The single place a permission is checked; a refusal is recorded as PERMISSION_DENIED. */
  async authorize(principal: Principal, permission: Permission, rateLimited = false): Promise<void> {
    if (principal.permissions.has(permission)) return;
    await this.deps.store.insertEvent(
      this.event(principal, 'PERMISSION_DENIED', { details: { permission } }),
    );
    const error = new GatewayError('FORBIDDEN');
    if (rateLimited) error.rateLimit = await this.deps.quota.peek(principal.workspaceId);
    throw error;
  }

  async duplicateCampaign(context: RequestContext, raw: RawDuplicateCampaignInput, idempotencyKey?: string | null): Promise<DuplicationAccepted> {
    return this.acceptDuplication(await this.authorizeDuplication(context), raw, idempotencyKey);
  }

  /** The checks that come before the request body is even read: who is calling, and may they duplicate. */
  async authorizeDuplication(context: RequestContext): Promise<Principal> {
    const principal = await this.authenticate(context);
    await this.authorize(principal, 'campaigns.duplicate', true);
    return principal;
  }

  /**
   * Takes a point of the workspace's quota, validates, and commits the job with its event. With an
   * idempotency key, a repeat of an accepted request returns the same job and takes no point.
   */
  async acceptDuplication(
    principal: Principal,
    raw: RawDuplicateCampaignInput,
    idempotencyKey?: string | null,
  ): Promise<DuplicationAccepted> {
    if (idempotencyKey === null || idempotencyKey === undefined) return this.enqueue(principal, raw);
    const key = parseIdempotencyKey(idempotencyKey);
    const now = this.deps.clock.now();
    const requestHash = hashRequest(raw);
    const holder = await this.deps.store.reserveIdempotencyKey(
      {
        workspaceId: principal.workspaceId,
        key,
        requestHash,
        jobId: null,
        createdAt: now,
        expiresAt: new Date(now.getTime() + this.idempotencyTtlMs),
      },
      new Date(now.getTime() - IDEMPOTENCY_RESERVATION_MS),
    );
    if (holder) return this.replay(principal, holder, requestHash);
    try {
      return await this.enqueue(principal, raw, key);
    } catch (error) {
      await this.deps.store.releaseIdempotencyKey(principal.workspaceId, key);
      throw error;
    }
  }

  private async replay(principal: Principal, holder: IdempotencyRecord, requestHash: string): Promise<DuplicationAccepted> {
    if (!hashesEqual(holder.requestHash, requestHash)) throw new GatewayError('IDEMPOTENCY_MISMATCH');
    if (holder.jobId === null) throw new GatewayError('IDEMPOTENCY_IN_FLIGHT', undefined, { retryAfterSeconds: 1 });
    const job = await this.deps.store.getJob(principal.workspaceId, holder.jobId);
    // The job was pruned while its key was still kept: the key is as good as new.
    if (!job) throw new GatewayError('IDEMPOTENCY_MISMATCH', 'This idempotency key belongs to a job that no longer exists');
    return { job, rateLimit: await this.deps.quota.peek(principal.workspaceId), replayed: true };
  }

  private async enqueue(principal: Principal, raw: RawDuplicateCampaignInput, idempotencyKey?: string): Promise<DuplicationAccepted> {
    const rateLimit = await this.deps.quota.consume(principal.workspaceId);
    try {
      const input = parseDuplicateInput(raw);
      const { campaigns, store } = this.deps;
      if (campaigns.validatesOnAccept) {
        const source = await campaigns.get(principal.workspaceId, input.campaignId);
        if (!source) throw new GatewayError('BAD_USER_INPUT', 'Invalid Campaign ID', { issues: [{ field: 'campaignId', message: 'is not a campaign of this workspace' }] });
        if (input.tagNames?.length) {
          const missing = await store.missingTags(principal.workspaceId, input.tagNames);
          if (missing.length > 0) {
            throw validationError(missing.map((tag) => ({ field: 'tagNames', message: `contains unknown tag '${tag}'` })));
          }
        }
      }
      const now = this.deps.clock.now();
      const job: DuplicationJob = {
        id: newId(),
        workspaceId: principal.workspaceId,
        status: 'PENDING',
        sourceCampaignId: input.campaignId,
        name: input.name,
        description: input.description,
        tagNames: input.tagNames,
        channel: principal.channel,
        apiKeyId: principal.keyId,
        apiKeyName: principal.keyName,
        ip: principal.ip,
        attempts: 0,
        runAt: now,
        leaseOwner: null,
        leaseExpiresAt: null,
        createdAt: now,
        updatedAt: now,
        finishedAt: null,
        resultCampaignId: null,
        error: null,
      };
      await store.enqueueJob(
        job,
        this.event(principal, 'CAMPAIGN_DUPLICATION_REQUESTED', {
          jobId: job.id,
          campaignId: job.sourceCampaignId,
          details: { name: job.name, description: job.description, tagNames: job.tagNames },
        }),
        idempotencyKey,
      );
      this.deps.onJobEnqueued?.();
      return { job, rateLimit, replayed: false };
    } catch (error) {
      if (error instanceof GatewayError) error.rateLimit ??= rateLimit;
      throw error;
    }
  }

  /** A job the principal may see: its own, or any of its workspace with `security_events.read`. */
  async getJob(principal: Principal, id: string): Promise<DuplicationJob | null> {
    const job = await this.deps.store.getJob(principal.workspaceId, id);
    if (!job || !this.canSee(principal, job.apiKeyId)) return null;
    return job;
  }

  async listSecurityEvents(
    principal: Principal,
    filter: SecurityEventFilter,
    first: number,
    after: string | null | undefined,
  ): Promise<Page<SecurityEvent>> {
    const size = pageSize(first);
    const beforeSeq = decodeCursor('e', after);
    const scoped: SecurityEventFilter = { ...filter };
    if (!principal.permissions.has('security_events.read')) {
      if (filter.apiKeyId !== undefined && filter.apiKeyId !== principal.keyId) return emptyPage();
      scoped.apiKeyId = principal.keyId;
    }
    const rows = await this.deps.store.listEvents(principal.workspaceId, scoped, { first: size + 1, beforeSeq });
    return toPage(rows.map((event) => ({ seq: event.seq, item: event })), size, 'e');
  }

  async listCampaigns(principal: Principal, first: number, after: string | null | undefined): Promise<Page<Campaign>> {
    await this.authorize(principal, 'campaigns.list');
    return this.deps.campaigns.list(principal.workspaceId, pageSize(first), after ?? null);
  }

  async getCampaign(principal: Principal, id: string): Promise<Campaign | null> {
    await this.authorize(principal, 'campaigns.details');
    return this.deps.campaigns.get(principal.workspaceId, id);
  }

  private canSee(principal: Principal, apiKeyId: string | null): boolean {
    return principal.permissions.has('security_events.read') || apiKeyId === principal.keyId;
  }

  private event(
    principal: Principal,
    type: NewSecurityEvent['type'],
    fields: Partial<Pick<NewSecurityEvent, 'jobId' | 'campaignId' | 'details'>>,
  ): NewSecurityEvent {
    return {
      id: newId(),
      workspaceId: principal.workspaceId,
      type,
      occurredAt: this.deps.clock.now(),
      apiKeyId: principal.keyId,
      apiKeyName: principal.keyName,
      channel: principal.channel,
      ip: principal.ip,
      jobId: fields.jobId ?? null,
      campaignId: fields.campaignId ?? null,
      details: fields.details ?? {},
    };
  }
}

function pageSize(first: number): number {
  if (!Number.isInteger(first) || first < 1 || first > MAX_PAGE_SIZE) {
    throw validationError([{ field: 'first', message: `must be an integer from 1 to ${MAX_PAGE_SIZE}` }]);
  }
  return first;
}

const emptyPage = <T>(): Page<T> => ({ items: [], hasNextPage: false, endCursor: null, cursors: [] });

/** Builds a page from rows fetched with one extra row, which only says whether a next page exists. */
export function toPage<T>(rows: { seq: number; item: T }[], size: number, kind: string): Page<T> {
  const visible = rows.slice(0, size);
  const cursors = visible.map((row) => encodeCursor(kind, row.seq));
  return {
    items: visible.map((row) => row.item),
    hasNextPage: rows.length > size,
    endCursor: cursors.at(-1) ?? null,
    cursors,
  };
}

import { hash } from 'node:crypto';
import { configure } from 'safe-stable-stringify';
import { Authentication, type AuthRefusal, type RequestContext } from './authentication.js';
import { GatewayError, internalError, isDependencyOutage, isGatewayError, type ErrorCode, type RateLimitState } from './errors.js';
import { DEFAULT_IDEMPOTENCY_TTL_HOURS, holdsIdempotencyKey, KeyTurns } from './idempotency.js';
import type { DownloadSlots } from './download-slots.js';
import { isGatewayId, newId } from './ids.js';
import { hashesEqual } from './keys.js';
import { pageSize } from './pages.js';
import { PERMISSIONS, type Permission } from './permissions.js';
import type { AuthFailureLimiter, CampaignReader, Clock, EventBudget, GatewayStore, Quota, UpstreamPause } from './ports.js';
import { RefusalEvents, type RefusalEventType } from './refusal-events.js';
import { requestEvent, secretUsed } from './request-events.js';
import { SecurityEventReads, type SecurityEventDownload } from './security-event-reads.js';
import type {
  Campaign,
  Channel,
  DuplicationJob,
  IdempotencyRecord,
  Page,
  Principal,
  SecurityEvent,
  SecurityEventFilter,
} from './types.js';
import {
  LIMITS,
  normalizeDuplicateInput,
  parseDuplicateInput,
  validationError,
  type DuplicateCampaignInput,
  type RawDuplicateCampaignInput,
} from './validation.js';

export { AUTH_REFUSALS, type AuthRefusal, type RequestContext, type RequestLog, type RequestTrace } from './authentication.js';
export { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from './pages.js';
export { REFUSAL_EVENT_TYPES, type RefusalEventType } from './refusal-events.js';
export { DOWNLOAD_BATCH_SIZE, type SecurityEventDownload } from './security-event-reads.js';

export interface DuplicationAccepted {
  job: DuplicationJob;
  rateLimit: RateLimitState;
  /** True when an idempotency key returned the job of an earlier request. */
  replayed: boolean;
}

/** The key making a request, as it may learn about itself. */
export interface KeyView {
  keyId: string;
  keyName: string;
  workspaceId: string;
  /** The permissions the key holds, in the order of PERMISSIONS. */
  permissions: Permission[];
}

/**
 * Hears how a write the caller does not wait for went, so that the operator knows when it fails (`fields` name
 * what it was for). A RepeatedFailureLog, so that writes failing for every key are one line.
 */
export interface WriteOutcomeLog {
  failed(error: unknown, fields: object): void;
  succeeded(): void;
}

export interface GatewayServiceDeps {
  store: GatewayStore;
  quota: Quota;
  authFailures: AuthFailureLimiter;
  /**
   * Refusal events (PERMISSION_DENIED and API_KEY_REJECTED together) each key may record per window; the refusals
   * past it are counted, not recorded.
   */
  refusalEvents: EventBudget;
  /**
   * SECURITY_EVENTS_DOWNLOADED events each key may record per window: every download is recorded, so the downloads
   * past it are refused.
   */
  downloadEvents: EventBudget;
  campaigns: CampaignReader;
  clock: Clock;
  /** Upstream mode: the hold on upstream calls after a 429, which no pending job is sent before. */
  upstreamPause?: UpstreamPause;
  /** Wakes the worker after a job was committed. */
  onJobEnqueued?: () => void;
  /** How long an idempotency key is kept (24 h by default). */
  idempotencyTtlMs?: number;
  /** Told when a request was refused because its workspace's quota was spent (metrics). */
  onQuotaRejected?: (channel: Channel) => void;
  /** Told of each failed authentication, with the code of its refusal (metrics). */
  onAuthFailed?: (channel: Channel, code: AuthRefusal) => void;
  /** Told when a request was refused because its client failed to authenticate too often (metrics). */
  onAuthBlocked?: (channel: Channel) => void;
  /** Told how each duplication asked for ended, once per request (REST) or field (GraphQL) (metrics). */
  onDuplication?: (channel: Channel, outcome: DuplicationOutcome) => void;
  /** Told of each refusal whose event was not recorded: past its budget, or its write failed (metrics). */
  onEventUnrecorded?: (type: RefusalEventType) => void;
  /** Told how each write of a key's last use went: the request goes on either way. */
  keyUseLog?: WriteOutcomeLog;
  /** Told how each write of an API_KEY_REJECTED event went: the refusal is answered either way. */
  keyRejectionLog?: WriteOutcomeLog;
  /** Security event downloads in progress on this instance, bounded. */
  downloads: DownloadSlots;
}

/** A reservation whose request never produced a job (the process died) is given up after this long. */
const IDEMPOTENCY_RESERVATION_MS = 60_000;
/** Past this many, the reservations left unreleased are forgotten: they expire on their own after a minute. */
const MAX_UNRELEASED_RESERVATIONS = 10_000;

function parseIdempotencyKey(key: string): string {
  if (key.length === 0 || key.length > LIMITS.idempotencyKeyLength || !/^[\x21-\x7e]+$/.test(key)) {
    throw validationError([
      { field: 'idempotencyKey', message: `must be 1 to ${LIMITS.idempotencyKeyLength} visible ASCII characters` },
    ]);
  }
  return key;
}

/**
 * Bounded depth: a hostile body nested thousands of levels deep must not exhaust the stack. A valid input is
 * two levels deep, so two bodies that differ only below this depth are both invalid anyway.
 */
const stableStringify = configure({ maximumDepth: 8 });

const digest = (value: unknown): string => hash('sha256', stableStringify(value) ?? 'null', 'hex');

/**
 * The same input, whatever the key order, the transport or its spelling, hashes the same: a valid input is
 * hashed as the service will use it (`input`: one tag as a list, names trimmed), with absent and null fields
 * alike; an invalid one (`input` undefined) as it came.
 */
function hashRequest(input: DuplicateCampaignInput | undefined, raw: unknown): string {
  return digest(input ? { ...input, description: input.description ?? undefined, tagNames: input.tagNames ?? undefined } : raw);
}

/**
 * How a duplication asked for ended: accepted (a new job), replayed (an idempotency key's job), or the refusal,
 * by the codes the service raises.
 */
export const DUPLICATION_OUTCOMES = [
  'accepted',
  'replayed',
  'unauthenticated',
  'forbidden',
  'rate_limited',
  'invalid',
  'conflict',
  'unavailable',
  'internal',
] as const;
export type DuplicationOutcome = (typeof DUPLICATION_OUTCOMES)[number];

/** The outcome each error code is: every code, so that a code added later must be given one. */
const REFUSAL_OUTCOMES: Record<ErrorCode, DuplicationOutcome> = {
  UNAUTHENTICATED: 'unauthenticated',
  FORBIDDEN: 'forbidden',
  RATE_LIMITED: 'rate_limited',
  BAD_USER_INPUT: 'invalid',
  PAYLOAD_TOO_LARGE: 'invalid',
  UNSUPPORTED_MEDIA_TYPE: 'invalid',
  METHOD_NOT_ALLOWED: 'invalid',
  NOT_FOUND: 'invalid',
  IDEMPOTENCY_IN_FLIGHT: 'conflict',
  IDEMPOTENCY_MISMATCH: 'conflict',
  UNAVAILABLE: 'unavailable',
  UPSTREAM_ERROR: 'unavailable',
  INTERNAL: 'internal',
};

/**
 * The one service both transports call. Order of checks for a duplication, as Braze does it:
 * authenticate → authorize → quota → validate → enqueue.
 */
export class GatewayService {
  private readonly idempotencyTtlMs: number;
  /**
   * The permissions each request was refused so far (a principal lives as long as its request): one GraphQL
   * request asking for a field thirty times under aliases is one denial, recorded once.
   */
  private readonly deniedPermissions = new WeakMap<Principal, Set<Permission>>();
  /** Idempotency keys (`workspace key`) whose failed request's reservation the store could not drop. */
  private readonly unreleased = new Set<string>();
  /** Idempotency keys (`workspace key`) this instance's requests are looking up and reserving, one at a time. */
  private readonly keyTurns = new KeyTurns();

  private readonly refusals: RefusalEvents;
  private readonly authentication: Authentication;
  private readonly eventReads: SecurityEventReads;

  constructor(private readonly deps: GatewayServiceDeps) {
    this.refusals = new RefusalEvents(deps);
    this.authentication = new Authentication(deps, this.refusals);
    this.eventReads = new SecurityEventReads(deps, this);
    this.idempotencyTtlMs = deps.idempotencyTtlMs ?? DEFAULT_IDEMPOTENCY_TTL_HOURS * 3600_000;
  }

  /** Who is calling (authentication.ts). */
  authenticate(context: RequestContext): Promise<Principal> {
    return this.authentication.authenticate(context);
  }

  /** A request without a key where only a key could be served, refused as one whose key is refused. */
  refuseWithoutKey(context: RequestContext): Promise<never> {
    return this.authentication.refuseWithoutKey(context);
  }

  /** The principal again, or its request's key checked again when the request's body came late. */
  reauthenticate(principal: Principal, context: RequestContext): Promise<Principal> {
    return this.authentication.reauthenticate(principal, context);
  }

  /**
   * The key itself and what it may do, so that a client can offer only that instead of causing refusals. Any
   * valid key may ask: no permission is required, so nothing is refused and nothing recorded.
   */
  async describeKey(principal: Principal): Promise<KeyView> {
    const held = await Promise.all(PERMISSIONS.map((permission) => this.authorize(principal, permission, { optional: true })));
    return {
      keyId: principal.keyId,
      keyName: principal.keyName,
      workspaceId: principal.workspaceId,
      permissions: PERMISSIONS.filter((_, index) => held[index]),
    };
  }

  /** The workspace's duplication quota as it stands, no point taken; null when the quota's store cannot be read. */
  async duplicationQuota(principal: Principal): Promise<RateLimitState | null> {
    return this.deps.quota.peek(principal.workspaceId).catch(() => null);
  }

  /**
   * The single place a permission is checked. A missing required permission is recorded as
   * PERMISSION_DENIED and refused with FORBIDDEN (carrying the quota state when `withQuota`). An
   * optional one only widens what the key sees: the answer says whether the key holds it.
   */
  async authorize(
    principal: Principal,
    permission: Permission,
    options: { optional?: boolean; withQuota?: boolean } = {},
  ): Promise<boolean> {
    if (principal.permissions.has(permission)) return true;
    if (options.optional) return false;
    const recorded = this.deniedPermissions.get(principal) ?? new Set<Permission>();
    if (!recorded.has(permission)) {
      recorded.add(permission);
      this.deniedPermissions.set(principal, recorded);
      await this.refusals.recordDenial(principal, { permission });
    }
    const error = new GatewayError('FORBIDDEN');
    throw options.withQuota ? await this.withQuotaState(principal, error) : error;
  }

  /**
   * A refusal of a duplication by a known caller (a failure of ours included), carrying the workspace's quota
   * as it stands unless the error already says what it is: every transport then reports the same quota for the
   * same refusal. An unreadable quota leaves the refusal as it is, without a state.
   */
  private async withQuotaState(principal: Principal, error: unknown): Promise<GatewayError> {
    const refusal = isGatewayError(error) ? error : internalError(error);
    refusal.rateLimit ??= await this.deps.quota.peek(principal.workspaceId).catch(() => undefined);
    return refusal;
  }

  /**
   * A duplication whose caller the transport authenticates once for all it asks (GraphQL: once per request, however
   * many fields duplicate): `caller` is that authentication, whose refusal is this duplication's outcome too.
   */
  async duplicateCampaign(
    channel: Channel,
    caller: Promise<Principal>,
    raw: RawDuplicateCampaignInput,
    idempotencyKey?: string | null,
  ): Promise<DuplicationAccepted> {
    const principal = await this.countingRefusal(channel, caller.then((checked) => this.mayDuplicate(checked)));
    return this.acceptDuplication(principal, raw, idempotencyKey);
  }

  /** The checks that come before the request body is even read: who is calling, and may they duplicate. */
  async authorizeDuplication(context: RequestContext): Promise<Principal> {
    return this.countingRefusal(context.channel, this.checkDuplication(context));
  }

  private async checkDuplication(context: RequestContext): Promise<Principal> {
    return this.mayDuplicate(await this.authentication.authenticate(context));
  }

  /** The principal, once it may duplicate and the workspace's quota has a point left. */
  private async mayDuplicate(principal: Principal): Promise<Principal> {
    await this.authorize(principal, 'campaigns.duplicate', { withQuota: true });
    return principal;
  }

  /** What `check` settles to; its refusal is counted as the duplication's outcome, any error not a GatewayError as ours. */
  private async countingRefusal<T>(channel: Channel, check: Promise<T>): Promise<T> {
    try {
      return await check;
    } catch (error) {
      this.deps.onDuplication?.(channel, isGatewayError(error) ? REFUSAL_OUTCOMES[error.code] : 'internal');
      throw error;
    }
  }

  /**
   * The principal `authorizeDuplication` gave for this request, or, when that was longer ago than a body takes
   * to follow its headers, the request's key and permission checked again: what a revocation, a rotation or a
   * narrowed permission made meanwhile applies to the request.
   */
  async reauthorizeDuplication(principal: Principal, context: RequestContext, options: { refusedAlready?: boolean } = {}): Promise<Principal> {
    if (this.authentication.isFresh(principal)) return principal;
    // A request already refused (its answer that refusal) is counted as its refusal was, or not at all.
    return options.refusedAlready ? this.checkDuplication(context) : this.authorizeDuplication(context);
  }

  /**
   * Takes a point of the workspace's quota, validates, and commits the job with its event. With an
   * idempotency key, a repeat of an accepted request returns the same job and takes no point. A refusal
   * carries the quota state (a malformed idempotency key or a conflicting repeat, refused without a point, the
   * state untouched).
   */
  async acceptDuplication(
    principal: Principal,
    raw: RawDuplicateCampaignInput,
    idempotencyKey?: string | null,
  ): Promise<DuplicationAccepted> {
    let accepted: DuplicationAccepted;
    try {
      accepted = await this.countingRefusal(principal.channel, this.accept(principal, raw, idempotencyKey));
    } catch (error) {
      throw await this.withQuotaState(principal, error);
    }
    this.deps.onDuplication?.(principal.channel, accepted.replayed ? 'replayed' : 'accepted');
    return accepted;
  }

  private async accept(principal: Principal, raw: RawDuplicateCampaignInput, idempotencyKey: string | null | undefined): Promise<DuplicationAccepted> {
    if (idempotencyKey === null || idempotencyKey === undefined) return this.enqueue(principal, await this.takeQuotaPoint(principal), raw);
    const key = parseIdempotencyKey(idempotencyKey);
    const reservation = `${principal.workspaceId} ${key}`;
    // Requests of this instance with one key take turns from their look-up to their reservation: the next finds the
    // key reserved and answers as a repeat, without the point it would take, and lose, if it missed the look-up.
    const endTurn = await this.keyTurns.take(reservation);
    try {
      return await this.acceptKeyed(principal, raw, key, reservation, endTurn);
    } finally {
      endTurn();
    }
  }

  /** accept() with an idempotency key, in the key's turn; `endTurn` once the key is reserved or the request refused. */
  private async acceptKeyed(
    principal: Principal,
    raw: RawDuplicateCampaignInput,
    key: string,
    reservation: string,
    endTurn: () => void,
  ): Promise<DuplicationAccepted> {
    const now = this.deps.clock.now();
    // A reservation this instance could not release is no request in flight: replaced at once.
    const staleBefore = this.unreleased.has(reservation) ? now : new Date(now.getTime() - IDEMPOTENCY_RESERVATION_MS);
    // Parsed once: the hash is of the input as it will be used, and a valid one is enqueued as it is.
    const input = normalizeDuplicateInput(raw);
    const requestHash = hashRequest(input, raw);
    const { store } = this.deps;
    // A key already held is answered from it without touching the quota: a point taken and given back is not
    // free, since rate-limiter-flexible counts refused takes too, and concurrent repeats would starve new work
    // of the window's last points. Only a key not held takes a point, before its reservation, so that a spent
    // quota costs the store reads, never a write.
    const held = await store.findIdempotencyKey(principal.workspaceId, key);
    if (held && holdsIdempotencyKey(held, now, staleBefore)) return this.replay(principal, held, requestHash, raw);
    let rateLimit: RateLimitState;
    try {
      rateLimit = await this.deps.quota.consume(principal.workspaceId);
    } catch (error) {
      // The key may have been taken since it was looked up: its request is answered as a repeat, not refused.
      const refusedForQuota = error instanceof GatewayError && error.code === 'RATE_LIMITED';
      const holder = refusedForQuota ? await store.findIdempotencyKey(principal.workspaceId, key) : null;
      if (holder && holdsIdempotencyKey(holder, now, staleBefore)) return this.replay(principal, holder, requestHash, raw);
      if (refusedForQuota) this.deps.onQuotaRejected?.(principal.channel);
      throw error;
    }
    const record: IdempotencyRecord = {
      workspaceId: principal.workspaceId,
      key,
      requestHash,
      jobId: null,
      createdAt: now,
      expiresAt: new Date(now.getTime() + this.idempotencyTtlMs),
    };
    let holder: IdempotencyRecord | null;
    try {
      holder = await store.reserveIdempotencyKey(record, staleBefore);
    } catch (error) {
      throw await this.failedAfterPoint(principal, error, rateLimit);
    }
    endTurn();
    this.unreleased.delete(reservation);
    if (!holder) {
      let accepted: DuplicationAccepted | null;
      try {
        accepted = await this.enqueue(principal, rateLimit, raw, record, input);
      } catch (error) {
        // The store that failed the request may fail the release too: the request's own error is the answer.
        await store.releaseIdempotencyKey(record).catch(() => {
          if (this.unreleased.size >= MAX_UNRELEASED_RESERVATIONS) this.unreleased.clear();
          this.unreleased.add(reservation);
        });
        throw error;
      }
      if (accepted) return accepted;
      // This request stalled past a minute and a retry replaced its reservation: the key and its job are the
      // retry's. Still in flight, or released since, the key answers 409 as its own reservation would.
      holder = (await store.findIdempotencyKey(principal.workspaceId, key)) ?? record;
    }
    // Taken between the look-up and the reservation, or replaced since. Best effort: a point lost to a failing
    // quota store is better than a failed repeat.
    await this.deps.quota.refund(principal.workspaceId).catch(() => undefined);
    return this.replay(principal, holder, requestHash, raw);
  }

  private async takeQuotaPoint(principal: Principal): Promise<RateLimitState> {
    return this.deps.quota.consume(principal.workspaceId).catch((error: unknown) => {
      if (error instanceof GatewayError && error.code === 'RATE_LIMITED') this.deps.onQuotaRejected?.(principal.channel);
      throw error;
    });
  }

  /**
   * The answer to a key already held. The input is compared last, once the caller may see the job: an answer that
   * depended on it would tell another key of the workspace whether its guess of a request it may not see was right.
   */
  private async replay(principal: Principal, holder: IdempotencyRecord, requestHash: string, raw: unknown): Promise<DuplicationAccepted> {
    // No job yet, so no telling whose request it is: the same answer for every caller and every input.
    if (holder.jobId === null) throw new GatewayError('IDEMPOTENCY_IN_FLIGHT', undefined, { retryAfterSeconds: 1 });
    const job = await this.deps.store.getJob(principal.workspaceId, holder.jobId);
    // The job was pruned while its key was still kept, which the configuration prevents (keys live no longer
    // than finished jobs) unless retention was shortened since: refused, since the copy was made.
    if (!job) throw new GatewayError('IDEMPOTENCY_MISMATCH', 'This idempotency key belongs to a job that no longer exists');
    // Keys are shared by the workspace, jobs are not: a caller never gets a job id it could not follow.
    if (!(await this.maySee(principal, job))) {
      throw new GatewayError('IDEMPOTENCY_MISMATCH', 'This idempotency key was used by another API key of the workspace');
    }
    // Keys kept from versions that hashed the raw input hold that hash, and an identical raw input is the same
    // request: a retry sent again byte for byte across an upgrade still replays.
    if (!hashesEqual(holder.requestHash, requestHash) && !hashesEqual(holder.requestHash, digest(raw))) {
      throw new GatewayError('IDEMPOTENCY_MISMATCH');
    }
    return { job, rateLimit: await this.deps.quota.peek(principal.workspaceId), replayed: true };
  }

  /**
   * Validates and commits, the quota point already taken. `parsed`: the input, when the caller has already
   * parsed it; a raw one is validated after the quota point, as Braze does. With the idempotency key's
   * `reservation`, null when another reservation replaced it: nothing was written.
   */
  private async enqueue(principal: Principal, rateLimit: RateLimitState, raw: RawDuplicateCampaignInput): Promise<DuplicationAccepted>;
  private async enqueue(
    principal: Principal,
    rateLimit: RateLimitState,
    raw: RawDuplicateCampaignInput,
    reservation: IdempotencyRecord,
    parsed: DuplicateCampaignInput | undefined,
  ): Promise<DuplicationAccepted | null>;
  private async enqueue(
    principal: Principal,
    rateLimit: RateLimitState,
    raw: RawDuplicateCampaignInput,
    reservation?: IdempotencyRecord,
    parsed?: DuplicateCampaignInput,
  ): Promise<DuplicationAccepted | null> {
    try {
      const input = parsed ?? parseDuplicateInput(raw);
      const { campaigns, store } = this.deps;
      if (campaigns.validatesOnAccept) {
        const source = await campaigns.get(principal.workspaceId, input.campaignId, principal.requestId);
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
        requestId: principal.requestId,
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
      const enqueued = await store.enqueueJob(
        job,
        requestEvent(this.deps.clock, principal, 'CAMPAIGN_DUPLICATION_REQUESTED', {
          jobId: job.id,
          campaignId: job.sourceCampaignId,
          details: { name: job.name, description: job.description, tagNames: job.tagNames, ...secretUsed(principal) },
        }),
        reservation,
      );
      if (!enqueued) return null;
      this.deps.onJobEnqueued?.();
      return { job, rateLimit, replayed: false };
    } catch (error) {
      throw await this.failedAfterPoint(principal, error, rateLimit);
    }
  }

  /**
   * The error of a request that took a quota point, carrying the quota state to report. A request refused
   * because a dependency is down gives its point back (best effort): the caller is told to retry, and should
   * not pay for an outage.
   */
  private async failedAfterPoint(principal: Principal, error: unknown, rateLimit: RateLimitState): Promise<unknown> {
    if (!(error instanceof GatewayError) || error.rateLimit !== undefined) return error;
    const refunded =
      isDependencyOutage(error) &&
      (await this.deps.quota.refund(principal.workspaceId).then(
        () => true,
        () => false,
      ));
    error.rateLimit = refunded ? { ...rateLimit, remaining: Math.min(rateLimit.limit, rateLimit.remaining + 1) } : rateLimit;
    return error;
  }

  /**
   * A job the principal may see: its own, or any of its workspace with `security_events.read`. An id of a shape
   * the gateway never makes (too long, not a UUID) is an unknown job, answered without a store lookup.
   */
  async getJob(principal: Principal, id: string): Promise<DuplicationJob | null> {
    if (!isGatewayId(id)) return null;
    const job = await this.deps.store.getJob(principal.workspaceId, id);
    return job && (await this.maySee(principal, job)) ? job : null;
  }

  /**
   * Seconds a caller following an unfinished job should wait before asking again (null once it is finished):
   * until its next run when that is later (a retry delay, a wait for an upstream slot), or until the end of a
   * pause the upstream asked for when that is later still, otherwise one. `pausedMs` reads that pause, only for
   * a pending job: a request answering for many jobs passes one that reads the shared limiter once.
   */
  async pollAfterSeconds(
    job: Pick<DuplicationJob, 'status' | 'runAt'>,
    pausedMs: () => Promise<number> = () => this.upstreamPausedMs(),
  ): Promise<number | null> {
    if (job.status === 'SUCCEEDED' || job.status === 'FAILED') return null;
    if (job.status !== 'PENDING') return 1;
    const untilRun = job.runAt.getTime() - this.deps.clock.now().getTime();
    // A job the worker has not picked up yet still has its old run time, though nothing is sent before the pause
    // ends.
    return Math.max(1, Math.ceil(Math.max(untilRun, await pausedMs()) / 1000));
  }

  /**
   * What is left of a pause the upstream asked for, 0 when there is none. A hint for polls: a limiter that cannot
   * say leaves a job's run time to answer.
   */
  async upstreamPausedMs(): Promise<number> {
    return (await this.deps.upstreamPause?.remainingMs().catch(() => 0)) ?? 0;
  }

  private async maySee(principal: Principal, job: DuplicationJob): Promise<boolean> {
    return job.apiKeyId === principal.keyId || this.authorize(principal, 'security_events.read', { optional: true });
  }

  /** The `securityEvents` list (security-event-reads.ts). */
  listSecurityEvents(
    principal: Principal,
    filter: SecurityEventFilter,
    first: number,
    after: string | null | undefined,
  ): Promise<Page<SecurityEvent>> {
    return this.eventReads.listSecurityEvents(principal, filter, first, after);
  }

  /** Braze's "Security Event Download" (security-event-reads.ts). */
  downloadSecurityEvents(principal: Principal, raw: { start?: unknown; end?: unknown }): Promise<SecurityEventDownload> {
    return this.eventReads.downloadSecurityEvents(principal, raw);
  }

  async listCampaigns(principal: Principal, first: number, after: string | null | undefined): Promise<Page<Campaign>> {
    await this.authorize(principal, 'campaigns.list');
    return this.deps.campaigns.list(principal.workspaceId, pageSize(first), after ?? null, principal.requestId);
  }

  async getCampaign(principal: Principal, id: string): Promise<Campaign | null> {
    await this.authorize(principal, 'campaigns.details');
    return this.deps.campaigns.get(principal.workspaceId, id, principal.requestId);
  }
}

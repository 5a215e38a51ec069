// Duplication: a duplication asked for, from the checks before its body is read to the job committed. The
// permission and the quota point, validation, idempotency keys (their turns, reservations and replays), the
// enqueue with its CAMPAIGN_DUPLICATION_REQUESTED event, and the outcome each duplication is counted as.
import { hash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { configure } from 'safe-stable-stringify';
import type { Authentication, RequestContext } from './authentication.js';
import { GatewayError, internalError, isDependencyOutage, isGatewayError, isQuotaOutage, type ErrorCode, type RateLimitState } from './errors.js';
import { DEFAULT_IDEMPOTENCY_TTL_HOURS, holdsIdempotencyKey, KeyTurns } from './idempotency.js';
import { newId } from './ids.js';
import { hashesEqual, holdsApiKey } from './keys.js';
import { requestEvent, secretUsed } from './request-events.js';
import type { GatewayService, GatewayServiceDeps } from './service.js';
import type { QuotaTaken } from './ports.js';
import type { Channel, DuplicationJob, IdempotencyRecord, Principal } from './types.js';
import {
  LIMITS,
  normalizeDuplicateInput,
  parseDuplicateInput,
  quoted,
  validationError,
  type DuplicateCampaignInput,
  type RawDuplicateCampaignInput,
} from './validation.js';

export interface DuplicationAccepted {
  job: DuplicationJob;
  rateLimit: RateLimitState;
  /** True when an idempotency key returned the job of an earlier request. */
  replayed: boolean;
}

/** The state a quota's take reports, without the window it keeps for a refund. */
const stateOf = ({ limit, remaining, resetAt }: QuotaTaken): RateLimitState => ({ limit, remaining, resetAt });

/**
 * How long the answer to a request refused for an outage waits for its point to be given back. A quota store that
 * answers does so in milliseconds; one on the database that has just stopped answering would hold the answer for
 * as long again as the statement that failed (12 s), where the caller is owed a 503 at once.
 */
const OUTAGE_REFUND_WAIT_MS = 1_000;

/** A reservation whose request never produced a job (the process died) is given up after this long. */
const IDEMPOTENCY_RESERVATION_MS = 60_000;
/**
 * A reservation this young may still have its request working on it: accepting takes milliseconds, but one
 * statement may wait up to PostgreSQL's statement timeout (10 s).
 */
const YOUNG_RESERVATION_MS = 10_000;
/** Past this many, the reservations left unreleased are forgotten: they expire on their own after a minute. */
const MAX_UNRELEASED_RESERVATIONS = 10_000;

/**
 * How long a repeat should wait before asking again about a key reserved with no job yet. A young reservation
 * gets a second. An older one is likely left by a request that died (a crash on PostgreSQL, whose reservations
 * no instance frees): it gets as long as it has already lasted, so that a client doing as told doubles the age
 * at each retry (about a dozen 409s before the minute is up, rather than sixty), but never past the first
 * second at which `now`'s clock gives it up, so the retry that follows the advice can replace it.
 */
function inFlightRetryAfterSeconds(holder: IdempotencyRecord, now: Date): number {
  const ageMs = now.getTime() - holder.createdAt.getTime();
  if (ageMs < YOUNG_RESERVATION_MS) return 1;
  const givenUpAt = Math.min(holder.createdAt.getTime() + IDEMPOTENCY_RESERVATION_MS, holder.expiresAt.getTime());
  return Math.max(1, Math.min(Math.ceil(ageMs / 1000), Math.floor((givenUpAt - now.getTime()) / 1000) + 1));
}

function parseIdempotencyKey(key: string): string {
  if (key.length === 0 || key.length > LIMITS.idempotencyKeyLength || !/^[\x21-\x7e]+$/.test(key)) {
    throw validationError([
      { field: 'idempotencyKey', message: `must be 1 to ${LIMITS.idempotencyKeyLength} visible ASCII characters` },
    ]);
  }
  // Kept in the store as sent until it expires: a key sent here by mistake is refused like any other bad one.
  if (holdsApiKey(key)) throw validationError([{ field: 'idempotencyKey', message: 'must not hold an API key' }]);
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
  // Counted as before it had a code of its own.
  AUTH_BLOCKED: 'rate_limited',
  // A duplication takes no read budget: only a read answers this.
  READ_BUDGET_EXCEEDED: 'rate_limited',
  BAD_USER_INPUT: 'invalid',
  PAYLOAD_TOO_LARGE: 'invalid',
  UNSUPPORTED_MEDIA_TYPE: 'invalid',
  METHOD_NOT_ALLOWED: 'invalid',
  REQUEST_TIMEOUT: 'invalid',
  HEADERS_TOO_LARGE: 'invalid',
  EXPECTATION_FAILED: 'invalid',
  NOT_FOUND: 'invalid',
  IDEMPOTENCY_IN_FLIGHT: 'conflict',
  IDEMPOTENCY_MISMATCH: 'conflict',
  UNAVAILABLE: 'unavailable',
  UPSTREAM_ERROR: 'unavailable',
  INTERNAL: 'internal',
};

export class Duplication {
  private readonly idempotencyTtlMs: number;
  /** Idempotency keys (`workspace key`) whose failed request's reservation the store could not drop. */
  private readonly unreleased = new Set<string>();
  /** Idempotency keys (`workspace key`) this instance's requests are looking up and reserving, one at a time. */
  private readonly keyTurns = new KeyTurns();

  constructor(
    private readonly deps: Pick<
      GatewayServiceDeps,
      'store' | 'quota' | 'campaigns' | 'clock' | 'onJobEnqueued' | 'idempotencyTtlMs' | 'onQuotaRejected' | 'onDuplication'
    >,
    private readonly authentication: Authentication,
    private readonly access: Pick<GatewayService, 'authorize' | 'maySee'>,
  ) {
    this.idempotencyTtlMs = deps.idempotencyTtlMs ?? DEFAULT_IDEMPOTENCY_TTL_HOURS * 3600_000;
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
    await this.access.authorize(principal, 'campaigns.duplicate', { withQuota: true });
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
   * A refusal of a duplication by a known caller (a failure of ours included), carrying the workspace's quota
   * as it stands unless the error already says what it is: every transport then reports the same quota for the
   * same refusal. An unreadable quota leaves the refusal as it is, without a state.
   */
  async withQuotaState(principal: Principal, error: unknown): Promise<GatewayError> {
    const refusal = isGatewayError(error) ? error : internalError(error);
    // The quota's store has just failed to answer: asked again, a silent one would hold the answer as long again.
    if (!isQuotaOutage(refusal)) refusal.rateLimit ??= await this.quotaState(principal);
    return refusal;
  }

  /** The workspace's quota as it stands, no point taken; none when the quota's store cannot be read. */
  async quotaState(principal: Principal): Promise<RateLimitState | undefined> {
    return this.deps.quota.peek(principal.workspaceId).catch(() => undefined);
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
    let rateLimit: QuotaTaken;
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
      throw await this.failedAfterPoint(error, rateLimit);
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
    await this.deps.quota.refund(rateLimit).catch(() => undefined);
    return this.replay(principal, holder, requestHash, raw);
  }

  private async takeQuotaPoint(principal: Principal): Promise<QuotaTaken> {
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
    if (holder.jobId === null) throw new GatewayError('IDEMPOTENCY_IN_FLIGHT', undefined, { retryAfterSeconds: inFlightRetryAfterSeconds(holder, this.deps.clock.now()) });
    const job = await this.deps.store.getJob(principal.workspaceId, holder.jobId);
    // The job was pruned while its key was still kept, which the configuration prevents (keys live no longer
    // than finished jobs) unless retention was shortened since: refused, since the copy was made.
    if (!job) throw new GatewayError('IDEMPOTENCY_MISMATCH', 'This idempotency key belongs to a job that no longer exists');
    // Keys are shared by the workspace, jobs are not: a caller never gets a job id it could not follow.
    if (!(await this.access.maySee(principal, job))) {
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
  private async enqueue(principal: Principal, rateLimit: QuotaTaken, raw: RawDuplicateCampaignInput): Promise<DuplicationAccepted>;
  private async enqueue(
    principal: Principal,
    rateLimit: QuotaTaken,
    raw: RawDuplicateCampaignInput,
    reservation: IdempotencyRecord,
    parsed: DuplicateCampaignInput | undefined,
  ): Promise<DuplicationAccepted | null>;
  private async enqueue(
    principal: Principal,
    rateLimit: QuotaTaken,
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
            throw validationError(missing.map((tag) => ({ field: 'tagNames', message: `contains unknown tag ${quoted(tag)}` })));
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
      return { job, rateLimit: stateOf(rateLimit), replayed: false };
    } catch (error) {
      throw await this.failedAfterPoint(error, rateLimit);
    }
  }

  /**
   * The error of a request that took a quota point, carrying the quota state to report. A request refused
   * because a dependency is down gives its point back (best effort): the caller is told to retry, and should
   * not pay for an outage. Once the window that took the point is over there is nothing to give back, and the
   * state reported is the current window's, read as for any refusal.
   */
  private async failedAfterPoint(error: unknown, taken: QuotaTaken): Promise<unknown> {
    if (!(error instanceof GatewayError) || error.rateLimit !== undefined) return error;
    const state = stateOf(taken);
    if (!isDependencyOutage(error)) {
      error.rateLimit = state;
      return error;
    }
    const refunded = await Promise.race([
      this.deps.quota.refund(taken).catch(() => undefined),
      sleep(OUTAGE_REFUND_WAIT_MS, undefined, { ref: false }),
    ]);
    if (refunded === true) error.rateLimit = { ...state, remaining: Math.min(state.limit, state.remaining + 1) };
    // Not given back, or not yet (its store failed, or is as silent as the one that failed): taken, as the state says.
    else if (refunded === undefined) error.rateLimit = state;
    return error;
  }
}

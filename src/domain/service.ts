import { Authentication, type AuthRefusal, type ClientBlock, type RequestContext } from './authentication.js';
import type { DownloadSlots } from './download-slots.js';
import { Duplication, type DuplicationAccepted, type DuplicationOutcome } from './duplication.js';
import { GatewayError, type RateLimitState } from './errors.js';
import { isGatewayId } from './ids.js';
import { pageSize } from './pages.js';
import { PERMISSIONS, type Permission } from './permissions.js';
import type { AuthFailureLimiter, CampaignReader, Clock, Budget, GatewayStore, Quota, UpstreamPause } from './ports.js';
import { RefusalEvents, type RefusalEventType } from './refusal-events.js';
import { SecurityEventReads, type SecurityEventDownload, type SecurityEventDownloadQuery } from './security-event-reads.js';
import type { Campaign, Channel, DuplicationJob, ListedCampaign, Page, Principal, SecurityEvent, SecurityEventFilter } from './types.js';
import type { RawDuplicateCampaignInput } from './validation.js';

export { AUTH_REFUSALS, type AuthRefusal, type ClientBlock, type LoggedOperation, type RequestContext, type RequestLog, type RequestTrace } from './authentication.js';
export { DUPLICATION_OUTCOMES, type DuplicationAccepted, type DuplicationOutcome } from './duplication.js';
export { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from './pages.js';
export { REFUSAL_EVENT_TYPES, type RefusalEventType } from './refusal-events.js';
export { DOWNLOAD_BATCH_SIZE, type SecurityEventDownload } from './security-event-reads.js';

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
  refusalEvents: Budget;
  /**
   * SECURITY_EVENTS_DOWNLOADED events each key may record per window: every download is recorded, so the downloads
   * past it are refused.
   */
  downloadEvents: Budget;
  /** The estimated cost each workspace's reads may spend per window (src/domain/read-budget.ts); none when left out. */
  readBudget?: Budget;
  campaigns: CampaignReader;
  clock: Clock;
  /** Upstream mode: the hold on upstream calls after a 429, which no pending job is sent before. */
  upstreamPause?: UpstreamPause;
  /** Upstream mode: this instance's circuit, which sends nothing before `probeAt` while the upstream is down. */
  upstreamCircuit?: { readonly probeAt: Date | null };
  /** Wakes the worker after a job was committed. */
  onJobEnqueued?: () => void;
  /** How long an idempotency key is kept (24 h by default). */
  idempotencyTtlMs?: number;
  /** Told when a request was refused because its workspace's quota was spent (metrics). */
  onQuotaRejected?: (channel: Channel) => void;
  /** Told when a read was refused because its workspace's read budget was spent (metrics). */
  onReadBudgetRefused?: (channel: Channel) => void;
  /** Told of each failed authentication, with the code of its refusal (metrics). */
  onAuthFailed?: (channel: Channel, code: AuthRefusal) => void;
  /** Told when a request was refused because its client failed to authenticate too often (metrics). */
  onAuthBlocked?: (channel: Channel) => void;
  /** Told when a failed authentication blocks its client, once per block as it starts (the log). */
  onClientBlocked?: (block: ClientBlock) => void;
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

/**
 * The one service both transports call, and the front of the modules that do its work: authentication.ts (who is
 * calling), duplication.ts (a duplication from its checks to its job), security-event-reads.ts (the securityEvents
 * list and the download), refusal-events.ts (PERMISSION_DENIED and API_KEY_REJECTED under their budget). It keeps
 * the one permission check, the key's view of itself, and the reads of jobs and campaigns. Order of checks for a
 * duplication, as Braze does it: authenticate → authorize → quota → validate → enqueue.
 */
export class GatewayService {
  /**
   * The permissions each request was refused so far (a principal lives as long as its request): one GraphQL
   * request asking for a field thirty times under aliases is one denial, recorded once.
   */
  private readonly deniedPermissions = new WeakMap<Principal, Set<Permission>>();

  private readonly refusals: RefusalEvents;
  private readonly authentication: Authentication;
  private readonly duplication: Duplication;
  private readonly eventReads: SecurityEventReads;

  constructor(private readonly deps: GatewayServiceDeps) {
    this.refusals = new RefusalEvents(deps);
    this.authentication = new Authentication(deps, this.refusals);
    this.duplication = new Duplication(deps, this.authentication, this);
    this.eventReads = new SecurityEventReads(deps, this);
  }

  /** Who is calling (authentication.ts). */
  authenticate(context: RequestContext): Promise<Principal> {
    return this.authentication.authenticate(context);
  }

  /** A request without a key where only a key could be served, refused as one whose key is refused (authentication.ts). */
  refuseWithoutKey(context: RequestContext): Promise<never> {
    return this.authentication.refuseWithoutKey(context);
  }

  /** The principal again, or its request's key checked again when the request's body came late (authentication.ts). */
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
    return (await this.duplication.quotaState(principal)) ?? null;
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
    throw options.withQuota ? await this.duplication.withQuotaState(principal, error) : error;
  }

  /** A duplication whose caller the transport authenticated once for all it asks, GraphQL's (duplication.ts). */
  duplicateCampaign(
    channel: Channel,
    caller: Promise<Principal>,
    raw: RawDuplicateCampaignInput,
    idempotencyKey?: string | null,
  ): Promise<DuplicationAccepted> {
    return this.duplication.duplicateCampaign(channel, caller, raw, idempotencyKey);
  }

  /** The checks that come before a duplication's body is even read: who is calling, and may they duplicate. */
  authorizeDuplication(context: RequestContext): Promise<Principal> {
    return this.duplication.authorizeDuplication(context);
  }

  /** The principal `authorizeDuplication` gave, or the key and permission checked again when the body came late. */
  reauthorizeDuplication(principal: Principal, context: RequestContext, options?: { refusedAlready?: boolean }): Promise<Principal> {
    return this.duplication.reauthorizeDuplication(principal, context, options);
  }

  /** Takes a quota point, validates and commits the job, or replays an idempotency key's. */
  acceptDuplication(principal: Principal, raw: RawDuplicateCampaignInput, idempotencyKey?: string | null): Promise<DuplicationAccepted> {
    return this.duplication.acceptDuplication(principal, raw, idempotencyKey);
  }

  /**
   * Takes a read's estimated cost from its workspace's read budget, before anything is read: refused with
   * READ_BUDGET_EXCEEDED (429, Retry-After) once the workspace has spent it.
   */
  async takeReadBudget(principal: Principal, cost: number): Promise<void> {
    if (!this.deps.readBudget) return;
    const taken = await this.deps.readBudget.take(principal.workspaceId, cost);
    if (taken.granted) return;
    this.deps.onReadBudgetRefused?.(principal.channel);
    throw new GatewayError('READ_BUDGET_EXCEEDED', undefined, { retryAfterSeconds: Math.max(1, Math.ceil(taken.retryAfterMs / 1000)) });
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
   * The jobs of `ids`, each answered as getJob answers it (null where getJob's is), read from the store in one
   * statement: a page of events asks for each event's job.
   */
  async getJobs(principal: Principal, ids: readonly string[]): Promise<(DuplicationJob | null)[]> {
    const known = [...new Set(ids.filter(isGatewayId))];
    const found = known.length === 0 ? [] : await this.deps.store.getJobs(principal.workspaceId, known);
    const byId = new Map(found.map((job) => [job.id, job]));
    return Promise.all(
      ids.map(async (id) => {
        const job = byId.get(id);
        return job && (await this.maySee(principal, job)) ? job : null;
      }),
    );
  }

  /**
   * Seconds a caller following an unfinished job should wait before asking again (null once it is finished):
   * until its next run when that is later (a retry delay, a wait for an upstream slot), or until the end of a
   * pause the upstream asked for or this instance's next probe of a down upstream when that is later still,
   * otherwise one. `pausedMs` reads that pause, only for
   * a pending job: a request answering for many jobs passes one that reads the shared limiter once.
   */
  async pollAfterSeconds(
    job: Pick<DuplicationJob, 'status' | 'runAt' | 'updatedAt'>,
    pausedMs: () => Promise<number> = () => this.upstreamPausedMs(),
  ): Promise<number | null> {
    if (job.status === 'SUCCEEDED' || job.status === 'FAILED') return null;
    if (job.status !== 'PENDING') return 1;
    // The run time is by the store's clock (PostgreSQL's: the database's), which this instance's may be off from; the
    // wait the job was given when it was put back (its run time less the time it was put back, one clock) bounds it.
    const untilRun = Math.min(job.runAt.getTime() - this.deps.clock.now().getTime(), job.runAt.getTime() - job.updatedAt.getTime());
    // A job the worker has not picked up yet still has its old run time, though nothing is sent before the pause
    // ends, nor while the circuit is open: the worker claims nothing then, so most pending jobs are not picked up.
    const probeAt = this.deps.upstreamCircuit?.probeAt;
    const untilProbe = probeAt ? probeAt.getTime() - this.deps.clock.now().getTime() : 0;
    return Math.max(1, Math.ceil(Math.max(untilRun, untilProbe, await pausedMs()) / 1000));
  }

  /**
   * What is left of a pause the upstream asked for, 0 when there is none. A hint for polls: a limiter that cannot
   * say leaves a job's run time to answer.
   */
  async upstreamPausedMs(): Promise<number> {
    return (await this.deps.upstreamPause?.remainingMs().catch(() => 0)) ?? 0;
  }

  /** Whether the principal may see the job, for getJob and for an idempotency key's replay (duplication.ts). */
  async maySee(principal: Principal, job: DuplicationJob): Promise<boolean> {
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
  downloadSecurityEvents(principal: Principal, raw: SecurityEventDownloadQuery): Promise<SecurityEventDownload> {
    return this.eventReads.downloadSecurityEvents(principal, raw);
  }

  async listCampaigns(principal: Principal, first: number, after: string | null | undefined): Promise<Page<ListedCampaign>> {
    await this.authorize(principal, 'campaigns.list');
    return this.deps.campaigns.list(principal.workspaceId, pageSize(first), after ?? null, principal.requestId);
  }

  /**
   * The details of a partial list entry (upstream mode), read as `campaign(id)` reads them, from the same budget.
   * `campaigns.list` is enough: it grants every field of a list's entries, as it does in local mode.
   */
  async listedCampaignDetails(principal: Principal, id: string): Promise<Campaign | null> {
    await this.authorize(principal, 'campaigns.list');
    return this.deps.campaigns.get(principal.workspaceId, id, principal.requestId);
  }

  async getCampaign(principal: Principal, id: string): Promise<Campaign | null> {
    await this.authorize(principal, 'campaigns.details');
    return this.deps.campaigns.get(principal.workspaceId, id, principal.requestId);
  }
}

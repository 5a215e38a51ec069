// Authentication: who is calling. The Bearer key's look-up and checks (malformed, unknown, revoked, expired, rotated
// out, outside its allowlist), the block of a client that failed too often, the write of a key's last use, and the
// recheck of a key whose request's body came late.
import { GatewayError, isGatewayError, type ErrorCode } from './errors.js';
import { clientNetwork, isAllowedIp } from './ip-allowlist.js';
import { hashApiKey, hashesEqual, isWellFormedApiKey } from './keys.js';
import type { RefusalEvents } from './refusal-events.js';
import { requestEvent, secretUsed } from './request-events.js';
import type { GatewayServiceDeps } from './service.js';
import type { ApiKeyRecord, Channel, KeyRejection, KeySecret, Principal } from './types.js';

/** What a transport knows about a request before the service sees it. */
export interface RequestContext {
  /** The Authorization header as received: undefined when absent, every value when sent more than once. */
  authorization: string | readonly string[] | undefined;
  ip: string;
  channel: Channel;
  /**
   * The id the transport answers and logs the request under: a caller's own only within the bounds the transport
   * checks (src/http/server.ts), since every event the request causes keeps it.
   */
  requestId: string;
  /**
   * The request's log, given the key's id when the key is one the store holds but refuses (revoked, expired, a secret
   * rotated out): the caller's answer is an unknown key's, so only the transport's log can name the key. The log
   * itself rather than a callback, so that no request pays for a function made for it.
   */
  log?: RequestLog;
  /**
   * What the transport's last log line of the request names (src/http/logging.ts), noted as it is learnt: the caller
   * by the service, the refusal by the transport. The transport's own request object, read only when that line is
   * written, so that no request pays for a logger or an object made for it.
   */
  trace?: RequestTrace;
}

/** What a request came to, as its log line names it. */
export interface RequestTrace {
  /** The key that made the request, once it is found, its secret matches and it is not revoked, expired or rotated out. */
  caller?: Principal;
  /** The code the request was refused with, for an answer of 4xx or 5xx. */
  refusal?: ErrorCode;
  /** What a GraphQL request asked for, once its operation is known. */
  graphql?: LoggedOperation;
}

/** A GraphQL operation as its request's log line names it: its type and top-level field names, nothing the caller wrote. */
export interface LoggedOperation {
  operation: string;
  fields: readonly string[];
}

/** Adds fields to every later line about one request. */
export interface RequestLog {
  setBindings(bindings: { apiKeyId: string; apiKeyRejected: KeyRejection }): void;
}

/**
 * A duplication's key is checked as its headers arrive, before its body is read; a body that arrives later
 * than this has the key checked again, so a slow sender cannot finish a request after its key was revoked.
 */
const KEY_RECHECK_AFTER_MS = 100;
/** last_used_at is written at most this often per key, so authentication stays a read. */
const LAST_USED_RESOLUTION_MS = 60_000;
/** Keys whose last use this instance wrote, or tried to, within LAST_USED_RESOLUTION_MS: at most this many. */
const MAX_RECENT_KEY_USES = 10_000;

/** RFC 7235: the scheme is case-insensitive and one or more spaces separate it from the credentials. */
const BEARER = /^Bearer +(\S+) *$/i;

/** The refusals that count as a failed authentication. */
export const AUTH_REFUSALS = ['UNAUTHENTICATED', 'FORBIDDEN'] as const satisfies readonly ErrorCode[];
export type AuthRefusal = (typeof AUTH_REFUSALS)[number];

const isAuthRefusal = (error: unknown): error is GatewayError & { code: AuthRefusal } =>
  isGatewayError(error) && (AUTH_REFUSALS as readonly ErrorCode[]).includes(error.code);

/** Why an authentication failed, as the warning of the block it may start says. */
export type AuthFailureReason = 'no_bearer_key' | 'malformed_key' | 'unknown_key' | KeyRejection | 'ip_not_allowed';

/** A client blocked for failing to authenticate too often, as the block starts. */
export interface ClientBlock {
  /** The address blocked: an IPv4 address, or an IPv6 /64. */
  client: string;
  blockSeconds: number;
  channel: Channel;
  /** The failure that blocked it. */
  code: AuthRefusal;
  reason: AuthFailureReason;
  /** The key it sent, when the store holds that key. */
  keyId?: string;
}

/**
 * Why each refusal identify() raised was made, for the warning of a block: kept apart from the error, which is the
 * caller's answer and must not tell an unknown key from a revoked one.
 */
const refusalReasons = new WeakMap<GatewayError, { reason: AuthFailureReason; keyId?: string }>();

function refused(code: AuthRefusal, reason: AuthFailureReason, keyId?: string): GatewayError {
  const error = new GatewayError(code);
  refusalReasons.set(error, { reason, keyId });
  return error;
}

export class Authentication {
  /**
   * When this instance last wrote, or tried to write, each key's last use, oldest first. A store that does not
   * cache keys (PostgreSQL) keeps reading the old time after a write that failed: without this, every request
   * with the key would try it again.
   */
  private readonly keyUses = new Map<string, number>();

  constructor(
    private readonly deps: Pick<
      GatewayServiceDeps,
      'store' | 'clock' | 'authFailures' | 'onAuthFailed' | 'onAuthBlocked' | 'onClientBlocked' | 'keyUseLog' | 'keyRejectionLog'
    >,
    private readonly refusals: RefusalEvents,
  ) {}

  /**
   * Who is calling. A client (an IPv4 address, an IPv6 /64) that failed too often recently is refused before
   * its key is even looked at; every failure (no key, a malformed, unknown, expired or revoked key, an address
   * outside the key's allowlist) counts against it.
   */
  async authenticate(context: RequestContext): Promise<Principal> {
    const client = await this.checkClient(context);
    try {
      return await this.identify(context);
    } catch (error) {
      // Only a refusal counts: a key that could not be looked up (a store outage) says nothing against its
      // client, and counting it would block valid keys for longer than the outage lasted.
      if (isAuthRefusal(error)) {
        this.deps.onAuthFailed?.(context.channel, error.code);
        const blockSeconds = await this.deps.authFailures.recordFailure(client);
        if (blockSeconds !== null) {
          const why = refusalReasons.get(error) ?? { reason: 'unknown_key' };
          this.deps.onClientBlocked?.({ client, blockSeconds, channel: context.channel, code: error.code, ...why });
        }
      }
      throw error;
    }
  }

  /**
   * A request that sends no key where only a key could be served (GraphQL with introspection off), refused as a
   * request whose key is refused, after its client's block, but not counted against its client: it guesses no
   * key, and a probe asking `{ __typename }` without one must not block its address.
   */
  async refuseWithoutKey(context: RequestContext): Promise<never> {
    await this.checkClient(context);
    throw new GatewayError('UNAUTHENTICATED');
  }

  /** The request's client, refused while it is blocked after too many failed authentications. */
  private async checkClient(context: RequestContext): Promise<string> {
    const client = clientNetwork(context.ip);
    try {
      await this.deps.authFailures.check(client);
    } catch (error) {
      // Not a block when the limiter's own store failed.
      if (isGatewayError(error) && error.code === 'AUTH_BLOCKED') this.deps.onAuthBlocked?.(context.channel);
      throw error;
    }
    return client;
  }

  private async identify(context: RequestContext): Promise<Principal> {
    const { authorization } = context;
    const match = typeof authorization === 'string' ? BEARER.exec(authorization) : null;
    const key = match?.[1];
    if (!key) throw refused('UNAUTHENTICATED', 'no_bearer_key');
    // A malformed key or checksum is refused here, without a store lookup.
    if (!isWellFormedApiKey(key)) throw refused('UNAUTHENTICATED', 'malformed_key');
    const hash = hashApiKey(key);
    const record = await this.deps.store.findApiKeyByHash(hash);
    if (!record) throw refused('UNAUTHENTICATED', 'unknown_key');
    const secret: KeySecret | null = hashesEqual(record.hash, hash)
      ? 'current'
      : record.previousHash !== null && hashesEqual(record.previousHash, hash)
        ? 'previous'
        : null;
    if (!secret) throw refused('UNAUTHENTICATED', 'unknown_key');
    const now = this.deps.clock.now();
    const principal: Principal = {
      keyId: record.id,
      keyName: record.name,
      workspaceId: record.workspaceId,
      permissions: new Set(record.permissions),
      ip: context.ip,
      channel: context.channel,
      requestId: context.requestId,
      authenticatedAt: now,
      secret,
    };
    const rejection = keyRejection(record, secret, now);
    if (rejection) {
      // Not awaited, as a key's last use is not: a 401 that waited for the event's write would answer later than an
      // unknown key's, and tell the caller the key was once valid.
      void this.recordRejection(principal, rejection, context);
      // The answer an unknown key gets: nothing tells the caller that the key was ever valid.
      throw refused('UNAUTHENTICATED', rejection, record.id);
    }
    if (context.trace) context.trace.caller = principal;
    if (record.allowedCidrs !== null && !isAllowedIp(context.ip, record.allowedCidrs)) {
      await this.refusals.recordDenial(principal, { reason: 'ip_not_allowed' });
      throw refused('FORBIDDEN', 'ip_not_allowed', record.id);
    }
    this.touch(record, now);
    return principal;
  }

  /**
   * API_KEY_REJECTED for a key the store holds but refused, in the key's workspace and within its budget of refusal
   * events. Advisory as a key's last use is: a store that cannot take the event is logged, and the refusal stands.
   * Never rejects: nothing waits for it.
   */
  private async recordRejection(principal: Principal, reason: KeyRejection, context: RequestContext): Promise<void> {
    context.log?.setBindings({ apiKeyId: principal.keyId, apiKeyRejected: reason });
    try {
      const event = requestEvent(this.deps.clock, principal, 'API_KEY_REJECTED', { details: { reason, ...secretUsed(principal) } });
      const recorded = await this.refusals.recordRefusal(principal, event);
      if (recorded) this.deps.keyRejectionLog?.succeeded();
    } catch (error) {
      this.deps.keyRejectionLog?.failed(error, { apiKeyId: principal.keyId });
    }
  }

  /** Records that the key was used, at most once a minute, without making the request wait for it. */
  private touch(record: ApiKeyRecord, now: Date): void {
    const at = now.getTime();
    if (record.lastUsedAt !== null && at - record.lastUsedAt.getTime() < LAST_USED_RESOLUTION_MS) return;
    const tried = this.keyUses.get(record.id);
    if (tried !== undefined && at - tried < LAST_USED_RESOLUTION_MS) return;
    this.keyUses.delete(record.id);
    this.keyUses.set(record.id, at);
    // Oldest first: those a minute old count for nothing, and past the bound a key is forgotten early (written again sooner).
    for (const [id, since] of this.keyUses) {
      if (this.keyUses.size <= MAX_RECENT_KEY_USES && at - since < LAST_USED_RESOLUTION_MS) break;
      this.keyUses.delete(id);
    }
    // last_used_at is advisory: failing to write it must not fail the request.
    this.deps.store.touchApiKey(record, now).then(
      () => this.deps.keyUseLog?.succeeded(),
      (error: unknown) => this.deps.keyUseLog?.failed(error, { keyId: record.id }),
    );
  }

  /**
   * The principal authenticated before its request's body was read, with no permission asked yet, or, when that was
   * longer ago than a body takes to follow its headers, the request's key checked again.
   */
  async reauthenticate(principal: Principal, context: RequestContext): Promise<Principal> {
    if (this.isFresh(principal)) return principal;
    return this.authenticate(context);
  }

  /** Whether the principal was authenticated too recently for its key to need checking again. */
  isFresh(principal: Principal): boolean {
    return this.deps.clock.now().getTime() - principal.authenticatedAt.getTime() < KEY_RECHECK_AFTER_MS;
  }
}

/** Why a key the store found for the secret presented is refused; null when it is not. */
function keyRejection(record: ApiKeyRecord, secret: KeySecret, now: Date): KeyRejection | null {
  if (record.revokedAt !== null) return 'revoked';
  if (record.expiresAt !== null && record.expiresAt <= now) return 'expired';
  if (secret === 'previous' && !(record.previousHashExpiresAt !== null && record.previousHashExpiresAt > now)) return 'rotated_out';
  return null;
}

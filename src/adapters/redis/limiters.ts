import { Redis, ReplyError } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { summarizeError } from '../../failure-log.js';
import { describeFailure, type DependencyStatus } from '../../readiness.js';
import { memoryLimiter, type LimiterBackend, type LimiterLogger, type LimiterSettings } from '../limiter-backends.js';
import { inWindow } from '../limiter-window.js';
import { certificateRefusal } from '../certificate-refusal.js';
import { CommandRefusedError } from '../../domain/errors.js';

const FALLBACK = "each instance enforces its callers' limits on its own with an in-process limiter until";
const DEGRADED = `Redis is unreachable; ${FALLBACK} Redis is back`;

/**
 * Redis's answers to credentials it does not accept, by the word they start with: a wrong password or user
 * (WRONGPASS; `ERR invalid password` before Redis 6), none given where one is required (NOAUTH), or another
 * `ERR AUTH` refusal. A password sent to a Redis that has none is not one: ioredis warns and carries on.
 * Unlike an outage, no reconnection fixes them.
 */
const CREDENTIALS_REFUSED = /^(WRONGPASS|NOAUTH|ERR AUTH|ERR invalid password)\b/;

const refusalOf = (error: unknown): string | undefined =>
  error instanceof Error ? CREDENTIALS_REFUSED.exec(error.message)?.[1] : undefined;

/** Names what Redis refused, never the password itself (its error's text is not repeated). */
const refusedCredentials = (refusal: string): string =>
  refusal === 'NOAUTH'
    ? 'Redis requires a password and REDIS_URL gives none (NOAUTH)'
    : `Redis refused the user name or password in REDIS_URL (${refusal})`;

const REFUSED_FALLBACK = `${FALLBACK} Redis accepts the credentials`;

/**
 * Why Redis, connected, answers the limiters' commands with an error, by the word its answer starts with: no
 * room (maxmemory reached under `noeviction`, or nothing it may evict), a read-only replica, a failed save
 * that stops writes, a script blocking it, a dataset still loading, an ACL that forbids them. Never the
 * answer itself, for /readyz.
 */
const CALL_REFUSALS: Record<string, string> = {
  OOM: 'Redis is out of memory and refuses writes',
  READONLY: 'Redis is a read-only replica and refuses writes',
  MISCONF: 'Redis cannot save to disk and refuses writes',
  BUSY: 'Redis is busy running a script',
  LOADING: 'Redis is still loading its data',
  NOPERM: "The user in REDIS_URL may not run the limiters' commands",
};
/** Redis's answers start with an upper-case word naming the error. */
const errorWord = (error: Error): string => /^[A-Z]+/.exec(error.message)?.[0] ?? 'ERR';

/**
 * What Redis refused a limiter, named for the log and /readyz without repeating its answer: an ACL refusal
 * names the command or the limiter's keys (`pattern`) it forbids, since an ACL may allow some of the
 * limiters' keys and not others; any other refusal is Redis's as a whole.
 */
function refusedCalls(error: Error, pattern: string): string {
  return `${refusedWhat(error, pattern)}; ${FALLBACK} Redis runs them again`;
}

/** What Redis refused, and the word its answer starts with: `refusedCalls` without what the gateway does meanwhile. */
function refusedWhat(error: Error, pattern: string): string {
  const word = errorWord(error);
  const command = /'([a-z|]+)' command/.exec(error.message)?.[1];
  const what =
    word !== 'NOPERM'
      ? (CALL_REFUSALS[word] ?? "Redis answers the limiters' commands with an error")
      : command !== undefined
        ? `The user in REDIS_URL may not run ${command.toUpperCase()}`
        : /\bkeys?\b/.test(error.message)
          ? `The user in REDIS_URL may not use the keys ${pattern}`
          : CALL_REFUSALS.NOPERM;
  return `${what} (${word})`;
}

/**
 * The refusal behind a failed transaction (rate-limiter-flexible reads in MULTI): Redis answers its EXEC with
 * EXECABORT, and ioredis keeps the answers that caused it.
 */
const firstRefusal = (error: Error): Error =>
  (error as { previousErrors?: unknown[] }).previousErrors?.find((cause): cause is Error => cause instanceof Error) ?? error;

/** What the readiness check probes Redis with: the limiters' own command, on a key of its own. */
const PROBE = { keyPrefix: 'readiness-probe', points: 1_000_000, durationSeconds: 1 };
/** The key a refused limiter is probed on, under its own prefix, which no caller's key is. */
const LIMITER_PROBE_KEY = 'readiness-probe';

/**
 * While Redis refuses the limiters' calls, how often it is probed again. Nothing else would tell: calls it
 * refuses report nothing new, calls it runs report nothing at all, and /readyz may not be polled.
 */
const REFUSAL_RECHECK_MS = 1000;

/** Redis's refusal of the SELECT of the database in REDIS_URL: an index it does not have, or an ACL without SELECT. */
const DATABASE_REFUSED = /^(ERR (DB index is out of range|invalid DB index)|NOPERM\b.*'select')/i;
const databaseRefused = (refusal: string): string =>
  /^NOPERM/.test(refusal)
    ? "REDIS_URL selects a database, and Redis refuses its user the SELECT (NOPERM): allow it +select, or drop the database from REDIS_URL"
    : `REDIS_URL selects a database this Redis does not have (${refusal})`;
const DATABASE_FALLBACK = 'the limits are kept in its database 0, still shared by every instance, until REDIS_URL or Redis is fixed';

/** Warned about, and said in /readyz, when Redis may evict keys to make room: the limiters' keys all expire, so they may go first. */
const evictionRisk = (policy: string): string =>
  `Redis may evict the limiters' keys to make room (maxmemory-policy ${policy}): spent quotas, failed-authentication blocks ` +
  'and the upstream pace and pause can vanish; run it with maxmemory-policy noeviction';

/**
 * How long Redis may leave a command unanswered before it counts as unreachable. Under the 2 s readiness
 * gives each check, so a hung Redis reads as degraded there, not as a check that never answered; and as long
 * as that allows, because ioredis measures it on the event loop: a loop held up this long by other work
 * drops a healthy connection too (logged, and counted in process until it reconnects).
 */
const REDIS_ANSWER_TIMEOUT_MS = 1500;

const WINDOW_UNKNOWN =
  "the Redis user may run neither PEXPIRETIME nor TIME (an ACL written for an earlier version): quotas still count exactly, but a point taken by a request then refused for an outage is not given back, and X-RateLimit-Reset is estimated at each answer; grant +pexpiretime (Redis 7.0 and later) or +time";

/** The limiters' calls, each answered by Redis or, when it cannot answer, by the in-process fallback. */
const CALLS = ['consume', 'penalty', 'reward', 'get', 'set', 'block', 'delete'] as const;

/**
 * The end of the window of KEYS[1], whose PTTL is `ttl`, in epoch ms on Redis's clock, -1 for one that never ends:
 * the expiry Redis keeps (PEXPIRETIME, Redis 7.0), or before 7.0 its time plus `ttl`, a millisecond late at most;
 * -2 when the user may run neither (an ACL written for an earlier version).
 */
const WINDOW_END = `local function window_end(ttl)
  if ttl < 0 then return -1 end
  local expiretime = redis.pcall('pexpiretime', KEYS[1])
  if type(expiretime) == 'number' then return expiretime end
  local now = redis.pcall('time')
  if now.err then return -2 end
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + ttl
end
`;

/** rate-limiter-flexible's own script (ARGV: points, window seconds), answering the window's end too. */
const CONSUME = `${WINDOW_END}
redis.call('set', KEYS[1], 0, 'EX', ARGV[2], 'NX')
local consumed = redis.call('incrby', KEYS[1], ARGV[1])
local ttl = redis.call('pttl', KEYS[1])
if ttl == -1 then
  redis.call('expire', KEYS[1], ARGV[2])
  ttl = 1000 * ARGV[2]
end
return {consumed, ttl, window_end(ttl)}`;

/** The library's read (a MULTI of GET and PTTL), answering the window's end too. */
const GET = `${WINDOW_END}
local points = redis.call('get', KEYS[1])
if not points then return nil end
local ttl = redis.call('pttl', KEYS[1])
return {points, ttl, window_end(ttl)}`;

/**
 * Takes ARGV[1] points back while the key's window is the one that ends at ARGV[2]. Windows of one key end at least
 * a window apart, so one within half a window (ARGV[3] ms) of it is it, however late the end was read before 7.0.
 */
const GIVE_BACK = `${WINDOW_END}
local ttl = redis.call('pttl', KEYS[1])
if ttl == -2 then return 0 end
local ending = window_end(ttl)
if ending == -2 then return 0 end
if ending == -1 or tonumber(ARGV[2]) == -1 then
  if ending ~= tonumber(ARGV[2]) then return 0 end
elseif math.abs(ending - tonumber(ARGV[2])) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('incrby', KEYS[1], -tonumber(ARGV[1]))
return 1`;

interface WindowCommands {
  gatewayLimiterGet(key: string): Promise<[number | string, number, number] | null>;
  gatewayLimiterGiveBack(key: string, points: number, end: number, tolerance: number): Promise<number>;
}

/** RateLimiterRedis whose results carry their LimiterWindow, identified by the key's expiry on Redis's clock. */
class WindowedRedisLimiter extends RateLimiterRedis {
  private readonly redis: Redis & WindowCommands;

  constructor(
    client: Redis,
    options: { keyPrefix: string; points: number; duration: number },
    private readonly onWindowUnknown: () => void,
  ) {
    super({ storeClient: client, rejectIfRedisNotReady: true, customIncrTtlLuaScript: CONSUME, ...options });
    client.defineCommand('gatewayLimiterGet', { numberOfKeys: 1, lua: GET });
    client.defineCommand('gatewayLimiterGiveBack', { numberOfKeys: 1, lua: GIVE_BACK });
    this.redis = client as Redis & WindowCommands;
  }

  private ready(rlKey: string): void {
    if (!(this as unknown as { _isRedisReady(key: string, readonly: boolean): boolean })._isRedisReady(rlKey, false)) {
      throw new Error('Redis connection is not ready');
    }
  }

  async _get(rlKey: string): Promise<[number | string, number, number] | null> {
    this.ready(rlKey);
    return this.redis.gatewayLimiterGet(rlKey);
  }

  _getRateLimiterRes(rlKey: string, changedPoints: number, result: unknown): RateLimiterRes {
    const res = (RateLimiterRedis.prototype as unknown as { _getRateLimiterRes(...args: unknown[]): RateLimiterRes })._getRateLimiterRes.call(
      this,
      rlKey,
      changedPoints,
      result,
    );
    // The library's own MULTIs (set, block) answer no window, nor does a Redis that will not tell its end: the
    // reset is then estimated on this instance's clock, and nothing is given back.
    if (!Array.isArray(result) || result.length !== 3) return res;
    if (Number(result[2]) === -2) {
      this.onWindowUnknown();
      return res;
    }
    const end = Number(result[2]);
    return inWindow(res, { end: end < 0 ? null : end, giveBack: (points) => this.giveBack(rlKey, points, end) });
  }

  private async giveBack(rlKey: string, points: number, end: number): Promise<boolean> {
    this.ready(rlKey);
    return (await this.redis.gatewayLimiterGiveBack(rlKey, points, end, (this.duration * 1000) / 2)) === 1;
  }
}

/**
 * Limiters shared by every instance through Redis. When Redis cannot answer a call, it is answered by an
 * in-process fallback limiter, so the gateway keeps serving (each instance then counts on its own); once Redis
 * answers a write again, calls go back to Redis by themselves, and the next outage starts each fallback afresh
 * (a count or block kept from an earlier outage would hold callers to it long after). A `sharedOnly` limiter
 * has no fallback: its calls fail meanwhile.
 *
 * A Redis that refuses connections is noticed at once. One that hangs (stopped, paused, a dead link that
 * keeps the socket open) is noticed by the socket timeout: the connection is dropped, which fails every
 * command waiting on it over to the fallback, and calls skip Redis without waiting until, after a
 * reconnection, Redis has answered a probe write. The ready check is not enough: a Redis whose writes are
 * paused (`CLIENT PAUSE … WRITE`, as FAILOVER does) answers its INFO at once. Requests thus wait for a hung
 * Redis once, not once per call or reconnection.
 *
 * A Redis that is connected but refuses a limiter's commands (out of memory, a read-only replica, an ACL
 * without its keys…) fails them over too, and is reported once by the first call it fails, with that call's
 * own error: an ACL may allow the probe's key and not a limiter's. /readyz says so too. While it refuses, each
 * refused limiter is probed again every second, on a key of its own, so that the log says when Redis runs
 * them again (and a later refusal is a new one) whether or not anything polls /readyz.
 *
 * Credentials Redis refuses are no outage: at start they stop start-up (`connect`), like a database password
 * PostgreSQL refuses, and so do a database it will not select and a TLS certificate Node does not trust;
 * credentials refused later (the password changed under a running gateway) are reported as refused, not as an
 * unreachable Redis.
 */
export class RedisLimiters implements LimiterBackend {
  readonly kind = 'redis';
  private readonly client: Redis;
  private logger: LimiterLogger | undefined;
  private trouble: unknown = null;
  /** How the first connection attempt ended: null once Redis answered a write, else the error that ended it. */
  private readonly firstAttempt: Promise<unknown>;
  private firstAnswer: ((outcome: unknown) => void) | undefined;
  private closing = false;
  /** Redis's refusal of the database REDIS_URL selects, while the connection runs in database 0 for it. */
  private databaseRefusal: string | undefined;
  private databaseRefusedThisConnection = false;
  /** Whether Redis answered a write on this connection: until it has, calls go to the fallback without waiting. */
  private writesAnswered = false;
  /** Redis's answers refusing limiters' calls while connected, by the limiters' key prefix. */
  private readonly refusals = new Map<string, Error>();
  /** What each limiter's prefix is probed with: the probe's own limiter, and the refused ones'. */
  private readonly probes = new Map<string, { limiter: RateLimiterAbstract; key: string }>();
  private probing = false;
  /** Probes Redis again while it refuses the limiters' calls. */
  private recheck: NodeJS.Timeout | undefined;
  /** How many times the limiters went back to Redis: a fallback made before the last time holds an earlier outage's counts. */
  private returns = 0;
  /** Whether Redis would not say when a window ends (windowUnknown), and whether the log has been told. */
  private windowUnknownSeen = false;
  private windowUnknownSaid = false;
  /** Redis's `maxmemory-policy`, when its INFO said it. */
  private evictionPolicy: string | undefined;

  /** `keyPrefix`, when not empty, goes before every key, with a `:`: `staging` makes `duplicate:<workspace>` `staging:duplicate:<workspace>`. */
  constructor(
    url: string,
    private readonly keyPrefix = '',
  ) {
    this.client = new Redis(url, {
      // Fail at once while disconnected instead of queueing: the fallback answers meanwhile.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      // No reply within this time drops the connection until Redis answers again.
      socketTimeout: REDIS_ANSWER_TIMEOUT_MS,
      connectTimeout: 2000,
      // Keep reconnecting for as long as the process runs.
      retryStrategy: (attempt) => Math.min(attempt * 100, 1000),
    });
    this.firstAttempt = new Promise((resolve) => {
      this.firstAnswer = resolve;
      this.client.once('error', resolve);
      this.client.once('close', () => resolve(new Error('connection closed')));
    });
    this.client.on('connect', () => {
      this.databaseRefusedThisConnection = false;
    });
    this.client.on('error', (error: unknown) => this.degrade(error));
    // A refused connection closes after its error: the close says nothing more.
    this.client.on('close', () => {
      this.writesAnswered = false;
      if (this.trouble === null) this.degrade(new Error('connection closed'));
    });
    this.client.on('ready', () => void this.proveWrites());
    this.probes.set(PROBE.keyPrefix, { limiter: this.redisLimiter(PROBE), key: 'probe' });
  }

  async connect(): Promise<void> {
    const outcome = await this.firstAttempt;
    const refusal = refusalOf(outcome);
    if (refusal !== undefined) throw new Error(refusedCredentials(refusal));
    const certificate = certificateRefusal(outcome);
    if (certificate !== undefined) {
      throw new Error(
        `Redis's TLS certificate is not trusted (${certificate}): if a private CA signed it, give that CA's certificate file in NODE_EXTRA_CA_CERTS`,
      );
    }
    // ioredis reports a SELECT Redis refused and then carries on in database 0, where the limits would mix
    // with whatever else lives there.
    if (this.databaseRefusal !== undefined) throw new Error(databaseRefused(this.databaseRefusal));
  }

  limiter(settings: LimiterSettings): RateLimiterAbstract {
    const shared = this.redisLimiter(settings);
    const fallback = settings.sharedOnly ? undefined : this.fallback(settings);
    if (fallback) this.probes.set(settings.keyPrefix, { limiter: this.redisLimiter({ ...PROBE, keyPrefix: settings.keyPrefix }), key: LIMITER_PROBE_KEY });
    for (const method of CALLS) {
      const viaRedis = shared[method].bind(shared) as (...args: unknown[]) => Promise<unknown>;
      const viaFallback = fallback && ((args: unknown[]) => (fallback()[method] as (...args: unknown[]) => Promise<unknown>)(...args));
      Object.assign(shared, { [method]: (...args: unknown[]) => this.call(settings.keyPrefix, () => viaRedis(...args), viaFallback && (() => viaFallback(args))) });
    }
    return shared;
  }

  private redisLimiter(settings: LimiterSettings): RateLimiterAbstract {
    return new WindowedRedisLimiter(
      this.client,
      {
        keyPrefix: this.keyPrefix ? `${this.keyPrefix}:${settings.keyPrefix}` : settings.keyPrefix,
        points: settings.points,
        duration: settings.durationSeconds,
      },
      () => this.windowUnknown(),
    );
  }

  /**
   * Said once: counting stays exact, so nothing fails that an operator would otherwise notice. The probe write of
   * the first connection meets it before the logger is given (logTo), which then says it.
   */
  private windowUnknown(): void {
    if (this.windowUnknownSaid) return;
    this.windowUnknownSeen = true;
    if (this.logger === undefined) return;
    this.windowUnknownSaid = true;
    this.logger.warn({}, WINDOW_UNKNOWN);
  }

  /** The in-process limiter answering for `settings` during the current outage, fresh for each one. */
  private fallback(settings: LimiterSettings): () => RateLimiterAbstract {
    let limiter = memoryLimiter(settings);
    let made = this.returns;
    return () => {
      if (made !== this.returns) {
        limiter = memoryLimiter(settings);
        made = this.returns;
      }
      return limiter;
    };
  }

  /**
   * One call of the limiter with key prefix `prefix`: through Redis once Redis answers writes, else, or when
   * Redis fails it, through the fallback. A refusal is judged by the call's own error; a lost connection is
   * the connection's events' to report.
   */
  private async call(prefix: string, viaRedis: () => Promise<unknown>, viaFallback: (() => Promise<unknown>) | undefined): Promise<unknown> {
    if (!this.writesAnswered) {
      if (viaFallback) return viaFallback();
      // The connection's own error, when it has one, says why (ECONNREFUSED, a timeout) better than this does.
      throw this.trouble ?? new Error('Redis has not answered a write since it connected');
    }
    try {
      return await viaRedis();
    } catch (error) {
      // A spent limit is Redis's answer, not a failure.
      if (error instanceof RateLimiterRes) throw error;
      const refusal = error instanceof ReplyError ? firstRefusal(error as Error) : undefined;
      if (!viaFallback) {
        // A limiter without a fallback fails the call: an ACL's refusal is named, for its caller not to report an outage.
        if (refusal !== undefined && errorWord(refusal) === 'NOPERM') throw new CommandRefusedError(refusedWhat(refusal, this.keyPattern(prefix)));
        throw error;
      }
      if (refusal !== undefined) this.refused(prefix, refusal);
      return viaFallback();
    }
  }

  /**
   * On each connection: reads the eviction policy, then probes with a write, which routes calls back to Redis
   * once answered. Lost with its connection (writes paused, say), the next connection tries again.
   */
  private async proveWrites(): Promise<void> {
    await this.readEvictionPolicy();
    await this.probe(PROBE.keyPrefix).catch(() => undefined);
  }

  /** Logs, each time Redis reports a new one, a policy under which Redis may evict the limiters' keys. INFO refused leaves it as it was. */
  private async readEvictionPolicy(): Promise<void> {
    const info = await this.client.info('memory').catch(() => '');
    const policy = /^maxmemory_policy:(\S+)/m.exec(info)?.[1];
    if (policy === undefined || policy === this.evictionPolicy) return;
    this.evictionPolicy = policy;
    if (policy !== 'noeviction' && !this.closing) this.logger?.warn({}, evictionRisk(policy));
  }

  /**
   * Runs the limiter's command (a write) under `prefix`, noting Redis's answer; rejects when Redis could not be
   * asked. A PING cannot tell: Redis out of memory, or a read-only replica, still answers it.
   */
  private async probe(prefix: string): Promise<void> {
    const { limiter, key } = this.probes.get(prefix)!;
    try {
      await limiter.consume(key);
      this.answered();
      this.accepted(prefix);
    } catch (error) {
      if (!(error instanceof ReplyError)) throw error;
      this.answered();
      this.refused(prefix, error as Error);
    }
  }

  /** Redis answered a write on this connection: calls go to it again, and an outage, if any, is over. */
  private answered(): void {
    this.writesAnswered = true;
    this.firstAnswer?.(null);
    this.firstAnswer = undefined;
    if (!this.databaseRefusedThisConnection) this.databaseRefusal = undefined;
    if (this.trouble === null) return;
    this.trouble = null;
    this.returns += 1;
    this.logger?.info({}, 'Redis is reachable again; limits are shared through Redis again');
  }

  /** Logged when Redis starts refusing a limiter's calls, unless it refuses others for the same reason already. */
  private refused(prefix: string, error: Error): void {
    const message = refusedCalls(error, this.keyPattern(prefix));
    const known = [...this.refusals].some(([other, before]) => refusedCalls(before, this.keyPattern(other)) === message);
    this.refusals.set(prefix, error);
    if (this.closing) return;
    this.recheck ??= setInterval(() => this.probeRefused(), REFUSAL_RECHECK_MS).unref();
    if (!known) this.logger?.warn({ cause: summarizeError(error) }, message);
  }

  /** Logged when Redis runs every limiter's calls again. */
  private accepted(prefix: string): void {
    if (!this.refusals.delete(prefix) || this.refusals.size > 0) return;
    this.stopRechecking();
    this.returns += 1;
    if (!this.closing) this.logger?.info({}, "Redis runs the limiters' commands again; limits are shared through Redis again");
  }

  /** The keys of the limiter with `prefix`, as Redis names them. */
  private keyPattern(prefix: string): string {
    return `${this.keyPrefix ? `${this.keyPrefix}:` : ''}${prefix}:*`;
  }

  /** Probes each refused limiter unless a probe is under way, or Redis is not connected (the connection's events tell that story). */
  private probeRefused(): void {
    if (this.client.status !== 'ready' || this.probing) return;
    this.probing = true;
    void Promise.all([...this.refusals.keys()].map((prefix) => this.probe(prefix)))
      .catch(() => undefined)
      .finally(() => {
        this.probing = false;
      });
  }

  /** Logged once when Redis becomes unreachable, and again only when the reason changes to refused credentials or back. */
  private degrade(error: unknown): void {
    if (this.closing) return;
    if (error instanceof Error && DATABASE_REFUSED.test(error.message)) {
      // Not an outage: the connection goes on, in database 0, and is ready a moment later.
      this.databaseRefusedThisConnection = true;
      if (this.databaseRefusal === undefined) this.logger?.warn({}, `${databaseRefused(error.message)}; ${DATABASE_FALLBACK}`);
      this.databaseRefusal = error.message;
      return;
    }
    const changed = this.trouble === null || refusalOf(error) !== refusalOf(this.trouble);
    this.trouble = error;
    if (changed) this.logTrouble();
  }

  private logTrouble(): void {
    const refusal = refusalOf(this.trouble);
    if (refusal === undefined) this.logger?.warn({ cause: summarizeError(this.trouble) }, DEGRADED);
    else this.logger?.warn({}, `${refusedCredentials(refusal)}; ${REFUSED_FALLBACK}`);
  }

  logTo(logger: LimiterLogger): void {
    this.logger = logger;
    if (this.trouble !== null) this.logTrouble();
    if (this.evictionPolicy !== undefined && this.evictionPolicy !== 'noeviction') logger.warn({}, evictionRisk(this.evictionPolicy));
    const messages = new Map([...this.refusals].map(([prefix, error]) => [refusedCalls(error, this.keyPattern(prefix)), error]));
    for (const [message, error] of messages) logger.warn({ cause: summarizeError(error) }, message);
    if (this.windowUnknownSeen) this.windowUnknown();
  }

  async check(): Promise<DependencyStatus> {
    const degraded = (message: string): DependencyStatus => ({ status: 'degraded', backend: 'redis', message });
    if (this.databaseRefusal !== undefined) return degraded(`${databaseRefused(this.databaseRefusal)}; ${DATABASE_FALLBACK}`);
    if (this.client.status === 'ready') {
      try {
        // The policy is read again here too, so that a note an operator acted on goes once Redis's setting changes.
        await Promise.all([this.readEvictionPolicy(), ...[PROBE.keyPrefix, ...this.refusals.keys()].map((prefix) => this.probe(prefix))]);
        if (this.refusals.size > 0) {
          return degraded([...new Set([...this.refusals].map(([prefix, error]) => refusedCalls(error, this.keyPattern(prefix))))].join('; '));
        }
        // A risk, not an outage: the limits are shared and exact until Redis evicts one.
        const evicts = this.evictionPolicy !== undefined && this.evictionPolicy !== 'noeviction';
        return evicts ? { status: 'up', backend: 'redis', message: evictionRisk(this.evictionPolicy!) } : { status: 'up', backend: 'redis' };
      } catch (error) {
        // A probe lost with its connection (a hung Redis is dropped by the socket timeout) fails with an error
        // that says nothing of why; the connection's state does.
        if (this.client.status === 'ready') return degraded(`${DEGRADED} (${describeFailure(error)})`);
      }
    }
    const refusal = refusalOf(this.trouble);
    if (refusal !== undefined) return degraded(`${refusedCredentials(refusal)}; ${REFUSED_FALLBACK}`);
    return degraded(`${DEGRADED} (connection ${this.client.status})`);
  }

  private stopRechecking(): void {
    clearInterval(this.recheck);
    this.recheck = undefined;
  }

  async close(): Promise<void> {
    this.closing = true;
    this.stopRechecking();
    this.client.disconnect();
  }
}

import { Redis, ReplyError } from 'ioredis';
import { RateLimiterRedis, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { describeFailure, type DependencyStatus } from '../../readiness.js';
import { memoryLimiter, type LimiterBackend, type LimiterLogger, type LimiterSettings } from '../limiter-backends.js';

const FALLBACK = "each instance enforces its callers' limits on its own with an in-process limiter until";
const DEGRADED = `Redis is unreachable; ${FALLBACK} Redis is back`;

/**
 * Redis's answers to credentials it does not accept, by the word they start with: a wrong password or user
 * (WRONGPASS; `ERR invalid password` before Redis 6), none given where one is required (NOAUTH), or another
 * `ERR AUTH` refusal. A password sent to a Redis that has none is not one: ioredis warns and carries on.
 * Unlike an outage, no reconnection fixes them.
 */
const CREDENTIALS_REFUSED = /^(WRONGPASS|NOAUTH|ERR AUTH|ERR invalid password)\b/;

/** Redis's answer to a SELECT of a database index beyond its `databases` setting. */
const DATABASE_REFUSED = /^ERR (DB index is out of range|invalid DB index)/;

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
const refusedCalls = (word: string): string =>
  `${CALL_REFUSALS[word] ?? "Redis answers the limiters' commands with an error"} (${word}); ${FALLBACK} Redis runs them again`;
/** Redis's answers start with an upper-case word naming the error. */
const errorWord = (error: Error): string => /^[A-Z]+/.exec(error.message)?.[0] ?? 'ERR';

/** What the readiness check and the limiters' failures probe Redis with: the limiters' own command, on a key of its own. */
const PROBE = { keyPrefix: 'readiness-probe', points: 1_000_000, durationSeconds: 1 };

/**
 * While Redis refuses the limiters' calls, how often it is probed again. Nothing else would tell: calls it
 * refuses report nothing new, calls it runs report nothing at all, and /readyz may not be polled.
 */
const REFUSAL_RECHECK_MS = 1000;

const databaseRefused = (refusal: string): string => `REDIS_URL selects a database this Redis does not have (${refusal})`;
const DATABASE_FALLBACK = 'the limits are kept in its database 0, still shared by every instance, until REDIS_URL or Redis is fixed';

/**
 * How long Redis may leave a command unanswered before it counts as unreachable. Under the 2 s readiness
 * gives each check, so a hung Redis reads as degraded there, not as a check that never answered; and as long
 * as that allows, because ioredis measures it on the event loop: a loop held up this long by other work
 * drops a healthy connection too (logged, and counted in process until it reconnects).
 */
const REDIS_ANSWER_TIMEOUT_MS = 1500;

/**
 * Limiters shared by every instance through Redis. When Redis cannot answer, rate-limiter-flexible hands
 * each call to an in-process insurance limiter, so the gateway keeps serving (each instance then counts on
 * its own); once the connection is ready again, calls go back to Redis by themselves. A `sharedOnly` limiter
 * has no insurance: its calls fail meanwhile.
 *
 * A Redis that refuses connections is noticed at once. One that hangs (stopped, paused, a dead link that
 * keeps the socket open) is noticed by the socket timeout: the connection is dropped, which fails every
 * command waiting on it over to the insurance limiter, and until a reconnection completes its ready check
 * the client is not ready, so later calls skip Redis without waiting. Requests thus wait for a hung Redis
 * once, not once per call.
 *
 * A Redis that is connected but refuses the limiters' commands (out of memory, a read-only replica…) fails
 * them over too, and is reported once by the first call it fails, and in /readyz, whose check runs the same
 * command: a PING would pass. While it refuses, it is probed again every second, so that the log says when it
 * runs them again (and a later refusal is a new one) whether or not anything polls /readyz.
 *
 * Credentials Redis refuses are no outage: at start they stop start-up (`connect`), like a database password
 * PostgreSQL refuses; refused later (the password changed under a running gateway), they are reported as
 * refused, not as an unreachable Redis.
 */
export class RedisLimiters implements LimiterBackend {
  private readonly client: Redis;
  private logger: LimiterLogger | undefined;
  private trouble: unknown = null;
  /** How the first connection attempt ended: null once ready, else the error that ended it. */
  private readonly firstAttempt: Promise<unknown>;
  private closing = false;
  /** Redis's refusal of the database REDIS_URL selects, while the connection runs in database 0 for it. */
  private databaseRefusal: string | undefined;
  private databaseRefusedThisConnection = false;
  /** Redis's answer when it last refused the probe while connected: each call fails over to the insurance meanwhile. */
  private callRefusal: Error | undefined;
  private probing = false;
  /** Probes Redis again while it refuses the limiters' calls. */
  private recheck: NodeJS.Timeout | undefined;
  private readonly probe: RateLimiterAbstract;

  /** `keyPrefix`, when not empty, goes before every key, with a `:`: `staging` makes `duplicate:<workspace>` `staging:duplicate:<workspace>`. */
  constructor(
    url: string,
    private readonly keyPrefix = '',
  ) {
    this.client = new Redis(url, {
      // Fail at once while disconnected instead of queueing: the insurance limiter answers meanwhile.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      // No reply within this time drops the connection (and with it, readiness) until Redis answers again.
      socketTimeout: REDIS_ANSWER_TIMEOUT_MS,
      connectTimeout: 2000,
      // Keep reconnecting for as long as the process runs.
      retryStrategy: (attempt) => Math.min(attempt * 100, 1000),
    });
    this.firstAttempt = new Promise((resolve) => {
      this.client.once('ready', () => resolve(null));
      this.client.once('error', resolve);
      this.client.once('close', () => resolve(new Error('connection closed')));
    });
    this.client.on('connect', () => {
      this.databaseRefusedThisConnection = false;
    });
    this.client.on('error', (error: unknown) => this.degrade(error));
    // A refused connection closes after its error: the close says nothing more.
    this.client.on('close', () => {
      if (this.trouble === null) this.degrade(new Error('connection closed'));
    });
    this.client.on('ready', () => this.recover());
    this.probe = this.redisLimiter(PROBE);
  }

  async connect(): Promise<void> {
    const outcome = await this.firstAttempt;
    const refusal = refusalOf(outcome);
    if (refusal !== undefined) throw new Error(refusedCredentials(refusal));
    // ioredis reports a SELECT Redis refused and then carries on in database 0, where the limits would mix
    // with whatever else lives there.
    if (this.databaseRefusal !== undefined) throw new Error(databaseRefused(this.databaseRefusal));
  }

  limiter(settings: LimiterSettings): RateLimiterAbstract {
    return this.redisLimiter(settings, settings.sharedOnly ? undefined : reportingUse(memoryLimiter(settings), () => this.fellBack()));
  }

  private redisLimiter(settings: LimiterSettings, insuranceLimiter?: RateLimiterAbstract): RateLimiterAbstract {
    return new RateLimiterRedis({
      storeClient: this.client,
      rejectIfRedisNotReady: true,
      insuranceLimiter,
      keyPrefix: this.keyPrefix ? `${this.keyPrefix}:${settings.keyPrefix}` : settings.keyPrefix,
      points: settings.points,
      duration: settings.durationSeconds,
    });
  }

  /**
   * A call just failed over to the insurance limiter. While Redis is unreachable, the connection's events have
   * said so already; while it is connected, Redis answered with an error, which the call does not pass on:
   * the probe, the same command, finds out which (once, not for each call that meets it: once a refusal is
   * known, the recheck timer probes).
   */
  private fellBack(): void {
    if (this.callRefusal === undefined) this.probeInBackground();
  }

  /** Probes unless a probe is under way, or Redis is not connected (the connection's events tell that story). */
  private probeInBackground(): void {
    if (this.client.status !== 'ready' || this.probing) return;
    this.probing = true;
    void this.probeCalls()
      .catch(() => undefined)
      .finally(() => {
        this.probing = false;
      });
  }

  /**
   * Whether Redis runs the limiters' command (a write), noting the answer; rejects when Redis could not be
   * asked. A PING cannot tell: Redis out of memory, or a read-only replica, still answers it.
   */
  private async probeCalls(): Promise<Error | undefined> {
    try {
      await this.probe.consume('probe');
      this.noteCalls(undefined);
      return undefined;
    } catch (error) {
      if (!(error instanceof ReplyError)) throw error;
      this.noteCalls(error as Error);
      return error as Error;
    }
  }

  /** Logged when Redis starts refusing the limiters' calls (or refuses them for another reason), and when it accepts them again. */
  private noteCalls(refusal: Error | undefined): void {
    const before = this.callRefusal;
    this.callRefusal = refusal;
    if (this.closing) return;
    if (refusal === undefined) {
      this.stopRechecking();
      if (before !== undefined) this.logger?.info({}, "Redis runs the limiters' commands again; limits are shared through Redis again");
      return;
    }
    this.recheck ??= setInterval(() => this.probeInBackground(), REFUSAL_RECHECK_MS).unref();
    if (before === undefined || errorWord(before) !== errorWord(refusal)) this.logger?.warn({ err: refusal }, refusedCalls(errorWord(refusal)));
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
    if (refusal === undefined) this.logger?.warn({ err: this.trouble }, DEGRADED);
    else this.logger?.warn({}, `${refusedCredentials(refusal)}; ${REFUSED_FALLBACK}`);
  }

  private recover(): void {
    if (!this.databaseRefusedThisConnection) this.databaseRefusal = undefined;
    if (this.trouble === null) return;
    this.trouble = null;
    this.logger?.info({}, 'Redis is reachable again; limits are shared through Redis again');
  }

  logTo(logger: LimiterLogger): void {
    this.logger = logger;
    if (this.trouble !== null) this.logTrouble();
    if (this.callRefusal !== undefined) logger.warn({ err: this.callRefusal }, refusedCalls(errorWord(this.callRefusal)));
  }

  async check(): Promise<DependencyStatus> {
    const degraded = (message: string): DependencyStatus => ({ status: 'degraded', backend: 'redis', message });
    if (this.databaseRefusal !== undefined) return degraded(`${databaseRefused(this.databaseRefusal)}; ${DATABASE_FALLBACK}`);
    if (this.client.status === 'ready') {
      try {
        const refusal = await this.probeCalls();
        return refusal === undefined ? { status: 'up', backend: 'redis' } : degraded(refusedCalls(errorWord(refusal)));
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

/**
 * `limiter`, telling `used` each time it answers a call. As an insurance limiter it is called only for calls
 * Redis failed, and without their error, which rate-limiter-flexible keeps to itself.
 */
function reportingUse(limiter: RateLimiterAbstract, used: () => void): RateLimiterAbstract {
  for (const method of ['consume', 'penalty', 'reward', 'get', 'set', 'block', 'delete'] as const) {
    const call = limiter[method].bind(limiter) as (...args: unknown[]) => unknown;
    Object.assign(limiter, {
      [method]: (...args: unknown[]) => {
        used();
        return call(...args);
      },
    });
  }
  return limiter;
}

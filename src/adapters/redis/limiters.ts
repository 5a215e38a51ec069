import { Redis } from 'ioredis';
import { RateLimiterRedis, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { describeFailure, type DependencyStatus } from '../../readiness.js';
import { memoryLimiter, type LimiterBackend, type LimiterLogger, type LimiterSettings } from '../limiter-backends.js';

const DEGRADED = 'Redis is unreachable; each instance enforces its limits on its own with an in-process limiter until Redis is back';

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
 * its own); once the connection is ready again, calls go back to Redis by themselves.
 *
 * A Redis that refuses connections is noticed at once. One that hangs (stopped, paused, a dead link that
 * keeps the socket open) is noticed by the socket timeout: the connection is dropped, which fails every
 * command waiting on it over to the insurance limiter, and until a reconnection completes its ready check
 * the client is not ready, so later calls skip Redis without waiting. Requests thus wait for a hung Redis
 * once, not once per call.
 */
export class RedisLimiters implements LimiterBackend {
  readonly name = 'redis';
  private readonly client: Redis;
  private logger: LimiterLogger | undefined;
  private trouble: unknown = null;
  private closing = false;

  constructor(url: string) {
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
    this.client.on('error', (error: unknown) => this.degrade(error));
    this.client.on('close', () => this.degrade(new Error('connection closed')));
    this.client.on('ready', () => this.recover());
  }

  limiter(settings: LimiterSettings): RateLimiterAbstract {
    return new RateLimiterRedis({
      storeClient: this.client,
      rejectIfRedisNotReady: true,
      insuranceLimiter: memoryLimiter(settings),
      keyPrefix: settings.keyPrefix,
      points: settings.points,
      duration: settings.durationSeconds,
    });
  }

  private degrade(error: unknown): void {
    if (this.trouble !== null || this.closing) return;
    this.trouble = error;
    this.logger?.warn({ err: error }, DEGRADED);
  }

  private recover(): void {
    if (this.trouble === null) return;
    this.trouble = null;
    this.logger?.info({}, 'Redis is reachable again; limits are shared through Redis again');
  }

  logTo(logger: LimiterLogger): void {
    this.logger = logger;
    if (this.trouble !== null) logger.warn({ err: this.trouble }, DEGRADED);
  }

  async check(): Promise<DependencyStatus> {
    const degraded = (reason: string): DependencyStatus => ({ status: 'degraded', backend: 'redis', message: `${DEGRADED} (${reason})` });
    if (this.client.status === 'ready') {
      try {
        await this.client.ping();
        return { status: 'up', backend: 'redis' };
      } catch (error) {
        // A ping lost with its connection (a hung Redis is dropped by the socket timeout) fails with a retry
        // error that says nothing of why; the connection's state does.
        if (this.client.status === 'ready') return degraded(describeFailure(error));
      }
    }
    return degraded(`connection ${this.client.status}`);
  }

  async close(): Promise<void> {
    this.closing = true;
    this.client.disconnect();
  }
}

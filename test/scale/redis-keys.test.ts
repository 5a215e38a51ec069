import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RateLimiterAuthFailures } from '../../src/adapters/rate-limiter-auth-failures.js';
import { RateLimiterQuota } from '../../src/adapters/rate-limiter-quota.js';
import { RedisLimiters } from '../../src/adapters/redis/limiters.js';
import { UpstreamPacer } from '../../src/adapters/upstream-pacer.js';
import { PrivateRedis, skipWithoutRedisServer } from '../support/redis.js';

/** Every key in the database `client` is connected to. */
async function keysOf(client: Redis): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await client.scan(cursor, 'COUNT', 1000);
    keys.push(...batch);
    cursor = next;
  } while (cursor !== '0');
  return keys.sort();
}

// A Redis of its own: its database is scanned whole.
describe.skipIf(skipWithoutRedisServer)('Redis keys and permissions', () => {
  let redis: PrivateRedis;
  let admin: Redis;

  beforeAll(async () => {
    redis = await PrivateRedis.start();
    admin = new Redis(redis.url());
  });

  afterAll(async () => {
    admin?.disconnect();
    await redis?.stop();
  });

  it('limiters under different REDIS_KEY_PREFIX values on one database share no quota, pace, pause or failed-authentication block', async () => {
    await admin.flushall();
    const [staging, production] = [new RedisLimiters(redis.url(), 'staging'), new RedisLimiters(redis.url(), 'production')];
    try {
      await Promise.all([staging.connect(), production.connect()]);
      const quota = (limiters: RedisLimiters) => new RateLimiterQuota(limiters.limiter({ keyPrefix: 'duplicate', points: 2, durationSeconds: 60 }));
      const pacer = (limiters: RedisLimiters) =>
        new UpstreamPacer(limiters.limiter({ keyPrefix: 'upstream', points: 1, durationSeconds: 60, sharedOnly: true }));
      const authFailures = (limiters: RedisLimiters) =>
        new RateLimiterAuthFailures(limiters.limiter({ keyPrefix: 'auth-failures', points: 1, durationSeconds: 60 }), 60);

      await quota(staging).consume('workspace-1', 2);
      await expect(quota(staging).consume('workspace-1')).rejects.toMatchObject({ code: 'RATE_LIMITED' });
      expect((await quota(production).consume('workspace-1')).remaining).toBe(1);

      expect(await pacer(staging).take()).toBe(0);
      expect(await pacer(staging).take()).toBeGreaterThan(0);
      expect(await pacer(production).take()).toBe(0);
      await pacer(staging).pause(30_000);
      expect(await pacer(staging).remainingMs()).toBeGreaterThan(0);
      expect(await pacer(production).remainingMs()).toBe(0);

      await authFailures(staging).recordFailure('192.0.2.1');
      await expect(authFailures(staging).check('192.0.2.1')).rejects.toMatchObject({ code: 'RATE_LIMITED' });
      await expect(authFailures(production).check('192.0.2.1')).resolves.toBeUndefined();

      expect(await staging.check()).toEqual({ status: 'up', backend: 'redis' });
      const keys = await keysOf(admin);
      expect(keys).toContain('staging:readiness-probe:probe');
      expect(keys.filter((key) => !key.startsWith('staging:') && !key.startsWith('production:'))).toEqual([]);
    } finally {
      await staging.close();
      await production.close();
    }
  });
});

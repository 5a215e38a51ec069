import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { PostgresStore } from '../../src/adapters/postgres/store.js';
import { memoryLimiters, postgresLimiters, type LimiterBackend } from '../../src/adapters/limiter-backends.js';
import type { DatabaseTimeRateLimiterPostgres } from '../../src/adapters/postgres/database-time-limiter.js';
import { RateLimiterQuota } from '../../src/adapters/rate-limiter-quota.js';
import { RedisLimiters } from '../../src/adapters/redis/limiters.js';
import { GatewayError } from '../../src/domain/errors.js';
import { createTestSchema, openPostgresStore, TEST_DATABASE_URL } from '../support/postgres.js';
import { waitFor } from '../support/gateway.js';

const TEST_REDIS_URL = process.env.TEST_REDIS_URL;
const cleanups: (() => Promise<void>)[] = [];

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

interface Backend {
  name: string;
  missing: boolean;
  create(): Promise<LimiterBackend>;
}

const backends: Backend[] = [
  { name: 'memory', missing: false, create: async () => memoryLimiters() },
  {
    name: 'redis',
    missing: !TEST_REDIS_URL,
    async create() {
      if (!TEST_REDIS_URL) throw new Error('TEST_REDIS_URL is not set');
      const backend = new RedisLimiters(TEST_REDIS_URL);
      cleanups.push(() => backend.close());
      await waitFor(async () => (await backend.check()).status === 'up');
      return backend;
    },
  },
  {
    name: 'postgres',
    missing: !TEST_DATABASE_URL,
    async create() {
      const schema = await createTestSchema();
      const store: PostgresStore = openPostgresStore(schema.url, schema.schema);
      await store.migrate();
      cleanups.push(async () => {
        await store.close();
        await schema.drop();
      });
      return postgresLimiters(store.pool);
    },
  },
];

/** One suite for every limiter backend: exact under concurrency, per key, and refusals the service understands. */
describe.each(backends.filter((backend) => !backend.missing || process.env.CI))('quota on $name limiters', (backend) => {
  let limiters: LimiterBackend;
  let quota: RateLimiterQuota;

  beforeAll(async () => {
    limiters = await backend.create();
    quota = new RateLimiterQuota(limiters.limiter({ keyPrefix: 'duplicate', points: 100, durationSeconds: 60 }));
  });

  it('grants exactly the quota to concurrent callers and refuses the rest with the state to report', async () => {
    expect((await limiters.check()).status).toBe('up');
    const key = randomUUID();
    const results = await Promise.allSettled(Array.from({ length: 150 }, () => quota.consume(key)));
    const granted = results.filter((result) => result.status === 'fulfilled');
    const refused = results.filter((result) => result.status === 'rejected');
    expect(granted).toHaveLength(100);
    expect(granted.map((result) => result.value.remaining).sort((a, b) => a - b)).toEqual([...Array(100).keys()]);
    expect(refused).toHaveLength(50);
    for (const { reason } of refused) {
      expect(reason).toBeInstanceOf(GatewayError);
      expect(reason).toMatchObject({ code: 'RATE_LIMITED', rateLimit: { limit: 100, remaining: 0 } });
      expect(reason.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    }
  });

  it('tells a refused caller to wait until the window ends, in whole seconds rounded up', async () => {
    const key = randomUUID();
    await quota.consume(key, 100);
    const spentAt = Date.now();
    // Past the millisecond the window opened in, so that what is left of it is not whole seconds.
    await waitFor(async () => Date.now() > spentAt);
    const refusal = await quota.consume(key).then(
      () => undefined,
      (error: unknown) => error,
    );
    const now = Date.now();
    expect(refusal).toMatchObject({ code: 'RATE_LIMITED' });
    const { retryAfterSeconds, rateLimit } = refusal as GatewayError;
    expect(retryAfterSeconds! * 1000).toBeGreaterThanOrEqual(rateLimit!.resetAt.getTime() - now);
  });

  it('keeps keys apart and peeks without taking a point', async () => {
    const [a, b] = [randomUUID(), randomUUID()];
    await quota.consume(a, 3);
    expect((await quota.peek(a)).remaining).toBe(97);
    expect((await quota.peek(a)).remaining).toBe(97);
    expect((await quota.peek(b)).remaining).toBe(100);
    expect((await quota.consume(b)).remaining).toBe(99);
  });

  it('gives back a refunded point', async () => {
    const key = randomUUID();
    const taken = await quota.consume(key, 100);
    expect(taken.remaining).toBe(0);
    expect(await quota.refund(taken)).toBe(true);
    expect((await quota.peek(key)).remaining).toBe(1);
    expect((await quota.consume(key)).remaining).toBe(0);
  });

  it('gives nothing back once the window that took the point is over, so the next one holds exactly the limit', async () => {
    const short = new RateLimiterQuota(limiters.limiter({ keyPrefix: 'short', points: 3, durationSeconds: 1 }));
    const whole = async (key: string) => (await short.peek(key)).remaining === 3;
    // Refunded after its window ended, the key counting nothing since.
    const [idle, reopened] = [randomUUID(), randomUUID()];
    const [idleTaken, reopenedTaken] = [await short.consume(idle), await short.consume(reopened)];
    await waitFor(() => whole(idle));
    await waitFor(() => whole(reopened));
    expect(await short.refund(idleTaken)).toBe(false);
    expect((await short.peek(idle)).remaining).toBe(3);
    const results = await Promise.allSettled(Array.from({ length: 4 }, () => short.consume(idle)));
    expect(results.map((result) => result.status).sort()).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'rejected']);
    // Refunded into a later window the key has opened meanwhile.
    const later = await short.consume(reopened);
    expect(await short.refund(reopenedTaken)).toBe(false);
    expect((await short.peek(reopened)).remaining).toBe(2);
    expect(await short.refund(later)).toBe(true);
    expect((await short.peek(reopened)).remaining).toBe(3);
  });

  it('reports one end for a window, whoever reads it', async () => {
    const key = randomUUID();
    const first = await quota.consume(key);
    const ends = new Set([first.resetAt.getTime()]);
    for (let read = 0; read < 20; read += 1) {
      ends.add((await quota.consume(key)).resetAt.getTime());
      ends.add((await quota.peek(key)).resetAt.getTime());
    }
    expect([...ends]).toEqual([first.resetAt.getTime()]);
  });

  it('reports an end by which the window is over', async () => {
    const short = new RateLimiterQuota(limiters.limiter({ keyPrefix: 'reset', points: 3, durationSeconds: 1 }));
    const key = randomUUID();
    // X-RateLimit-Reset, in whole seconds: a caller waiting until then finds the quota whole.
    const reset = Math.ceil((await short.consume(key)).resetAt.getTime() / 1000) * 1000;
    await waitFor(async () => Date.now() >= reset);
    expect((await short.peek(key)).remaining).toBe(3);
  });

  it('keeps limiters with different prefixes apart on one backend', async () => {
    const pacing = new RateLimiterQuota(limiters.limiter({ keyPrefix: 'upstream', points: 2, durationSeconds: 60 }));
    const key = randomUUID();
    await quota.consume(key, 5);
    expect((await pacing.peek(key)).remaining).toBe(2);
    await pacing.consume(key, 2);
    await expect(pacing.consume(key)).rejects.toMatchObject({ code: 'RATE_LIMITED' });
    expect((await quota.peek(key)).remaining).toBe(95);
  });
});

/**
 * Instances sharing the quota's store, one of them with its clock 90 s ahead (each limiter stands for an instance).
 * Memory keeps a quota per process: nothing is shared for a clock to disagree about.
 */
describe.each(backends.filter((backend) => backend.name !== 'memory' && (!backend.missing || process.env.CI)))(
  'quota on $name limiters shared by instances whose clocks differ',
  (backend) => {
    it('grants no second quota within the window on the instance whose clock runs ahead, and tells it how long is left', async () => {
      const limiters = await backend.create();
      const settings = { keyPrefix: 'skewed', points: 100, durationSeconds: 60 };
      const [accurate, ahead] = [new RateLimiterQuota(limiters.limiter(settings)), new RateLimiterQuota(limiters.limiter(settings))];
      const key = randomUUID();
      await accurate.consume(key, 100);

      const now = Date.now.bind(Date);
      const skew = vi.spyOn(Date, 'now').mockImplementation(() => now() + 90_000);
      try {
        const refusal = await ahead.consume(key).then(
          () => undefined,
          (error: unknown) => error,
        );
        expect(refusal).toMatchObject({ code: 'RATE_LIMITED' });
        expect((refusal as GatewayError).retryAfterSeconds).toBeLessThanOrEqual(60);
      } finally {
        skew.mockRestore();
      }
    });
  },
);

describe.skipIf(!TEST_DATABASE_URL && !process.env.CI)('quota counters kept in PostgreSQL', () => {
  it('prunes no counter still counting when the instance pruning runs hours ahead', async () => {
    const postgres = backends.find((backend) => backend.name === 'postgres')!;
    const limiter = (await postgres.create()).limiter({ keyPrefix: 'pruned', points: 100, durationSeconds: 60 }) as DatabaseTimeRateLimiterPostgres;
    const quota = new RateLimiterQuota(limiter);
    const key = randomUUID();
    await quota.consume(key, 40);
    const now = Date.now.bind(Date);
    const skew = vi.spyOn(Date, 'now').mockImplementation(() => now() + 2 * 3_600_000);
    try {
      await limiter.clearExpired(Date.now() - 3_600_000);
    } finally {
      skew.mockRestore();
    }
    expect((await quota.peek(key)).remaining).toBe(60);
  });
});


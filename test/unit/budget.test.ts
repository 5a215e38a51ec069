import { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis } from 'rate-limiter-flexible';
import { describe, expect, it } from 'vitest';
import { memoryLimiter } from '../../src/adapters/limiter-backends.js';
import { RateLimiterBudget } from '../../src/adapters/rate-limiter-budget.js';

describe('a budget', () => {
  it('grants its points, then refuses until the window ends', async () => {
    const budget = new RateLimiterBudget(new RateLimiterMemory({ points: 2, duration: 60 }));
    expect([await budget.take('ws'), await budget.take('ws'), await budget.take('ws')]).toEqual([
      { granted: true },
      { granted: true },
      { granted: false, retryAfterMs: expect.any(Number) },
    ]);
    expect(await budget.take('other')).toEqual({ granted: true });
  });

  describe('of several points a take, as the read budget counts them', () => {
    const readBudget = () => new RateLimiterBudget(memoryLimiter({ keyPrefix: 'reads', points: 100, durationSeconds: 60 }));

    it('spends what a take asks for, and refuses a take larger than what is left without spending it', async () => {
      const budget = readBudget();
      expect(await budget.take('ws', 60)).toEqual({ granted: true });
      const refused = await budget.take('ws', 41);
      expect(refused).toEqual({ granted: false, retryAfterMs: expect.any(Number) });
      expect((refused as { retryAfterMs: number }).retryAfterMs).toBeGreaterThan(59_000);
      expect((refused as { retryAfterMs: number }).retryAfterMs).toBeLessThanOrEqual(60_000);
      expect(await budget.take('ws', 40)).toEqual({ granted: true });
      expect(await budget.take('ws', 1)).toEqual({ granted: false, retryAfterMs: expect.any(Number) });
      expect(await budget.take('other', 100)).toEqual({ granted: true });
    });

    it('grants a take that fits beside one refused at the same moment', async () => {
      const budget = readBudget();
      expect(await budget.take('ws', 10)).toEqual({ granted: true });
      const [large, small] = await Promise.all([budget.take('ws', 95), budget.take('ws', 5)]);
      expect([large.granted, small.granted]).toEqual([false, true]);
      expect(await budget.take('ws', 85)).toEqual({ granted: true });
    });

    it('gives back the takes refused in a race past the check: what they did not spend stays for later ones', async () => {
      const budget = readBudget();
      // All three pass the check before any is counted; the library then refuses the second, and the third while the
      // second is counted.
      const taken = await Promise.all([budget.take('ws', 60), budget.take('ws', 60), budget.take('ws', 30)]);
      expect(taken.map((take) => take.granted)).toEqual([true, false, false]);
      expect(await budget.take('ws', 40)).toEqual({ granted: true });
      expect(await budget.take('ws', 1)).toEqual({ granted: false, retryAfterMs: expect.any(Number) });
    });
  });

  it('grants every event while its store fails: a refusal is still worth recording', async () => {
    // Closed before it ever connects: every command fails at once with an Error, and none connects it (a lazy
    // client's first command would otherwise open a connection to whatever Redis listens on the default port).
    const client = new Redis({ lazyConnect: true, enableOfflineQueue: false });
    client.disconnect();
    try {
      const limiter = new RateLimiterRedis({ storeClient: client, points: 1, duration: 60 });
      await expect(limiter.consume('ws')).rejects.toBeInstanceOf(Error);
      const budget = new RateLimiterBudget(limiter);
      expect([await budget.take('ws'), await budget.take('ws')]).toEqual([{ granted: true }, { granted: true }]);
      expect(client.status).toBe('end');
    } finally {
      client.disconnect();
    }
  });
});

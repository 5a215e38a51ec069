import { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis } from 'rate-limiter-flexible';
import { describe, expect, it } from 'vitest';
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

  it('spends as many points as a take asks for, and refuses a take larger than what is left without spending it', async () => {
    const budget = new RateLimiterBudget(new RateLimiterMemory({ points: 100, duration: 60 }));
    expect(await budget.take('ws', 60)).toEqual({ granted: true });
    expect(await budget.take('ws', 41)).toEqual({ granted: false, retryAfterMs: expect.any(Number) });
    expect(await budget.take('ws', 40)).toEqual({ granted: true });
    expect(await budget.take('ws', 1)).toEqual({ granted: false, retryAfterMs: expect.any(Number) });
    expect(await budget.take('other', 100)).toEqual({ granted: true });
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

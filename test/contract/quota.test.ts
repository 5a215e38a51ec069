import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresStore } from '../../src/adapters/postgres/store.js';
import { memoryQuota, postgresQuota, type QuotaBackend, type QuotaSettings } from '../../src/adapters/quota-backends.js';
import { RedisQuota } from '../../src/adapters/redis/quota.js';
import { GatewayError } from '../../src/domain/errors.js';
import { createTestSchema, openPostgresStore, TEST_DATABASE_URL } from '../support/postgres.js';
import { waitFor } from '../support/gateway.js';

const TEST_REDIS_URL = process.env.TEST_REDIS_URL;
const settings: QuotaSettings = { points: 100, durationSeconds: 60 };
const cleanups: (() => Promise<void>)[] = [];

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

interface Backend {
  name: string;
  missing: boolean;
  create(): Promise<QuotaBackend>;
}

const backends: Backend[] = [
  { name: 'memory', missing: false, create: async () => memoryQuota(settings) },
  {
    name: 'redis',
    missing: !TEST_REDIS_URL,
    async create() {
      if (!TEST_REDIS_URL) throw new Error('TEST_REDIS_URL is not set');
      const backend = new RedisQuota(TEST_REDIS_URL, settings);
      cleanups.push(() => backend.close());
      await waitFor(async () => (await backend.check()).status === 'ok');
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
      return postgresQuota(store.pool, settings);
    },
  },
];

/** One suite for every quota backend: exact under concurrency, per key, and refusals the service understands. */
describe.each(backends.filter((backend) => !backend.missing || process.env.CI))('quota: $name', (backend) => {
  let quota: QuotaBackend;

  beforeAll(async () => {
    quota = await backend.create();
  });

  it('grants exactly the quota to concurrent callers and refuses the rest with the state to report', async () => {
    expect((await quota.check()).status).toBe('ok');
    const key = randomUUID();
    const results = await Promise.allSettled(Array.from({ length: 150 }, () => quota.quota.consume(key)));
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

  it('keeps keys apart and peeks without taking a point', async () => {
    const [a, b] = [randomUUID(), randomUUID()];
    await quota.quota.consume(a, 3);
    expect((await quota.quota.peek(a)).remaining).toBe(97);
    expect((await quota.quota.peek(a)).remaining).toBe(97);
    expect((await quota.quota.peek(b)).remaining).toBe(100);
    expect((await quota.quota.consume(b)).remaining).toBe(99);
  });
});

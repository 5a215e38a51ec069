import { once } from 'node:events';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, graphql, http, json, startGateway, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { PrivateRedis, skipWithoutRedisServer } from '../support/redis.js';
import { readiness } from './support.js';

// Stopping the shared Redis would disturb other suites, so this one runs a Redis of its own.
describe.skipIf(skipWithoutRedisServer)('Redis going away under a running gateway', () => {
  let redis: PrivateRedis;
  let client: Redis;
  let gateway: TestGateway;
  let tenant: TestWorkspace;
  const logs: Record<string, any>[] = [];

  const startRedis = async () => {
    await redis.start();
    await waitFor(async () => (await client.ping().catch(() => null)) === 'PONG');
  };
  const duplicate = (name: string, as = tenant) =>
    http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(as.key) },
      body: JSON.stringify({ campaign_id: as.campaign.id, name }),
    });
  const counted = async (as = tenant) => Number(await client.get(`duplicate:${as.workspace.id}`));
  const warnings = (from: number) => logs.slice(from).filter((line) => line.level === 40 && /Redis is unreachable/.test(line.msg));
  const recoveries = (from: number) => logs.slice(from).filter((line) => line.level === 30 && /Redis is reachable again/.test(line.msg));

  beforeAll(async () => {
    redis = await PrivateRedis.start();
    client = new Redis(redis.port, '127.0.0.1', { enableOfflineQueue: false, retryStrategy: () => 50 });
    client.on('error', () => undefined);
    await waitFor(async () => (await client.ping().catch(() => null)) === 'PONG');
    gateway = await startGateway(
      { REDIS_URL: redis.url(), DUPLICATE_RATE_LIMIT: '3' },
      { logger: { level: 'info', stream: { write: (line: string) => void logs.push(JSON.parse(line)) } } },
    );
    tenant = await gateway.workspace();
    await waitFor(async () => (await readiness(gateway)).status === 'ready');
  }, 60_000);

  afterAll(async () => {
    await gateway?.close();
    client?.disconnect();
    await redis?.stop();
  });

  it('keeps serving on an in-process limiter, says so in the log and in /readyz, and returns to Redis by itself', async () => {
    expect((await duplicate('on redis')).status).toBe(202);
    expect(await counted()).toBe(1);

    await redis.stop();
    const degraded = await waitFor(async () => {
      const report = await readiness(gateway);
      return report.checks?.quota.status === 'degraded' ? report : null;
    });
    expect(degraded).toMatchObject({ code: 200, status: 'degraded', checks: { store: { status: 'up' }, quota: { backend: 'redis' } } });
    expect(degraded.checks!.quota.message).toMatch(/in-process limiter/);
    await waitFor(async () => logs.some((line) => line.level === 40 && /Redis is unreachable/.test(line.msg)));

    // The insurance limiter counts from scratch, per instance, and still refuses past the quota.
    const during = [];
    for (let i = 0; i < 4; i += 1) during.push((await duplicate(`during ${i}`)).status);
    expect(during).toEqual([202, 202, 202, 429]);

    await startRedis();
    await waitFor(async () => (await readiness(gateway)).status === 'ready');
    await waitFor(async () => logs.some((line) => /Redis is reachable again/.test(line.msg)));
    // Back on Redis, which restarted empty: the point is counted there.
    const after = await duplicate('back on redis');
    expect(after.status).toBe(202);
    expect(after.headers['x-ratelimit-remaining']).toBe('2');
    expect(await counted()).toBe(1);
  }, 60_000);

  it('treats a Redis that hangs like one that is gone: one wait, then the in-process limiter, degraded not down', async () => {
    const hung = await gateway.workspace();
    expect((await duplicate('before the hang', hung)).status).toBe(202);
    expect(await counted(hung)).toBe(1);
    const from = logs.length;

    // A stopped process still accepts connections (the kernel queues them) but never answers.
    redis.signal('SIGSTOP');
    try {
      // Every limiter call during the hang is answered: the failed-authentication limiter, the quota on both
      // transports, and the quota counted from scratch in process, refusing past it.
      expect((await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', { headers: { ...json, ...bearer('not-a-key') }, body: '{}' })).status).toBe(401);
      expect((await duplicate('during the hang', hung)).status).toBe(202);
      const aliases = await graphql(
        gateway.baseUrl,
        hung.key,
        `mutation Two($input: DuplicateCampaignInput!) {
          first: duplicateCampaign(input: $input) { job { status } }
          second: duplicateCampaign(input: $input) { job { status } }
        }`,
        { input: { campaignId: hung.campaign.id, name: 'during the hang' } },
      );
      expect(aliases.body).toEqual({ data: { first: { job: { status: 'PENDING' } }, second: { job: { status: 'PENDING' } } } });
      expect((await duplicate('past the quota', hung)).status).toBe(429);

      const report = await readiness(gateway);
      expect(report).toMatchObject({ code: 200, status: 'degraded', checks: { store: { status: 'up' }, quota: { status: 'degraded', backend: 'redis' } } });
      expect(report.checks!.quota.message).toMatch(/in-process limiter/);
      // The switch is logged once, however many calls and reconnection attempts met the hang.
      expect(warnings(from)).toHaveLength(1);
      expect(recoveries(from)).toHaveLength(0);
    } finally {
      redis.signal('SIGCONT');
    }

    await waitFor(async () => (await readiness(gateway)).status === 'ready');
    await waitFor(async () => recoveries(from).length > 0);
    expect(recoveries(from)).toHaveLength(1);
    expect(warnings(from)).toHaveLength(1);
    // Back on Redis: the in-process count (spent) is left behind, and the point is counted in Redis.
    const after = await duplicate('after the hang', hung);
    expect(after.status).toBe(202);
    expect(Number(after.headers['x-ratelimit-remaining'])).toBe(3 - (await counted(hung)));
  }, 60_000);

  it('keeps reconnecting through an outage of many reconnection attempts, and returns to Redis by itself', async () => {
    const long = await gateway.workspace();
    expect((await duplicate('before the outage', long)).status).toBe(202);
    // This suite's own client would reconnect to the stand-in below as well, and be counted with the gateway.
    client.disconnect();
    await redis.stop();

    // On Redis's port, a stand-in that drops every connection: each one is a reconnection attempt of the
    // gateway, which thus meets an outage of as many attempts as the test chooses.
    let attempts = 0;
    const standIn = createServer((socket) => {
      attempts += 1;
      socket.destroy();
    });
    standIn.listen(redis.port, '127.0.0.1');
    await once(standIn, 'listening');
    try {
      await waitFor(async () => attempts >= 6);
      expect(await readiness(gateway)).toMatchObject({ status: 'degraded', checks: { quota: { status: 'degraded', backend: 'redis' } } });
    } finally {
      standIn.close();
      await once(standIn, 'close');
    }

    await redis.start();
    await client.connect();
    await waitFor(async () => {
      const report = await readiness(gateway);
      return report.status === 'ready' && report.checks?.quota.status === 'up' && report.checks.quota.backend === 'redis';
    });
    // Redis restarted empty: the point is counted there, not in process.
    const after = await duplicate('after the outage', long);
    expect(after.status).toBe(202);
    expect(after.headers['x-ratelimit-remaining']).toBe('2');
    expect(await counted(long)).toBe(1);
  }, 60_000);
});

import { once } from 'node:events';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, graphql, http, json, metricSample, startGateway, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { PrivateRedis, skipWithoutRedisServer } from '../support/redis.js';
import { readiness } from './support.js';

/** Data Redis holds beyond maxmemory, which deleting brings it back under. */
const BALLAST_BYTES = 256 * 1024;
/**
 * Written in pieces this small: Redis keeps a big command's buffer for a while after running it, and counts
 * it as used memory until it lets it go.
 */
const PIECE_BYTES = 4 * 1024;
const PIECES = Array.from({ length: BALLAST_BYTES / PIECE_BYTES }, (_, i) => `ballast:${i}`);

// Stopping the shared Redis, or changing its maxmemory, would disturb other suites, so this one runs a Redis of its own.
describe.skipIf(skipWithoutRedisServer)('Redis going away, or refusing writes, under a running gateway', () => {
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

  /** After a hang: one recovery logged for the one warning, and the in-process count (spent) left behind for Redis's. */
  const backOnRedisOnce = async (from: number, as: TestWorkspace) => {
    await waitFor(async () => (await readiness(gateway)).status === 'ready');
    await waitFor(async () => recoveries(from).length > 0);
    expect(recoveries(from)).toHaveLength(1);
    expect(warnings(from)).toHaveLength(1);
    const after = await duplicate('back on redis', as);
    expect(after.status).toBe(202);
    expect(Number(after.headers['x-ratelimit-remaining'])).toBe(3 - (await counted(as)));
  };

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
      // The switch is logged once, however many calls and reconnection attempts met the hang, with its cause
      // as a dependency's outage is: no stack, no client internals.
      expect(warnings(from)).toEqual([expect.objectContaining({ cause: { type: expect.any(String), message: expect.any(String) } })]);
      expect(warnings(from)[0]).not.toHaveProperty('err');
      expect(recoveries(from)).toHaveLength(0);
    } finally {
      redis.signal('SIGCONT');
    }

    await backOnRedisOnce(from, hung);
  }, 60_000);

  it('waits once for a Redis that holds writes (CLIENT PAUSE WRITE, as a failover does), not at each reconnection its ready check passes', async () => {
    const paused = await gateway.workspace();
    expect((await duplicate('before the pause', paused)).status).toBe(202);
    const from = logs.length;
    const connections = async () => Number(/total_connections_received:(\d+)/.exec(await client.info('stats'))![1]);
    const before = await connections();

    // INFO, the ready check, is no write: it is answered at once, and each reconnection of the gateway passes it.
    await client.call('CLIENT', 'PAUSE', '60000', 'WRITE');
    try {
      const statuses: number[] = [];
      // Requests until the gateway has reconnected twice during the pause: each is answered, in process.
      await waitFor(async () => {
        statuses.push((await duplicate('during the pause', paused)).status);
        return (await connections()) >= before + 2;
      }, 30_000);
      expect(statuses.every((status) => status === 202 || status === 429)).toBe(true);
      // Once for the pause, however many reconnections passed the ready check meanwhile.
      expect(warnings(from)).toHaveLength(1);
      expect(recoveries(from)).toHaveLength(0);
      expect((await readiness(gateway)).checks!.quota).toMatchObject({ status: 'degraded', backend: 'redis' });
    } finally {
      await client.call('CLIENT', 'UNPAUSE');
    }

    await backOnRedisOnce(from, paused);
  }, 60_000);

  it('starts each outage with fresh in-process counts: a quota spent in one outage is not spent in the next', async () => {
    const twice = await gateway.workspace();
    const outage = async () => {
      await redis.stop();
      await waitFor(async () => (await readiness(gateway)).checks?.quota.status === 'degraded');
    };
    await outage();
    const during = [];
    for (let i = 0; i < 4; i += 1) during.push((await duplicate(`first outage ${i}`, twice)).status);
    expect(during).toEqual([202, 202, 202, 429]);

    await startRedis();
    await waitFor(async () => (await readiness(gateway)).status === 'ready');
    await outage();
    try {
      const next = await duplicate('second outage', twice);
      expect(next.status).toBe(202);
      expect(next.headers['x-ratelimit-remaining']).toBe('2');
    } finally {
      await startRedis();
      await waitFor(async () => (await readiness(gateway)).status === 'ready');
    }
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

  it('says the quota is kept in process while Redis refuses writes, in the log, /readyz and the metric, and shares it again once there is room', async () => {
    const full = await gateway.workspace();
    const quotaUp = async () => metricSample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_dependency_up', { dependency: 'quota' });
    const from = logs.length;
    const limits = () => logs.slice(from).filter((line) => line.component === 'limits');
    expect((await duplicate('before', full)).status).toBe(202);
    expect(await counted(full)).toBe(1);
    expect(await quotaUp()).toBe(1);

    // Full: maxmemory below what Redis holds, with nothing it may evict.
    await client.config('SET', 'maxmemory-policy', 'noeviction');
    for (const piece of PIECES) await client.set(piece, 'x'.repeat(PIECE_BYTES));
    const used = Number(/used_memory:(\d+)/.exec(await client.info('memory'))![1]);
    await client.config('SET', 'maxmemory', String(used - BALLAST_BYTES / 2));
    try {
      await expect(client.set('another', 'x')).rejects.toThrow(/^OOM/);

      // Requests still get an answer, from each instance's own count, and the first of them is enough for the
      // log to say so, with no readiness probe needed.
      expect((await duplicate('while full', full)).status).toBe(202);
      const warning = await waitFor(async () => limits().find((line) => line.level === 40));
      expect(warning.msg).toMatch(/^Redis is out of memory and refuses writes \(OOM\); each instance enforces its callers' limits on its own with an in-process limiter until/);
      // Redis's answer, without a stack or the command and its keys (a workspace's id) that ioredis attaches to it.
      expect(warning.cause).toEqual({ type: expect.any(String), message: expect.stringMatching(/^OOM command not allowed/) });
      expect(warning).not.toHaveProperty('err');

      const report = await readiness(gateway);
      expect(report).toMatchObject({ code: 200, status: 'degraded', checks: { store: { status: 'up' }, quota: { status: 'degraded', backend: 'redis' } } });
      expect(report.checks!.quota.message).toBe(warning.msg);
      expect(report.checks!.quota.message).not.toMatch(new RegExp(`127\\.0\\.0\\.1|${redis.port}`));
      expect(await quotaUp()).toBe(0);
      // Counted in process from scratch, and refused past the quota there.
      expect([(await duplicate('while full 2', full)).status, (await duplicate('while full 3', full)).status]).toEqual([202, 202]);
      expect((await duplicate('past the quota', full)).status).toBe(429);
      expect(await counted(full)).toBe(1);
      // Once per outage, however many calls and probes met it.
      expect(limits().filter((line) => line.level >= 40)).toEqual([warning]);

      await client.del(PIECES);
      await waitFor(async () => (await readiness(gateway)).status === 'ready');
      expect((await readiness(gateway)).checks!.quota).toEqual({ status: 'up', backend: 'redis' });
      expect(await quotaUp()).toBe(1);
      expect(limits().slice(-1)).toEqual([
        expect.objectContaining({ level: 30, msg: "Redis runs the limiters' commands again; limits are shared through Redis again" }),
      ]);
      // Shared through Redis again: the point is counted there, next to the one from before.
      const after = await duplicate('after', full);
      expect(after.status).toBe(202);
      expect(after.headers['x-ratelimit-remaining']).toBe('1');
      expect(await counted(full)).toBe(2);
      expect(limits().filter((line) => line.level >= 40)).toEqual([warning]);
    } finally {
      await client.config('SET', 'maxmemory', '0');
    }
  }, 60_000);

  it('logs each time Redis starts refusing writes and each time it runs them again, with nothing polling /readyz or /metrics', async () => {
    const replica = await gateway.workspace();
    const from = logs.length;
    const limits = () => logs.slice(from).filter((line) => line.component === 'limits');
    const refusals = () => limits().filter((line) => line.level === 40);
    const returns = () => limits().filter((line) => line.level === 30);
    expect((await duplicate('before', replica)).status).toBe(202);
    expect(await counted(replica)).toBe(1);

    try {
      for (const episode of [1, 2]) {
        // A replica of a master that is not there: it keeps its data and refuses writes with READONLY.
        await client.call('REPLICAOF', '127.0.0.1', '1');
        await expect(client.set('another', 'x')).rejects.toThrow(/^READONLY/);
        expect((await duplicate(`read-only ${episode}`, replica)).status).toBe(202);
        await waitFor(async () => refusals().length === episode);
        expect(await counted(replica)).toBe(episode);

        await client.call('REPLICAOF', 'NO', 'ONE');
        await waitFor(async () => returns().length === episode);
        // Counted in Redis again, next to the points counted there before.
        expect((await duplicate(`writable ${episode}`, replica)).status).toBe(202);
        expect(await counted(replica)).toBe(episode + 1);
      }
      const refused = /^Redis is a read-only replica and refuses writes \(READONLY\); each instance enforces its callers' limits on its own with an in-process limiter until Redis runs them again$/;
      const back = "Redis runs the limiters' commands again; limits are shared through Redis again";
      expect(limits().map((line) => [line.level, line.msg])).toEqual([
        [40, expect.stringMatching(refused)],
        [30, back],
        [40, expect.stringMatching(refused)],
        [30, back],
      ]);
    } finally {
      await client.call('REPLICAOF', 'NO', 'ONE');
    }
  }, 60_000);
});

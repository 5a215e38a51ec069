import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, componentLines, http, json, metricSample, recordingLogger, startGateway, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';
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

// Changing maxmemory on the shared Redis would disturb other suites, so this one runs a Redis of its own.
describe.skipIf(skipWithoutRedisServer)('Redis out of memory under a running gateway', () => {
  let redis: PrivateRedis;
  let client: Redis;
  let gateway: TestGateway;
  let tenant: TestWorkspace;
  let lines: string[];

  const duplicate = (name: string) =>
    http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(tenant.key) },
      body: JSON.stringify({ campaign_id: tenant.campaign.id, name }),
    });
  const counted = async () => Number(await client.get(`duplicate:${tenant.workspace.id}`));
  const quotaUp = async () => metricSample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_dependency_up', { dependency: 'quota' });
  const limits = () => componentLines(lines, 'limits');

  beforeAll(async () => {
    redis = await PrivateRedis.start(['--maxmemory-policy', 'noeviction']);
    client = new Redis(redis.port, '127.0.0.1');
    const recording = recordingLogger();
    lines = recording.lines;
    gateway = await startGateway({ REDIS_URL: redis.url(), DUPLICATE_RATE_LIMIT: '3' }, { logger: recording.logger });
    tenant = await gateway.workspace();
    await waitFor(async () => (await readiness(gateway)).status === 'ready');
  }, 60_000);

  afterAll(async () => {
    await gateway?.close();
    client?.disconnect();
    await redis?.stop();
  });

  it('says the quota is kept in process while Redis refuses writes, in the log, /readyz and the metric, and shares it again once there is room', async () => {
    expect((await duplicate('before')).status).toBe(202);
    expect(await counted()).toBe(1);
    expect(await quotaUp()).toBe(1);

    // Full: maxmemory below what Redis holds, with nothing it may evict.
    for (const piece of PIECES) await client.set(piece, 'x'.repeat(PIECE_BYTES));
    const used = Number(/used_memory:(\d+)/.exec(await client.info('memory'))![1]);
    await client.config('SET', 'maxmemory', String(used - BALLAST_BYTES / 2));
    await expect(client.set('another', 'x')).rejects.toThrow(/^OOM/);

    // Requests still get an answer, from each instance's own count, and the first of them is enough for the
    // log to say so, with no readiness probe needed.
    expect((await duplicate('while full')).status).toBe(202);
    const warning = await waitFor(async () => limits().find((line) => line.level === 40));
    expect(warning.msg).toMatch(/^Redis is out of memory and refuses writes \(OOM\); each instance enforces its limits on its own with an in-process limiter until/);

    const report = await readiness(gateway);
    expect(report).toMatchObject({ code: 200, status: 'degraded', checks: { store: { status: 'up' }, quota: { status: 'degraded', backend: 'redis' } } });
    expect(report.checks!.quota.message).toBe(warning.msg);
    expect(report.checks!.quota.message).not.toMatch(new RegExp(`127\\.0\\.0\\.1|${redis.port}`));
    expect(await quotaUp()).toBe(0);
    // Counted in process from scratch, and refused past the quota there.
    expect([(await duplicate('while full 2')).status, (await duplicate('while full 3')).status]).toEqual([202, 202]);
    expect((await duplicate('past the quota')).status).toBe(429);
    expect(await counted()).toBe(1);
    // Once per outage, however many calls and probes met it.
    expect(limits().filter((line) => line.level >= 40)).toEqual([warning]);

    await client.del(PIECES);
    await waitFor(async () => (await readiness(gateway)).status === 'ready');
    expect((await readiness(gateway)).checks!.quota).toEqual({ status: 'up', backend: 'redis' });
    expect(await quotaUp()).toBe(1);
    expect(limits().slice(-1)).toEqual([expect.objectContaining({ level: 30, msg: "Redis runs the limiters' commands again; limits are shared through Redis again" })]);
    // Shared through Redis again: the point is counted there, next to the one from before.
    const after = await duplicate('after');
    expect(after.status).toBe(202);
    expect(after.headers['x-ratelimit-remaining']).toBe('1');
    expect(await counted()).toBe(2);
    expect(limits().filter((line) => line.level >= 40)).toEqual([warning]);
  });
});

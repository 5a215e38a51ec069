import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, http, json, startGateway, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { freePort } from '../support/process.js';
import { readiness } from './support.js';

const hasRedisServer = (process.env.PATH ?? '').split(':').some((dir) => dir && existsSync(join(dir, 'redis-server')));

// Stopping the shared Redis would disturb other suites, so this one runs a Redis of its own.
describe.skipIf(!hasRedisServer && !process.env.CI)('Redis going away under a running gateway', () => {
  let port: number;
  let redis: ChildProcess | undefined;
  let client: Redis;
  let gateway: TestGateway;
  let tenant: TestWorkspace;
  const logs: Record<string, any>[] = [];

  const startRedis = async () => {
    redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    await waitFor(async () => (await client.ping().catch(() => null)) === 'PONG');
  };
  const stopRedis = async () => {
    const exited = once(redis!, 'exit');
    redis!.kill('SIGKILL');
    await exited;
    redis = undefined;
  };
  const duplicate = (name: string) =>
    http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(tenant.key) },
      body: JSON.stringify({ campaign_id: tenant.campaign.id, name }),
    });
  const counted = async () => Number(await client.get(`duplicate:${tenant.workspace.id}`));

  beforeAll(async () => {
    port = await freePort();
    client = new Redis(port, '127.0.0.1', { lazyConnect: true, enableOfflineQueue: false, retryStrategy: () => 50 });
    client.on('error', () => undefined);
    client.connect().catch(() => undefined);
    await startRedis();
    gateway = await startGateway(
      { REDIS_URL: `redis://127.0.0.1:${port}`, DUPLICATE_RATE_LIMIT: '3' },
      { logger: { level: 'info', stream: { write: (line: string) => void logs.push(JSON.parse(line)) } } },
    );
    tenant = await gateway.workspace();
    await waitFor(async () => (await readiness(gateway)).status === 'ready');
  }, 60_000);

  afterAll(async () => {
    await gateway?.close();
    client?.disconnect();
    if (redis) await stopRedis();
  });

  it('keeps serving on an in-process limiter, says so in the log and in /readyz, and returns to Redis by itself', async () => {
    expect((await duplicate('on redis')).status).toBe(202);
    expect(await counted()).toBe(1);

    await stopRedis();
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
});

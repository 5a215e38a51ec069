import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DuplicationJob } from '../../src/domain/types.js';
import { ManualClock } from '../support/clock.js';
import { startFakeBraze, type FakeBraze } from '../support/fake-braze.js';
import {
  bearer,
  componentLines,
  http,
  json,
  metricSample as sample,
  recordingLogger,
  startGateway,
  waitFor,
  type TestGateway,
  type TestWorkspace,
} from '../support/gateway.js';
import { PrivateRedis, skipWithoutRedisServer } from '../support/redis.js';

const UPSTREAM_KEY = 'Braze-Upstream-Key-3B9D04E1C7';
const DUPLICATE = 'POST /campaigns/duplicate';
const HELD = 'the upstream pacing store is unavailable; upstream calls are held until it is back';
const RESUMED = 'the upstream pacing store is back; upstream calls resume';
const PACING_UNAVAILABLE = 'The pacing store is unavailable: no duplication is sent upstream until it is back';
const WAITS = 'job waits for the upstream pacing store';

interface Instance {
  gateway: TestGateway;
  ws: TestWorkspace;
  lines: string[];
}

// Stopping the shared Redis would disturb other suites: this one runs a Redis of its own.
describe.skipIf(skipWithoutRedisServer)('upstream pacing while its shared store, Redis, is down', () => {
  let redis: PrivateRedis;
  let fake: FakeBraze;
  // Shared by both instances: a deferred job is due again as soon as the test moves it on.
  const clock = new ManualClock();
  const instances: Instance[] = [];

  beforeAll(async () => {
    redis = await PrivateRedis.start();
    fake = await startFakeBraze(UPSTREAM_KEY);
    for (let index = 0; index < 2; index++) {
      const { logger, lines } = recordingLogger('debug');
      const gateway = await startGateway(
        {
          REDIS_URL: redis.url(),
          UPSTREAM_URL: fake.url,
          UPSTREAM_API_KEY: UPSTREAM_KEY,
          UPSTREAM_TIMEOUT_MS: '300',
          UPSTREAM_RATE_LIMIT: '5',
          UPSTREAM_RATE_WINDOW_SECONDS: '5',
          // Fewer than the rounds the outage lasts below: a wait that counted as an attempt would fail the jobs.
          JOB_MAX_ATTEMPTS: '2',
        },
        { clock, logger },
      );
      instances.push({ gateway, ws: await gateway.workspace(), lines });
    }
  }, 60_000);

  afterAll(async () => {
    for (const { gateway } of instances) await gateway.close();
    await fake?.close();
    await redis?.stop();
  });

  const readiness = async ({ gateway }: Instance) => {
    const response = await http(gateway.baseUrl, 'GET', '/readyz');
    return { code: response.status, ...response.body };
  };
  const enqueue = async ({ gateway, ws }: Instance, name: string): Promise<string> => {
    const response = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(ws.key) },
      body: JSON.stringify({ campaign_id: 'cmp-0001', name }),
    });
    expect(response.status).toBe(202);
    return response.body.job_id;
  };
  const getJob = async ({ gateway, ws }: Instance, id: string) => (await gateway.app.store.getJob(ws.workspace.id, id)) as DuplicationJob;
  const finished = (job: DuplicationJob) => job.status === 'SUCCEEDED' || job.status === 'FAILED';
  const upstreamLines = ({ lines }: Instance) => componentLines(lines, 'upstream').filter((line) => line.msg === HELD || line.msg === RESUMED);
  const waitLines = ({ lines }: Instance) => componentLines(lines, 'worker').filter((line) => line.msg === WAITS);
  /** Moves the shared clock on and wakes the workers, which try the jobs due by then. */
  const waitOut = (ms: number) => {
    clock.advance(ms);
    for (const { gateway } of instances) gateway.app.worker.notify();
  };

  it('sends nothing upstream while Redis is down, keeps the jobs waiting without spending attempts, and runs them once Redis is back', async () => {
    // Redis up: the jobs run.
    const before = await Promise.all(instances.map((instance, index) => enqueue(instance, `before ${index}`)));
    for (const [index, id] of before.entries()) await waitFor(async () => (await getJob(instances[index], id)).status === 'SUCCEEDED');
    const sentBefore = fake.requestsTo(DUPLICATE).length;
    expect(sentBefore).toBe(2);

    await redis.stop();
    for (const instance of instances) await waitFor(async () => (await readiness(instance)).checks?.quota.status === 'degraded');
    const during = await Promise.all(instances.map((instance, index) => enqueue(instance, `during ${index}`)));

    // More rounds than JOB_MAX_ATTEMPTS: each time the job is due, it is tried, and waits again.
    for (let round = 0; round < 4; round++) {
      if (round > 0) waitOut(5000);
      const jobs = await Promise.all(
        during.map((id, index) =>
          waitFor(async () => {
            const job = await getJob(instances[index], id);
            return (finished(job) || (job.status === 'PENDING' && job.runAt > clock.now())) && job;
          }),
        ),
      );
      expect(fake.requestsTo(DUPLICATE)).toHaveLength(sentBefore);
      for (const job of jobs) expect(job).toMatchObject({ status: 'PENDING', attempts: 0, error: null });
      // A bounded wait, not a spin: a few seconds, which the poll tells the caller.
      const waitMs = Math.max(...jobs.map((job) => job.runAt.getTime() - clock.now().getTime()));
      expect(waitMs).toBe(5000);
      const poll = await http(instances[0].gateway.baseUrl, 'GET', `/duplication_jobs/${during[0]}`, { headers: bearer(instances[0].ws.key) });
      expect(poll.headers['retry-after']).toBe('5');
    }

    for (const instance of instances) {
      // Still ready (callers are accepted), the upstream degraded with why.
      expect(await readiness(instance)).toMatchObject({
        code: 200,
        status: 'degraded',
        checks: { upstream: { status: 'degraded', backend: 'braze', message: PACING_UNAVAILABLE } },
      });
      // Said once, however many times the jobs met it; each time a job is sent back to wait is a debug line.
      expect(upstreamLines(instance)).toEqual([expect.objectContaining({ level: 40, msg: HELD, cause: expect.objectContaining({ message: expect.any(String) }) })]);
      expect(waitLines(instance).map((line) => line.level)).toEqual([20, 20, 20, 20]);
      const metrics = (await http(instance.gateway.baseUrl, 'GET', '/metrics')).text;
      expect(sample(metrics, 'gateway_duplication_job_deferrals_total', { reason: 'pacing_store' })).toBe(4);
      expect(sample(metrics, 'gateway_duplication_job_deferrals_total', { reason: 'upstream_slot' })).toBe(0);
      // The pause cannot be read: left out rather than reported as none.
      expect(sample(metrics, 'gateway_upstream_paused_seconds')).toBeUndefined();
    }

    await redis.start();
    for (const instance of instances) await waitFor(async () => (await readiness(instance)).status === 'ready');
    waitOut(5000);
    for (const [index, id] of during.entries()) {
      const job = await waitFor(async () => {
        const current = await getJob(instances[index], id);
        return finished(current) && current;
      });
      expect(job).toMatchObject({ status: 'SUCCEEDED', attempts: 1 });
    }
    expect(fake.requestsTo(DUPLICATE)).toHaveLength(sentBefore + 2);
    for (const instance of instances) {
      expect((await readiness(instance)).checks.upstream).toEqual({ status: 'up', backend: 'braze' });
      expect(upstreamLines(instance).map((line) => [line.level, line.msg])).toEqual([
        [40, HELD],
        [30, RESUMED],
      ]);
    }
  }, 90_000);

  it('says upstream calls are held while Redis is a read-only replica, which answers the pause it is read for', async () => {
    const client = new Redis(redis.port, '127.0.0.1', { enableOfflineQueue: false, retryStrategy: () => 50 });
    client.on('error', () => undefined);
    await waitFor(async () => (await client.ping().catch(() => null)) === 'PONG');
    const sentBefore = fake.requestsTo(DUPLICATE).length;
    try {
      // A replica of a master that is not there: it keeps its data and refuses writes with READONLY.
      await client.call('REPLICAOF', '127.0.0.1', '1');
      await expect(client.set('another', 'x')).rejects.toThrow(/^READONLY/);
      for (const instance of instances) {
        expect(await readiness(instance)).toMatchObject({
          code: 200,
          status: 'degraded',
          checks: {
            quota: { status: 'degraded', backend: 'redis', message: expect.stringMatching(/\(READONLY\)/) },
            upstream: { status: 'degraded', backend: 'braze', message: PACING_UNAVAILABLE },
          },
        });
      }
      // What /readyz says is what happens: the job is held, unattempted.
      const held = await enqueue(instances[0], 'while read-only');
      const job = await waitFor(async () => {
        const current = await getJob(instances[0], held);
        return current.status === 'PENDING' && current.runAt > clock.now() && current;
      });
      expect(job).toMatchObject({ attempts: 0, error: null });
      expect(fake.requestsTo(DUPLICATE)).toHaveLength(sentBefore);

      await client.call('REPLICAOF', 'NO', 'ONE');
      for (const instance of instances) {
        await waitFor(async () => (await readiness(instance)).status === 'ready');
        expect((await readiness(instance)).checks.upstream).toEqual({ status: 'up', backend: 'braze' });
      }
      waitOut(5000);
      await waitFor(async () => (await getJob(instances[0], held)).status === 'SUCCEEDED');
      expect(fake.requestsTo(DUPLICATE)).toHaveLength(sentBefore + 1);
    } finally {
      await client.call('REPLICAOF', 'NO', 'ONE').catch(() => undefined);
      client.disconnect();
    }
  }, 60_000);
});

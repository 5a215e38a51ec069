import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { RateLimiterRedis } from 'rate-limiter-flexible';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RateLimiterQuota } from '../../src/adapters/rate-limiter-quota.js';
import { dependencyUnavailable } from '../../src/domain/errors.js';
import { generateApiKey } from '../../src/domain/keys.js';
import { systemClock } from '../../src/domain/ports.js';
import type { JobErrorCode } from '../../src/domain/types.js';
import { GatewayMetrics } from '../../src/http/metrics.js';
import { CHECK_SETTLE_MS, CHECK_TIMEOUT_MS, STORE_DOWN_AFTER_MS } from '../../src/readiness.js';
import { ManualClock } from '../support/clock.js';
import { startFakeBraze } from '../support/fake-braze.js';
import {
  bearer,
  componentLines,
  graphql,
  http,
  scrape,
  json,
  metricSample as sample,
  recordingLogger,
  startGateway,
  storeFailingOn,
  storeHeldOn,
  waitFor,
  type TestGateway,
  type TestWorkspace,
} from '../support/gateway.js';
import { createTestSchema, openPostgresStore, skipWithoutPostgres } from '../support/postgres.js';
import { PrivateRedis, skipWithoutRedisServer } from '../support/redis.js';
import { sqlite } from '../support/stores.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import { graphQL, rest } from '../support/transports.js';

/** A scrape once the store answers again, after `failures` reads that failed: the queue is back, and so logged once. */
const scrapeReadAgain = async (gateway: TestGateway, lines: string[], failures: number) => {
  const text = await scrape(gateway);
  expect(sample(text, 'gateway_metrics_store_read_ok')).toBe(1);
  expect(sample(text, 'gateway_duplication_queue_depth')).toBe(0);
  expect(componentLines(lines, 'metrics').slice(1)).toEqual([
    expect.objectContaining({ level: 30, msg: 'reading the job queue for /metrics works again', failures }),
  ]);
  return text;
};

const silent = { info() {}, warn() {}, error() {} };

const DUPLICATE = 'mutation($input: DuplicateCampaignInput!) { duplicateCampaign(input: $input) { job { id } } }';

describe('GET /healthz and GET /readyz', () => {
  it('say ok and ready, naming each check', async () => {
    const gateway = await startGateway();
    try {
      expect((await http(gateway.baseUrl, 'GET', '/healthz')).body).toEqual({ status: 'ok' });
      const ready = await http(gateway.baseUrl, 'GET', '/readyz');
      expect(ready.status).toBe(200);
      expect(ready.body).toEqual({ status: 'ready', checks: { store: { status: 'up', backend: 'sqlite' }, quota: { status: 'up', backend: 'memory' } } });
    } finally {
      await gateway.close();
    }
  });

  it('answer 503 and say what is wrong when the quota backend is unreachable, while the process stays live', async () => {
    // A real Redis client for a port nothing listens on, failing at once instead of queueing commands.
    const redis = new Redis({ host: '127.0.0.1', port: 1, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
    redis.on('error', () => {});
    const quota = new RateLimiterQuota(new RateLimiterRedis({ storeClient: redis, points: 10, duration: 60 }));
    const gateway = await startGateway({}, { quota });
    try {
      const ready = await http(gateway.baseUrl, 'GET', '/readyz');
      expect(ready.status).toBe(503);
      expect(ready.body.status).toBe('not ready');
      expect(ready.body.checks).toEqual({
        store: { status: 'up', backend: 'sqlite' },
        quota: { status: 'down', message: expect.stringMatching(/^(not reachable or )?failing/) },
      });
      expect(ready.body.message).toMatch(/^quota: /);
      expect((await http(gateway.baseUrl, 'GET', '/healthz')).status).toBe(200);
      const document = (await http(gateway.baseUrl, 'GET', '/openapi.json')).body;
      expect(document.paths['/readyz'].get.responses['503']).toBeDefined();
    } finally {
      await gateway.close();
      redis.disconnect();
    }
  });

  it('answer 503 naming the store when the store is gone, and log why', async () => {
    let log = '';
    const sink = new Writable({
      write(chunk, _encoding, done) {
        log += chunk.toString();
        done();
      },
    });
    const gateway = await startGateway({ LOG_LEVEL: 'warn', LOG_FORMAT: 'json' }, { logDestination: sink });
    try {
      await gateway.app.worker.stop();
      await gateway.app.store.close();
      const ready = await http(gateway.baseUrl, 'GET', '/readyz');
      expect(ready.status).toBe(503);
      expect(ready.body.status).toBe('not ready');
      expect(ready.body.message).toMatch(/^store: failing/);
      expect(ready.body.checks).toEqual({
        store: { status: 'down', message: expect.stringMatching(/^failing/) },
        quota: { status: 'up', backend: 'memory' },
      });
      // Not an outage of the database but a store closed under the gateway: an error, with its stack.
      const logged = log.split('\n').filter(Boolean).map((line) => JSON.parse(line)).filter((line) => line.component === 'readiness');
      expect(logged).toEqual([
        expect.objectContaining({ level: 50, dependency: 'store', msg: 'dependency check failed', err: expect.objectContaining({ message: expect.stringMatching(/not open/) }) }),
      ]);
    } finally {
      await gateway.close();
    }
  });

  it('log a failing dependency once, remind of it at most once a minute, and say once when it passes again', async () => {
    const clock = new ManualClock();
    const recorded = recordingLogger('info');
    let failing = false;
    const refused = Object.assign(new Error('connect ECONNREFUSED 10.0.0.7:5432'), { code: 'ECONNREFUSED' });
    const gateway = await startGateway(
      { WORKER_CONCURRENCY: '0' },
      { clock, logger: recorded.logger },
      { wrapStore: (store) => storeFailingOn(store, ['ping'], () => failing, () => dependencyUnavailable(refused)) },
    );
    const probe = async () => (await http(gateway.baseUrl, 'GET', '/readyz')).status;
    const logged = () => componentLines(recorded.lines, 'readiness');
    try {
      expect(await probe()).toBe(200);
      failing = true;
      for (let i = 0; i < 3; i += 1) expect(await probe()).toBe(503);
      const since = clock.now().toISOString();
      const cause = { type: 'Error', code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 10.0.0.7:5432' };
      expect(logged()).toEqual([expect.objectContaining({ level: 40, dependency: 'store', msg: 'dependency check failed', cause })]);
      expect(logged()[0]).not.toHaveProperty('err');

      clock.advance(59_999);
      expect(await probe()).toBe(503);
      expect(logged()).toHaveLength(1);
      clock.advance(1);
      expect(await probe()).toBe(503);
      expect(logged()).toHaveLength(2);
      expect(logged()[1]).toMatchObject({ level: 40, dependency: 'store', msg: 'dependency check still fails', failures: 5, since, cause });

      // Failing one probe in two is still one failure: no line for each pass and the failure after it.
      for (let i = 0; i < 6; i += 1) {
        failing = i % 2 === 1;
        clock.advance(5_000);
        await probe();
      }
      expect(logged()).toHaveLength(2);

      failing = false;
      expect(await probe()).toBe(200);
      clock.advance(CHECK_SETTLE_MS - 1);
      expect(await probe()).toBe(200);
      expect(logged()).toHaveLength(2);
      clock.advance(1);
      expect(await probe()).toBe(200);
      expect(logged()).toHaveLength(3);
      expect(logged()[2]).toMatchObject({ level: 30, dependency: 'store', msg: 'dependency check passes again', failures: 8, since });
    } finally {
      await gateway.close();
    }
  });
});

describe('GET /metrics', () => {
  let gateway: TestGateway;
  let idle: TestGateway;
  let ws: TestWorkspace;

  beforeAll(async () => {
    [gateway, idle] = await Promise.all([startGateway({ DUPLICATE_RATE_LIMIT: '2' }), startGateway({ WORKER_CONCURRENCY: '0' })]);
    ws = await gateway.workspace();
  });
  afterAll(() => Promise.all([gateway?.close(), idle?.close()]));

  it('counts requests by route template and status, jobs and their durations, and quota rejections by channel', async () => {
    const rest = () =>
      http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
        headers: { ...json, ...bearer(ws.key) },
        body: JSON.stringify({ campaign_id: ws.campaign.id, name: 'copy' }),
      });
    const viaGraphql = () => graphql(gateway.baseUrl, ws.key, DUPLICATE, { input: { campaignId: ws.campaign.id, name: 'copy' } });

    expect((await rest()).status).toBe(202);
    expect((await viaGraphql()).body.data.duplicateCampaign.job.id).toEqual(expect.any(String));
    expect((await rest()).status).toBe(429);
    expect((await viaGraphql()).status).toBe(429);
    expect((await http(gateway.baseUrl, 'GET', '/duplication_jobs/some-id', { headers: bearer(ws.key) })).status).toBe(404);
    expect((await http(gateway.baseUrl, 'GET', '/no/such/route')).status).toBe(404);
    expect((await http(gateway.baseUrl, 'GET', '/duplication_jobs/%ZZ')).status).toBe(400);

    const text = await waitFor(async () => {
      const scraped = await scrape(gateway);
      // A scrape reads the job counts from the store before the registry, so a job finishing in between shows in one only.
      const settled =
        sample(scraped, 'gateway_duplication_job_duration_seconds_count', { status: 'SUCCEEDED' }) === 2 &&
        sample(scraped, 'gateway_duplication_jobs', { status: 'RUNNING' }) === 0;
      return settled ? scraped : null;
    });
    expect(sample(text, 'gateway_http_requests_total', { method: 'POST', route: '/campaigns/duplicate', status_code: '202' })).toBe(1);
    expect(sample(text, 'gateway_http_requests_total', { method: 'POST', route: '/campaigns/duplicate', status_code: '429' })).toBe(1);
    expect(sample(text, 'gateway_http_requests_total', { method: 'POST', route: '/graphql', status_code: '200' })).toBe(1);
    expect(sample(text, 'gateway_http_requests_total', { method: 'GET', route: '/duplication_jobs/:job_id', status_code: '404' })).toBe(1);
    expect(sample(text, 'gateway_http_requests_total', { method: 'GET', route: 'unmatched', status_code: '404' })).toBe(1);
    expect(sample(text, 'gateway_http_requests_total', { method: 'GET', route: 'unmatched', status_code: '400' })).toBe(1);
    expect(sample(text, 'gateway_http_request_duration_seconds_count', { method: 'POST', route: '/campaigns/duplicate', status_code: '202' })).toBe(1);
    expect(sample(text, 'gateway_quota_rejections_total', { channel: 'REST' })).toBe(1);
    expect(sample(text, 'gateway_quota_rejections_total', { channel: 'GRAPHQL' })).toBe(1);
    expect(sample(text, 'gateway_duplication_jobs', { status: 'PENDING' })).toBe(0);
    expect(sample(text, 'gateway_duplication_jobs', { status: 'RUNNING' })).toBe(0);
    // Finished jobs are counted as they finish, not by counting the table at each scrape.
    expect(sample(text, 'gateway_duplication_jobs', { status: 'SUCCEEDED' })).toBeUndefined();
    expect(sample(text, 'gateway_duplication_queue_depth')).toBe(0);
    expect(sample(text, 'gateway_duplication_job_duration_seconds_count', { status: 'SUCCEEDED' })).toBe(2);
    expect(sample(text, 'gateway_duplication_job_duration_seconds_bucket', { status: 'SUCCEEDED', le: '+Inf' })).toBe(2);
    expect(sample(text, 'gateway_duplication_jobs_finished_total', { status: 'SUCCEEDED', error_code: 'none' })).toBe(2);
    expect(sample(text, 'gateway_duplication_jobs_finished_total', { status: 'FAILED', error_code: 'CAMPAIGN_NOT_FOUND' })).toBe(0);
    expect(sample(text, 'gateway_duplication_job_retries_total')).toBe(0);
    for (const reason of ['upstream_slot', 'pacing_store', 'store']) expect(sample(text, 'gateway_duplication_job_deferrals_total', { reason })).toBe(0);
    expect(sample(text, 'gateway_security_event_downloads_in_progress')).toBe(0);
    expect(sample(text, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(sample(text, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
  });

  it('counts a quota rejection of a request with an idempotency key too, and not the replay of an accepted one', async () => {
    const team = await gateway.workspace();
    const rest = (key: string) =>
      http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
        headers: { ...json, ...bearer(team.key), 'idempotency-key': key },
        body: JSON.stringify({ campaign_id: team.campaign.id, name: 'copy' }),
      });
    const viaGraphql = (key: string) => graphql(gateway.baseUrl, team.key, DUPLICATE, { input: { campaignId: team.campaign.id, name: 'copy', idempotencyKey: key } });
    const rejections = (text: string, channel: string) => sample(text, 'gateway_quota_rejections_total', { channel })!;
    const before = await scrape(gateway);

    expect((await rest('first')).status).toBe(202);
    expect((await viaGraphql('second')).body.data.duplicateCampaign.job.id).toEqual(expect.any(String));
    expect((await rest('third')).status).toBe(429);
    expect((await viaGraphql('fourth')).status).toBe(429);
    // Answered with its job although the quota is spent: not a rejection.
    expect((await rest('first')).status).toBe(202);

    const after = await scrape(gateway);
    expect(rejections(after, 'REST')).toBe(rejections(before, 'REST') + 1);
    expect(rejections(after, 'GRAPHQL')).toBe(rejections(before, 'GRAPHQL') + 1);
  });

  it('reads the queue depth from the store, and keeps each app to its own registry', async () => {
    const other = await idle.workspace();
    for (let index = 0; index < 3; index++) {
      const response = await http(idle.baseUrl, 'POST', '/campaigns/duplicate', {
        headers: { ...json, ...bearer(other.key) },
        body: JSON.stringify({ campaign_id: other.campaign.id, name: `queued ${index}` }),
      });
      expect(response.status).toBe(202);
    }
    const text = await scrape(idle);
    expect(sample(text, 'gateway_duplication_queue_depth')).toBe(3);
    expect(sample(text, 'gateway_duplication_jobs', { status: 'PENDING' })).toBe(3);
    expect(sample(text, 'gateway_http_requests_total', { method: 'POST', route: '/campaigns/duplicate', status_code: '202' })).toBe(3);
    expect(sample(text, 'gateway_quota_rejections_total', { channel: 'REST' })).toBe(0);
  });
});

describe('GET /metrics: GraphQL errors', () => {
  it('counts the errors of answers sent with 200 by their code, from Apollo and from a prepared operation alike', async () => {
    const gateway = await startGateway({ WORKER_CONCURRENCY: '0' });
    try {
      const ws = await gateway.workspace();
      const failing = () => graphql(gateway.baseUrl, ws.key, '{ securityEvents(first: 5, after: "not-a-cursor") { edges { cursor } } }');
      const errors = (text: string, code: string) => sample(text, 'gateway_graphql_errors_total', { code });
      const before = await scrape(gateway);
      expect(errors(before, 'BAD_USER_INPUT')).toBe(0);
      expect(errors(before, 'GRAPHQL_PARSE_FAILED')).toBe(0);

      const first = await failing();
      expect(first.status).toBe(200);
      expect(first.body.errors[0].extensions.code).toBe('BAD_USER_INPUT');
      const afterApollo = await scrape(gateway);
      expect(sample(afterApollo, 'gateway_graphql_requests_total', { path: 'apollo' })).toBe(1);
      expect(errors(afterApollo, 'BAD_USER_INPUT')).toBe(1);

      expect((await failing()).body).toEqual(first.body);
      const afterPrepared = await scrape(gateway);
      expect(sample(afterPrepared, 'gateway_graphql_requests_total', { path: 'prepared' })).toBe(1);
      expect(errors(afterPrepared, 'BAD_USER_INPUT')).toBe(2);

      // Refused before GraphQL saw it: still an error of a GraphQL answer.
      const unparsable = await http(gateway.baseUrl, 'POST', '/graphql', { headers: { ...json, ...bearer(ws.key) }, body: '{"query": ' });
      expect(unparsable.body.errors[0].extensions.code).toBe('BAD_USER_INPUT');
      expect(await graphql(gateway.baseUrl, ws.key, '{ securityEvents(')).toMatchObject({ status: 400 });
      const text = await scrape(gateway);
      expect(errors(text, 'BAD_USER_INPUT')).toBe(3);
      expect(errors(text, 'GRAPHQL_PARSE_FAILED')).toBe(1);
      expect(text).not.toContain('not-a-cursor');
    } finally {
      await gateway.close();
    }
  });
});

describe('GET /metrics: label values', () => {
  it('fold a code outside the closed set of GraphQL or job error codes into "other"', async () => {
    const gateway = await startGateway({ WORKER_CONCURRENCY: '0' });
    try {
      const metrics = new GatewayMetrics({ store: gateway.app.store, clock: systemClock, downloadsInProgress: () => 0, logger: silent });
      metrics.graphqlError('SOMETHING_A_PLUGIN_MADE_UP');
      metrics.graphqlError(undefined);
      // A job error code an older version wrote, read back.
      metrics.workerObserver.jobFinished?.('FAILED', 10, 'UPSTREAM_400' as JobErrorCode, 20);
      const text = await metrics.render();
      expect(sample(text, 'gateway_graphql_errors_total', { code: 'other' })).toBe(2);
      expect(sample(text, 'gateway_duplication_jobs_finished_total', { status: 'FAILED', error_code: 'other' })).toBe(1);
      expect(text).not.toContain('SOMETHING_A_PLUGIN_MADE_UP');
      expect(text).not.toContain('UPSTREAM_400');
    } finally {
      await gateway.close();
    }
  });
});

describe('GET /metrics: the age of the oldest due job', () => {
  it('is how long the job due longest ago has waited since it became due, 0 when none is due', async () => {
    const clock = new ManualClock();
    const gateway = await startGateway({ WORKER_CONCURRENCY: '0' }, { clock });
    try {
      const ws = await gateway.workspace();
      expect(sample(await scrape(gateway), 'gateway_duplication_queue_oldest_due_age_seconds')).toBe(0);
      const enqueue = async () => {
        const response = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
          headers: { ...json, ...bearer(ws.key) },
          body: JSON.stringify({ campaign_id: ws.campaign.id, name: 'waiting' }),
        });
        expect(response.status).toBe(202);
      };
      await enqueue();
      clock.advance(30_000);
      await enqueue();
      clock.advance(60_500);
      const text = await scrape(gateway);
      expect(sample(text, 'gateway_duplication_queue_oldest_due_age_seconds')).toBe(90.5);
      expect(sample(text, 'gateway_duplication_queue_depth')).toBe(2);
    } finally {
      await gateway.close();
    }
  });
});

describe('GET /metrics while the store cannot be read', () => {
  it('serves every other series, says the queue read failed, and logs the outage once until it ends', async () => {
    let down = false;
    // What the stores raise when their database cannot be reached.
    const outage = () => dependencyUnavailable(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }));
    const { logger, lines } = recordingLogger();
    const gateway = await startGateway(
      { WORKER_CONCURRENCY: '0' },
      { logger },
      { wrapStore: (store) => storeFailingOn(store, ['countJobs'], () => down, outage) },
    );
    try {
      expect((await http(gateway.baseUrl, 'GET', '/healthz')).status).toBe(200);
      down = true;
      for (let scrapes = 0; scrapes < 3; scrapes += 1) {
        const text = await scrape(gateway);
        expect(sample(text, 'gateway_metrics_store_read_ok')).toBe(0);
        expect(sample(text, 'gateway_duplication_jobs', { status: 'PENDING' })).toBeUndefined();
        expect(sample(text, 'gateway_duplication_queue_depth')).toBeUndefined();
        expect(sample(text, 'gateway_duplication_queue_oldest_due_age_seconds')).toBeUndefined();
        expect(text).not.toContain('# TYPE gateway_duplication_queue_depth');
        expect(sample(text, 'gateway_http_requests_total', { method: 'GET', route: '/healthz', status_code: '200' })).toBe(1);
        expect(sample(text, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
      }
      const logged = componentLines(lines, 'metrics');
      expect(logged).toHaveLength(1);
      expect(logged[0]).toMatchObject({
        level: 40,
        msg: 'reading the job queue for /metrics failed; its series are left out until it works again',
        cause: { code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:5432' },
      });
      expect(logged[0].err).toBeUndefined();

      down = false;
      const text = await scrapeReadAgain(gateway, lines, 3);
      expect(sample(text, 'gateway_duplication_jobs', { status: 'RUNNING' })).toBe(0);
    } finally {
      await gateway.close();
    }
  });
});

describe('GET /metrics while PostgreSQL drops every packet', () => {
  /**
   * Prometheus gives up on a scrape after 10 s by default, and the pool waits as long for a connection: a scrape
   * still unanswered well past the 2 s bound of a store read, and before either, is one Prometheus would lose.
   */
  const SCRAPE_DEADLINE_MS = 4 * CHECK_TIMEOUT_MS;
  const scrapeBeforeDeadline = (gateway: TestGateway) =>
    http(gateway.baseUrl, 'GET', '/metrics', { signal: AbortSignal.timeout(SCRAPE_DEADLINE_MS) }).then(
      (response) => response.text,
      (error: unknown) => {
        throw new Error(`/metrics did not answer within ${SCRAPE_DEADLINE_MS} ms while the database dropped every packet`, { cause: error });
      },
    );

  it.skipIf(skipWithoutPostgres)('answers within the bound of a readiness check, without the queue series, and logs the outage once', async () => {
    const schema = await createTestSchema();
    const database = new URL(schema.url);
    const proxy = await TcpProxy.start({ host: database.hostname, port: Number(database.port || 5432) });
    const store = openPostgresStore(proxy.url(schema.url), schema.schema);
    const { logger, lines } = recordingLogger();
    let gateway: TestGateway | undefined;
    try {
      await store.migrate();
      gateway = await startGateway({ WORKER_CONCURRENCY: '0' }, { store, logger });
      const healthy = await scrape(gateway);
      expect(sample(healthy, 'gateway_metrics_store_read_ok')).toBe(1);
      expect(sample(healthy, 'gateway_dependency_up', { dependency: 'store' })).toBe(1);

      proxy.blackHole();
      // Two scrapes at once, on connections the pool holds open and on new ones: both answer, one line is logged.
      for (const text of await Promise.all([scrapeBeforeDeadline(gateway), scrapeBeforeDeadline(gateway)])) {
        expect(sample(text, 'gateway_metrics_store_read_ok')).toBe(0);
        expect(sample(text, 'gateway_duplication_queue_depth')).toBeUndefined();
        expect(text).not.toContain('# TYPE gateway_duplication_jobs ');
        // The quota is counted in the same database.
        expect(sample(text, 'gateway_dependency_up', { dependency: 'store' })).toBe(0);
        expect(sample(text, 'gateway_dependency_up', { dependency: 'quota' })).toBe(0);
        expect(sample(text, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
      }
      expect(componentLines(lines, 'metrics')).toEqual([
        expect.objectContaining({
          level: 40,
          msg: 'reading the job queue for /metrics failed; its series are left out until it works again',
          cause: expect.objectContaining({ message: `did not answer within ${CHECK_TIMEOUT_MS} ms` }),
        }),
      ]);
      // An outage of the database is no reason to restart the process: liveness holds.
      expect(await http(gateway.baseUrl, 'GET', '/healthz')).toMatchObject({ status: 200, body: { status: 'ok' } });

      proxy.restore();
      const recovered = await scrapeReadAgain(gateway, lines, 2);
      expect(sample(recovered, 'gateway_dependency_up', { dependency: 'store' })).toBe(1);
    } finally {
      // Cut first: queries still held in the black hole would keep the pool, and so the close, waiting.
      await proxy.close();
      await (gateway ? gateway.close() : store.close());
      await schema.drop();
    }
  });
});

describe('GET /metrics: dependency health', () => {
  const up = (text: string, dependency: string) => sample(text, 'gateway_dependency_up', { dependency });

  it('is each readiness check, checked at each scrape though nothing probes /readyz', async () => {
    let failing = false;
    const gateway = await startGateway({ WORKER_CONCURRENCY: '0' }, {}, { wrapStore: (store) => storeFailingOn(store, ['ping'], () => failing) });
    try {
      const healthy = await scrape(gateway);
      expect(up(healthy, 'store')).toBe(1);
      expect(up(healthy, 'quota')).toBe(1);
      expect(healthy).not.toContain('dependency="upstream"');
      failing = true;
      expect(up(await scrape(gateway), 'store')).toBe(0);
      failing = false;
      expect(up(await scrape(gateway), 'store')).toBe(1);
    } finally {
      await gateway.close();
    }
  });

  it('is 0 for an upstream that refuses UPSTREAM_API_KEY or cannot be reached, though the instance is ready', async () => {
    const fake = await startFakeBraze('the-upstream-key');
    const gateway = await startGateway({ UPSTREAM_URL: fake.url, UPSTREAM_API_KEY: 'not-the-upstream-key' });
    try {
      const ws = await gateway.workspace();
      expect(up(await scrape(gateway), 'upstream')).toBe(1);
      const refused = await rest.duplicate(gateway.baseUrl, ws.key, { campaignId: 'cmp-0001', name: 'refused upstream' });
      await waitFor(async () => (await rest.job(gateway.baseUrl, ws.key, refused.jobId!)).job?.status === 'FAILED');
      expect(up(await scrape(gateway), 'upstream')).toBe(0);

      fake.script('POST /campaigns/duplicate', { status: 201, json: { message: 'success' } });
      const accepted = await rest.duplicate(gateway.baseUrl, ws.key, { campaignId: 'cmp-0001', name: 'accepted upstream' });
      await waitFor(async () => (await rest.job(gateway.baseUrl, ws.key, accepted.jobId!)).job?.status === 'SUCCEEDED');
      expect(up(await scrape(gateway), 'upstream')).toBe(1);

      await fake.close();
      const unreachable = await scrape(gateway);
      expect(up(unreachable, 'upstream')).toBe(0);
      expect(up(unreachable, 'store')).toBe(1);
      expect((await http(gateway.baseUrl, 'GET', '/readyz')).status).toBe(200);
    } finally {
      await gateway.close();
      await fake.close();
    }
  });

  it.skipIf(skipWithoutRedisServer)('is 0 for the quota while Redis is gone and limits are kept in process', async () => {
    const redis = await PrivateRedis.start();
    const gateway = await startGateway({ REDIS_URL: redis.url(), WORKER_CONCURRENCY: '0' });
    try {
      expect(up(await scrape(gateway), 'quota')).toBe(1);
      await redis.stop();
      await waitFor(async () => up(await scrape(gateway), 'quota') === 0);
      await redis.start();
      await waitFor(async () => up(await scrape(gateway), 'quota') === 1);
    } finally {
      await gateway.close();
      await redis.stop();
    }
  });
});

describe('GET /metrics: failed authentications', () => {
  it('counts them by channel and code, and the requests then refused to their client by channel', async () => {
    const gateway = await startGateway({ AUTH_FAILURE_LIMIT: '3', WORKER_CONCURRENCY: '0' });
    try {
      const ws = await gateway.workspace();
      const elsewhere = await gateway.app.admin.createKey({
        workspace: ws.workspace.id,
        name: 'only from elsewhere',
        permissions: ['campaigns.duplicate'],
        allowedCidrs: ['192.0.2.0/24'],
      });
      const failures = (text: string, channel: string, code: string) => sample(text, 'gateway_auth_failures_total', { channel, code });
      const blocked = (text: string, channel: string) => sample(text, 'gateway_auth_failures_blocked_total', { channel });
      const before = await scrape(gateway);
      for (const channel of ['REST', 'GRAPHQL']) {
        expect(blocked(before, channel)).toBe(0);
        expect(failures(before, channel, 'UNAUTHENTICATED')).toBe(0);
        expect(failures(before, channel, 'FORBIDDEN')).toBe(0);
      }

      const args = { campaignId: ws.campaign.id, name: 'copy' };
      expect(await rest.duplicate(gateway.baseUrl, generateApiKey(), args)).toMatchObject({ status: 401, code: 'UNAUTHENTICATED' });
      expect(await graphQL.duplicate(gateway.baseUrl, null, args)).toMatchObject({ status: 401, code: 'UNAUTHENTICATED' });
      expect(await rest.duplicate(gateway.baseUrl, elsewhere.key, args)).toMatchObject({ status: 403, code: 'FORBIDDEN' });
      // The third failure blocked this client: even its valid key is refused now, on both transports.
      expect(await rest.duplicate(gateway.baseUrl, ws.key, args)).toMatchObject({ status: 429, code: 'RATE_LIMITED' });
      expect(await graphQL.duplicate(gateway.baseUrl, ws.key, args)).toMatchObject({ status: 429, code: 'RATE_LIMITED' });
      expect(await graphQL.duplicate(gateway.baseUrl, generateApiKey(), args)).toMatchObject({ status: 429, code: 'RATE_LIMITED' });

      const text = await scrape(gateway);
      expect(failures(text, 'REST', 'UNAUTHENTICATED')).toBe(1);
      expect(failures(text, 'GRAPHQL', 'UNAUTHENTICATED')).toBe(1);
      expect(failures(text, 'REST', 'FORBIDDEN')).toBe(1);
      expect(failures(text, 'GRAPHQL', 'FORBIDDEN')).toBe(0);
      expect(blocked(text, 'REST')).toBe(1);
      expect(blocked(text, 'GRAPHQL')).toBe(2);
      // A quota rejection is another 429.
      expect(sample(text, 'gateway_quota_rejections_total', { channel: 'REST' })).toBe(0);
    } finally {
      await gateway.close();
    }
  });
});

describe("GET /readyz and GET /metrics: this instance's clock against the database's", () => {
  /** The system clock moved by `skew.ms`, as read by an instance whose clock is that far off. */
  const skewedClock = (skew: { ms: number }) => ({ now: () => new Date(Date.now() + skew.ms) });
  const AHEAD = /^this instance's clock is (\d+\.\d{3}) s ahead of the database's \(±\d+\.\d{3} s\): event times and idempotency reservations are taken from it/;
  const storeCheck = async (gateway: TestGateway) => {
    const ready = await http(gateway.baseUrl, 'GET', '/readyz');
    expect(ready).toMatchObject({ status: 200, body: { status: 'ready' } });
    return ready.body.checks.store;
  };

  /** A gateway on a schema of its own in the test database, its clock the given one, its log kept. */
  const onPostgres = async (clock: { now(): Date }) => {
    const schema = await createTestSchema();
    const store = openPostgresStore(schema.url, schema.schema);
    await store.migrate();
    const { logger, lines } = recordingLogger();
    const gateway = await startGateway({ WORKER_CONCURRENCY: '0' }, { store, logger, clock });
    return { gateway, lines, close: () => gateway.close().finally(() => schema.drop()) };
  };

  it.skipIf(skipWithoutPostgres)('note a clock 90 s ahead, warn once and then at most once a minute, report the offset, and say when it is back', async () => {
    const skew = { ms: 90_000 };
    const { gateway, lines, close } = await onPostgres(skewedClock(skew));
    try {
      // Still ready: a skew is a risk to event windows, not an outage.
      for (let probe = 0; probe < 3; probe += 1) {
        const store = await storeCheck(gateway);
        expect(store).toMatchObject({ status: 'up', backend: 'postgres', message: expect.stringMatching(AHEAD) });
        expect(Number(AHEAD.exec(store.message)![1])).toBeGreaterThan(60);
      }
      const text = await scrape(gateway);
      expect(sample(text, 'gateway_dependency_up', { dependency: 'store' })).toBe(1);
      const offset = sample(text, 'gateway_clock_offset_seconds')!;
      expect(offset).toBeLessThan(-60);
      expect(offset).toBeGreaterThan(-120);
      expect(componentLines(lines, 'clock')).toEqual([expect.objectContaining({ level: 40, msg: expect.stringMatching(AHEAD), offsetSeconds: expect.any(Number) })]);

      // A minute later by the instance's clock, still off: one reminder.
      skew.ms += 61_000;
      await storeCheck(gateway);
      await storeCheck(gateway);
      expect(componentLines(lines, 'clock').slice(1)).toEqual([
        expect.objectContaining({ level: 40, msg: expect.stringMatching(/ahead of the database's .*: still more than a second off$/), since: expect.any(String) }),
      ]);

      skew.ms = 0;
      expect(await storeCheck(gateway)).toEqual({ status: 'up', backend: 'postgres' });
      await storeCheck(gateway);
      expect(componentLines(lines, 'clock').slice(2)).toEqual([expect.objectContaining({ level: 30, msg: expect.stringMatching(/: within a second again$/) })]);
      expect(Math.abs(sample(await scrape(gateway), 'gateway_clock_offset_seconds')!)).toBeLessThan(1);
    } finally {
      await close();
    }
  });

  it.skipIf(skipWithoutPostgres)('say nothing of an accurate clock but its offset', async () => {
    const { gateway, lines, close } = await onPostgres(systemClock);
    try {
      expect(await storeCheck(gateway)).toEqual({ status: 'up', backend: 'postgres' });
      expect(Math.abs(sample(await scrape(gateway), 'gateway_clock_offset_seconds')!)).toBeLessThan(1);
      expect(componentLines(lines, 'clock')).toEqual([]);
    } finally {
      await close();
    }
  });

  it("measure nothing on the embedded store, which has no clock but the instance's", async () => {
    const { logger, lines } = recordingLogger();
    const gateway = await startGateway({ WORKER_CONCURRENCY: '0' }, { logger, clock: skewedClock({ ms: 90_000 }) });
    try {
      expect(await storeCheck(gateway)).toEqual({ status: 'up', backend: 'sqlite' });
      expect(await scrape(gateway)).not.toContain('gateway_clock_offset_seconds');
      expect(componentLines(lines, 'clock')).toEqual([]);
    } finally {
      await gateway.close();
    }
  });
});

describe('GET /metrics: the embedded store\'s writer', () => {
  it('times each group commit, and counts the writes waiting for the writer thread', async () => {
    const { store, drop } = await sqlite.open();
    const metrics = new GatewayMetrics({ store, clock: systemClock, downloadsInProgress: () => 0, logger: silent });
    const waiting = metrics.registry.getSingleMetric('gateway_store_writes_waiting')!;
    try {
      const before = await metrics.render();
      expect(sample(before, 'gateway_store_writes_waiting')).toBe(0);
      const commits = sample(before, 'gateway_store_commit_duration_seconds_count') ?? 0;
      // Sent together, the writes wait for one group: the gauge reads them before they are committed.
      const writes = [1, 2, 3].map(() => store.pruneIdempotencyKeys(new Date(0), 1));
      const read = waiting.get();
      await Promise.all(writes);
      expect((await read).values[0].value).toBe(3);
      const after = await metrics.render();
      expect(sample(after, 'gateway_store_writes_waiting')).toBe(0);
      expect(sample(after, 'gateway_store_commit_duration_seconds_count')).toBeGreaterThan(commits);
      expect(sample(after, 'gateway_store_commit_duration_seconds_bucket', { le: '+Inf' })).toBe(sample(after, 'gateway_store_commit_duration_seconds_count'));
    } finally {
      metrics.close();
      await store.close();
      await drop();
    }
  });

  it('is observed by the gateway: each accepted duplication is in a commit timed', async () => {
    const gateway = await startGateway({ WORKER_CONCURRENCY: '0' });
    try {
      const ws = await gateway.workspace();
      const before = sample(await scrape(gateway), 'gateway_store_commit_duration_seconds_count') ?? 0;
      await rest.duplicate(gateway.baseUrl, ws.key, { campaignId: 'cmp-0001', name: 'timed' });
      expect(sample(await scrape(gateway), 'gateway_store_commit_duration_seconds_count')).toBeGreaterThan(before);
    } finally {
      await gateway.close();
    }
  });
});

describe('GET /readyz and GET /metrics: an embedded store whose writes are slow', () => {
  const storeCheck = async (gateway: TestGateway) => {
    const response = await http(gateway.baseUrl, 'GET', '/readyz');
    return { status: response.status, store: response.body.checks.store, up: sample(await scrape(gateway), 'gateway_dependency_up', { dependency: 'store' }) };
  };

  it('is degraded and still ready while its check answers late, and down only once it has gone 10 s unanswered', async () => {
    const clock = new ManualClock(new Date());
    // The time the readiness checks are timed by moves while the store's check runs, as a slow fsync would.
    let hold: () => Promise<void> | undefined = () => undefined;
    const elapsedMs = () => clock.now().getTime();
    const gateway = await startGateway({ WORKER_CONCURRENCY: '0' }, { clock, elapsedMs }, { wrapStore: (store) => storeHeldOn(store, ['ping'], () => hold()) });
    try {
      expect(await storeCheck(gateway)).toEqual({ status: 200, store: { status: 'up', backend: 'sqlite' }, up: 1 });

      hold = async () => clock.advance(CHECK_TIMEOUT_MS + 1000);
      expect(await storeCheck(gateway)).toEqual({
        status: 200,
        store: { status: 'degraded', backend: 'sqlite', message: 'slow: its check answered in 3.0 s, over 2.0 s' },
        // Neither down nor flapping: a store that answers either side of the 2 s is serving.
        up: 1,
      });

      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      hold = () => released;
      const unanswered = await http(gateway.baseUrl, 'GET', '/readyz');
      expect(unanswered.status).toBe(200);
      expect(unanswered.body.checks.store).toEqual({ status: 'degraded', message: 'slow: its check has not answered for 0.0 s (down after 10.0 s)' });
      clock.advance(STORE_DOWN_AFTER_MS);
      // The same check, still running: past its 10 s the store is down.
      expect(await storeCheck(gateway)).toEqual({ status: 503, store: { status: 'down', message: 'did not answer within 10000 ms' }, up: 0 });

      hold = () => undefined;
      release();
      await waitFor(async () => (await storeCheck(gateway)).status === 200);
      expect(await storeCheck(gateway)).toEqual({ status: 200, store: { status: 'up', backend: 'sqlite' }, up: 1 });
    } finally {
      hold = () => undefined;
      await gateway.close();
    }
  });

  it('times its check by a clock that only moves forward: a step of the wall clock during the check is no slow store', async () => {
    const clock = new ManualClock(new Date());
    let hold: () => Promise<void> | undefined = () => undefined;
    const gateway = await startGateway({ WORKER_CONCURRENCY: '0' }, { clock }, { wrapStore: (store) => storeHeldOn(store, ['ping'], () => hold()) });
    try {
      // NTP sets the wall clock an hour forward, then back, while the store answers at once.
      for (const stepMs of [3_600_000, -3_600_000]) {
        hold = async () => clock.advance(stepMs);
        expect(await storeCheck(gateway)).toEqual({ status: 200, store: { status: 'up', backend: 'sqlite' }, up: 1 });
      }
    } finally {
      hold = () => undefined;
      await gateway.close();
    }
  });
});

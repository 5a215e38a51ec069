import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { Histogram } from 'prom-client';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateApiKey } from '../../src/domain/keys.js';
import { DUPLICATION_OUTCOMES } from '../../src/domain/service.js';
import { CHANNELS, type DuplicationJob } from '../../src/domain/types.js';
import { GatewayMetrics } from '../../src/http/metrics.js';
import { ManualClock } from '../support/clock.js';
import { startFakeBraze } from '../support/fake-braze.js';
import { bearer, graphql, http, json, metricSample as sample, pipelinedAfterADuplicate, rawHttp, scrape, startGateway, waitFor, type TestGateway } from '../support/gateway.js';
import { transports } from '../support/transports.js';

const silent = { info() {}, warn() {}, error() {} };

describe('GET /metrics: duplications by channel and outcome', () => {
  let gateway: TestGateway;
  beforeAll(async () => {
    gateway = await startGateway({ DUPLICATE_RATE_LIMIT: '3', WORKER_CONCURRENCY: '0' });
  });
  afterAll(() => gateway?.close());

  const duplications = (text: string, channel: string, outcome: string) => sample(text, 'gateway_duplications_total', { channel, outcome });

  it('has every channel and outcome from the start, at 0', async () => {
    const text = await scrape(gateway);
    for (const channel of CHANNELS) for (const outcome of DUPLICATION_OUTCOMES) expect(duplications(text, channel, outcome)).toBe(0);
  });

  it.each(transports)('counts each outcome once per duplication, over $name', async (transport) => {
    const ws = await gateway.workspace();
    const barred = await gateway.workspace(undefined, ['campaigns.list']);
    const args = { campaignId: ws.campaign.id, name: 'copy' };
    const before = await scrape(gateway);

    expect(await transport.duplicate(gateway.baseUrl, ws.key, args, { idempotencyKey: 'once' })).toMatchObject({ status: transport.name === 'REST' ? 202 : 200 });
    // The same key and request: its job again, no point taken. Another request with it: a conflict.
    expect((await transport.duplicate(gateway.baseUrl, ws.key, args, { idempotencyKey: 'once' })).jobId).toEqual(expect.any(String));
    expect(await transport.duplicate(gateway.baseUrl, ws.key, { ...args, name: 'other' }, { idempotencyKey: 'once' })).toMatchObject({ code: 'CONFLICT' });
    expect(await transport.duplicate(gateway.baseUrl, ws.key, { ...args, campaignId: 'no-such-campaign' })).toMatchObject({ code: 'BAD_USER_INPUT' });
    expect((await transport.duplicate(gateway.baseUrl, ws.key, args)).jobId).toEqual(expect.any(String));
    expect(await transport.duplicate(gateway.baseUrl, ws.key, args)).toMatchObject({ code: 'RATE_LIMITED' });
    expect(await transport.duplicate(gateway.baseUrl, generateApiKey(), args)).toMatchObject({ code: 'UNAUTHENTICATED' });
    expect(await transport.duplicate(gateway.baseUrl, barred.key, { ...args, campaignId: barred.campaign.id })).toMatchObject({ code: 'FORBIDDEN' });

    const after = await scrape(gateway);
    const counted = (outcome: string) => duplications(after, transport.name, outcome)! - duplications(before, transport.name, outcome)!;
    expect(Object.fromEntries(DUPLICATION_OUTCOMES.map((outcome) => [outcome, counted(outcome)]))).toEqual({
      accepted: 2,
      replayed: 1,
      conflict: 1,
      invalid: 1,
      rate_limited: 1,
      // A GraphQL request's key is refused before its body is read, when what it asks for is not yet known.
      unauthenticated: transport.name === 'REST' ? 1 : 0,
      forbidden: 1,
      unavailable: 0,
      internal: 0,
    });
    // Each door counts its own only.
    const other = CHANNELS.find((channel) => channel !== transport.name)!;
    for (const outcome of DUPLICATION_OUTCOMES) expect(duplications(after, other, outcome)).toBe(duplications(before, other, outcome));
  });

  it('counts each field of a GraphQL request, aliased fields included', async () => {
    const ws = await gateway.workspace();
    const before = await scrape(gateway);
    const fields = ['a', 'b', 'c'].map((alias) => `${alias}: duplicateCampaign(input: {campaignId: "${ws.campaign.id}", name: "copy ${alias}"}) { job { id } }`);
    const response = await graphql(gateway.baseUrl, ws.key, `mutation { ${fields.join(' ')} }`);
    expect(response.body.errors).toBeUndefined();
    // Three refused to a key without the permission, which the request authenticates once: one each all the same.
    const barred = await gateway.workspace(undefined, ['campaigns.list']);
    const refused = await graphql(gateway.baseUrl, barred.key, `mutation { ${fields.join(' ')} }`);
    expect(refused.body.errors.map((error: { extensions: { code: string } }) => error.extensions.code)).toEqual(['FORBIDDEN', 'FORBIDDEN', 'FORBIDDEN']);
    const after = await scrape(gateway);
    expect(duplications(after, 'GRAPHQL', 'accepted')! - duplications(before, 'GRAPHQL', 'accepted')!).toBe(3);
    expect(duplications(after, 'GRAPHQL', 'forbidden')! - duplications(before, 'GRAPHQL', 'forbidden')!).toBe(3);
  });
});

describe('GET /metrics: security events left unrecorded', () => {
  it('counts the refusals past their budget by event type', async () => {
    const gateway = await startGateway({ WORKER_CONCURRENCY: '0' }, { refusalEventLimiter: new RateLimiterMemory({ points: 1, duration: 60 }) });
    try {
      const ws = await gateway.workspace();
      const barred = await gateway.workspace(undefined, ['campaigns.list']);
      const revoked = await gateway.app.admin.createKey({ workspace: ws.workspace.id, name: 'revoked', permissions: ['campaigns.duplicate'] });
      await gateway.app.admin.revokeKey(revoked.record.id);
      const unrecorded = (text: string, type: string) => sample(text, 'gateway_security_events_unrecorded_total', { type });
      const before = await scrape(gateway);
      expect(unrecorded(before, 'PERMISSION_DENIED')).toBe(0);
      expect(unrecorded(before, 'API_KEY_REJECTED')).toBe(0);

      const duplicate = (key: string) =>
        http(gateway.baseUrl, 'POST', '/campaigns/duplicate', { headers: { ...json, ...bearer(key) }, body: JSON.stringify({ campaign_id: 'c', name: 'copy' }) });
      for (let i = 0; i < 3; i += 1) expect((await duplicate(barred.key)).status).toBe(403);
      for (let i = 0; i < 2; i += 1) expect((await duplicate(revoked.key)).status).toBe(401);

      // A rejected key's event is written after its 401.
      const text = await waitFor(async () => {
        const scraped = await scrape(gateway);
        return unrecorded(scraped, 'API_KEY_REJECTED') === 1 ? scraped : null;
      });
      expect(unrecorded(text, 'PERMISSION_DENIED')).toBe(2);
      expect(text).not.toContain(barred.workspace.id);
    } finally {
      await gateway.close();
    }
  });
});

describe('GET /metrics: upstream pause, deferrals and how long jobs wait', () => {
  it('shows what is left of a pause, why jobs were deferred, and each job from acceptance to finish', async () => {
    const upstreamKey = 'the-upstream-key';
    const fake = await startFakeBraze(upstreamKey);
    const clock = new ManualClock();
    const limiter = new RateLimiterMemory({ points: 100, duration: 60 });
    const gateway = await startGateway(
      { UPSTREAM_URL: fake.url, UPSTREAM_API_KEY: upstreamKey, UPSTREAM_TIMEOUT_MS: '300', JOB_MAX_ATTEMPTS: '3' },
      { clock, upstreamLimiter: limiter },
    );
    try {
      const ws = await gateway.workspace();
      const enqueue = async () => {
        const response = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
          headers: { ...json, ...bearer(ws.key) },
          body: JSON.stringify({ campaign_id: 'cmp-0001', name: 'copy' }),
        });
        expect(response.status).toBe(202);
        return response.body.job_id as string;
      };
      const job = (id: string) => gateway.app.store.getJob(ws.workspace.id, id) as Promise<DuplicationJob>;
      const before = await scrape(gateway);
      expect(sample(before, 'gateway_upstream_paused_seconds')).toBe(0);
      for (const reason of ['upstream_slot', 'pacing_store', 'store']) expect(sample(before, 'gateway_duplication_job_deferrals_total', { reason })).toBe(0);

      fake.script('POST /campaigns/duplicate', { status: 429, json: { message: 'Rate limit exceeded' }, headers: { 'retry-after': '70' } });
      const limited = await enqueue();
      const retried = await waitFor(async () => {
        const current = await job(limited);
        return current.status === 'PENDING' && current.attempts === 1 && current;
      });
      const paused = sample(await scrape(gateway), 'gateway_upstream_paused_seconds')!;
      expect(paused).toBeGreaterThan(60);
      expect(paused).toBeLessThanOrEqual(70);

      // Held back by the pause without an attempt: a deferral for an upstream slot.
      const held = await enqueue();
      const deferred = await waitFor(async () => {
        const current = await job(held);
        return current.status === 'PENDING' && current.runAt > current.createdAt && current;
      });
      expect(sample(await scrape(gateway), 'gateway_duplication_job_deferrals_total', { reason: 'upstream_slot' })).toBe(1);

      await limiter.delete('duplicate');
      const runAt = Math.max(retried.runAt.getTime(), deferred.runAt.getTime());
      clock.advance(runAt - clock.now().getTime());
      gateway.app.worker.notify();
      const text = await waitFor(async () => {
        const scraped = await scrape(gateway);
        return sample(scraped, 'gateway_duplication_job_wait_seconds_count', { status: 'SUCCEEDED' }) === 2 ? scraped : null;
      });
      expect(sample(text, 'gateway_upstream_paused_seconds')).toBe(0);
      // Both waited from their acceptance until the clock reached their run time, at least the 70 s asked for.
      const finished = await Promise.all([job(limited), job(held)]);
      const waited = finished.reduce((sum, each) => sum + (each.finishedAt!.getTime() - each.createdAt.getTime()) / 1000, 0);
      expect(sample(text, 'gateway_duplication_job_wait_seconds_sum', { status: 'SUCCEEDED' })).toBeCloseTo(waited, 3);
      expect(sample(text, 'gateway_duplication_job_wait_seconds_bucket', { status: 'SUCCEEDED', le: '60' })).toBe(0);
      expect(sample(text, 'gateway_duplication_job_wait_seconds_bucket', { status: 'SUCCEEDED', le: '120' })).toBe(2);
    } finally {
      await gateway.close();
      await fake.close();
    }
  });
});

describe('GET /metrics outside upstream mode', () => {
  let gateway: TestGateway;
  beforeAll(async () => {
    gateway = await startGateway({ WORKER_CONCURRENCY: '0' });
  });
  afterAll(() => gateway?.close());

  it('leaves the upstream pause out', async () => {
    expect(await scrape(gateway)).not.toContain('gateway_upstream_paused_seconds');
  });

  it('counts a request Node could not parse as unmatched, with its status', async () => {
    const { port } = new URL(gateway.baseUrl);
    const answer = await new Promise<string>((resolve, reject) => {
      let received = '';
      const socket = connect(Number(port), '127.0.0.1', () => socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\nNot a header\r\n\r\n'));
      socket.on('data', (chunk) => (received += chunk.toString()));
      socket.on('close', () => resolve(received));
      socket.on('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    const text = await scrape(gateway);
    expect(sample(text, 'gateway_http_requests_total', { method: 'unknown', route: 'unmatched', status_code: '400' })).toBe(1);
  });

  it('counts a request whose body Node could not parse once, with its route and the status it was answered', async () => {
    const unmatched = { method: 'unknown', route: 'unmatched', status_code: '400' };
    const unmatchedBefore = sample(await scrape(gateway), 'gateway_http_requests_total', unmatched);
    const { key } = await gateway.workspace();
    // With a key, and without one, whose refusal is still being decided when the malformed chunk arrives.
    for (const [count, authorization] of [`Authorization: Bearer ${key}\r\n`, ''].entries()) {
      const { head } = await rawHttp(
        gateway.baseUrl,
        `POST /campaigns/duplicate HTTP/1.1\r\nHost: x\r\n${authorization}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n`,
      );
      expect(head).toMatch(/^HTTP\/1\.1 400 /);
      const counted = { method: 'POST', route: '/campaigns/duplicate', status_code: '400' };
      await waitFor(async () => sample(await scrape(gateway), 'gateway_http_requests_total', counted) === count + 1);
    }
    const text = await scrape(gateway);
    for (const status of ['401', '499']) expect(sample(text, 'gateway_http_requests_total', { method: 'POST', route: '/campaigns/duplicate', status_code: status })).toBeUndefined();
    expect(sample(text, 'gateway_http_requests_total', unmatched)).toBe(unmatchedBefore);
  });

  it('counts a request answered in full and the pipelined request after it that Node could not parse, each with its own status', async () => {
    const accepted = { method: 'POST', route: '/campaigns/duplicate', status_code: '202' };
    const unmatched = { method: 'unknown', route: 'unmatched', status_code: '400' };
    const before = await scrape(gateway);
    const answer = await pipelinedAfterADuplicate(gateway.baseUrl, await gateway.workspace('pipelining'), 'pipelined', 'GARBAGE\r\n\r\n');
    expect(answer).toMatch(/^HTTP\/1\.1 202 [\s\S]*HTTP\/1\.1 400 /);
    const text = await waitFor(async () => {
      const scraped = await scrape(gateway);
      return sample(scraped, 'gateway_http_requests_total', accepted) === (sample(before, 'gateway_http_requests_total', accepted) ?? 0) + 1 && scraped;
    });
    expect(sample(text, 'gateway_http_requests_total', unmatched)).toBe((sample(before, 'gateway_http_requests_total', unmatched) ?? 0) + 1);
    for (const status of ['400', '499']) expect(sample(text, 'gateway_http_requests_total', { ...accepted, status_code: status })).toBe(sample(before, 'gateway_http_requests_total', { ...accepted, status_code: status }));
  });

  it('names the version of the build and of Node', async () => {
    const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(sample(await scrape(gateway), 'gateway_build_info', { version, node: process.version })).toBe(1);
  });
});

describe('GET /metrics: event loop delay', () => {
  it('is a whole window for each of two scrapes at the same time, neither taking it from the other', async () => {
    const gateway = await startGateway({ WORKER_CONCURRENCY: '0' }, { eventLoopWindowMs: 200 });
    const lag = (text: string, name: string) => sample(text, `nodejs_eventloop_lag_${name}_seconds`)!;
    try {
      await waitFor(async () => lag(await scrape(gateway), 'max') > 0);
      for (let round = 0; round < 5; round += 1) {
        for (const text of await Promise.all([scrape(gateway), scrape(gateway)])) {
          expect(lag(text, 'min')).toBeGreaterThan(0);
          expect(lag(text, 'min')).toBeLessThanOrEqual(lag(text, 'p50'));
          expect(lag(text, 'p50')).toBeLessThanOrEqual(lag(text, 'p99'));
          expect(lag(text, 'p99')).toBeLessThanOrEqual(lag(text, 'max'));
        }
      }
    } finally {
      await gateway.close();
    }
  });
});

describe("the README's metrics table and alerts", () => {
  // A store with the embedded store's writer and PostgreSQL's pool, whose series only one of them has.
  const store = { observeCommits() {}, writesWaiting: () => 0, connections: () => ({ inUse: 0, idle: 0, awaited: 0 }), eventLockWrites: () => ({ waiting: 0, parked: 0 }) };
  const metrics = new GatewayMetrics({ store: store as never, clock: { now: () => new Date() }, downloadsInProgress: () => 0, logger: silent });
  metrics.close();
  const gatewayMetrics = [...metrics.registry.getMetricsAsArray(), ...readAtEachScrape(metrics)].filter((metric) => metric.name.startsWith('gateway_'));
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const section = (heading: string, next: string) => readme.slice(readme.indexOf(heading), readme.indexOf(next));

  it('names every metric of the gateway, and no other', () => {
    const table = section('### Metrics', '### Alerts and troubleshooting');
    const inReadme = new Set([...table.matchAll(/^\| `(gateway_\w+)` \|/gm)].map((match) => match[1]));
    expect([...inReadme].sort()).toEqual(gatewayMetrics.map((metric) => metric.name).sort());
  });

  it("queries in its alerts only the gateway's metrics and their labels", () => {
    // A histogram's series: its buckets carry `le` too.
    const series = new Map<string, readonly string[]>();
    for (const metric of gatewayMetrics) {
      const { labelNames = [] } = metric as unknown as { labelNames?: readonly string[] };
      if (metric instanceof Histogram) {
        series.set(`${metric.name}_bucket`, [...labelNames, 'le']);
        for (const suffix of ['_sum', '_count']) series.set(`${metric.name}${suffix}`, labelNames);
      } else {
        series.set(metric.name, labelNames);
      }
    }
    const rows = section('### Alerts and troubleshooting', '### Logs')
      .split('\n')
      .filter((line) => line.startsWith('| ') && !line.startsWith('| alert |'));
    const queries = rows.map((row) => /^\| [^|]+ \| `((?:[^`\\]|\\.)+)`/.exec(row)?.[1].replace(/\\\|/g, '|'));
    expect(queries.length).toBeGreaterThanOrEqual(8);
    expect(queries).not.toContain(undefined);
    const used = queries.flatMap((query) => [...query!.matchAll(/\b(gateway_\w+)(?:\{([^}]*)\})?/g)]);
    expect(used.length).toBeGreaterThanOrEqual(queries.length);
    for (const [, name, selector] of used) {
      expect(series.has(name), name).toBe(true);
      for (const [, label] of (selector ?? '').matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)) expect(series.get(name), `${name}{${label}}`).toContain(label);
    }
  });
});

/**
 * The series kept apart, in the registries of what each scrape reads from the store and the pacing store, the clock
 * offset and the upstream circuit.
 */
function readAtEachScrape(metrics: GatewayMetrics): { name: string }[] {
  const registries = metrics as unknown as Record<'queueRegistry' | 'upstreamRegistry' | 'clockRegistry' | 'circuitRegistry', GatewayMetrics['registry']>;
  return [registries.queueRegistry, registries.upstreamRegistry, registries.clockRegistry, registries.circuitRegistry].flatMap((registry) =>
    registry.getMetricsAsArray(),
  );
}

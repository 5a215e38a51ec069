import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RateLimiterMemory, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { memoryLimiter, postgresLimiters, sqliteLimiters, type LimiterSettings } from '../../src/adapters/limiter-backends.js';
import { RedisLimiters } from '../../src/adapters/redis/limiters.js';
import type { SqliteStore } from '../../src/adapters/sqlite/store.js';
import { UpstreamPacer } from '../../src/adapters/upstream-pacer.js';
import type { DuplicationJob } from '../../src/domain/types.js';
import { ManualClock } from '../support/clock.js';
import { startFakeBraze, type FakeBraze, type FakeReply } from '../support/fake-braze.js';
import { startFullListener } from '../support/full-listener.js';
import { bearer, graphql, http, json, metricSample, recordingLogger, startGateway, waitFor, type StartOptions } from '../support/gateway.js';
import { postgres, sqlite } from '../support/stores.js';

// Mixed case, so that an echo of it lower-cased or upper-cased differs from it, and URL-encoded it differs too.
const UPSTREAM_KEY = 'Braze/Upstream+Key=5F1E7C2A9D';
const DUPLICATE = 'POST /campaigns/duplicate';
const PACER_KEY = 'duplicate';
/** The longest a 429's time is followed, with the gateway's window at most an hour. */
const HOUR_MS = 60 * 60_000;

/** The settings of a gateway in upstream mode, calling Braze at `url`. */
const upstreamEnv = (url: string) => ({ UPSTREAM_URL: url, UPSTREAM_API_KEY: UPSTREAM_KEY, UPSTREAM_TIMEOUT_MS: '300', JOB_MAX_ATTEMPTS: '3' });

/** A gateway in upstream mode on a manual clock, a fake Braze, and what the tests need to drive them. */
async function upstreamGateway(env: Record<string, string> = {}, limiter: RateLimiterAbstract = new RateLimiterMemory({ points: 100, duration: 60 }), options: StartOptions = {}) {
  const fake = await startFakeBraze(UPSTREAM_KEY);
  const clock = new ManualClock();
  const { logger, lines } = recordingLogger();
  const gateway = await startGateway(
    { ...upstreamEnv(fake.url), ...env },
    { clock, logger, upstreamLimiter: limiter },
    options,
  );
  const ws = await gateway.workspace();
  return { fake, clock, lines, gateway, ws, limiter };
}

type Harness = Awaited<ReturnType<typeof upstreamGateway>>;

let names = 0;

async function enqueue(h: Harness, body: Record<string, unknown> = {}): Promise<{ id: string; name: string }> {
  const name = `Copy ${++names}`;
  const response = await http(h.gateway.baseUrl, 'POST', '/campaigns/duplicate', {
    headers: { ...json, ...bearer(h.ws.key) },
    body: JSON.stringify({ campaign_id: 'cmp-0001', name, ...body }),
  });
  expect(response.status).toBe(202);
  return { id: response.body.job_id, name };
}

const getJob = async (h: Harness, id: string) => (await h.gateway.app.store.getJob(h.ws.workspace.id, id)) as DuplicationJob;

const until = (h: Harness, id: string, predicate: (job: DuplicationJob) => boolean) =>
  waitFor(async () => {
    const job = await getJob(h, id);
    return predicate(job) && job;
  });

const retried = (attempts: number) => (job: DuplicationJob) => job.status === 'PENDING' && job.attempts === attempts;
const finished = (job: DuplicationJob) => job.status === 'SUCCEEDED' || job.status === 'FAILED';

/** Moves the clock to when the job is due and wakes the worker. */
function advanceTo(h: Harness, at: Date): void {
  h.clock.advance(Math.max(0, at.getTime() - h.clock.now().getTime()));
  h.gateway.app.worker.notify();
}

/** The calls to POST /campaigns/duplicate timed in the metrics, by outcome. */
async function duplicateCalls(h: Harness, ...outcomes: string[]): Promise<number[]> {
  const text = (await http(h.gateway.baseUrl, 'GET', '/metrics')).text;
  return outcomes.map((outcome) => metricSample(text, 'gateway_upstream_request_duration_seconds_count', { endpoint: '/campaigns/duplicate', outcome }) ?? 0);
}

const delayOf = (h: Harness, job: DuplicationJob) => job.runAt.getTime() - h.clock.now().getTime();
const requestsFor = (h: Harness, name: string) => h.fake.requestsTo(DUPLICATE).filter((request) => JSON.parse(request.body).name === name);
/** The Retry-After a REST client following the job is told, which a GraphQL client is told as pollAfterSeconds. */
async function pollAfter(h: Harness, id: string) {
  const retryAfter = (await http(h.gateway.baseUrl, 'GET', `/duplication_jobs/${id}`, { headers: bearer(h.ws.key) })).headers['retry-after'];
  const job = await graphql(h.gateway.baseUrl, h.ws.key, 'query($id: ID!) { duplicationJob(id: $id) { pollAfterSeconds } }', { id });
  expect(job.body.data.duplicationJob.pollAfterSeconds).toBe(retryAfter === undefined ? null : Number(retryAfter));
  return retryAfter;
}
const secondsUntil = (h: Harness, job: DuplicationJob) => String(Math.ceil(delayOf(h, job) / 1000));
/** Text without its spaces, lower-cased: how a leak check reads it, so that a key spaced out is still found. */
const squeezed = (text: string) => text.replace(/\s+/g, '').toLowerCase();
/** Every run of 12 characters of the text, as `squeezed` reads it. */
const runsOf = (text: string) => Array.from({ length: Math.max(0, squeezed(text).length - 11) }, (_, index) => squeezed(text).slice(index, index + 12));
const eventsOf = (h: Harness, jobId: string) => h.gateway.app.store.listEvents(h.ws.workspace.id, { jobId }, { first: 50 });

describe('upstream mode: what each upstream answer does to a job', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await upstreamGateway();
  });
  afterAll(async () => {
    await h.gateway.close();
    await h.fake.close();
  });
  afterEach(async () => {
    // A 429 pauses the whole gateway's pacing; each test starts with the upstream's window open again.
    await h.limiter.delete(PACER_KEY);
  });

  it("sends Braze's exact request with the upstream key, and a 202 succeeds on the first attempt", async () => {
    const { id, name } = await enqueue(h, { description: 'A copy', tag_names: ['promo', 'email'] });
    const job = await until(h, id, finished);
    expect(job).toMatchObject({ status: 'SUCCEEDED', attempts: 1, resultCampaignId: null, error: null });
    const [request] = requestsFor(h, name);
    expect(request.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
    expect(request.headers['content-type']).toBe('application/json');
    expect(JSON.parse(request.body)).toStrictEqual({ campaign_id: 'cmp-0001', name, description: 'A copy', tag_names: ['promo', 'email'] });
    expect(request.body).not.toContain(h.ws.key);
    const events = await eventsOf(h, id);
    expect(events.map((event) => event.type)).toEqual(['CAMPAIGN_DUPLICATED', 'CAMPAIGN_DUPLICATION_REQUESTED']);
    expect(events[0].details).toMatchObject({ upstreamStatus: 202, upstreamMessage: 'success', attempts: 1 });
    expect(events[0].details).not.toHaveProperty('upstreamErrors');
  });

  it('leaves optional fields out of the upstream body when the caller left them out', async () => {
    const { id, name } = await enqueue(h);
    await until(h, id, finished);
    expect(JSON.parse(requestsFor(h, name)[0].body)).toStrictEqual({ campaign_id: 'cmp-0001', name });
  });

  // A 2xx means Braze acted: a body that cannot be read loses only what it said, so the job succeeds, with a warning.
  it.each<[string, FakeReply, string | null, string | null]>([
    ['a 201 that names the copy', { status: 201, json: { message: 'success', new_campaign_id: 'cmp-copy-1' } }, 'cmp-copy-1', null],
    ['a 201 naming the copy with an implausible id', { status: 201, json: { message: 'success', new_campaign_id: `cmp\u0000${'x'.repeat(200)}` } }, null, null],
    ['a 202 with a plain-text body', { status: 202, raw: 'Accepted', headers: { 'content-type': 'text/plain' } }, null, 'is not JSON'],
    ['a 202 with broken JSON', { status: 202, raw: '{"message": "succ', headers: { 'content-type': 'application/json' } }, null, 'is not JSON'],
    ['a 202 whose body never ends', { status: 202, json: { message: 'success' }, stallBody: true }, null, 'could not be read'],
    ['a 202 whose connection is reset mid-body', { status: 202, json: { message: 'success', new_campaign_id: 'cmp-copy-2' }, resetBody: true }, null, 'could not be read'],
    ['a 202 whose body is larger than any answer of Braze', { status: 202, raw: `{"message":"${'x'.repeat(2 * 1024 * 1024)}"}`, headers: { 'content-type': 'application/json' } }, null, 'could not be read'],
  ])('%s succeeds on the first attempt', async (_, reply, resultCampaignId, unread) => {
    h.fake.script(DUPLICATE, reply);
    const { id, name } = await enqueue(h);
    const job = await until(h, id, finished);
    expect(job).toMatchObject({ status: 'SUCCEEDED', attempts: 1, resultCampaignId, error: null });
    expect(requestsFor(h, name)).toHaveLength(1);
    const warnings = h.lines.map((line) => JSON.parse(line)).filter((line) => line.jobId === id && line.level === 40);
    expect(warnings.map((line) => line.msg)).toEqual(unread ? [expect.stringMatching(new RegExp(`^the upstream answered 202 with a body that ${unread}: `))] : []);
  });

  it.each<[number, FakeReply, string, string]>([
    [400, { status: 400, json: { message: 'Invalid campaign_id' } }, 'UPSTREAM_BAD_REQUEST', 'The upstream answered 400: Invalid campaign_id'],
    [401, { status: 401, json: { message: 'Invalid API key' } }, 'UPSTREAM_UNAUTHORIZED', 'The upstream answered 401: Invalid API key'],
    [403, { status: 403, json: { message: 'Access Denied', errors: ['missing campaigns.duplicate'] } }, 'UPSTREAM_FORBIDDEN', 'The upstream answered 403: Access Denied; missing campaigns.duplicate'],
    [404, { status: 404, json: { message: 'Not Found' } }, 'UPSTREAM_NOT_FOUND', 'The upstream answered 404: Not Found'],
    // Not Braze's JSON: named by its content type, with one bounded line of its text or a page's title, never markup.
    [400, { status: 400, raw: '<html><body>Bad Request</body></html>' }, 'UPSTREAM_BAD_REQUEST', 'The upstream answered 400 with an HTML page (text/html) without a title'],
    [
      403,
      {
        status: 403,
        raw: '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><TITLE>\n  Attention Required! | Cloudflare\n</TITLE></head><body><h1>Sorry, you have been blocked</h1></body></html>',
      },
      'UPSTREAM_FORBIDDEN',
      'The upstream answered 403 with an HTML page (text/html) titled "Attention Required! | Cloudflare"',
    ],
    [
      403,
      { status: 403, raw: `<html><head><title>Blocked key ${UPSTREAM_KEY.slice(0, 12)}</title></head></html>`, headers: { 'content-type': '' } },
      'UPSTREAM_FORBIDDEN',
      'The upstream answered 403 with an HTML page (no content type) titled "Blocked key [redacted]"',
    ],
    [400, { status: 400, raw: 'campaign_id is invalid', headers: { 'content-type': 'Text/Plain; charset=utf-8' } }, 'UPSTREAM_BAD_REQUEST', 'The upstream answered 400 (text/plain): campaign_id is invalid'],
    [
      400,
      { status: 400, raw: `line one\r\n\tline two\u0007 ${UPSTREAM_KEY.toLowerCase()} ${'x'.repeat(300)}`, headers: { 'content-type': 'text/plain' } },
      'UPSTREAM_BAD_REQUEST',
      `The upstream answered 400 (text/plain): ${`line one line two [redacted] ${'x'.repeat(300)}`.slice(0, 200)}…`,
    ],
    [404, { status: 404, json: { error: 'no such route' } }, 'UPSTREAM_NOT_FOUND', 'The upstream answered 404 (application/json): {"error":"no such route"}'],
    [400, { status: 400, raw: '', headers: { 'content-type': 'text/plain' } }, 'UPSTREAM_BAD_REQUEST', 'The upstream answered 400 with an empty body (text/plain)'],
    [415, { status: 415, raw: '\u0000\u0001\u0002', headers: { 'content-type': 'application/octet-stream' } }, 'UPSTREAM_REJECTED', 'The upstream answered 415 with a body of application/octet-stream'],
    [
      200,
      { status: 200, raw: '<!doctype html><html><body>Sign in</body></html>' },
      'UPSTREAM_NOT_API',
      "The upstream answered 200 with an HTML page, not Braze's API",
    ],
    [
      202,
      { status: 202, raw: '<html><body>Queued</body></html>', headers: { 'content-type': 'Text/HTML; charset=UTF-8' } },
      'UPSTREAM_NOT_API',
      "The upstream answered 202 with an HTML page, not Braze's API",
    ],
    [
      200,
      { status: 200, raw: '\n<!DOCTYPE html><html><head><title>Sign in</title></head></html>', headers: { 'content-type': '' } },
      'UPSTREAM_NOT_API',
      "The upstream answered 200 with an HTML page, not Braze's API",
    ],
    // Not followed, so the key goes nowhere else; named by origin and path, never the query that may hold a token.
    [
      301,
      { status: 301, raw: '', headers: { location: 'https://rest.example.test/campaigns/duplicate?token=s3cr3t#frag' } },
      'UPSTREAM_REJECTED',
      'The upstream answered 301, redirecting to https://rest.example.test/campaigns/duplicate: set UPSTREAM_URL to https://rest.example.test (redirects are not followed, so that the key goes nowhere else)',
    ],
    [
      302,
      { status: 302, raw: '', headers: { location: '/sso/login?next=%2Fcampaigns' } },
      'UPSTREAM_REJECTED',
      'The upstream answered 302, redirecting to http://127.0.0.1:PORT/sso/login: redirects are not followed; check UPSTREAM_URL',
    ],
    [307, { status: 307, raw: '' }, 'UPSTREAM_REJECTED', 'The upstream answered 307, a redirect without a usable Location: redirects are not followed; check UPSTREAM_URL'],
  ])('%i fails at once with the upstream message in the error and the event', async (_, reply, code, pattern) => {
    const message = pattern.replace('http://127.0.0.1:PORT', h.fake.url);
    h.fake.script(DUPLICATE, reply);
    const { id, name } = await enqueue(h);
    const job = await until(h, id, finished);
    expect(job).toMatchObject({ status: 'FAILED', attempts: 1, error: { code, message } });
    expect(requestsFor(h, name)).toHaveLength(1);
    const [outcome] = await eventsOf(h, id);
    expect(outcome.type).toBe('CAMPAIGN_DUPLICATION_FAILED');
    // Refused at its only attempt: Braze made nothing, and the event says so.
    expect(outcome.details).toMatchObject({ attempts: 1, error: { code, message }, upstreamMayHaveActed: false });
  });

  it('retries 500, 502 and 503 with exponential, jittered backoff, then fails with the last error', async () => {
    h.fake.script(DUPLICATE, { status: 500, json: { message: 'Internal Server Error' } }, { status: 502, raw: '<html>Bad Gateway</html>' }, { status: 503, json: { message: 'Service Unavailable' } });
    const { id, name } = await enqueue(h);

    const first = await until(h, id, retried(1));
    expect(first.error).toEqual({ code: 'UPSTREAM_UNAVAILABLE', message: 'The upstream answered 500: Internal Server Error' });
    expect(await pollAfter(h, id)).toBe(secondsUntil(h, first));
    // Base 1 s, doubled per attempt, jittered into the upper half.
    expect(delayOf(h, first)).toBeGreaterThanOrEqual(500);
    expect(delayOf(h, first)).toBeLessThanOrEqual(1000);
    advanceTo(h, first.runAt);

    const second = await until(h, id, retried(2));
    expect(second.error).toEqual({ code: 'UPSTREAM_UNAVAILABLE', message: 'The upstream answered 502 with an HTML page (text/html) without a title' });
    expect(delayOf(h, second)).toBeGreaterThanOrEqual(1000);
    expect(delayOf(h, second)).toBeLessThanOrEqual(2000);
    advanceTo(h, second.runAt);

    const last = await until(h, id, finished);
    expect(last).toMatchObject({ status: 'FAILED', attempts: 3, error: { code: 'UPSTREAM_UNAVAILABLE', message: 'The upstream answered 503: Service Unavailable' } });
    expect(await pollAfter(h, id)).toBeUndefined();
    expect(requestsFor(h, name)).toHaveLength(3);
    const events = await eventsOf(h, id);
    expect(events.map((event) => event.type)).toEqual(['CAMPAIGN_DUPLICATION_FAILED', 'CAMPAIGN_DUPLICATION_REQUESTED']);
    // A 5xx may be a proxy's after Braze acted (502, 504): the failure cannot say that nothing was made.
    expect(events[0].details).toMatchObject({ attempts: 3, upstreamMayHaveActed: true });
  });

  it('a job whose every call timed out fails saying Braze may have acted: each call reached it', async () => {
    const slow = { status: 202, json: { message: 'success' }, delayMs: 10_000 };
    h.fake.script(DUPLICATE, slow, slow, slow);
    const { id, name } = await enqueue(h);
    for (let attempt = 1; attempt < 3; attempt++) advanceTo(h, (await until(h, id, retried(attempt))).runAt);
    expect(await until(h, id, finished)).toMatchObject({ status: 'FAILED', attempts: 3, error: { code: 'UPSTREAM_TIMEOUT' } });
    expect(requestsFor(h, name)).toHaveLength(3);
    const [outcome] = await eventsOf(h, id);
    expect(outcome.details).toMatchObject({ attempts: 3, error: { code: 'UPSTREAM_TIMEOUT' }, upstreamMayHaveActed: true });
  });

  // Header values carry whole seconds; `at` is the first whole second at least `seconds` from now. Every time here
  // is longer than the gateway's own window (60 s), so Braze's is the one the job waits for.
  const at = (now: Date, seconds: number) => Math.ceil(now.getTime() / 1000) + seconds;
  it.each<[string, (now: Date) => Record<string, string>, (now: Date) => number]>([
    ['Retry-After in seconds', () => ({ 'retry-after': '70' }), () => 70_000],
    ['Retry-After as an HTTP date', (now) => ({ 'retry-after': new Date(at(now, 72) * 1000).toUTCString() }), (now) => at(now, 72) * 1000 - now.getTime()],
    [
      'X-RateLimit-Reset (epoch seconds)',
      (now) => ({ 'x-ratelimit-limit': '100', 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(at(now, 90)) }),
      (now) => at(now, 90) * 1000 - now.getTime(),
    ],
  ])('429 with %s past the window: the job waits that long, and every other job waits too', async (_, headers, expectedDelay) => {
    const now = h.clock.now();
    h.fake.script(DUPLICATE, { status: 429, json: { message: 'Rate limit exceeded' }, headers: headers(now) });
    const limited = await enqueue(h);
    const job = await until(h, limited.id, retried(1));
    expect(job.error).toEqual({ code: 'UPSTREAM_RATE_LIMITED', message: 'The upstream answered 429: Rate limit exceeded' });
    // The gateway holds back in whole seconds: the time Braze gave, rounded up.
    expect(delayOf(h, job)).toBeGreaterThanOrEqual(expectedDelay(now));
    expect(delayOf(h, job)).toBeLessThan(expectedDelay(now) + 1000);
    // A REST client following the job is told to come back when it runs again, not every second.
    expect(await pollAfter(h, limited.id)).toBe(secondsUntil(h, job));

    // The upstream's window is spent for everyone: a new job is held back without a call and without an attempt.
    const other = await enqueue(h);
    const held = await until(h, other.id, (candidate) => candidate.status === 'PENDING' && candidate.runAt > candidate.createdAt);
    expect(held.attempts).toBe(0);
    expect(requestsFor(h, other.name)).toHaveLength(0);
    expect(await pollAfter(h, other.id)).toBe(secondsUntil(h, held));

    await h.limiter.delete(PACER_KEY); // the upstream's window has passed
    advanceTo(h, new Date(Math.max(job.runAt.getTime(), held.runAt.getTime())));
    expect(await until(h, limited.id, finished)).toMatchObject({ status: 'SUCCEEDED', attempts: 2 });
    expect(await until(h, other.id, finished)).toMatchObject({ status: 'SUCCEEDED', attempts: 1 });
    expect(requestsFor(h, limited.name)).toHaveLength(2);
  });

  /** The warning a clamped upstream time leaves, once per answer: naming what the upstream asked for. */
  const clampWarnings = (h: Harness, jobId: string) =>
    h.lines.map((line) => JSON.parse(line)).filter((line) => line.jobId === jobId && /asked to wait longer than the gateway waits/.test(line.msg));

  it.each<[string, (now: Date) => Record<string, string>]>([
    ['Retry-After as an HTTP date 10 years ahead', (now) => ({ 'retry-after': new Date(at(now, 10 * 365 * 86_400) * 1000).toUTCString() })],
    ['Retry-After as a number past any clock', () => ({ 'retry-after': '99999999999999999999999' })],
    ['X-RateLimit-Reset 10 years ahead', (now) => ({ 'x-ratelimit-reset': String(at(now, 10 * 365 * 86_400)) })],
  ])('429 with %s: every job is held an hour at most, not as long as the upstream asked, and the log says what it asked', async (_, headers) => {
    const now = h.clock.now();
    const sent = headers(now);
    h.fake.script(DUPLICATE, { status: 429, json: { message: 'Rate limit exceeded' }, headers: sent });
    const limited = await enqueue(h);
    const job = await until(h, limited.id, retried(1));
    expect(delayOf(h, job)).toBe(60 * 60_000);
    expect(await pollAfter(h, limited.id)).toBe('3600');
    // The shared pause every instance reads holds no longer either.
    expect((await h.limiter.get(PACER_KEY))!.msBeforeNext).toBeLessThanOrEqual(60 * 60_000);
    const [warning, ...more] = clampWarnings(h, limited.id);
    expect(more).toEqual([]);
    expect(warning).toMatchObject({
      level: 40,
      status: 429,
      asked: sent['retry-after'] ? { retryAfter: sent['retry-after'] } : { rateLimitReset: sent['x-ratelimit-reset'] },
      waitMs: 60 * 60_000,
    });
    expect(warning.askedMs).toBeGreaterThan(365 * 86_400_000);

    await h.limiter.delete(PACER_KEY);
    advanceTo(h, job.runAt);
    expect(await until(h, limited.id, finished)).toMatchObject({ status: 'SUCCEEDED', attempts: 2 });
  });

  it("503 with a Retry-After of 10 years: the job's retry waits the backoff's longest (5 min), and JOB_MAX_ATTEMPTS still ends it", async () => {
    const answer = { status: 503, json: { message: 'Service Unavailable' }, headers: { 'retry-after': '315360000' } };
    h.fake.script(DUPLICATE, answer, answer, answer);
    const { id, name } = await enqueue(h);

    const first = await until(h, id, retried(1));
    expect(delayOf(h, first)).toBe(5 * 60_000);
    expect(await pollAfter(h, id)).toBe('300');
    advanceTo(h, first.runAt);
    const second = await until(h, id, retried(2));
    expect(delayOf(h, second)).toBe(5 * 60_000);
    advanceTo(h, second.runAt);

    expect(await until(h, id, finished)).toMatchObject({ status: 'FAILED', attempts: 3, error: { code: 'UPSTREAM_UNAVAILABLE' } });
    expect(requestsFor(h, name)).toHaveLength(3);
    const warnings = clampWarnings(h, id);
    expect(warnings).toHaveLength(3);
    expect(warnings[0]).toMatchObject({ status: 503, asked: { retryAfter: '315360000' }, askedMs: 315_360_000_000, waitMs: 5 * 60_000 });
  });

  it("429 with a time shorter than the gateway's window: the job is due when the window ends, its first poll says so, and it is not tried before", async () => {
    h.fake.script(DUPLICATE, { status: 429, json: { message: 'Rate limit exceeded' }, headers: { 'retry-after': '3' } });
    const limited = await enqueue(h);
    const job = await until(h, limited.id, retried(1));
    expect(job.error).toEqual({ code: 'UPSTREAM_RATE_LIMITED', message: 'The upstream answered 429: Rate limit exceeded' });

    // The gateway holds back to the end of the window the job's call opened; the job is due no earlier.
    const hold = await h.limiter.get(PACER_KEY);
    expect(hold?.consumedPoints).toBeGreaterThan(h.limiter.points);
    expect(delayOf(h, job)).toBeGreaterThan(3000);
    expect(delayOf(h, job)).toBeGreaterThanOrEqual(hold?.msBeforeNext ?? Infinity);
    expect(delayOf(h, job)).toBeLessThanOrEqual(h.limiter.duration * 1000);
    expect(await pollAfter(h, limited.id)).toBe(secondsUntil(h, job));

    // Just before the job is due the worker claims what is due (a job enqueued then, which the hold defers) and
    // leaves this one alone: not claimed, not deferred, not sent.
    advanceTo(h, new Date(job.runAt.getTime() - 1));
    const sentinel = await enqueue(h);
    const deferred = await until(h, sentinel.id, (candidate) => candidate.status === 'PENDING' && candidate.runAt > candidate.createdAt);
    expect(await getJob(h, limited.id)).toStrictEqual(job);
    expect(requestsFor(h, limited.name)).toHaveLength(1);

    await h.limiter.delete(PACER_KEY); // the window has passed
    advanceTo(h, new Date(Math.max(job.runAt.getTime(), deferred.runAt.getTime())));
    expect(await until(h, limited.id, finished)).toMatchObject({ status: 'SUCCEEDED', attempts: 2 });
    expect(await until(h, sentinel.id, finished)).toMatchObject({ status: 'SUCCEEDED', attempts: 1 });
    expect(requestsFor(h, limited.name)).toHaveLength(2);
  });

  it('429 with no time: the job and every other job wait until the gateway\'s own window ends, not the short backoff', async () => {
    h.fake.script(DUPLICATE, { status: 429, json: { message: 'Rate limit exceeded' }, headers: {} });
    const limited = await enqueue(h);
    const job = await until(h, limited.id, retried(1));
    expect(job.error).toEqual({ code: 'UPSTREAM_RATE_LIMITED', message: 'The upstream answered 429: Rate limit exceeded' });

    // The window this job opened is held to its end, and the job waits at least as long as the hold.
    const hold = await h.limiter.get(PACER_KEY);
    expect(hold?.consumedPoints).toBeGreaterThan(h.limiter.points);
    expect(delayOf(h, job)).toBeGreaterThanOrEqual(hold?.msBeforeNext ?? Infinity);
    expect(delayOf(h, job)).toBeLessThanOrEqual(h.limiter.duration * 1000);

    const other = await enqueue(h);
    const held = await until(h, other.id, (candidate) => candidate.status === 'PENDING' && candidate.runAt > candidate.createdAt);
    expect(held.attempts).toBe(0);
    expect(requestsFor(h, other.name)).toHaveLength(0);

    await h.limiter.delete(PACER_KEY); // the window has passed
    advanceTo(h, new Date(Math.max(job.runAt.getTime(), held.runAt.getTime())));
    expect(await until(h, limited.id, finished)).toMatchObject({ status: 'SUCCEEDED', attempts: 2 });
    expect(await until(h, other.id, finished)).toMatchObject({ status: 'SUCCEEDED', attempts: 1 });
    expect(requestsFor(h, limited.name)).toHaveLength(2);
  });

  it.each<[string, FakeReply, string]>([
    ['an answer slower than the timeout', { status: 202, json: { message: 'success' }, delayMs: 10_000 }, 'UPSTREAM_TIMEOUT'],
    ['an upstream that never answers', { hang: true }, 'UPSTREAM_TIMEOUT'],
    ['a 500 whose body never ends', { status: 500, raw: '<html>', stallBody: true }, 'UPSTREAM_UNAVAILABLE'],
    // Never idle long enough for a per-read timeout: only the deadline on the whole call ends it.
    ['a 500 whose body trickles without end', { status: 500, raw: '<html>', trickleMs: 100 }, 'UPSTREAM_UNAVAILABLE'],
    ['a dropped connection', { drop: true }, 'UPSTREAM_UNREACHABLE'],
    ['a 408 Request Timeout', { status: 408, json: { message: 'Request Timeout' } }, 'UPSTREAM_UNAVAILABLE'],
  ])('%s is retried, and never holds the worker past the timeout', async (_, reply, code) => {
    h.fake.script(DUPLICATE, reply);
    const { id, name } = await enqueue(h);
    const job = await until(h, id, (current) => retried(1)(current) || finished(current));
    expect(job).toMatchObject({ status: 'PENDING', attempts: 1, error: { code } });
    advanceTo(h, job.runAt);
    expect(await until(h, id, finished)).toMatchObject({ status: 'SUCCEEDED', attempts: 2, error: null });
    expect(requestsFor(h, name)).toHaveLength(2);
  });

  it('never lets the upstream key into a job, an event, a response or a log, even when the upstream echoes it', async () => {
    h.fake.script(DUPLICATE, { status: 401, json: { message: `Invalid API key: Bearer ${UPSTREAM_KEY}` } });
    const { id } = await enqueue(h);
    const job = await until(h, id, finished);
    expect(job.error).toEqual({ code: 'UPSTREAM_UNAUTHORIZED', message: 'The upstream answered 401: Invalid API key: Bearer [redacted]' });
    const status = await http(h.gateway.baseUrl, 'GET', `/duplication_jobs/${id}`, { headers: bearer(h.ws.key) });
    expect(status.body.error.message).toContain('[redacted]');
    const everything = [status.text, JSON.stringify(await eventsOf(h, id)), ...h.lines].join('\n');
    expect(h.lines.some((line) => line.includes('upstream call failed'))).toBe(true);
    expect(everything).not.toContain(UPSTREAM_KEY);
  });

  it.each<[string, (key: string) => string]>([
    ['lower-cased', (key) => key.toLowerCase()],
    ['upper-cased', (key) => key.toUpperCase()],
    ['as its first 16 characters', (key) => key.slice(0, 16)],
    ['as its first 8 characters, in another case', (key) => key.slice(0, 8).toUpperCase()],
    ['without its first character', (key) => key.slice(1)],
    ['as 12 characters from its middle, in another case', (key) => key.slice(10, 22).toLowerCase()],
    ['with its characters spaced out', (key) => [...key].join(' ')],
    ['in base64', (key) => Buffer.from(key).toString('base64')],
    ['in URL-safe base64', (key) => Buffer.from(key).toString('base64url')],
    ['URL-encoded', (key) => encodeURIComponent(key)],
    ['form-encoded, with lower-case escapes', (key) => new URLSearchParams({ k: key }).toString().slice(2).toLowerCase()],
  ])('hides the upstream key echoed %s from the job error, the event and the log', async (_, shape) => {
    const echoed = shape(UPSTREAM_KEY);
    h.fake.script(DUPLICATE, { status: 400, json: { message: `Invalid API key ${echoed}; sent as Bearer ${echoed}` } });
    const { id } = await enqueue(h);
    const message = 'The upstream answered 400: Invalid API key [redacted]; sent as Bearer [redacted]';
    expect((await until(h, id, finished)).error).toEqual({ code: 'UPSTREAM_BAD_REQUEST', message });
    const [outcome] = await eventsOf(h, id);
    expect(outcome.details).toMatchObject({ error: { code: 'UPSTREAM_BAD_REQUEST', message } });
    // The worker logs the job's end once its outcome is committed, so a poll can see the job finished first.
    await waitFor(async () => h.lines.some((line) => line.includes(id) && JSON.parse(line).msg === 'job finished'));
    const logged = h.lines.filter((line) => line.includes(id)).map((line) => JSON.parse(line));
    expect(logged.filter((line) => line.msg === 'upstream call failed' || line.msg === 'job finished').map((line) => line.error.message)).toEqual([message, message]);
    const everything = [JSON.stringify(outcome), ...h.lines].join('\n').toLowerCase();
    expect(everything).not.toContain(UPSTREAM_KEY.slice(0, 8).toLowerCase());
    expect(runsOf(echoed).filter((run) => squeezed(everything).includes(run))).toEqual([]);
  });

  it('hides the upstream key echoed inside other base64 (Basic credentials), but for the characters its neighbours share', async () => {
    const credentials = Buffer.from(`gateway:${UPSTREAM_KEY}`).toString('base64');
    h.fake.script(DUPLICATE, { status: 400, json: { message: `Invalid credentials Basic ${credentials}` } });
    const { id } = await enqueue(h);
    const { error } = await until(h, id, finished);
    expect(error?.message).toMatch(/^The upstream answered 400: Invalid credentials Basic \S{1,12}\[redacted\]\S{0,3}$/);
    const everything = [JSON.stringify(await eventsOf(h, id)), ...h.lines].join('\n').toLowerCase();
    expect(runsOf(credentials.slice(12)).filter((run) => squeezed(everything).includes(run))).toEqual([]);
  });

  it.each([
    ["fewer than 8 of the key's first characters", UPSTREAM_KEY.slice(0, 7)],
    ['fewer than 12 characters from its middle', UPSTREAM_KEY.slice(12, 23)],
  ])('keeps a run of %s: text only partly like the key is not redacted', async (_, part) => {
    h.fake.script(DUPLICATE, { status: 400, json: { message: `Unknown client ${part}` } });
    const { id } = await enqueue(h);
    expect((await until(h, id, finished)).error).toEqual({ code: 'UPSTREAM_BAD_REQUEST', message: `The upstream answered 400: Unknown client ${part}` });
  });

  it('keeps a success message only as safe text: no echoed key, no control characters, bounded', async () => {
    h.fake.script(DUPLICATE, { status: 201, json: { message: `success; received Authorization: Bearer ${UPSTREAM_KEY}\u0000\n${'x'.repeat(2000)}` } });
    const { id } = await enqueue(h);
    expect(await until(h, id, finished)).toMatchObject({ status: 'SUCCEEDED' });
    const events = JSON.stringify(await eventsOf(h, id));
    expect(events).toContain('success; received Authorization: Bearer [redacted] x');
    expect(events).not.toContain(UPSTREAM_KEY);
    expect(events).not.toContain('x'.repeat(600));
  });

  // Braze may send non-fatal errors with a success; an upstream may send a great many, of any kind.
  const manyErrors = [
    'tag_names: unknown tag vip, ignored',
    { type: 'invalid_tag', input_array: 'tag_names', index: 1 },
    42,
    null,
    '  ',
    `received\u0000\nBearer ${UPSTREAM_KEY}`,
    'x'.repeat(1_000_000),
  ];
  const keptErrors = 'tag_names: unknown tag vip, ignored; {"type":"invalid_tag","input_array":"tag_names","index":1}; 42; received Bearer [redacted]; ';
  const success = (errors: string) => `{"message":"success","errors":${errors}}`;
  it.each<[string, string, string | undefined]>([
    ['of every kind, near the largest body read', success(JSON.stringify(manyErrors)), `${keptErrors}${'x'.repeat(500 - keptErrors.length)}…`],
    ['as one string', success('"description: too long, cut"'), 'description: too long, cut'],
    ['with one nested too deeply to write out', success(`[${'['.repeat(300_000)}${']'.repeat(300_000)}, "name: trimmed"]`), 'name: trimmed'],
    ['as an empty list', success('[]'), undefined],
  ])('keeps the non-fatal errors of a success, sent %s, in its event as safe text: no echoed key, no control characters, bounded', async (_, body, kept) => {
    h.fake.script(DUPLICATE, { status: 201, raw: body, headers: { 'content-type': 'application/json' } });
    const { id } = await enqueue(h);
    expect(await until(h, id, finished)).toMatchObject({ status: 'SUCCEEDED', attempts: 1, error: null });
    const events = await eventsOf(h, id);
    expect(events[0].type).toBe('CAMPAIGN_DUPLICATED');
    expect(events[0].details).toMatchObject({ upstreamStatus: 201, upstreamMessage: 'success' });
    expect(events[0].details.upstreamErrors).toBe(kept);
    expect(JSON.stringify(events)).not.toContain(UPSTREAM_KEY);
  });

  it.each<[string, Record<string, unknown>]>([
    ['names the copy', { new_campaign_id: UPSTREAM_KEY }],
    ['echoes a campaign id', { campaign_id: `cmp-${UPSTREAM_KEY}` }],
  ])('keeps no copy id that holds the upstream key when the upstream %s with it', async (_, id) => {
    h.fake.script(DUPLICATE, { status: 201, json: { message: `accepted for ${UPSTREAM_KEY}`, ...id } });
    const { id: jobId } = await enqueue(h);
    expect(await until(h, jobId, finished)).toMatchObject({ status: 'SUCCEEDED', attempts: 1, resultCampaignId: null, error: null });
    const rest = await http(h.gateway.baseUrl, 'GET', `/duplication_jobs/${jobId}`, { headers: bearer(h.ws.key) });
    expect(rest.body.result_campaign_id).toBeNull();
    const gql = await graphql(h.gateway.baseUrl, h.ws.key, 'query ($id: ID!) { duplicationJob(id: $id) { resultCampaignId } }', { id: jobId });
    expect(gql.body.data.duplicationJob).toEqual({ resultCampaignId: null });
    const events = await eventsOf(h, jobId);
    expect(events[0].details).toMatchObject({ upstreamMessage: 'accepted for [redacted]' });
    expect([rest.text, gql.text, JSON.stringify(events)].join('\n')).not.toContain(UPSTREAM_KEY);
  });
});

describe('upstream mode: whether a job failed for good may have made a copy', () => {
  const harnesses: Harness[] = [];
  afterEach(async () => {
    for (const h of harnesses.splice(0)) {
      await h.gateway.close();
      await h.fake.close();
    }
  });

  /** The details of the failure event of a job that fails at its third attempt. */
  const failureDetails = async (h: Harness, id: string) => {
    expect(await until(h, id, finished)).toMatchObject({ status: 'FAILED', attempts: 3 });
    const [outcome] = await eventsOf(h, id);
    expect(outcome.type).toBe('CAMPAIGN_DUPLICATION_FAILED');
    return outcome.details;
  };
  const failedEvent = async (h: Harness, id: string) => {
    for (let attempt = 1; attempt < 3; attempt++) advanceTo(h, (await until(h, id, retried(attempt))).runAt);
    return failureDetails(h, id);
  };

  it('no: every attempt met a closed port, so no request ever left', async () => {
    const h = await upstreamGateway();
    harnesses.push(h);
    await h.fake.close();
    const { id } = await enqueue(h);
    expect(await failedEvent(h, id)).toMatchObject({ attempts: 3, error: { code: 'UPSTREAM_UNREACHABLE' }, upstreamMayHaveActed: false });
  });

  it.each([
    // A connect timeout the configuration cannot set, far past the deadline: only the deadline ends these calls, as it
    // must when undici's own connect timer, checked every half second or so, fires after it.
    ['however long the connect timeout: each call ended at its deadline', {}, { upstreamConnectTimeoutMs: 600_000 }, 300],
    ["within UPSTREAM_CONNECT_TIMEOUT_MS, well inside the call's deadline", { UPSTREAM_TIMEOUT_MS: '60000', UPSTREAM_CONNECT_TIMEOUT_MS: '50' }, {}, 50],
  ])('no: a connection to it never opened %s, unsent, and the error names the wait that ran out', async (_, env, tuned, waitedMs) => {
    const listener = await startFullListener();
    const h = await upstreamGateway({ UPSTREAM_URL: listener.url, ...env }, undefined, { tuned });
    harnesses.push(h);
    try {
      const { id } = await enqueue(h);
      expect(await failedEvent(h, id)).toMatchObject({
        attempts: 3,
        error: { code: 'UPSTREAM_TIMEOUT', message: `No connection to the upstream within ${waitedMs} ms` },
        upstreamMayHaveActed: false,
      });
      // Timed apart from calls that were sent and not answered: a network that drops connections, not a slow upstream.
      expect(await duplicateCalls(h, 'connect_timeout', 'timeout')).toEqual([3, 0]);
    } finally {
      await listener.close();
    }
  });

  it('yes: the first attempt timed out, though the later ones met a closed port', async () => {
    const h = await upstreamGateway();
    harnesses.push(h);
    h.fake.script(DUPLICATE, { status: 202, json: { message: 'success' }, delayMs: 10_000 });
    const { id, name } = await enqueue(h);
    const first = await until(h, id, retried(1));
    expect(first.error?.code).toBe('UPSTREAM_TIMEOUT');
    expect(requestsFor(h, name)).toHaveLength(1);
    expect(await duplicateCalls(h, 'connect_timeout', 'timeout')).toEqual([0, 1]);
    await h.fake.close();
    advanceTo(h, first.runAt);
    for (let attempt = 2; attempt < 3; attempt++) advanceTo(h, (await until(h, id, retried(attempt))).runAt);
    expect(await failureDetails(h, id)).toMatchObject({ attempts: 3, error: { code: 'UPSTREAM_UNREACHABLE' }, upstreamMayHaveActed: true });
  });

  it('yes: an earlier version retried it after a timeout, counting the attempt and no more, though every attempt here met a closed port', async () => {
    const h = await upstreamGateway();
    harnesses.push(h);
    await h.fake.close();
    const { id } = await enqueue(h);
    const first = await until(h, id, retried(1));
    // An instance of the previous version, in a rolling update, takes the second attempt: its call times out, and its
    // retry moves attempts and writes nothing else.
    const { store } = h.gateway.app;
    const [claimed] = await store.claimJobs('previous-version', 1, first.runAt, new Date(first.runAt.getTime() + 60_000));
    expect(claimed).toMatchObject({ id, attempts: 2 });
    const timeout = { code: 'UPSTREAM_TIMEOUT' as const, message: 'The upstream did not answer within 300 ms' };
    expect(await store.retryJob(id, 'previous-version', first.runAt, timeout, first.runAt)).toBe(true);
    advanceTo(h, first.runAt);
    expect(await failureDetails(h, id)).toMatchObject({ attempts: 3, error: { code: 'UPSTREAM_UNREACHABLE' }, upstreamMayHaveActed: true });
  });

  /**
   * A gateway stopped while Braze holds a job's call: the call outlives the stop's grace, and its own timeout is far
   * off, so the stop hands the job back mid-call. Then the port closes, cutting the call held.
   */
  const stoppedMidCall = async (env: Record<string, string> = {}) => {
    const h = await upstreamGateway({ UPSTREAM_TIMEOUT_MS: '60000', ...env }, undefined, { tuned: { shutdownGraceMs: 10 } });
    harnesses.push(h);
    h.fake.script(DUPLICATE, { hang: true });
    const { id, name } = await enqueue(h);
    await waitFor(async () => requestsFor(h, name).length === 1);
    const stopped = h.gateway.app.close();
    await waitFor(async () => h.lines.some((line) => JSON.parse(line).msg === 'returned unfinished jobs to the queue'));
    await h.fake.close();
    await stopped;
    return { h, id, name };
  };

  /** The instance that starts next on the store of `h`, with Braze at `fake`. */
  const restartedAfter = async (h: Harness, fake: FakeBraze, env: Record<string, string> = {}): Promise<Harness> => {
    const restarted: Harness = {
      ...h,
      fake,
      gateway: await startGateway(
        { ...upstreamEnv(fake.url), ...env, DATA_DIR: h.gateway.dataDir },
        { clock: h.clock, logger: recordingLogger().logger, upstreamLimiter: new RateLimiterMemory({ points: 100, duration: 60 }) },
      ),
    };
    // Closed before the first, whose close removes the directory both use.
    harnesses.unshift(restarted);
    return restarted;
  };

  it('yes: the gateway stopped with its first call held by Braze past the grace, and every later attempt met a closed port', async () => {
    const { h, id, name } = await stoppedMidCall();
    // The port stays closed for the instance that starts next on the same store.
    const restarted = await restartedAfter(h, h.fake);
    await waitFor(async () => {
      const job = await getJob(restarted, id);
      if (job.status === 'PENDING') advanceTo(restarted, job.runAt);
      return finished(job);
    });
    expect(requestsFor(h, name)).toHaveLength(1);
    expect(await failureDetails(restarted, id)).toMatchObject({ attempts: 3, error: { code: 'UPSTREAM_UNREACHABLE' }, upstreamMayHaveActed: true });
  });

  it('yes: its last attempt was handed back mid-call at a stop, and the next claim fails it without calling again', async () => {
    const { h, id } = await stoppedMidCall({ JOB_MAX_ATTEMPTS: '1' });
    // A Braze that answers, for the instance that starts next on the same store: it is not called.
    const restarted = await restartedAfter(h, await startFakeBraze(UPSTREAM_KEY), { JOB_MAX_ATTEMPTS: '1' });
    // The claim that finds its attempts spent counts one more, and sends nothing.
    expect(await until(restarted, id, finished)).toMatchObject({ status: 'FAILED', attempts: 2, error: { code: 'ATTEMPTS_EXHAUSTED' } });
    expect(restarted.fake.requests).toEqual([]);
    const [outcome] = await eventsOf(restarted, id);
    expect(outcome.details).toMatchObject({ attempts: 2, error: { code: 'ATTEMPTS_EXHAUSTED' }, upstreamMayHaveActed: true });
  });

  it('yes: rate limited at its first attempt, then answered 5xx, which may come after Braze acted', async () => {
    const h = await upstreamGateway();
    harnesses.push(h);
    const unavailable = { status: 503, json: { message: 'Service Unavailable' } };
    h.fake.script(DUPLICATE, { status: 429, json: { message: 'Rate limit exceeded' }, headers: { 'retry-after': '1' } }, unavailable, unavailable);
    const { id } = await enqueue(h);
    const first = await until(h, id, retried(1));
    expect(first.error?.code).toBe('UPSTREAM_RATE_LIMITED');
    await h.limiter.delete(PACER_KEY); // the window has passed
    advanceTo(h, first.runAt);
    advanceTo(h, (await until(h, id, retried(2))).runAt);
    expect(await failureDetails(h, id)).toMatchObject({ attempts: 3, error: { code: 'UPSTREAM_UNAVAILABLE' }, upstreamMayHaveActed: true });
  });
});

/** A memory limiter that counts its reads. */
class CountingLimiter extends RateLimiterMemory {
  gets = 0;

  override get(...args: Parameters<RateLimiterMemory['get']>) {
    this.gets++;
    return super.get(...args);
  }
}

/** A limiter on a backend several instances share, and how to let it go once the gateways using it are closed. */
interface SharedLimiter {
  limiter: RateLimiterAbstract;
  close(): Promise<void>;
}

const TEST_REDIS_URL = process.env.TEST_REDIS_URL;
const sharedBackends: { name: string; missing: boolean; create(settings: LimiterSettings): Promise<SharedLimiter> }[] = [
  {
    name: 'Redis',
    missing: !TEST_REDIS_URL,
    async create(settings) {
      if (!TEST_REDIS_URL) throw new Error('TEST_REDIS_URL is not set');
      const redis = new RedisLimiters(TEST_REDIS_URL);
      await waitFor(async () => (await redis.check()).status === 'up');
      const limiter = redis.limiter(settings);
      return { limiter, close: () => redis.close() };
    },
  },
  {
    name: 'PostgreSQL',
    missing: postgres.skip,
    async create(settings) {
      const { store, drop } = await postgres.open();
      return {
        limiter: postgresLimiters(store.pool).limiter(settings),
        async close() {
          await store.close();
          await drop();
        },
      };
    },
  },
];

/** Every limiter backend the pace may live on, but those whose service is missing outside CI. */
const everyBackend = [
  { name: 'memory', missing: false, create: async (settings: LimiterSettings) => ({ limiter: memoryLimiter(settings), close: async () => undefined }) },
  {
    name: 'SQLite',
    missing: false,
    async create(settings: LimiterSettings) {
      const { store, drop } = await sqlite.open();
      return {
        limiter: sqliteLimiters(store as SqliteStore).limiter({ ...settings, durable: true }),
        async close() {
          await store.close();
          await drop();
        },
      };
    },
  },
  ...sharedBackends,
]
  .filter((backend) => !backend.missing || process.env.CI)
  .map((backend) => [backend.name, backend] as const);

describe('upstream mode: pacing', () => {
  const harnesses: Harness[] = [];
  const shared: SharedLimiter[] = [];
  afterEach(async () => {
    for (const h of harnesses.splice(0)) {
      await h.gateway.close();
      await h.fake.close();
    }
    for (const backend of shared.splice(0)) await backend.close();
  });

  const jobsOf = async (h: Harness, ids: string[]) => Promise.all(ids.map((id) => getJob(h, id)));
  /**
   * Nothing is running and every job has succeeded or waits, unattempted; when some wait, the worker has met
   * the spent window (a job was deferred past the current moment) and claims nothing until then.
   */
  const settled = (h: Harness, jobs: DuplicationJob[]) =>
    jobs.every((job) => job.status === 'SUCCEEDED' || (job.status === 'PENDING' && job.attempts === 0)) &&
    (jobs.every((job) => job.status === 'SUCCEEDED') || jobs.some((job) => job.status === 'PENDING' && job.runAt > h.clock.now()));

  it('never sends more than the limit per window; the other jobs wait their turn without spending an attempt', async () => {
    const h = await upstreamGateway({ UPSTREAM_RATE_LIMIT: '2' }, new RateLimiterMemory({ points: 2, duration: 60 }));
    harnesses.push(h);
    const ids: string[] = [];
    for (let index = 0; index < 5; index++) ids.push((await enqueue(h)).id);

    for (const expected of [2, 4, 5]) {
      const jobs = await waitFor(async () => {
        const current = await jobsOf(h, ids);
        return current.filter((job) => job.status === 'SUCCEEDED').length === expected && settled(h, current) && current;
      });
      expect(h.fake.requestsTo(DUPLICATE)).toHaveLength(expected);
      for (const job of jobs) expect(job.attempts).toBe(job.status === 'SUCCEEDED' ? 1 : 0);
      const waiting = jobs.filter((job) => job.status === 'PENDING');
      if (waiting.length === 0) break;
      await h.limiter.delete(PACER_KEY); // the window has passed
      advanceTo(h, new Date(Math.max(...waiting.map((job) => job.runAt.getTime()))));
    }
    const events = await h.gateway.app.store.listEvents(h.ws.workspace.id, { types: ['CAMPAIGN_DUPLICATION_FAILED'] }, { first: 50 });
    expect(events).toHaveLength(0);
  });

  it('sends the job of a workspace that queued behind another’s backlog in the next windows, before most of that backlog', async () => {
    const h = await upstreamGateway({ UPSTREAM_RATE_LIMIT: '2' }, new RateLimiterMemory({ points: 2, duration: 60 }));
    harnesses.push(h);
    const backlog: string[] = [];
    for (let index = 0; index < 20; index++) backlog.push((await enqueue(h)).id);
    const other = await h.gateway.workspace();
    const accepted = await http(h.gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(other.key) },
      body: JSON.stringify({ campaign_id: 'cmp-0001', name: 'Another workspace’s copy' }),
    });
    expect(accepted.status).toBe(202);
    const lone = () => h.gateway.app.store.getJob(other.workspace.id, accepted.body.job_id) as Promise<DuplicationJob>;

    // Window by window, until the other workspace's job has been sent.
    for (;;) {
      const jobs = await waitFor(async () => {
        const current = [...(await jobsOf(h, backlog)), await lone()];
        return settled(h, current) && current;
      });
      if (jobs.at(-1)!.status === 'SUCCEEDED') break;
      await h.limiter.delete(PACER_KEY); // the window has passed
      const waiting = jobs.filter((job) => job.status === 'PENDING');
      advanceTo(h, new Date(Math.max(...waiting.map((job) => job.runAt.getTime()))));
    }
    const sent = h.fake.requestsTo(DUPLICATE).map((request) => JSON.parse(request.body).name);
    expect(sent).toContain('Another workspace’s copy');
    // The backlog's jobs sent before it.
    expect(sent.indexOf('Another workspace’s copy'), sent.join(', ')).toBeLessThan(backlog.length / 2);
  });

  it('after an upstream 429, opens no fresh window before the current one ends', async () => {
    const pacer = new UpstreamPacer(new RateLimiterMemory({ points: 2, duration: 20 }), HOUR_MS);
    expect(await pacer.take()).toBe(0);
    await pacer.pause(3000);
    // One slot of this window was used: a fresh window after 3 s would allow two more calls within 20 s.
    expect(await pacer.take()).toBeGreaterThan(15_000);
  });

  it('a 429 with no time holds the current window to its end, or a whole window when none is under way', async () => {
    const pacer = new UpstreamPacer(new RateLimiterMemory({ points: 2, duration: 20 }), HOUR_MS);
    expect(await pacer.pause(0)).toBe(20_000);
    expect(await pacer.take()).toBeGreaterThan(15_000);

    const busy = new UpstreamPacer(new RateLimiterMemory({ points: 2, duration: 20 }), HOUR_MS);
    expect(await busy.take()).toBe(0);
    const held = await busy.pause(0);
    expect(held).toBeGreaterThan(15_000);
    expect(held).toBeLessThanOrEqual(20_000);
    expect(await busy.take()).toBeGreaterThan(15_000);
  });

  it('tells a pause the upstream asked for from a window that is only spent', async () => {
    const limiter = new RateLimiterMemory({ points: 1, duration: 20 });
    const pacer = new UpstreamPacer(limiter, HOUR_MS);
    expect(await pacer.take()).toBe(0);
    // Spent, and counted past the limit by the refused take, as a hold is: still the gateway's own pace.
    expect(await pacer.take()).toBeGreaterThan(0);
    expect(await pacer.remainingMs()).toBe(0);
    const held = await pacer.pause(30_000);
    const remaining = await pacer.remainingMs();
    expect(remaining).toBeGreaterThan(limiter.duration * 1000);
    expect(remaining).toBeLessThanOrEqual(held);
    // The hold ended (here, taken away): no pause is left, whatever is left of its mark.
    await limiter.delete(PACER_KEY);
    expect(await pacer.remainingMs()).toBe(0);
  });

  it.each(sharedBackends.filter((backend) => !backend.missing || process.env.CI).map((backend) => [backend.name, backend] as const))(
    "on %s, a 429 one instance met holds every instance's jobs, and their polls and /readyz say until when",
    async (_, backend) => {
      const limiter = await backend.create({ keyPrefix: `upstream-${randomUUID()}`, points: 100, durationSeconds: 60 });
      shared.push(limiter);
      const a = await upstreamGateway({}, limiter.limiter);
      // B's worker takes no job: its jobs stay as they were accepted, not yet picked up, due at once.
      const b = await upstreamGateway({ WORKER_CONCURRENCY: '0' }, limiter.limiter);
      harnesses.push(a, b);
      const upstreamCheck = async (h: Harness) => {
        const ready = await http(h.gateway.baseUrl, 'GET', '/readyz');
        expect(ready.status).toBe(200);
        expect(ready.body.status).toBe('ready');
        return ready.body.checks.upstream;
      };
      const waiting = await enqueue(b);
      expect(await pollAfter(b, waiting.id)).toBe('1');
      expect(await upstreamCheck(b)).toEqual({ status: 'up', backend: 'braze' });

      // Braze's time is longer than the gateway's window (60 s): it is the one every instance waits out.
      a.fake.script(DUPLICATE, { status: 429, json: { message: 'Rate limit exceeded' }, headers: { 'retry-after': '600' } });
      const limited = await enqueue(a);
      const job = await until(a, limited.id, retried(1));
      const seconds = Number(await pollAfter(b, waiting.id));
      expect(seconds).toBeGreaterThan(60);
      expect(seconds).toBeLessThanOrEqual(Number(secondsUntil(a, job)));
      const untouched = await getJob(b, waiting.id);
      expect(untouched).toMatchObject({ status: 'PENDING', attempts: 0 });
      expect(untouched.runAt).toEqual(untouched.createdAt);
      for (const h of [a, b]) {
        const check = await upstreamCheck(h);
        expect(check).toEqual({ status: 'up', backend: 'braze', message: expect.stringMatching(/^paused until \S+: the upstream answered 429, and no duplication is sent before then$/) });
        const pausedUntil = Date.parse(/^paused until (\S+):/.exec(check.message)?.[1] ?? '');
        expect(pausedUntil).toBeGreaterThan(h.clock.now().getTime() + 60_000);
        expect(pausedUntil).toBeLessThanOrEqual(job.runAt.getTime());
      }

      await limiter.limiter.delete(PACER_KEY); // the hold has ended
      expect(await pollAfter(b, waiting.id)).toBe('1');
      expect(await upstreamCheck(b)).toEqual({ status: 'up', backend: 'braze' });
    },
  );

  it.each(everyBackend)('on %s, a window spent by the pace after a pause has ended is no pause, while the pause mark lasts', async (_, backend) => {
    const backendLimiter = await backend.create({ keyPrefix: `upstream-${randomUUID()}`, points: 1, durationSeconds: 1 });
    shared.push(backendLimiter);
    const { limiter } = backendLimiter;
    const pacer = new UpstreamPacer(limiter, HOUR_MS);
    expect(await pacer.take()).toBe(0);
    expect(await pacer.take()).toBeGreaterThan(0);
    // A 429 with no time on the spent window, once most of it has passed: the hold is its rest, the mark a whole second.
    await waitFor(async () => ((await limiter.get(PACER_KEY))?.msBeforeNext ?? 0) < 500);
    const held = await pacer.pause(0);
    expect(held).toBeLessThan(500);
    const remaining = await pacer.remainingMs();
    expect(remaining).toBeGreaterThan(0);
    expect(remaining).toBeLessThanOrEqual(held);

    // The hold ends; the next window opens and is spent by the gateway's own pace while the mark is still there.
    await waitFor(async () => (await pacer.take()) === 0);
    expect(await pacer.take()).toBeGreaterThan(0);
    expect(await limiter.get('paused')).not.toBeNull();
    expect(await pacer.remainingMs()).toBe(0);
  });

  it.each(everyBackend)('on %s, a day-long pause an earlier version wrote is cleared, with a warning, and upstream calls go again', async (_, backend) => {
    const backendLimiter = await backend.create({ keyPrefix: `upstream-${randomUUID()}`, points: 100, durationSeconds: 60 });
    shared.push(backendLimiter);
    const { limiter } = backendLimiter;
    const h = await upstreamGateway({}, limiter);
    harnesses.push(h);
    // As versions that followed a 429's time for up to 24 h wrote it: the window's key blocked, and the mark beside it.
    const writeOldPause = async () => {
      await limiter.block(PACER_KEY, 86_400);
      await limiter.set('paused', 0, 86_400);
    };
    const cleared = () => h.lines.map((line) => JSON.parse(line)).filter((line) => /^cleared an upstream pause longer than this version holds one/.test(line.msg));
    const upstreamCheck = async () => (await http(h.gateway.baseUrl, 'GET', '/readyz')).body.checks.upstream;

    // Read by readiness (as by a poll): no pause is reported, and none is left.
    await writeOldPause();
    expect(await upstreamCheck()).toEqual({ status: 'up', backend: 'braze' });
    expect(cleared()).toEqual([expect.objectContaining({ level: 40, component: 'upstream', longestMs: HOUR_MS })]);
    expect(cleared()[0].heldMs).toBeGreaterThan(23 * HOUR_MS);
    expect(await limiter.get(PACER_KEY)).toBeNull();
    expect(await limiter.get('paused')).toBeNull();

    // Met by a job first: it is sent at once, at its first attempt.
    await writeOldPause();
    const { id, name } = await enqueue(h);
    expect(await until(h, id, finished)).toMatchObject({ status: 'SUCCEEDED', attempts: 1 });
    expect(requestsFor(h, name)).toHaveLength(1);
    expect(cleared()).toHaveLength(2);

    // The longest pause this version writes stands.
    const pacer = new UpstreamPacer(limiter, HOUR_MS);
    await pacer.pause(HOUR_MS);
    expect((await upstreamCheck()).message).toMatch(/^paused until /);
    expect(await pacer.remainingMs()).toBeGreaterThan(HOUR_MS - 60_000);
    expect(cleared()).toHaveLength(2);
  });

  it("reads the shared pause once for a whole page of pending jobs' polls, each as REST's Retry-After says", async () => {
    const limiter = new CountingLimiter({ points: 100, duration: 60 });
    // No worker takes a job: every job stays pending, as accepted.
    const h = await upstreamGateway({ WORKER_CONCURRENCY: '0' }, limiter);
    harnesses.push(h);
    const ids: string[] = [];
    for (let index = 0; index < 5; index++) ids.push((await enqueue(h)).id);
    const page = 'edges { node { job { id pollAfterSeconds } } }';
    const polls = async () => {
      const before = limiter.gets;
      const answer = await graphql(h.gateway.baseUrl, h.ws.key, `{ a: securityEvents(first: 200) { ${page} } b: securityEvents(first: 200) { ${page} } }`);
      const jobs = [...answer.body.data.a.edges, ...answer.body.data.b.edges].map((edge: { node: { job: { id: string; pollAfterSeconds: number } | null } }) => edge.node.job).filter((job) => job !== null);
      expect(new Set(jobs.map((job) => job.id))).toEqual(new Set(ids));
      return { reads: limiter.gets - before, jobs };
    };

    const open = await polls();
    expect(open.reads).toBeLessThanOrEqual(2);
    for (const job of open.jobs) expect(job.pollAfterSeconds).toBe(1);

    await new UpstreamPacer(limiter, HOUR_MS).pause(30_000);
    const paused = await polls();
    expect(paused.reads).toBeLessThanOrEqual(2);
    const retryAfter = (await http(h.gateway.baseUrl, 'GET', `/duplication_jobs/${ids[0]}`, { headers: bearer(h.ws.key) })).headers['retry-after'];
    expect(Number(retryAfter)).toBeGreaterThan(1);
    for (const job of paused.jobs) expect(job.pollAfterSeconds).toBe(Number(retryAfter));
  });

  it.each<[string, Record<string, string>, FakeReply | undefined]>([
    ['a window spent', { UPSTREAM_RATE_LIMIT: '1' }, undefined],
    ['a pause the upstream asked for', {}, { status: 429, json: { message: 'Rate limit exceeded' }, headers: { 'retry-after': '600' } }],
  ])('on SQLite, %s outlives a restart of the gateway', async (_, env, reply) => {
    const dataDir = mkdtempSync(join(tmpdir(), 'cgw-pacing-'));
    const fake = await startFakeBraze(UPSTREAM_KEY);
    const start = () => startGateway({ ...upstreamEnv(fake.url), DATA_DIR: dataDir, ...env });
    const h = { fake, gateway: await start() } as Harness;
    try {
      h.ws = await h.gateway.workspace();
      if (reply) fake.script(DUPLICATE, reply);
      const first = await enqueue(h);
      await until(h, first.id, (job) => job.attempts === 1 && job.status !== 'RUNNING');
      const pausedMessage = async () => (await http(h.gateway.baseUrl, 'GET', '/readyz')).body.checks.upstream.message;
      const readAt = Date.now();
      const paused = await pausedMessage();
      expect(paused).toEqual(reply ? expect.stringMatching(/^paused until /) : undefined);
      await h.gateway.close();

      h.gateway = await start();
      const pausedAfter = await pausedMessage();
      if (reply) {
        // Each gateway's test clock stands still while the pause's store counts real time down: the end it names is
        // the same, but for the whole seconds of real time the restart took.
        const end = (message: string) => Date.parse(/^paused until (\S+):/.exec(message)?.[1] ?? '');
        const restartMs = Date.now() - readAt;
        expect(pausedAfter).toMatch(/^paused until /);
        expect(end(paused) - end(pausedAfter)).toBeGreaterThanOrEqual(0);
        expect(end(paused) - end(pausedAfter)).toBeLessThanOrEqual(Math.ceil(restartMs / 1000) * 1000);
      } else {
        expect(pausedAfter).toBeUndefined();
      }
      const second = await enqueue(h);
      // Sent, or put off by the pace until a later time than it was accepted for.
      const job = await until(h, second.id, (current) => finished(current) || current.runAt > current.createdAt);
      expect(job).toMatchObject({ status: 'PENDING', attempts: 0 });
      expect(fake.requestsTo(DUPLICATE)).toHaveLength(1);
    } finally {
      await h.gateway.close();
      await fake.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('instances sharing one limiter share one pace', async () => {
    const limiter = new RateLimiterMemory({ points: 3, duration: 60 });
    const a = await upstreamGateway({ UPSTREAM_RATE_LIMIT: '3' }, limiter);
    const b = await upstreamGateway({ UPSTREAM_RATE_LIMIT: '3' }, limiter);
    harnesses.push(a, b);
    const enqueued = new Map<Harness, string[]>([[a, []], [b, []]]);
    for (let index = 0; index < 3; index++) {
      for (const h of [a, b]) enqueued.get(h)?.push((await enqueue(h)).id);
    }
    const all = await waitFor(async () => {
      const jobs: DuplicationJob[] = [];
      for (const [h, ids] of enqueued) {
        const current = await jobsOf(h, ids);
        if (!settled(h, current)) return false;
        jobs.push(...current);
      }
      return jobs.filter((job) => job.status === 'SUCCEEDED').length === 3 && jobs;
    });
    expect(a.fake.requestsTo(DUPLICATE).length + b.fake.requestsTo(DUPLICATE).length).toBe(3);
    expect(all.filter((job) => job.status === 'PENDING')).toHaveLength(3);
  });
});

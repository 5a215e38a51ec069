import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DuplicationJob } from '../../src/domain/types.js';
import { ManualClock } from '../support/clock.js';
import { startFakeBraze, type FakeBraze } from '../support/fake-braze.js';
import {
  bearer,
  componentLines,
  graphql,
  http,
  json,
  metricSample as sample,
  recordingLogger,
  startGateway,
  waitFor,
  type TestGateway,
  type TestWorkspace,
} from '../support/gateway.js';

const UPSTREAM_KEY = 'braze-upstream-key-obs-7c41e0';
const DUPLICATE = 'POST /campaigns/duplicate';

describe('upstream mode: what an operator sees of upstream calls and the jobs they decide', () => {
  let fake: FakeBraze;
  let gateway: TestGateway;
  let ws: TestWorkspace;
  let lines: string[];

  beforeEach(async () => {
    fake = await startFakeBraze(UPSTREAM_KEY);
    const recorded = recordingLogger();
    lines = recorded.lines;
    // A clock that stands still: a job that failed transiently stays waiting for its retry.
    gateway = await startGateway(
      { UPSTREAM_URL: fake.url, UPSTREAM_API_KEY: UPSTREAM_KEY, UPSTREAM_TIMEOUT_MS: '300' },
      { logger: recorded.logger, clock: new ManualClock() },
    );
    ws = await gateway.workspace();
  });
  afterEach(async () => {
    await gateway?.close();
    await fake?.close();
  });

  const enqueue = async (campaignId: string): Promise<string> => {
    const response = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(ws.key) },
      body: JSON.stringify({ campaign_id: campaignId, name: 'observed copy' }),
    });
    expect(response.status).toBe(202);
    return response.body.job_id;
  };

  /** Waits until the job is finished, or waiting for its retry after the first attempt failed. */
  const decided = (jobId: string) =>
    waitFor(async () => {
      const job = (await gateway.app.store.getJob(ws.workspace.id, jobId)) as DuplicationJob;
      return (job.status === 'SUCCEEDED' || job.status === 'FAILED' || (job.status === 'PENDING' && job.attempts === 1)) && job;
    });

  it('names the job in the warning about its failed upstream call, and logs the job failing for good as a warning with its error', async () => {
    const jobId = await enqueue('cmp-unknown');
    const finished = await waitFor(async () => componentLines(lines, 'worker').find((line) => line.msg === 'job finished' && line.jobId === jobId));
    expect(finished).toMatchObject({
      level: 40,
      status: 'FAILED',
      attempts: 1,
      error: { code: 'UPSTREAM_BAD_REQUEST', message: 'The upstream answered 400: Invalid campaign_id' },
    });
    const warning = componentLines(lines, 'upstream').find((line) => line.msg === 'upstream call failed');
    expect(warning).toMatchObject({ level: 40, jobId, method: 'POST', path: '/campaigns/duplicate', status: 400, error: { code: 'UPSTREAM_BAD_REQUEST' } });
  });

  it('sends the request id of the job to the upstream, and puts it beside the job id on every line about the job and its call', async () => {
    const requestId = 'sre-trace-7.a:b';
    const response = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(ws.key), 'x-request-id': requestId },
      body: JSON.stringify({ campaign_id: 'cmp-unknown', name: 'traced copy' }),
    });
    expect(response.status).toBe(202);
    const jobId = response.body.job_id;
    await waitFor(async () => componentLines(lines, 'worker').some((line) => line.msg === 'job finished' && line.jobId === jobId));

    expect(fake.requestsTo(DUPLICATE).map((request) => request.headers['x-request-id'])).toEqual([requestId]);
    const aboutTheJob = [...componentLines(lines, 'worker'), ...componentLines(lines, 'upstream')].filter((line) => line.jobId === jobId);
    expect(aboutTheJob.map((line) => line.msg).sort()).toEqual(['job finished', 'upstream call failed']);
    for (const line of aboutTheJob) expect(line.reqId, JSON.stringify(line)).toBe(requestId);
  });

  it('sends the request id of a campaign read to the upstream, and names it on the warning about the read failing', async () => {
    const requestId = 'sre-read-9';
    fake.script('GET /campaigns/list', { status: 500, json: { message: 'Internal error' } });
    const answer = await http(gateway.baseUrl, 'POST', '/graphql', {
      headers: { ...json, ...bearer(ws.key), 'x-request-id': requestId },
      body: JSON.stringify({ query: '{ campaigns(first: 1) { edges { node { id } } } }' }),
    });
    expect(answer.body.errors[0].extensions.code).toBe('SERVICE_UNAVAILABLE');
    expect(fake.requestsTo('GET /campaigns/list').map((request) => request.headers['x-request-id'])).toEqual([requestId]);
    const warning = componentLines(lines, 'upstream').find((line) => line.msg === 'upstream call failed' && line.path === '/campaigns/list');
    expect(warning).toMatchObject({ reqId: requestId, status: 500 });
    expect(warning?.jobId).toBeUndefined();
  });

  it('times every upstream call by endpoint and outcome, and counts finished jobs by error code', async () => {
    const outcomes: [string, Parameters<FakeBraze['script']>[1] | null, Partial<DuplicationJob>][] = [
      ['cmp-0001', null, { status: 'SUCCEEDED' }],
      ['cmp-0001', { status: 503, json: { message: 'busy' } }, { status: 'PENDING', error: { code: 'UPSTREAM_UNAVAILABLE', message: expect.any(String) } }],
      ['cmp-0001', { drop: true }, { status: 'PENDING', error: { code: 'UPSTREAM_UNREACHABLE', message: expect.any(String) } }],
      // Braze's refusal between the transient failures: three jobs' in a row would open the circuit, and hold the next.
      ['cmp-unknown', null, { status: 'FAILED', error: { code: 'UPSTREAM_BAD_REQUEST', message: expect.any(String) } }],
      ['cmp-0001', { hang: true }, { status: 'PENDING', error: { code: 'UPSTREAM_TIMEOUT', message: expect.any(String) } }],
      // An error whose body outlasts the deadline took as long as no answer: timed as a timeout, though it said 503.
      ['cmp-0001', { status: 503, json: { message: 'busy' }, trickleMs: 20 }, { status: 'PENDING', error: { code: 'UPSTREAM_UNAVAILABLE', message: expect.any(String) } }],
    ];
    for (const [campaignId, reply, expected] of outcomes) {
      if (reply) fake.script(DUPLICATE, reply);
      expect(await decided(await enqueue(campaignId))).toMatchObject(expected);
    }
    // Reads are not paced, so an upstream 429 on one leaves the duplications alone.
    fake.script('GET /campaigns/details', { status: 429, json: { message: 'slow down' } });
    const limited = await graphql(gateway.baseUrl, ws.key, 'query ($id: ID!) { campaign(id: $id) { id } }', { id: 'cmp-0001' });
    expect(limited.body.errors[0].extensions.code).toBe('SERVICE_UNAVAILABLE');
    const listed = await graphql(gateway.baseUrl, ws.key, '{ campaigns(first: 2) { edges { node { id } } } }');
    expect(listed.body.data.campaigns.edges).toHaveLength(2);

    const text = (await http(gateway.baseUrl, 'GET', '/metrics')).text;
    const calls = (endpoint: string, outcome: string) => sample(text, 'gateway_upstream_request_duration_seconds_count', { endpoint, outcome });
    expect(calls('/campaigns/duplicate', 'ok')).toBe(1);
    expect(calls('/campaigns/duplicate', 'rejected')).toBe(1);
    expect(calls('/campaigns/duplicate', 'unavailable')).toBe(1);
    expect(calls('/campaigns/duplicate', 'unreachable')).toBe(1);
    expect(calls('/campaigns/duplicate', 'timeout')).toBe(2);
    expect(calls('/campaigns/details', 'rate_limited')).toBe(1);
    expect(calls('/campaigns/list', 'ok')).toBe(1);
    // The timeout is 300 ms: those calls took at least as long, the others did not wait for it.
    expect(sample(text, 'gateway_upstream_request_duration_seconds_bucket', { endpoint: '/campaigns/duplicate', outcome: 'timeout', le: '0.25' })).toBe(0);
    expect(sample(text, 'gateway_upstream_request_duration_seconds_bucket', { endpoint: '/campaigns/duplicate', outcome: 'timeout', le: '+Inf' })).toBe(2);

    const finished = (status: string, code: string) => sample(text, 'gateway_duplication_jobs_finished_total', { status, error_code: code });
    expect(finished('SUCCEEDED', 'none')).toBe(1);
    expect(finished('FAILED', 'UPSTREAM_BAD_REQUEST')).toBe(1);
    expect(finished('FAILED', 'UPSTREAM_TIMEOUT')).toBe(0);
    expect(sample(text, 'gateway_duplication_job_retries_total')).toBe(4);
  });
});

import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../support/clock.js';
import { startFakeBraze, type FakeBraze } from '../support/fake-braze.js';
import { bearer, componentLines, graphql, http, json, recordingLogger, startGateway, waitFor, type TestGateway } from '../support/gateway.js';

const UPSTREAM_KEY = 'braze-upstream-key-e2e-31d9aa';

describe('upstream mode end to end: a gateway in front of a Braze-like upstream', () => {
  let fake: FakeBraze | undefined;
  let gateway: TestGateway | undefined;
  afterEach(async () => {
    await gateway?.close();
    await fake?.close();
    gateway = fake = undefined;
  });

  it('REST duplicate → the upstream receives its own key and exactly Braze’s body → job SUCCEEDED', async () => {
    fake = await startFakeBraze(UPSTREAM_KEY);
    gateway = await startGateway({ UPSTREAM_URL: `${fake.url}/`, UPSTREAM_API_KEY: UPSTREAM_KEY });
    const ws = await gateway.workspace();
    const body = { campaign_id: 'cmp-0002', name: 'Spring copy', description: 'For spring', tag_names: 'promo' };

    const accepted = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(ws.key) },
      body: JSON.stringify(body),
    });
    expect(accepted.status).toBe(202);
    const jobId = accepted.body.job_id;
    const finished = await waitFor(async () => {
      const status = await http(gateway!.baseUrl, 'GET', `/duplication_jobs/${jobId}`, { headers: bearer(ws.key) });
      return status.body.status !== 'pending' && status.body.status !== 'running' && status.body;
    });
    expect(finished).toMatchObject({ status: 'succeeded', attempts: 1, result_campaign_id: null, error: null });

    expect(fake.requests).toHaveLength(1);
    const [received] = fake.requests;
    expect(received.method).toBe('POST');
    expect(received.path).toBe('/campaigns/duplicate');
    expect(received.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
    expect(JSON.parse(received.body)).toStrictEqual({ campaign_id: 'cmp-0002', name: 'Spring copy', description: 'For spring', tag_names: ['promo'] });
    expect(JSON.stringify(received)).not.toContain(ws.key);

    const events = await graphql(gateway.baseUrl, ws.key, `query ($jobId: ID!) { securityEvents(filter: {jobId: $jobId}) { edges { node { type job { status } } } } }`, { jobId });
    expect(events.body.data.securityEvents.edges.map((edge: { node: { type: string } }) => edge.node.type)).toEqual([
      'CAMPAIGN_DUPLICATED',
      'CAMPAIGN_DUPLICATION_REQUESTED',
    ]);
  });

  it('an unknown campaign is accepted, not refused with a 400, and its job fails with the upstream refusal', async () => {
    fake = await startFakeBraze(UPSTREAM_KEY);
    gateway = await startGateway({ UPSTREAM_URL: fake.url, UPSTREAM_API_KEY: UPSTREAM_KEY });
    const ws = await gateway.workspace();
    const accepted = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(ws.key) },
      body: JSON.stringify({ campaign_id: 'cmp-unknown', name: 'never copied' }),
    });
    expect(accepted.status).toBe(202);
    expect(fake.requestsTo('GET /campaigns/details')).toHaveLength(0);
    const failed = await waitFor(async () => {
      const status = await http(gateway!.baseUrl, 'GET', `/duplication_jobs/${accepted.body.job_id}`, { headers: bearer(ws.key) });
      return status.body.status === 'failed' && status.body;
    });
    expect(failed).toMatchObject({ attempts: 1, error: { code: 'UPSTREAM_BAD_REQUEST', message: 'The upstream answered 400: Invalid campaign_id' } });
  });

  it('/readyz reports each dependency, and an unreachable upstream as degraded: the instance still takes jobs', async () => {
    fake = await startFakeBraze(UPSTREAM_KEY);
    const logs = recordingLogger('warn');
    gateway = await startGateway({ UPSTREAM_URL: fake.url, UPSTREAM_API_KEY: UPSTREAM_KEY, UPSTREAM_TIMEOUT_MS: '500' }, { logger: logs.logger });
    const ws = await gateway.workspace();
    const ready = await http(gateway.baseUrl, 'GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({
      status: 'ready',
      checks: { store: { status: 'up', backend: 'sqlite' }, quota: { status: 'up', backend: 'memory' }, upstream: { status: 'up', backend: 'braze' } },
    });
    expect(fake.requests.at(-1)?.headers.authorization).toBeUndefined();

    await fake.close();
    fake = undefined;
    const degraded = await http(gateway.baseUrl, 'GET', '/readyz');
    expect(degraded.status).toBe(200);
    expect(degraded.body).toEqual({
      status: 'degraded',
      message: 'upstream: The connection to the upstream failed',
      checks: {
        store: { status: 'up', backend: 'sqlite' },
        quota: { status: 'up', backend: 'memory' },
        upstream: { status: 'degraded', message: 'The connection to the upstream failed' },
      },
    });
    // The log says why, as the driver put it.
    expect(componentLines(logs.lines, 'readiness')).toEqual([
      expect.objectContaining({ level: 40, dependency: 'upstream', cause: expect.objectContaining({ code: 'ECONNREFUSED' }) }),
    ]);
    const accepted = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(ws.key) },
      body: JSON.stringify({ campaign_id: 'cmp-0001', name: 'sent once the upstream is back' }),
    });
    expect(accepted.status).toBe(202);
    const live = await http(gateway.baseUrl, 'GET', '/healthz');
    expect(live.status).toBe(200);
  });

  it('an upstream that refuses the key is reported, degraded, and logged once, until it accepts the key again', async () => {
    fake = await startFakeBraze(UPSTREAM_KEY);
    const logs = recordingLogger('warn');
    gateway = await startGateway({ UPSTREAM_URL: fake.url, UPSTREAM_API_KEY: 'not-the-upstream-key' }, { logger: logs.logger });
    const ws = await gateway.workspace();
    const refused = async () => {
      const accepted = await http(gateway!.baseUrl, 'POST', '/campaigns/duplicate', {
        headers: { ...json, ...bearer(ws.key) },
        body: JSON.stringify({ campaign_id: 'cmp-0001', name: 'never copied' }),
      });
      return waitFor(async () => {
        const job = await http(gateway!.baseUrl, 'GET', `/duplication_jobs/${accepted.body.job_id}`, { headers: bearer(ws.key) });
        return job.body.status === 'failed' && job.body;
      });
    };
    expect((await refused()).error.code).toBe('UPSTREAM_UNAUTHORIZED');
    await refused();
    const degraded = await http(gateway.baseUrl, 'GET', '/readyz');
    expect(degraded.status).toBe(200);
    expect(degraded.body.checks.upstream).toEqual({
      status: 'degraded',
      backend: 'braze',
      message: 'The upstream refused UPSTREAM_API_KEY (401) at its last call: duplications fail until it is replaced',
    });
    expect(logs.lines.filter((line) => line.includes('the upstream refused UPSTREAM_API_KEY'))).toHaveLength(1);
    expect(logs.lines.join('\n')).not.toContain('not-the-upstream-key');

    fake.script('POST /campaigns/duplicate', { status: 201, json: { message: 'success' } });
    const accepted = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(ws.key) },
      body: JSON.stringify({ campaign_id: 'cmp-0001', name: 'copied' }),
    });
    await waitFor(async () => (await http(gateway!.baseUrl, 'GET', `/duplication_jobs/${accepted.body.job_id}`, { headers: bearer(ws.key) })).body.status === 'succeeded');
    expect((await http(gateway.baseUrl, 'GET', '/readyz')).body.checks.upstream).toEqual({ status: 'up', backend: 'braze' });
  });

  it('asks Braze again, at most every 30 s and without waiting, whether a refused key is accepted, so an instance whose jobs ran elsewhere recovers too', async () => {
    fake = await startFakeBraze(UPSTREAM_KEY);
    const logs = recordingLogger('info');
    const clock = new ManualClock();
    gateway = await startGateway({ UPSTREAM_URL: fake.url, UPSTREAM_API_KEY: UPSTREAM_KEY }, { logger: logs.logger, clock });
    const ws = await gateway.workspace();
    fake.script('POST /campaigns/duplicate', { status: 401, json: { message: 'Invalid API key' } });
    const accepted = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(ws.key) },
      body: JSON.stringify({ campaign_id: 'cmp-0001', name: 'refused' }),
    });
    await waitFor(async () => (await http(gateway!.baseUrl, 'GET', `/duplication_jobs/${accepted.body.job_id}`, { headers: bearer(ws.key) })).body.status === 'failed');
    const upstreamCheck = async () => (await http(gateway!.baseUrl, 'GET', '/readyz')).body.checks.upstream;
    const refused = { status: 'degraded', backend: 'braze', message: 'The upstream refused UPSTREAM_API_KEY (401) at its last call: duplications fail until it is replaced' };

    // The probe that asks does not wait for the answer: a slow one would outlast the check's 2 s and show a
    // timeout instead of the refusal. The probes that follow within 30 s do not ask again.
    let answer!: () => void;
    const answered = new Promise<void>((resolve) => (answer = resolve));
    fake.script('GET /campaigns/list', { status: 401, json: { message: 'Invalid API key' }, until: answered });
    expect(await upstreamCheck()).toEqual(refused);
    answer();
    await waitFor(async () => fake!.requestsTo('GET /campaigns/list').length === 1);
    expect(await upstreamCheck()).toEqual(refused);
    expect(fake.requestsTo('GET /campaigns/list')).toHaveLength(1);
    expect(fake.requestsTo('GET /campaigns/list')[0].headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);

    // Accepted again (replaced at Braze, or another instance's job went through): seen once asked again.
    clock.advance(30_000);
    await waitFor(async () => (await upstreamCheck()).status === 'up');
    expect(await upstreamCheck()).toEqual({ status: 'up', backend: 'braze' });
    expect(fake.requestsTo('GET /campaigns/list')).toHaveLength(2);
    const upstreamLines = componentLines(logs.lines, 'upstream');
    expect(upstreamLines.filter((line) => line.msg === 'the upstream accepts UPSTREAM_API_KEY again')).toEqual([expect.objectContaining({ level: 30 })]);
    // The question's own refusal is reported by /readyz, not as another failed call.
    expect(upstreamLines.filter((line) => line.path === '/campaigns/list')).toEqual([]);
  });

  it('an upstream whose root redirects to another address (http:// sent to https://) is degraded, naming where; one to a page of its own is up', async () => {
    fake = await startFakeBraze(UPSTREAM_KEY);
    fake.script(
      'GET /',
      { status: 301, raw: '', headers: { location: 'https://rest.example.test/?session=s3cr3t' } },
      { status: 302, raw: '', headers: { location: '/dashboard' } },
    );
    gateway = await startGateway({ UPSTREAM_URL: fake.url, UPSTREAM_API_KEY: UPSTREAM_KEY });
    const moved = await http(gateway.baseUrl, 'GET', '/readyz');
    expect(moved.status).toBe(200);
    expect(moved.body.checks.upstream).toEqual({
      status: 'degraded',
      message: 'The upstream answered 301, redirecting to https://rest.example.test/: set UPSTREAM_URL to https://rest.example.test (redirects are not followed, so that the key goes nowhere else)',
    });
    expect((await http(gateway.baseUrl, 'GET', '/readyz')).body.checks.upstream).toEqual({ status: 'up', backend: 'braze' });
  });

  it('an upstream answering 5xx, or not answering at all, is degraded; local mode has no upstream check', async () => {
    fake = await startFakeBraze(UPSTREAM_KEY);
    fake.script('GET /', { status: 503, json: { message: 'Service Unavailable' } }, { hang: true });
    const logs = recordingLogger('info');
    gateway = await startGateway({ UPSTREAM_URL: fake.url, UPSTREAM_API_KEY: UPSTREAM_KEY }, { logger: logs.logger });
    const failing = await http(gateway.baseUrl, 'GET', '/readyz');
    expect(failing.status).toBe(200);
    expect(failing.body).toMatchObject({ status: 'degraded', checks: { upstream: { status: 'degraded', message: 'The upstream answered 503' } } });
    // The ping's own timeout is longer than the 2 s readiness gives each check.
    const hanging = await http(gateway.baseUrl, 'GET', '/readyz');
    expect(hanging.status).toBe(200);
    expect(hanging.body).toMatchObject({
      status: 'degraded',
      message: 'upstream: did not answer within 2000 ms',
      checks: { store: { status: 'up' }, upstream: { status: 'degraded', message: 'did not answer within 2000 ms' } },
    });
    // One outage, logged once as a warning (an outage, not a bug) however it shows.
    expect(componentLines(logs.lines, 'readiness')).toEqual([
      expect.objectContaining({ level: 40, dependency: 'upstream', msg: 'dependency check failed', cause: expect.objectContaining({ message: 'The upstream answered 503' }) }),
    ]);
    await gateway.close();

    gateway = await startGateway();
    const local = await http(gateway.baseUrl, 'GET', '/readyz');
    expect(local.body).toEqual({ status: 'ready', checks: { store: { status: 'up', backend: 'sqlite' }, quota: { status: 'up', backend: 'memory' } } });
  });
});

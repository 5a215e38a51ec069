import { createServer, type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { DuplicationJob } from '../../src/domain/types.js';
import { CIRCUIT_COOLDOWN_MS, CIRCUIT_PROBE_WAIT_MS } from '../../src/duplicators/upstream-circuit.js';
import { ManualClock } from '../support/clock.js';
import { startFakeBraze, type FakeBraze } from '../support/fake-braze.js';
import {
  bearer,
  componentLines,
  http,
  json,
  metricSample,
  recordingLogger,
  scrape,
  startGateway,
  waitFor,
  type TestGateway,
  type TestWorkspace,
} from '../support/gateway.js';

const UPSTREAM_KEY = 'Braze-Upstream-Key-7C41E09A2F';
const DUPLICATE = 'POST /campaigns/duplicate';
const OPENED = 'the upstream circuit is open: calls of several jobs failed in a row, so upstream duplications are held and the upstream probed with one';
const CLOSED = 'the upstream circuit is closed: the upstream answered, upstream duplications resume';

interface Harness {
  gateway: TestGateway;
  ws: TestWorkspace;
  clock: ManualClock;
  lines: string[];
}

const harnesses: Harness[] = [];
const fakes: FakeBraze[] = [];

afterEach(async () => {
  for (const { gateway } of harnesses.splice(0)) await gateway.close();
  for (const fake of fakes.splice(0)) await fake.close();
});

async function upstreamGateway(url: string): Promise<Harness> {
  const clock = new ManualClock();
  const { logger, lines } = recordingLogger('debug');
  // Defaults: 4 jobs at once, 10 attempts, 10 s for a call. No test here waits for a call to time out, and a short
  // deadline let a probe time out on a busy machine, the circuit then staying open for a cooldown no test waits out.
  const gateway = await startGateway({ UPSTREAM_URL: url, UPSTREAM_API_KEY: UPSTREAM_KEY }, { clock, logger });
  const harness = { gateway, ws: await gateway.workspace(), clock, lines };
  harnesses.push(harness);
  return harness;
}

async function fakeBraze(): Promise<FakeBraze> {
  const fake = await startFakeBraze(UPSTREAM_KEY);
  fakes.push(fake);
  return fake;
}

async function enqueue({ gateway, ws }: Harness, name: string, campaignId = 'cmp-0001'): Promise<string> {
  const response = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
    headers: { ...json, ...bearer(ws.key) },
    body: JSON.stringify({ campaign_id: campaignId, name }),
  });
  expect(response.status).toBe(202);
  return response.body.job_id;
}

const jobsOf = ({ gateway, ws }: Harness, ids: string[]): Promise<DuplicationJob[]> =>
  Promise.all(ids.map(async (id) => (await gateway.app.store.getJob(ws.workspace.id, id)) as DuplicationJob));

const metric = async ({ gateway }: Harness, name: string, labels: Record<string, string> = {}) => metricSample(await scrape(gateway), name, labels);
const deferrals = (h: Harness) => metric(h, 'gateway_duplication_job_deferrals_total', { reason: 'upstream_circuit' });

/** Moves the clock on and wakes the worker, which tries the jobs due by then. */
function waitOut(h: Harness, ms: number): void {
  h.clock.advance(ms);
  h.gateway.app.worker.notify();
}

/** Once no job runs: the worker has put every job it claimed back, or finished it. */
const settled = async (h: Harness, ids: string[]) => {
  const jobs = await jobsOf(h, ids);
  return jobs.every((job) => job.status !== 'RUNNING') && jobs;
};

const attempts = (jobs: DuplicationJob[]) => jobs.reduce((sum, job) => sum + job.attempts, 0);

describe('the upstream circuit', () => {
  it('holds every job while Braze answers 503, probes once after each cooldown, and runs them all once Braze is back', async () => {
    const fake = await fakeBraze();
    const h = await upstreamGateway(fake.url);
    fake.answer(DUPLICATE, () => ({ status: 503, json: { message: 'Service Unavailable' } }));
    const ids: string[] = [];
    for (let index = 0; index < 10; index++) ids.push(await enqueue(h, `outage ${index}`));

    // Open once three jobs' calls failed: the jobs claimed after that wait, unsent.
    await waitFor(async () => (await metric(h, 'gateway_upstream_circuit_open')) === 1 && ((await deferrals(h)) ?? 0) > 0 && settled(h, ids));
    const opened = await jobsOf(h, ids);
    const sent = fake.requestsTo(DUPLICATE).length;
    expect(sent).toBeGreaterThanOrEqual(3);
    // Each call spent its job's attempt, as before; no other job spent one.
    expect(attempts(opened)).toBe(sent);
    for (const job of opened) expect(job).toMatchObject({ status: 'PENDING' });
    expect(opened.filter((job) => job.attempts === 0).length).toBe(10 - sent);
    // A job sent back tells its poller the cooldown's end.
    const deferred = opened.find((job) => job.attempts === 0 && job.runAt > h.clock.now())!;
    const poll = await http(h.gateway.baseUrl, 'GET', `/duplication_jobs/${deferred.id}`, { headers: bearer(h.ws.key) });
    expect(poll.headers['retry-after']).toBe(String(CIRCUIT_COOLDOWN_MS.first / 1000));
    // So does a job the worker has not claimed (it claims nothing while the circuit is open): nothing is sent sooner.
    const unclaimed = await enqueue(h, 'accepted while open');
    const [waiting] = await jobsOf(h, [unclaimed]);
    expect(waiting).toMatchObject({ status: 'PENDING', attempts: 0 });
    const unclaimedPoll = await http(h.gateway.baseUrl, 'GET', `/duplication_jobs/${unclaimed}`, { headers: bearer(h.ws.key) });
    expect(unclaimedPoll.headers['retry-after']).toBe(String(CIRCUIT_COOLDOWN_MS.first / 1000));
    ids.push(unclaimed);

    // Still ready: an upstream outage takes no instance out of the load balancer.
    const ready = await http(h.gateway.baseUrl, 'GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body.checks.upstream).toMatchObject({ status: 'degraded', message: expect.stringMatching(/circuit open: .* without spending attempts; one job is sent as a probe at /) });

    // The cooldown over, one job's call goes as the probe; it fails, and the circuit opens for twice as long.
    waitOut(h, CIRCUIT_COOLDOWN_MS.first);
    await waitFor(async () => fake.requestsTo(DUPLICATE).length === sent + 1 && settled(h, ids));
    const probed = await jobsOf(h, ids);
    expect(attempts(probed)).toBe(sent + 1);
    expect(await metric(h, 'gateway_upstream_circuit_open')).toBe(1);

    // The jobs held behind the probe come back, and wait again, unsent, their attempts unchanged.
    const deferredBefore = (await deferrals(h)) ?? 0;
    waitOut(h, CIRCUIT_PROBE_WAIT_MS);
    await waitFor(async () => ((await deferrals(h)) ?? 0) > deferredBefore && settled(h, ids));
    expect(fake.requestsTo(DUPLICATE)).toHaveLength(sent + 1);
    const held = await jobsOf(h, ids);
    expect(held.map((job) => [job.status, job.attempts])).toEqual(probed.map((job) => ['PENDING', job.attempts]));

    // Braze back: the next probe succeeds, the circuit closes, and every job runs, none failed.
    fake.answer(DUPLICATE, null);
    waitOut(h, 2 * CIRCUIT_COOLDOWN_MS.first - CIRCUIT_PROBE_WAIT_MS);
    await waitFor(async () => fake.requestsTo(DUPLICATE).length > sent + 1 && (await metric(h, 'gateway_upstream_circuit_open')) === 0);
    const done = await waitFor(async () => {
      // Each retry is due after its backoff, and each job held waits its second behind the probe.
      waitOut(h, 60_000);
      const jobs = await jobsOf(h, ids);
      return jobs.every((job) => job.status === 'SUCCEEDED') && jobs;
    });
    expect(attempts(done)).toBe(fake.requestsTo(DUPLICATE).length);

    const upstream = componentLines(h.lines, 'upstream').filter((line) => line.msg === OPENED || line.msg === CLOSED);
    expect(upstream.map((line) => [line.level, line.msg])).toEqual([
      [40, OPENED],
      [30, CLOSED],
    ]);
    expect(upstream[0].failures).toHaveLength(3);
    for (const failure of upstream[0].failures) expect(failure).toMatchObject({ outcome: 'unavailable', status: 503, jobId: expect.any(String) });
    expect(upstream[1]).toMatchObject({ failedProbes: 1, deferrals: await deferrals(h) });
    expect(h.lines.join('\n')).not.toContain(UPSTREAM_KEY);
  }, 60_000);

  it('probes with a different job each time, so that no job spends its attempts on the probes alone', async () => {
    const fake = await fakeBraze();
    const h = await upstreamGateway(fake.url);
    fake.answer(DUPLICATE, () => ({ status: 503, json: { message: 'Service Unavailable' } }));
    const ids: string[] = [];
    for (let index = 0; index < 8; index++) ids.push(await enqueue(h, `held ${index}`));
    await waitFor(async () => (await metric(h, 'gateway_upstream_circuit_open')) === 1 && ((await deferrals(h)) ?? 0) > 0 && settled(h, ids));
    const opening = fake.requestsTo(DUPLICATE).length;

    let cooldownMs: number = CIRCUIT_COOLDOWN_MS.first;
    for (let probe = 1; probe <= 4; probe++) {
      // Every held job is due by the cooldown's end; the last probe's job is not.
      waitOut(h, cooldownMs);
      await waitFor(async () => fake.requestsTo(DUPLICATE).length === opening + probe && settled(h, ids));
      cooldownMs *= 2;
    }
    const probed = fake.requestsTo(DUPLICATE).slice(opening).map((request) => JSON.parse(request.body).name as string);
    for (let index = 1; index < probed.length; index++) expect(probed[index]).not.toBe(probed[index - 1]);
    const perJob = new Map<string, number>();
    for (const name of probed) perJob.set(name, (perJob.get(name) ?? 0) + 1);
    for (const count of perJob.values()) expect(count).toBeLessThanOrEqual(2);
    expect(await metric(h, 'gateway_upstream_circuit_open')).toBe(1);
  }, 60_000);

  it("stays closed while one campaign's jobs get 500 on every try: the other campaigns' jobs are sent at once, and a 503 for everything still opens it", async () => {
    const fake = await fakeBraze();
    const h = await upstreamGateway(fake.url);
    const broken = (request: { body: string }) => JSON.parse(request.body).campaign_id === 'cmp-0001';
    fake.answer(DUPLICATE, (request) => (broken(request) ? { status: 500, json: { message: 'Internal Server Error' } } : undefined));
    // Claimed first, as many as the worker runs at once: more than enough distinct jobs to open the circuit.
    const poisoned: string[] = [];
    for (let index = 0; index < 5; index++) poisoned.push(await enqueue(h, `poison ${index}`, 'cmp-0001'));
    const others: string[] = [];
    for (let index = 0; index < 6; index++) others.push(await enqueue(h, `healthy ${index}`, `cmp-000${2 + (index % 2)}`));

    const done = await waitFor(async () => {
      const jobs = await jobsOf(h, others);
      return jobs.every((job) => job.status === 'SUCCEEDED') && jobs;
    });
    for (const job of done) expect(job.attempts).toBe(1);
    for (let tries = 1; tries <= 3; tries++) {
      await waitFor(async () => {
        const jobs = await jobsOf(h, poisoned);
        return jobs.every((job) => job.status === 'PENDING' && job.attempts === tries);
      });
      // Their retries are due after their backoff.
      waitOut(h, 60_000);
    }
    expect(fake.requestsTo(DUPLICATE).filter(broken)).toHaveLength(3 * poisoned.length);
    expect(await deferrals(h)).toBe(0);
    expect(await metric(h, 'gateway_upstream_circuit_open')).toBe(0);
    expect(componentLines(h.lines, 'upstream').filter((line) => line.msg === OPENED)).toHaveLength(0);

    fake.answer(DUPLICATE, () => ({ status: 503, json: { message: 'Service Unavailable' } }));
    for (let index = 0; index < 4; index++) await enqueue(h, `outage ${index}`, 'cmp-0002');
    await waitFor(async () => (await metric(h, 'gateway_upstream_circuit_open')) === 1);
  }, 60_000);

  it('opens when Braze cannot be reached (a closed port), and probes with one job after the cooldown', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const h = await upstreamGateway(`http://127.0.0.1:${port}`);
    const calls = () => metric(h, 'gateway_upstream_request_duration_seconds_count', { endpoint: '/campaigns/duplicate', outcome: 'unreachable' });

    const ids: string[] = [];
    for (let index = 0; index < 10; index++) ids.push(await enqueue(h, `unreachable ${index}`));
    await waitFor(async () => (await metric(h, 'gateway_upstream_circuit_open')) === 1 && ((await deferrals(h)) ?? 0) > 0 && settled(h, ids));
    const sent = (await calls()) ?? 0;
    expect(sent).toBeGreaterThanOrEqual(3);
    expect(attempts(await jobsOf(h, ids))).toBe(sent);
    const [opened] = componentLines(h.lines, 'upstream').filter((line) => line.msg === OPENED);
    for (const failure of opened.failures) expect(failure).toMatchObject({ outcome: 'unreachable', status: null });

    waitOut(h, CIRCUIT_COOLDOWN_MS.first);
    await waitFor(async () => (await calls()) === sent + 1 && settled(h, ids));
    const jobs = await jobsOf(h, ids);
    expect(attempts(jobs)).toBe(sent + 1);
    for (const job of jobs) expect(job.status).toBe('PENDING');
  }, 60_000);
});

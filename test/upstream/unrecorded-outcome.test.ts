import { RateLimiterMemory } from 'rate-limiter-flexible';
import { afterEach, describe, expect, it } from 'vitest';
import { DependencyUnavailableError } from '../../src/domain/errors.js';
import type { DuplicationJob } from '../../src/domain/types.js';
import { HELD_RETRY_MS } from '../../src/jobs/worker.js';
import { ManualClock } from '../support/clock.js';
import { startFakeBraze, type FakeBraze } from '../support/fake-braze.js';
import { bearer, componentLines, http, json, metricSample, recordingLogger, startGateway, storeFailingOn, storeHeldOn, waitFor, type TestGateway } from '../support/gateway.js';

const UPSTREAM_KEY = 'braze-upstream-key';
const DUPLICATE = 'POST /campaigns/duplicate';
const RECORDED_LATE = 'recorded a job outcome after the store came back';

/**
 * The embedded store's writer failing to sync (SQLITE_IOERR_FSYNC, an outage by the store's reading) on the jobs'
 * outcomes while `failing` says so for a call (jobId, lease owner, outcome, now).
 */
const fsyncFailure = () =>
  new DependencyUnavailableError(Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR_FSYNC' }), 'store');

describe('upstream mode: a job whose outcome the store failed to record after Braze made the copy', () => {
  let fake: FakeBraze;
  let gateway: TestGateway;

  afterEach(async () => {
    await gateway?.close();
    await fake?.close();
  });

  /** A gateway in upstream mode whose store fails `finishJob` while `failing` says so, and counts its calls. */
  async function start(failing: (jobId: string, owner: string) => boolean) {
    fake = await startFakeBraze(UPSTREAM_KEY);
    const clock = new ManualClock();
    const { logger, lines } = recordingLogger();
    const finishes: string[] = [];
    gateway = await startGateway(
      { UPSTREAM_URL: fake.url, UPSTREAM_API_KEY: UPSTREAM_KEY },
      { clock, logger, upstreamLimiter: new RateLimiterMemory({ points: 100, duration: 60 }) },
      {
        wrapStore: (store) =>
          storeHeldOn(
            storeFailingOn(store, ['finishJob'], (...args) => failing(args[0] as string, args[1] as string), fsyncFailure),
            ['finishJob'],
            () => void finishes.push('finishJob'),
          ),
      },
    );
    const ws = await gateway.workspace();
    // Each call makes a copy of its own, as Braze does.
    const copy = (id: string) => ({ status: 201, json: { message: 'success', new_campaign_id: id } });
    fake.script(DUPLICATE, copy('cmp-copy-1'), copy('cmp-copy-2'));
    const name = `Copy ${Date.now()}`;
    const response = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(ws.key) },
      body: JSON.stringify({ campaign_id: 'cmp-0001', name }),
    });
    expect(response.status).toBe(202);
    const id: string = response.body.job_id;
    const worker = () => componentLines(lines, 'worker');
    return {
      clock,
      id,
      worker,
      finishes,
      calls: () => fake.requestsTo(DUPLICATE).filter((request) => JSON.parse(request.body).name === name),
      job: async () => (await gateway.app.store.getJob(ws.workspace.id, id)) as DuplicationJob,
      /** Moves the clock on and waits for the worker's next try to record an outcome. */
      async nextTry(ms: number) {
        const tried = finishes.length;
        clock.advance(ms);
        gateway.app.worker.notify();
        await waitFor(async () => finishes.length > tried);
      },
      failedOnce: () => waitFor(async () => worker().find((line) => line.msg === 'recording the job outcome failed')),
      /**
       * The line that says a held outcome was recorded, once the worker has logged it; undefined if it never does. The
       * job reads as finished a little before: its commit is seen before the worker hears that it is done.
       */
      recordedLate: () => waitFor(async () => worker().find((line) => line.msg === RECORDED_LATE)).catch(() => undefined),
    };
  }

  it("records the outcome once the store takes it again, with Braze's campaign id, without calling Braze again", async () => {
    let failures = 2;
    const h = await start(() => failures-- > 0);
    expect(await h.failedOnce()).toMatchObject({ level: 40, jobId: h.id, cause: { code: 'SQLITE_IOERR_FSYNC' } });
    expect(await h.job()).toMatchObject({ status: 'RUNNING', attempts: 1 });

    // Tried again a second after the failure (failing once more), then two seconds after that.
    await h.nextTry(HELD_RETRY_MS.first);
    expect(h.finishes).toHaveLength(2);
    expect(await h.job()).toMatchObject({ status: 'RUNNING' });
    await h.nextTry(HELD_RETRY_MS.first * 2);
    const late = await h.recordedLate();
    expect(late).toMatchObject({ level: 30, jobId: h.id, tries: 3, delayMs: HELD_RETRY_MS.first * 3 });
    expect(await h.job()).toMatchObject({ status: 'SUCCEEDED', attempts: 1, resultCampaignId: 'cmp-copy-1', error: null });
    expect(h.calls()).toHaveLength(1);
    expect(h.worker().map((line) => line.msg)).toEqual(['recording the job outcome failed', 'job finished', RECORDED_LATE]);
    const metrics = (await http(gateway.baseUrl, 'GET', '/metrics')).text;
    expect(metricSample(metrics, 'gateway_duplication_jobs_finished_total', { status: 'SUCCEEDED' })).toBe(1);
    expect(metricSample(metrics, 'gateway_duplication_jobs_taken_over_total')).toBe(0);
  });

  it('records the outcome once the store takes it again after the lease has ended, when no other run took the job', async () => {
    let failing = true;
    const h = await start(() => failing);
    await h.failedOnce();
    await h.nextTry(HELD_RETRY_MS.first);

    // The store back only after the lease ended: the held outcome is tried before anything claims the job.
    failing = false;
    await h.nextTry(gateway.config.jobLeaseMs);
    const finished = await waitFor(async () => {
      const job = await h.job();
      return job.status !== 'RUNNING' && job;
    });
    expect(finished).toMatchObject({ status: 'SUCCEEDED', attempts: 1, resultCampaignId: 'cmp-copy-1' });
    expect(h.calls()).toHaveLength(1);
    await h.recordedLate();
    expect(h.worker().map((line) => line.msg)).toEqual(['recording the job outcome failed', 'job finished', RECORDED_LATE]);
  });

  it('records the outcome under the claim that takes the job back once its lease has ended, instead of calling Braze again', async () => {
    let firstLease: string | undefined;
    // Every write under the first run's lease fails: the job is claimed again once that lease has ended.
    const h = await start((_jobId, owner) => (firstLease ??= owner) === owner);
    await h.failedOnce();
    await h.nextTry(HELD_RETRY_MS.first);
    await h.nextTry(HELD_RETRY_MS.first * 2);

    h.clock.advance(gateway.config.jobLeaseMs);
    gateway.app.worker.notify();
    const finished = await waitFor(async () => {
      const job = await h.job();
      return job.status !== 'RUNNING' && job;
    });
    // The claim counted an attempt, as a claim does; Braze was called once, and its copy is the job's.
    expect(finished).toMatchObject({ status: 'SUCCEEDED', attempts: 2, resultCampaignId: 'cmp-copy-1' });
    expect(h.calls()).toHaveLength(1);
    expect(await h.recordedLate()).toMatchObject({ jobId: h.id });
    expect(h.worker().map((line) => line.msg)).not.toContainEqual(expect.stringMatching(/^took over a job/));
    const metrics = (await http(gateway.baseUrl, 'GET', '/metrics')).text;
    expect(metricSample(metrics, 'gateway_duplication_jobs_taken_over_total')).toBe(0);
  });

  it('records the outcome when the gateway stops after the store came back, instead of handing the job back', async () => {
    let failing = true;
    const h = await start(() => failing);
    await h.failedOnce();
    failing = false;
    await gateway.app.worker.stop(0);

    expect(await h.job()).toMatchObject({ status: 'SUCCEEDED', attempts: 1, resultCampaignId: 'cmp-copy-1', leaseOwner: null });
    expect(h.calls()).toHaveLength(1);
    expect(h.worker().map((line) => line.msg)).toEqual(['recording the job outcome failed', 'job finished', RECORDED_LATE]);
  });
});

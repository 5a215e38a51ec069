import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PostgresStore } from '../../src/adapters/postgres/store.js';
import type { Duplicator } from '../../src/domain/ports.js';
import { JobWorker } from '../../src/jobs/worker.js';
import { eventFixture, jobFixture, workspaceFixture } from '../support/fixtures.js';
import { bearer, http, startGateway, storeFailingOn } from '../support/gateway.js';
import { createTestSchema, skipWithoutPostgres } from '../support/postgres.js';
import { rest } from '../support/transports.js';
import { waitFor } from '../support/wait.js';

const LEASE_MS = 30_000;
const AHEAD_MS = 90_000;
const BEHIND_MS = -120_000;
const silent = { debug() {}, info() {}, warn() {}, error() {} };

/**
 * Instances of one gateway sharing a PostgreSQL database, each with its own clock: one accurate, one 90 s ahead, one
 * 120 s behind (an NTP step back). Each passes the store its own reading of the time, as the worker does; the job
 * queue keeps time by the database's clock whatever they read.
 */
describe.skipIf(skipWithoutPostgres)('PostgreSQL job queue on instances whose clocks differ', () => {
  let schema: Awaited<ReturnType<typeof createTestSchema>>;
  const stores: PostgresStore[] = [];
  let workspaceId: string;

  const instance = (offsetMs: number) => {
    const store = new PostgresStore({ connectionString: schema.url, schema: schema.schema, poolSize: 2 });
    stores.push(store);
    const now = () => new Date(Date.now() + offsetMs);
    return {
      store,
      now,
      claim: (owner: string) => {
        const at = now();
        return store.claimJobs(owner, 10, at, new Date(at.getTime() + LEASE_MS));
      },
      enqueue: (workspace: string) => {
        const at = now();
        const job = jobFixture(workspace, { runAt: at, createdAt: at, updatedAt: at });
        return store.enqueueJob(job, eventFixture(workspace, { jobId: job.id, occurredAt: at })).then(() => job);
      },
    };
  };

  beforeEach(async () => {
    schema = await createTestSchema();
    const accurate = instance(0);
    await accurate.store.migrate();
    const workspace = workspaceFixture();
    await accurate.store.createWorkspace(workspace);
    workspaceId = workspace.id;
  });

  afterEach(async () => {
    await Promise.all(stores.splice(0).map((store) => store.close()));
    await schema.drop();
  });

  it('lets no instance take over a job whose lease another holds, whichever clock runs ahead', async () => {
    const [accurate, ahead, behind] = [instance(0), instance(AHEAD_MS), instance(BEHIND_MS)];
    const first = await accurate.enqueue(workspaceId);
    expect(await accurate.claim('accurate')).toMatchObject([{ id: first.id }]);
    expect(await ahead.claim('ahead')).toEqual([]);

    const second = await accurate.enqueue(workspaceId);
    expect(await behind.claim('behind')).toMatchObject([{ id: second.id }]);
    expect(await accurate.claim('accurate')).toEqual([]);
    expect(await ahead.claim('ahead')).toEqual([]);
  });

  it('ends a lease by the database clock, so the job of a crashed instance is claimed again', async () => {
    const [behind, ahead] = [instance(BEHIND_MS), instance(AHEAD_MS)];
    const job = await behind.enqueue(workspaceId);
    const at = behind.now();
    expect(await behind.store.claimJobs('crashed', 1, at, new Date(at.getTime() + 50))).toMatchObject([{ id: job.id }]);
    const [claimed] = await waitFor(async () => {
      const jobs = await ahead.claim('ahead');
      return jobs.length > 0 && jobs;
    });
    expect(claimed).toMatchObject({ id: job.id, leaseOwner: 'ahead', attempts: 2 });
  });

  it('holds a retry until its delay has passed by the database clock, whatever the clock of the instance that retried', async () => {
    const [behind, accurate] = [instance(BEHIND_MS), instance(0)];
    const job = await accurate.enqueue(workspaceId);
    await behind.claim('behind');
    const at = behind.now();
    expect(await behind.store.retryJob(job.id, 'behind', new Date(at.getTime() + 5_000), null, at)).toBe(true);

    expect(await accurate.claim('accurate')).toEqual([]);
    const retried = await accurate.store.getJob(workspaceId, job.id);
    expect(retried!.runAt.getTime()).toBeGreaterThan((await accurate.store.databaseTime()).getTime());
  });

  it('runs a deferred job once its delay has passed by the database clock', async () => {
    const [ahead, accurate] = [instance(AHEAD_MS), instance(0)];
    const job = await accurate.enqueue(workspaceId);
    await ahead.claim('ahead');
    const at = ahead.now();
    expect(await ahead.store.deferJob(job.id, 'ahead', new Date(at.getTime() + 50), at)).toBe(true);
    const [claimed] = await waitFor(async () => {
      const jobs = await accurate.claim('accurate');
      return jobs.length > 0 && jobs;
    });
    expect(claimed).toMatchObject({ id: job.id, attempts: 1 });
  });

  it('makes a job accepted by an instance whose clock runs ahead due at once for the others', async () => {
    const [ahead, accurate] = [instance(AHEAD_MS), instance(0)];
    const job = await ahead.enqueue(workspaceId);
    expect(await accurate.claim('accurate')).toMatchObject([{ id: job.id }]);
  });

  it('hands back a stopping instance its jobs due at once by the database clock', async () => {
    const [ahead, accurate] = [instance(AHEAD_MS), instance(0)];
    const job = await accurate.enqueue(workspaceId);
    await ahead.claim('ahead');
    expect(await ahead.store.releaseJobs('ahead', ahead.now())).toBe(1);
    expect(await accurate.claim('accurate')).toMatchObject([{ id: job.id }]);
  });

  it('refuses to erase a workspace while another instance holds a lease on one of its jobs, whatever the clock of the instance erasing it', async () => {
    const [accurate, ahead] = [instance(0), instance(AHEAD_MS)];
    await accurate.enqueue(workspaceId);
    await accurate.claim('accurate');
    expect(await ahead.store.deleteWorkspace(workspaceId, ahead.now())).toMatchObject({ deleted: false, running: 1 });
  });

  it('measures how long the oldest due job has waited by the database clock, not the clock of the instance asking', async () => {
    const [accurate, ahead] = [instance(0), instance(AHEAD_MS)];
    await accurate.enqueue(workspaceId);
    const waited = await ahead.store.oldestDueJobWaitMs(ahead.now());
    expect(waited).toBeGreaterThanOrEqual(0);
    expect(waited).toBeLessThan(AHEAD_MS);
  });

  it("keeps a job's times in order whichever instances accepted and claimed it", async () => {
    const [ahead, accurate] = [instance(AHEAD_MS), instance(0)];
    await ahead.enqueue(workspaceId);
    const [claimed] = await accurate.claim('accurate');
    expect(claimed.createdAt.getTime()).toBeLessThanOrEqual(claimed.updatedAt.getTime());
  });

  it('tells the worker of an instance whose clock is behind how long a job waited since it was accepted, not less the skew', async () => {
    const [accurate, behind] = [instance(0), instance(BEHIND_MS)];
    const job = await accurate.enqueue(workspaceId);
    const waits: number[] = [];
    const done: Duplicator = { actsOutsideStore: false, duplicate: async () => ({ kind: 'succeeded', resultCampaignId: null }) };
    const clock = { now: behind.now };
    const options = { concurrency: 1, leaseMs: LEASE_MS, pollIntervalMs: 10, maxAttempts: 5, backoffBaseMs: 1000, backoffMaxMs: 60_000 };
    const worker = new JobWorker(behind.store, done, clock, options, silent, { jobFinished: (_status, _ms, _code, waitedMs) => void waits.push(waitedMs) });
    worker.start();
    try {
      await waitFor(async () => (await accurate.store.getJob(workspaceId, job.id))?.status === 'SUCCEEDED');
    } finally {
      await worker.stop();
    }
    expect(waits).toHaveLength(1);
    expect(waits[0]).toBeGreaterThanOrEqual(0);
    expect(waits[0]).toBeLessThan(-BEHIND_MS);
  });

  const workerOptions = { concurrency: 1, leaseMs: LEASE_MS, pollIntervalMs: 10, maxAttempts: 5, backoffBaseMs: 1000, backoffMaxMs: 60_000 };
  const succeeds: Duplicator = { actsOutsideStore: false, duplicate: async () => ({ kind: 'succeeded', resultCampaignId: null }) };

  it('never tells the worker a job waited less than nothing, when an instance of an older version accepted it by a clock ahead', async () => {
    // An older version wrote created_at from its own clock.
    const older = new PostgresStore({ connectionString: schema.url, schema: schema.schema, poolSize: 1, jobTime: 'caller' });
    stores.push(older);
    const acceptedAt = new Date(Date.now() + AHEAD_MS);
    const job = jobFixture(workspaceId, { runAt: new Date(), createdAt: acceptedAt, updatedAt: acceptedAt });
    await older.enqueueJob(job, eventFixture(workspaceId, { jobId: job.id, occurredAt: acceptedAt }));
    const accurate = instance(0);
    const waits: number[] = [];
    const worker = new JobWorker(accurate.store, succeeds, { now: accurate.now }, workerOptions, silent, { jobFinished: (_status, _ms, _code, waitedMs) => void waits.push(waitedMs) });
    worker.start();
    try {
      await waitFor(async () => (await accurate.store.getJob(workspaceId, job.id))?.status === 'SUCCEEDED');
    } finally {
      await worker.stop();
    }
    expect(waits).toEqual([0]);
  });

  it('records when it stops every outcome the store failed to record earlier, on an instance whose clock is ahead', async () => {
    const [accurate, ahead] = [instance(0), instance(AHEAD_MS)];
    const jobs = [await accurate.enqueue(workspaceId), await accurate.enqueue(workspaceId)];
    let failing = true;
    const errors: string[] = [];
    const logger = { ...silent, error: (_details: object, message: string) => void errors.push(message) };
    const worker = new JobWorker(storeFailingOn(ahead.store, ['finishJob'], () => failing), succeeds, { now: ahead.now }, workerOptions, logger);
    worker.start();
    try {
      // One after the other: each lease runs by the database's clock, which is behind this instance's by more than it.
      await waitFor(async () => errors.filter((message) => message === 'recording the job outcome failed').length === 2);
    } finally {
      failing = false;
      await worker.stop(0);
    }
    for (const job of jobs) expect(await accurate.store.getJob(workspaceId, job.id)).toMatchObject({ status: 'SUCCEEDED', leaseOwner: null, attempts: 1 });
  });

  it('tells a poller on an instance whose clock is behind to wait for a retry no longer than the retry waits', async () => {
    const [gatewayStore, accurate] = [instance(BEHIND_MS), instance(0)];
    const behindNow = gatewayStore.now;
    const gateway = await startGateway({ WORKER_CONCURRENCY: '0' }, { store: gatewayStore.store, clock: { now: behindNow } });
    stores.splice(stores.indexOf(gatewayStore.store), 1);
    try {
      const team = await gateway.workspace();
      const { jobId } = await rest.duplicate(gateway.baseUrl, team.key, { campaignId: team.campaign.id, name: 'retried' });
      const [claimed] = await accurate.claim('accurate');
      expect(claimed.id).toBe(jobId);
      const at = accurate.now();
      await accurate.store.retryJob(jobId!, 'accurate', new Date(at.getTime() + 5_000), null, at);

      const polled = await http(gateway.baseUrl, 'GET', `/duplication_jobs/${jobId}`, { headers: bearer(team.key) });
      expect(polled.body.status).toBe('pending');
      expect(Number(polled.headers['retry-after'])).toBeLessThanOrEqual(5);
    } finally {
      await gateway.close();
    }
  });
});


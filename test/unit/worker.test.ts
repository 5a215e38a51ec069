import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { PostgresStore } from '../../src/adapters/postgres/store.js';
import { SqliteStore } from '../../src/adapters/sqlite/store.js';
import { DependencyUnavailableError } from '../../src/domain/errors.js';
import type { Duplicator, DuplicationResult } from '../../src/domain/ports.js';
import { LocalDuplicator } from '../../src/duplicators/local.js';
import { CLAIM_RECOVERY_SETTLE_MS, HELD_RETRY_MS, JobWorker } from '../../src/jobs/worker.js';
import { ManualClock } from '../support/clock.js';
import { campaignFixture, eventFixture, jobFixture, workspaceFixture } from '../support/fixtures.js';
import { componentLines, recordingLogger, startGateway, storeFailingOn, storeHeldOn } from '../support/gateway.js';
import { createTestDatabase, openPostgresStore, skipWithoutPostgres, withAdmin } from '../support/postgres.js';
import { rest } from '../support/transports.js';
import { waitFor } from '../support/wait.js';

const silent = { debug() {}, info() {}, warn() {}, error() {} };

const workerOptions = (concurrency: number, leaseMs = 30_000) => ({
  concurrency,
  leaseMs,
  pollIntervalMs: 10,
  maxAttempts: 5,
  backoffBaseMs: 1000,
  backoffMaxMs: 60_000,
});

/** A duplicator whose runs end when the test says, in the order it says (a rejected promise: the run throws). */
class HeldDuplicator implements Duplicator {
  readonly actsOutsideStore = false;
  readonly runs: ((result: DuplicationResult | Promise<DuplicationResult>) => void)[] = [];
  duplicate(): Promise<DuplicationResult> {
    return new Promise((resolve) => this.runs.push(resolve));
  }
}

describe('the job worker', () => {
  let dir: string;
  let store: SqliteStore;
  let worker: JobWorker | undefined;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cgw-worker-'));
    store = new SqliteStore({ filename: join(dir, 'gateway.db') });
    await store.migrate();
  });

  /** Enqueues a job due now and waits until the worker runs it, as the duplicator's first run. */
  async function runningJob(workspaceId: string, clock: ManualClock, duplicator: HeldDuplicator) {
    const job = jobFixture(workspaceId, { runAt: clock.now() });
    await store.enqueueJob(job, eventFixture(workspaceId, { jobId: job.id }));
    worker!.notify();
    await waitFor(async () => duplicator.runs.length === 1);
    return job;
  }

  afterEach(async () => {
    await worker?.stop(0);
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lets a run that outlived its lease do nothing to the job once this same process has claimed it again', async () => {
    const clock = new ManualClock();
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    const job = jobFixture(ws.id, { runAt: clock.now(), createdAt: clock.now() });
    await store.enqueueJob(job, eventFixture(ws.id, { jobId: job.id }));
    const duplicator = new HeldDuplicator();
    const leaseMs = 30_000;
    worker = new JobWorker(store, duplicator, clock, workerOptions(2, leaseMs), silent);
    worker.start();
    await waitFor(async () => duplicator.runs.length === 1);

    // The first run takes longer than its lease: the job is due again, and the free slot claims it.
    clock.advance(leaseMs + 1);
    worker.notify();
    await waitFor(async () => duplicator.runs.length === 2);
    const [late, current] = duplicator.runs;

    // The late run fails and would send the job back to the queue: refused, the job is the current run's.
    late({ kind: 'transient', error: { code: 'UPSTREAM_TIMEOUT', message: 'late' } });
    current({ kind: 'succeeded', resultCampaignId: null });
    const finished = await waitFor(async () => {
      const state = await store.getJob(ws.id, job.id);
      return state?.status !== 'RUNNING' && state;
    });
    expect(finished).toMatchObject({ status: 'SUCCEEDED', attempts: 2, error: null });
    expect(duplicator.runs).toHaveLength(2);
  });

  it('fails a job whose runs keep dying with their lease once its attempts are spent, instead of running it forever', async () => {
    const clock = new ManualClock();
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    const job = jobFixture(ws.id, { runAt: clock.now() });
    await store.enqueueJob(job, eventFixture(ws.id, { jobId: job.id }));
    const options = workerOptions(1);
    // Each of these claims is a run whose process died (or hung) with the job: it never reports back.
    for (let run = 1; run <= options.maxAttempts; run += 1) {
      expect(await store.claimJobs(`crashed-${run}`, 1, clock.now(), new Date(clock.now().getTime() + options.leaseMs))).toHaveLength(1);
      clock.advance(options.leaseMs + 1);
    }
    const duplicator = new HeldDuplicator();
    worker = new JobWorker(store, duplicator, clock, options, silent);
    worker.start();

    // Done when the job failed, or when it was run once more: the job that kills its runs must not be.
    await waitFor(async () => duplicator.runs.length > 0 || (await store.getJob(ws.id, job.id))?.status === 'FAILED');
    expect(duplicator.runs).toHaveLength(0);
    expect(await store.getJob(ws.id, job.id)).toMatchObject({ status: 'FAILED', attempts: options.maxAttempts + 1, error: { code: 'ATTEMPTS_EXHAUSTED' } });
    const events = await store.listEvents(ws.id, { jobId: job.id, types: ['CAMPAIGN_DUPLICATION_FAILED'] }, { first: 10 });
    expect(events).toMatchObject([{ details: { error: { code: 'ATTEMPTS_EXHAUSTED' } } }]);
  });

  it('warns, naming the job and the lease it took it from, and counts it, when it takes over a job whose lease expired', async () => {
    const clock = new ManualClock();
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    const crashed = jobFixture(ws.id, { runAt: clock.now(), requestId: 'req-crashed' });
    await store.enqueueJob(crashed, eventFixture(ws.id, { jobId: crashed.id }));
    const options = workerOptions(2);
    // Its instance was killed mid-run: the job stays RUNNING under that lease until the lease runs out.
    await store.claimJobs('killed-host:7:abcd:1', 1, clock.now(), new Date(clock.now().getTime() + options.leaseMs));
    clock.advance(options.leaseMs + 1);
    const pending = jobFixture(ws.id, { runAt: clock.now() });
    await store.enqueueJob(pending, eventFixture(ws.id, { jobId: pending.id }));
    const duplicator = new HeldDuplicator();
    const lines: { level: string; details: Record<string, unknown>; message: string }[] = [];
    const record = (level: string) => (details: object, message: string) => void lines.push({ level, details: details as Record<string, unknown>, message });
    let takenOver = 0;
    worker = new JobWorker(store, duplicator, clock, options, { debug: record('debug'), info: record('info'), warn: record('warn'), error: record('error') }, {
      jobTakenOver: () => (takenOver += 1),
    });
    worker.start();
    await waitFor(async () => duplicator.runs.length === 2);

    expect(lines.filter((line) => line.level === 'warn')).toEqual([
      {
        level: 'warn',
        details: { jobId: crashed.id, reqId: 'req-crashed', previousLeaseOwner: 'killed-host:7:abcd:1', attempts: 2 },
        message: 'took over a job whose lease expired; in upstream mode the upstream may have received it twice',
      },
    ]);
    expect(takenOver).toBe(1);
  });

  it('retries a job failing transiently until its last attempt, runs that attempt, then fails it with its error', async () => {
    const clock = new ManualClock();
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    const duplicator = new HeldDuplicator();
    const options = workerOptions(1);
    worker = new JobWorker(store, duplicator, clock, options, silent);
    worker.start();
    const job = await runningJob(ws.id, clock, duplicator);
    const stateOf = async () => (await store.getJob(ws.id, job.id))!;
    for (let attempt = 1; attempt <= options.maxAttempts; attempt += 1) {
      // Done when the attempt runs, or when the job failed without running it.
      await waitFor(async () => duplicator.runs.length === attempt || (await stateOf()).status === 'FAILED');
      expect(duplicator.runs).toHaveLength(attempt);
      duplicator.runs[attempt - 1]({ kind: 'transient', error: { code: 'UPSTREAM_TIMEOUT', message: `attempt ${attempt}` } });
      if (attempt === options.maxAttempts) break;
      await waitFor(async () => (await stateOf()).status === 'PENDING');
      // Past the longest backoff: the retry is due.
      clock.advance(options.backoffMaxMs);
      worker.notify();
    }
    const finished = await waitFor(async () => {
      const state = await stateOf();
      return state.status !== 'RUNNING' && state;
    });
    expect(finished).toMatchObject({ status: 'FAILED', attempts: options.maxAttempts, error: { code: 'UPSTREAM_TIMEOUT', message: `attempt ${options.maxAttempts}` } });
    expect(duplicator.runs).toHaveLength(options.maxAttempts);
  });

  it('hands back, when it stops, the jobs of every claim still running', async () => {
    const clock = new ManualClock();
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    const duplicator = new HeldDuplicator();
    worker = new JobWorker(store, duplicator, clock, workerOptions(3), silent);
    worker.start();
    // Two jobs claimed one after the other: two claims, two leases.
    const jobs = [jobFixture(ws.id, { runAt: clock.now() }), jobFixture(ws.id, { runAt: clock.now() })];
    for (const [index, job] of jobs.entries()) {
      await store.enqueueJob(job, eventFixture(ws.id, { jobId: job.id }));
      worker.notify();
      await waitFor(async () => duplicator.runs.length === index + 1);
    }
    await worker.stop(0);
    worker = undefined;
    for (const job of jobs) expect(await store.getJob(ws.id, job.id)).toMatchObject({ status: 'PENDING', leaseOwner: null, attempts: 0 });
  });

  it('hands back, when it stops, a job the store failed under before its run came to an outcome', async () => {
    const clock = new ManualClock();
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    let failing = true;
    const flaky = storeFailingOn(store, ['deferJob'], () => failing);
    const duplicator = new HeldDuplicator();
    const messages: string[] = [];
    const record = (_details: object, message: string) => void messages.push(message);
    worker = new JobWorker(flaky, duplicator, clock, workerOptions(2), { debug: record, info: record, warn: record, error: record });
    worker.start();
    const job = await runningJob(ws.id, clock, duplicator);
    // The run reads the store, which is unreachable, and cannot put the job back either.
    duplicator.runs[0](Promise.reject(new DependencyUnavailableError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), 'store')));
    await waitFor(async () => messages.includes('recording the job outcome failed'));
    expect(await store.getJob(ws.id, job.id)).toMatchObject({ status: 'RUNNING' });

    failing = false;
    await worker.stop(0);
    worker = undefined;
    // Its attempt stays counted, as for any run handed back after it started.
    expect(await store.getJob(ws.id, job.id)).toMatchObject({ status: 'PENDING', leaseOwner: null, attempts: 1 });
    expect(messages).toContain('returned unfinished jobs to the queue');
  });

  it('records a retry the store failed to take once it takes it again, while the lease lasts', async () => {
    const clock = new ManualClock();
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    let failures = 1;
    const unavailable = () => new DependencyUnavailableError(Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR_FSYNC' }), 'store');
    const flaky = storeFailingOn(store, ['retryJob'], () => failures-- > 0, unavailable);
    // A run that acts upstream: the store failing its outcome does not send it back for free.
    const duplicator = Object.assign(new HeldDuplicator(), { actsOutsideStore: true });
    const messages: string[] = [];
    const record = (_details: object, message: string) => void messages.push(message);
    let retried = 0;
    worker = new JobWorker(flaky, duplicator, clock, workerOptions(2), { debug: record, info: record, warn: record, error: record }, { jobRetried: () => (retried += 1) });
    worker.start();
    const job = await runningJob(ws.id, clock, duplicator);
    duplicator.runs[0]({ kind: 'transient', error: { code: 'UPSTREAM_TIMEOUT', message: 'slow' } });
    await waitFor(async () => messages.includes('recording the job outcome failed'));
    expect(await store.getJob(ws.id, job.id)).toMatchObject({ status: 'RUNNING' });

    clock.advance(HELD_RETRY_MS.first);
    worker.notify();
    await waitFor(async () => messages.includes('recorded a job outcome after the store came back'));
    expect(await store.getJob(ws.id, job.id)).toMatchObject({ status: 'PENDING', attempts: 1, error: { code: 'UPSTREAM_TIMEOUT' } });
    expect(messages).toEqual(['recording the job outcome failed', 'job will be retried', 'recorded a job outcome after the store came back']);
    expect(retried).toBe(1);
    expect(duplicator.runs).toHaveLength(1);
  });

  it.each([
    { acts: 'in the store alone', actsOutsideStore: false, after: { status: 'PENDING', attempts: 0 }, logged: 'the store is unavailable; jobs go back to the queue without spending an attempt' },
    { acts: 'upstream', actsOutsideStore: true, after: { status: 'RUNNING', attempts: 1 }, logged: 'recording the job outcome failed' },
  ])('when the store is unavailable for the outcome of a run that acted $acts, gives the attempt back only if running it again makes nothing twice', async ({ actsOutsideStore, after, logged }) => {
    const clock = new ManualClock();
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    const full = storeFailingOn(store, ['finishJob'], () => true, () => new DependencyUnavailableError(Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' }), 'store'));
    const duplicator = Object.assign(new HeldDuplicator(), { actsOutsideStore });
    const warnings: string[] = [];
    worker = new JobWorker(full, duplicator, clock, workerOptions(2), { ...silent, warn: (_details: object, message: string) => void warnings.push(message) });
    worker.start();
    const job = await runningJob(ws.id, clock, duplicator);
    duplicator.runs[0]({ kind: 'succeeded', resultCampaignId: null });
    // The outage is logged before the job is put back: wait for both.
    await waitFor(async () => warnings.includes(logged) && (await store.getJob(ws.id, job.id))?.status === after.status);
    expect(await store.getJob(ws.id, job.id)).toMatchObject(after);
    expect(duplicator.runs).toHaveLength(1);
  });

  it('still stops when the store cannot take back its running jobs, which then wait for their lease', async () => {
    const clock = new ManualClock();
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    const duplicator = new HeldDuplicator();
    const messages: string[] = [];
    const record = (_details: object, message: string) => void messages.push(message);
    const logger = { debug: record, info: record, warn: record, error: record };
    const failing = storeFailingOn(store, ['releaseJobs'], () => true);
    worker = new JobWorker(failing, duplicator, clock, workerOptions(1), logger);
    worker.start();
    const job = await runningJob(ws.id, clock, duplicator);
    await worker.stop(0);
    worker = undefined;
    expect(messages).toContain('returning unfinished jobs to the queue failed; they run again when their lease expires');
    expect(await store.getJob(ws.id, job.id)).toMatchObject({ status: 'RUNNING', attempts: 1 });
  });

  it('logs a job that failed for good as a warning with its error, and a success as info', async () => {
    const clock = new ManualClock();
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    const duplicator = new HeldDuplicator();
    const lines: { level: string; details: Record<string, unknown>; message: string }[] = [];
    const record = (level: string) => (details: object, message: string) => void lines.push({ level, details: details as Record<string, unknown>, message });
    worker = new JobWorker(store, duplicator, clock, workerOptions(1), { debug: record('debug'), info: record('info'), warn: record('warn'), error: record('error') });
    worker.start();
    const failed = await runningJob(ws.id, clock, duplicator);
    duplicator.runs[0]({ kind: 'permanent', error: { code: 'UPSTREAM_NOT_FOUND', message: 'The upstream answered 404: Invalid Campaign ID' } });
    const failure = await waitFor(async () => lines.find((line) => line.message === 'job finished'));
    expect(failure).toEqual({
      level: 'warn',
      details: { jobId: failed.id, status: 'FAILED', attempts: 1, error: { code: 'UPSTREAM_NOT_FOUND', message: 'The upstream answered 404: Invalid Campaign ID' } },
      message: 'job finished',
    });

    duplicator.runs.length = 0;
    const succeeded = await runningJob(ws.id, clock, duplicator);
    duplicator.runs[0]({ kind: 'succeeded', resultCampaignId: null });
    const success = await waitFor(async () => lines.find((line) => line.message === 'job finished' && line.details.jobId === succeeded.id));
    expect(success).toEqual({ level: 'info', details: { jobId: succeeded.id, status: 'SUCCEEDED', attempts: 1 }, message: 'job finished' });
  });

  it('runs a job the gateway accepts at once, woken by the request rather than its next poll', async () => {
    let claims = 0;
    const claim = store.claimJobs.bind(store);
    store.claimJobs = async (...args) => {
      const jobs = await claim(...args);
      claims += 1;
      return jobs;
    };
    // A poll far longer than waitFor waits: the job can run in time only if its request wakes the worker.
    const gateway = await startGateway({}, { store, workerPollIntervalMs: 3_600_000 });
    try {
      const team = await gateway.workspace();
      // The worker's first look, as it started, is over: it found nothing, and sleeps.
      await waitFor(async () => claims === 1);
      const { jobId } = await rest.duplicate(gateway.baseUrl, team.key, { campaignId: team.campaign.id, name: 'woken copy' });
      await waitFor(async () => (await store.getJob(team.workspace.id, jobId!))?.status === 'SUCCEEDED');
    } finally {
      await gateway.close();
    }
  });

  it('logs a claim failure that keeps repeating once, then a reminder a minute later, then when claiming works again', async () => {
    const clock = new ManualClock();
    let failing = true;
    let claims = 0;
    // An honest internal error, not an outage: a bug, logged as an error.
    const counted = storeHeldOn(storeFailingOn(store, ['claimJobs'], () => failing), ['claimJobs'], () => void (claims += 1));
    const { logger, lines } = recordingLogger();
    const gateway = await startGateway({}, { store: counted, clock, logger });
    try {
      const worker = () => componentLines(lines, 'worker');
      const first = await waitFor(async () => worker()[0]);
      expect(first).toMatchObject({ level: 50, msg: 'claiming jobs failed; retrying', err: { message: 'disk /var/secret/gateway.db exploded' } });
      expect(first.err.stack).toEqual(expect.any(String));

      // The worker keeps trying at its pace, and says nothing more until a minute has passed.
      const seen = claims;
      await waitFor(async () => claims >= seen + 3);
      expect(worker()).toHaveLength(1);
      clock.advance(60_000);
      const reminder = await waitFor(async () => worker()[1]);
      expect(reminder).toMatchObject({ level: 50, msg: 'claiming jobs still fails; retrying', since: '2030-01-01T00:00:00.000Z', cause: { message: 'disk /var/secret/gateway.db exploded' } });
      expect(reminder.failures).toBeGreaterThanOrEqual(seen + 3);

      // Claims that work again end the failure only once they have kept working for a while, with no failure
      // between them: a store failing every other claim is one failure in the log.
      const claimed = async (count: number) => {
        const seen = claims;
        await waitFor(async () => claims >= seen + count);
      };
      failing = false;
      await claimed(2);
      clock.advance(CLAIM_RECOVERY_SETTLE_MS - 1000);
      failing = true;
      await claimed(2);
      failing = false;
      await claimed(2);
      clock.advance(1000);
      await claimed(2);
      expect(worker()).toHaveLength(2);
      clock.advance(CLAIM_RECOVERY_SETTLE_MS - 1000);
      const recovered = await waitFor(async () => worker()[2]);
      expect(recovered).toMatchObject({ level: 30, msg: 'claiming jobs works again', since: '2030-01-01T00:00:00.000Z' });
      expect(recovered.failures).toBeGreaterThanOrEqual(reminder.failures);
      await waitFor(async () => claims >= recovered.failures + 3);
      expect(worker()).toHaveLength(3);
    } finally {
      await gateway.close();
    }
  });
});

describe.skipIf(skipWithoutPostgres)('the job worker on a PostgreSQL store out of connections', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let store: PostgresStore;
  let starved: PostgresStore;
  let worker: JobWorker | undefined;
  const role = `cgw_starved_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
  const password = randomUUID();

  beforeAll(async () => {
    database = await createTestDatabase();
    store = openPostgresStore(database.url);
    await store.migrate();
    // A role at its connection limit: every connection it asks for is refused with 53300 (too_many_connections).
    await withAdmin(async (client) => {
      await client.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}' CONNECTION LIMIT 0`);
      await client.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${role}`);
    }, database.url);
    const url = new URL(database.url);
    url.username = role;
    url.password = password;
    starved = new PostgresStore({ connectionString: url.toString(), poolSize: 2 });
  });

  afterAll(async () => {
    await worker?.stop(0);
    await starved?.close();
    await store?.close();
    await database?.drop();
    await withAdmin((client) => client.query(`DROP ROLE IF EXISTS ${role}`));
  });

  it('puts a job whose run finds the store out of connections back in the queue without spending an attempt, logging the outage once', async () => {
    const clock = new ManualClock();
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    const campaign = campaignFixture(ws.id);
    await store.insertCampaign(campaign);
    const job = jobFixture(ws.id, { runAt: clock.now(), sourceCampaignId: campaign.id, tagNames: null });
    await store.enqueueJob(job, eventFixture(ws.id, { jobId: job.id }));
    const lines: { level: string; message: string; details: Record<string, any> }[] = [];
    const record = (level: string) => (details: object, message: string) => void lines.push({ level, message, details: details as Record<string, any> });
    const deferrals: string[] = [];
    // The duplicator reads the campaign through the starved role; the worker records through the store.
    worker = new JobWorker(store, new LocalDuplicator(starved, clock), clock, workerOptions(1), { debug: record('debug'), info: record('info'), warn: record('warn'), error: record('error') }, {
      jobDeferred: (reason) => void deferrals.push(reason),
    });
    worker.start();
    const stateOf = async () => (await store.getJob(ws.id, job.id))!;

    for (let run = 1; run <= 3; run += 1) {
      await waitFor(async () => deferrals.length === run && (await stateOf()).status === 'PENDING');
      expect(await stateOf()).toMatchObject({ status: 'PENDING', attempts: 0, error: null });
      // Past the store's Retry-After: due again.
      clock.advance(5_000);
      worker.notify();
    }
    expect(deferrals).toEqual(['store', 'store', 'store']);
    const outage = lines.filter((line) => line.level !== 'debug');
    expect(outage).toEqual([
      {
        level: 'warn',
        message: 'the store is unavailable; jobs go back to the queue without spending an attempt',
        details: { cause: expect.objectContaining({ code: '53300' }) },
      },
    ]);

    await withAdmin((client) => client.query(`ALTER ROLE ${role} CONNECTION LIMIT -1`), database.url);
    clock.advance(5_000);
    worker.notify();
    const finished = await waitFor(async () => {
      const state = await stateOf();
      return state.status === 'SUCCEEDED' && state;
    });
    expect(finished).toMatchObject({ attempts: 1, error: null });
    // The outage ends in the log once jobs have run for a while without it: a store short of connections fails
    // every few jobs, and each success between would otherwise make two lines.
    const logged = () => lines.filter((line) => line.level !== 'debug').map((line) => line.message);
    expect(logged()).toEqual(['the store is unavailable; jobs go back to the queue without spending an attempt', 'job finished']);
    const later = jobFixture(ws.id, { runAt: clock.now(), sourceCampaignId: campaign.id, tagNames: null });
    await store.enqueueJob(later, eventFixture(ws.id, { jobId: later.id }));
    clock.advance(CLAIM_RECOVERY_SETTLE_MS);
    worker.notify();
    await waitFor(async () => logged().length === 4);
    expect(logged()).toEqual([
      'the store is unavailable; jobs go back to the queue without spending an attempt',
      'job finished',
      'jobs run again',
      'job finished',
    ]);
  });
});

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SqliteStore } from '../../src/adapters/sqlite/store.js';
import { RetentionPruner } from '../../src/jobs/retention.js';
import { ManualClock } from '../support/clock.js';
import { eventFixture, jobFixture, workspaceFixture } from '../support/fixtures.js';
import { componentLines, metricSample, recordingLogger, scrape, startGateway, storeHeldOn, waitFor } from '../support/gateway.js';
import { jobEvents, rest } from '../support/transports.js';

const DAY = 86_400_000;
const HOUR = 3_600_000;
const silent = { info() {}, warn() {}, error() {} };

/** A pruner's logger that keeps its info lines. */
const infoLines = () => {
  const lines: { msg: string; [field: string]: unknown }[] = [];
  return { lines, logger: { ...silent, info: (fields: object, msg: string) => void lines.push({ msg, ...fields }) } };
};

describe('retention', () => {
  let dir: string;
  let store: SqliteStore;
  let clock: ManualClock;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cgw-retention-'));
    store = new SqliteStore({ filename: join(dir, 'gateway.db') });
    await store.migrate();
    clock = new ManualClock();
  });

  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('removes finished jobs after their period and events after a longer one, keeping unfinished jobs', async () => {
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    const start = clock.now();
    const finished = jobFixture(ws.id, { createdAt: start, runAt: start });
    const pending = jobFixture(ws.id, { createdAt: start, runAt: new Date(start.getTime() + 365 * DAY) });
    await store.enqueueJob(finished, eventFixture(ws.id, { occurredAt: start, jobId: finished.id }));
    await store.enqueueJob(pending, eventFixture(ws.id, { occurredAt: start, jobId: pending.id }));
    await store.claimJobs('w', 1, start, new Date(start.getTime() + 60_000));
    await store.finishJob(finished.id, 'w', { status: 'SUCCEEDED', resultCampaignId: null, error: null, event: eventFixture(ws.id, { occurredAt: start }) }, start);
    await store.reserveIdempotencyKey({ workspaceId: ws.id, key: 'k', requestHash: 'h', jobId: null, createdAt: start, expiresAt: new Date(start.getTime() + DAY) }, start);
    for (let i = 0; i < 2500; i += 1) await store.insertEvent(eventFixture(ws.id, { occurredAt: start }));

    const pruner = new RetentionPruner(store, clock, { jobRetentionMs: 7 * DAY, eventRetentionMs: 30 * DAY, intervalMs: 60_000, batchSize: 1000 }, silent);
    clock.advance(DAY + 1);
    expect(await pruner.pruneOnce()).toEqual({ jobs: 0, events: 0, idempotencyKeys: 1 });

    clock.advance(7 * DAY);
    expect(await pruner.pruneOnce()).toEqual({ jobs: 1, events: 0, idempotencyKeys: 0 });
    expect(await store.getJob(ws.id, finished.id)).toBeNull();
    expect(await store.getJob(ws.id, pending.id)).not.toBeNull();

    clock.advance(30 * DAY);
    expect(await pruner.pruneOnce()).toEqual({ jobs: 0, events: 2502, idempotencyKeys: 0 });
    expect(await store.getJob(ws.id, pending.id)).not.toBeNull();
    expect((await store.listEvents(ws.id, { jobId: pending.id }, { first: 10 })).map((event) => event.jobId)).toEqual([pending.id]);
  });

  it('with both periods one day, keeps every event of a job kept, past batches of only kept events', async () => {
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    const accepted = clock.now();
    const finished = jobFixture(ws.id, { createdAt: accepted, runAt: accepted });
    // A backlog: more jobs than a batch, still waiting, accepted before any event that may go.
    const backlog = Array.from({ length: 3 }, () => jobFixture(ws.id, { createdAt: accepted, runAt: new Date(accepted.getTime() + 365 * DAY) }));
    for (const job of [finished, ...backlog]) await store.enqueueJob(job, eventFixture(ws.id, { occurredAt: accepted, jobId: job.id }));
    for (let i = 0; i < 3; i += 1) await store.insertEvent(eventFixture(ws.id, { occurredAt: accepted, type: 'PERMISSION_DENIED' }));
    clock.advance(DAY);
    await store.claimJobs('w', 10, clock.now(), new Date(clock.now().getTime() + 60_000));
    const done = eventFixture(ws.id, { type: 'CAMPAIGN_DUPLICATED', occurredAt: clock.now(), jobId: finished.id });
    await store.finishJob(finished.id, 'w', { status: 'SUCCEEDED', resultCampaignId: null, error: null, event: done }, clock.now());
    const typesOf = async (jobId: string) => (await store.listEvents(ws.id, { jobId }, { first: 10 })).map((event) => event.type);

    const pruner = new RetentionPruner(store, clock, { jobRetentionMs: DAY, eventRetentionMs: DAY, intervalMs: 60_000, batchSize: 2 }, silent);
    clock.advance(HOUR);
    expect(await pruner.pruneOnce()).toEqual({ jobs: 0, events: 3, idempotencyKeys: 0 });
    expect(await typesOf(finished.id)).toEqual(['CAMPAIGN_DUPLICATED', 'CAMPAIGN_DUPLICATION_REQUESTED']);

    clock.advance(2 * DAY);
    expect(await pruner.pruneOnce()).toEqual({ jobs: 1, events: 2, idempotencyKeys: 0 });
    expect(await typesOf(finished.id)).toEqual([]);
    for (const job of backlog) expect(await typesOf(job.id)).toEqual(['CAMPAIGN_DUPLICATION_REQUESTED']);
  });

  it('deletes finished jobs and expired keys batch after batch until none is left, in one pass', async () => {
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    const start = clock.now();
    const jobs = Array.from({ length: 5 }, () => jobFixture(ws.id, { createdAt: start, runAt: start }));
    for (const job of jobs) await store.enqueueJob(job, eventFixture(ws.id, { occurredAt: start, jobId: job.id }));
    expect(await store.claimJobs('w', 5, start, new Date(start.getTime() + 60_000))).toHaveLength(5);
    for (const job of jobs) {
      const outcome = { status: 'SUCCEEDED' as const, resultCampaignId: null, error: null, event: eventFixture(ws.id, { occurredAt: start, jobId: job.id }) };
      expect(await store.finishJob(job.id, 'w', outcome, start)).toBe(true);
    }
    for (let i = 0; i < 5; i += 1) {
      const key = { workspaceId: ws.id, key: `k${i}`, requestHash: 'h', jobId: null, createdAt: start, expiresAt: new Date(start.getTime() + DAY) };
      expect(await store.reserveIdempotencyKey(key, start)).toBeNull();
    }

    // Five rows of each in batches of two: the pass goes on past full batches, to the one of one row.
    const pruned: Record<string, number[]> = {};
    const observer = { pruned: (table: string, rows: number) => void (pruned[table] ??= []).push(rows) };
    const pruner = new RetentionPruner(store, clock, { jobRetentionMs: DAY, eventRetentionMs: 365 * DAY, intervalMs: 60_000, batchSize: 2 }, silent, observer);
    clock.advance(2 * DAY);
    expect(await pruner.pruneOnce()).toEqual({ jobs: 5, events: 0, idempotencyKeys: 5 });
    // Told batch by batch, in the store's table names.
    expect(pruned).toEqual({ jobs: [2, 2, 1], idempotency_keys: [2, 2, 1] });
    for (const job of jobs) expect(await store.getJob(ws.id, job.id)).toBeNull();
    for (let i = 0; i < 5; i += 1) expect(await store.findIdempotencyKey(ws.id, `k${i}`)).toBeNull();
  });

  it('stops a pass after its current batch when asked to stop, and prunes the rest next time', async () => {
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    for (let i = 0; i < 50; i += 1) await store.insertEvent(eventFixture(ws.id, { occurredAt: clock.now() }));
    const pruner = new RetentionPruner(store, clock, { jobRetentionMs: DAY, eventRetentionMs: DAY, intervalMs: 60_000, batchSize: 5 }, silent);
    clock.advance(2 * DAY);
    let batches = 0;
    const prune = store.pruneEvents.bind(store);
    store.pruneEvents = async (before, limit, after) => {
      batches += 1;
      if (batches === 2) void pruner.stop();
      return prune(before, limit, after);
    };
    expect((await pruner.pruneOnce()).events).toBe(10);
    pruner.start();
    expect((await pruner.pruneOnce()).events).toBe(40);
    await pruner.stop();
  });

  /** `count` events a day past their retention, and a pruner deleting them in batches of 5 that keeps its info lines. */
  const pastRetention = async (count: number) => {
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    for (let i = 0; i < count; i += 1) await store.insertEvent(eventFixture(ws.id, { occurredAt: clock.now() }));
    const { lines, logger } = infoLines();
    const pruner = new RetentionPruner(store, clock, { jobRetentionMs: DAY, eventRetentionMs: DAY, intervalMs: 60_000, batchSize: 5 }, logger);
    clock.advance(2 * DAY);
    return { lines, pruner };
  };

  it('says when a pass of more than a batch starts, then how far it has got every 30 s, and nothing for an idle pass', async () => {
    const { lines, pruner } = await pastRetention(17);
    // Each of the 4 batches takes 20 s by the clock: 30 s after the first line have passed only when the third ends.
    const prune = store.pruneEvents.bind(store);
    store.pruneEvents = async (before, limit, after) => {
      clock.advance(20_000);
      return prune(before, limit, after);
    };

    expect(await pruner.pruneOnce()).toEqual({ jobs: 0, events: 17, idempotencyKeys: 0 });
    expect(lines).toEqual([
      { msg: 'pruning old records', jobs: 0, events: 5, idempotencyKeys: 0, elapsedMs: 20_000 },
      { msg: 'still pruning old records', jobs: 0, events: 15, idempotencyKeys: 0, elapsedMs: 60_000 },
      { msg: 'pruned old records', jobs: 0, events: 17, idempotencyKeys: 0 },
    ]);

    expect(await pruner.pruneOnce()).toEqual({ jobs: 0, events: 0, idempotencyKeys: 0 });
    expect(lines).toHaveLength(3);
  });

  it('says nothing before the end of a pass that deletes less than a batch', async () => {
    const { lines, pruner } = await pastRetention(4);
    expect(await pruner.pruneOnce()).toEqual({ jobs: 0, events: 4, idempotencyKeys: 0 });
    expect(lines.map((line) => line.msg)).toEqual(['pruned old records']);
  });

  /** Events older than the default 90 days of EVENT_RETENTION_DAYS by the time the gateway starts. */
  const oldEvents = async (count: number) => {
    const ws = workspaceFixture();
    await store.createWorkspace(ws);
    // Sent together, they share the writer's commits.
    await Promise.all(Array.from({ length: count }, () => store.insertEvent(eventFixture(ws.id, { occurredAt: clock.now() }))));
    clock.advance(91 * DAY);
  };

  it('prunes right after start, not one interval later', async () => {
    await oldEvents(3);
    const { logger, lines } = recordingLogger();
    // The default interval, 10 minutes, is far longer than this test waits.
    const gateway = await startGateway({}, { store, clock, logger });
    try {
      const pruned = await waitFor(async () => componentLines(lines, 'retention').find((line) => line.msg === 'pruned old records'));
      expect(pruned).toMatchObject({ level: 30, jobs: 0, events: 3, idempotencyKeys: 0 });
    } finally {
      await gateway.close();
    }
  });

  it('counts in /metrics the rows each table lost, and announces a pass of more than a batch', async () => {
    await oldEvents(1001);
    const { logger, lines } = recordingLogger();
    const gateway = await startGateway({}, { store, clock, logger });
    try {
      await waitFor(async () => componentLines(lines, 'retention').some((line) => line.msg === 'pruned old records'));
      expect(componentLines(lines, 'retention').map(({ msg, events }) => ({ msg, events }))).toEqual([
        { msg: 'pruning old records', events: 1000 },
        { msg: 'pruned old records', events: 1001 },
      ]);
      const text = await scrape(gateway);
      const pruned = (table: string) => metricSample(text, 'gateway_retention_pruned_rows_total', { table });
      expect([pruned('jobs'), pruned('security_events'), pruned('idempotency_keys')]).toEqual([0, 1001, 0]);
      expect(metricSample(text, 'gateway_retention_pass_duration_seconds_count')).toBe(1);
    } finally {
      await gateway.close();
    }
  });

  it('with the default periods, prunes a finished job after 7 days and keeps its events until 90', async () => {
    const gateway = await startGateway({}, { store, clock });
    try {
      const team = await gateway.workspace();
      const { jobId } = await rest.duplicate(gateway.baseUrl, team.key, { campaignId: team.campaign.id, name: 'audited copy' });
      await waitFor(async () => (await jobEvents(gateway.baseUrl, team.key, jobId!)).job?.status === 'SUCCEEDED');
      // The pass the gateway started with is over before the clock moves.
      await gateway.app.retention.pruneOnce();

      clock.advance(8 * DAY);
      expect(await gateway.app.retention.pruneOnce()).toMatchObject({ jobs: 1, events: 0 });
      expect(await store.getJob(team.workspace.id, jobId!)).toBeNull();
      expect(await jobEvents(gateway.baseUrl, team.key, jobId!)).toEqual({ types: ['CAMPAIGN_DUPLICATED', 'CAMPAIGN_DUPLICATION_REQUESTED'], job: null });

      clock.advance(83 * DAY);
      await gateway.app.retention.pruneOnce();
      expect((await jobEvents(gateway.baseUrl, team.key, jobId!)).types).toEqual([]);
    } finally {
      await gateway.close();
    }
  });

  it('stops cleanly when the gateway stops during that first pass, after the batch in progress', async () => {
    // More than one batch of 1,000: a pass that did not stop would delete a second one.
    await oldEvents(1001);
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let batches = 0;
    const held = storeHeldOn(store, ['pruneEvents'], () => {
      batches += 1;
      return released;
    });
    const { logger, lines } = recordingLogger();
    const gateway = await startGateway({}, { store: held, clock, logger });
    await waitFor(async () => batches === 1);
    const closed = gateway.close();
    release();
    await closed;
    expect(batches).toBe(1);
    const retention = componentLines(lines, 'retention');
    expect(retention.filter((line) => line.level >= 40)).toEqual([]);
    expect(retention.find((line) => line.msg === 'pruned old records')).toMatchObject({ events: 1000 });
  });
});

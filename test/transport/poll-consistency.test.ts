/**
 * A poll of a job answers for one moment of the store: the job's status and its events together, whichever
 * query shape asks for them. The worker finishes a job and writes its outcome event in one transaction; here
 * that commit lands after the poll has read the events and before it reads the job, on each store where it can.
 * PostgreSQL: the jobs table is locked, so that the poll's job read waits for the commit. SQLite: the commit is
 * made from a connection of its own, at once, right after the poll's event read.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import type { PostgresStore } from '../../src/adapters/postgres/store.js';
import { eventToRow, insertStatement, type SqlValues } from '../../src/adapters/rows.js';
import type { GatewayStore } from '../../src/domain/ports.js';
import type { NewSecurityEvent } from '../../src/domain/types.js';
import { bearer, graphql, http, json, waitFor, type HttpResult, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { postgres, sqlite } from '../support/stores.js';
import { rest } from '../support/transports.js';

const ENV = { WORKER_CONCURRENCY: '0' };

/** The README's polling query. */
const EVENTS_WITH_THEIR_JOB = `query ($job: ID!) {
  securityEvents(filter: {jobId: $job}) { edges { node { type job { status } } } }
}`;
/** The job and its events, side by side. */
const JOB_BESIDE_EVENTS = `query ($job: ID!) {
  duplicationJob(id: $job) { status }
  securityEvents(filter: {jobId: $job}) { edges { node { type } } }
}`;

/** The job's status and its events' types, as either query answers them. */
function pollView(response: HttpResult): { statuses: string[]; types: string[] } {
  expect(response.body.errors).toBeUndefined();
  const { duplicationJob, securityEvents } = response.body.data;
  const nodes = securityEvents.edges.map((edge: { node: { type: string; job?: { status: string } } }) => edge.node);
  return {
    statuses: duplicationJob ? [duplicationJob.status] : nodes.map((node: { job: { status: string } }) => node.job.status),
    types: nodes.map((node: { type: string }) => node.type),
  };
}

/** What the worker writes when a job succeeds, in one transaction: the job's status and its outcome event. */
function finishing(ws: TestWorkspace, jobId: string, sql: SqlValues, placeholder: (position: number) => string) {
  const at = new Date();
  const event: NewSecurityEvent = {
    id: randomUUID(),
    workspaceId: ws.workspace.id,
    type: 'CAMPAIGN_DUPLICATED',
    occurredAt: at,
    apiKeyId: ws.keyId,
    apiKeyName: null,
    channel: 'GRAPHQL',
    ip: null,
    jobId,
    campaignId: ws.campaign.id,
    details: {},
  };
  return [
    {
      text: `UPDATE jobs SET status = 'SUCCEEDED', finished_at = ${placeholder(1)}, updated_at = ${placeholder(2)} WHERE id = ${placeholder(3)}`,
      values: [sql.date(at), sql.date(at), jobId],
    },
    insertStatement('security_events', eventToRow(event, sql), placeholder),
  ];
}

interface Harness {
  name: string;
  skip: boolean;
  start(between: { finish?: () => void }): Promise<TestGateway>;
  /** The poll's answer, with the job finished after its event read and before its job read. */
  pollAcrossFinish(gateway: TestGateway, ws: TestWorkspace, jobId: string, query: string, between: { finish?: () => void }): Promise<HttpResult>;
}

/**
 * Every statement each connection of `pool` is given from now on, and those given to one while it still ran another
 * (node-postgres queues them, deprecated: pg@9 refuses them).
 */
function watchStatements(pool: pg.Pool) {
  const ran: { client: pg.PoolClient; text: string }[] = [];
  const overlapping: string[] = [];
  const watched = new WeakSet<pg.PoolClient>();
  pool.on('acquire', (client) => {
    if (watched.has(client)) return;
    watched.add(client);
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    let running = 0;
    (client as { query: unknown }).query = (...args: unknown[]) => {
      const text = typeof args[0] === 'string' ? args[0] : String((args[0] as { text?: string }).text);
      ran.push({ client, text });
      if (running > 0) overlapping.push(text);
      running += 1;
      const callback = typeof args.at(-1) === 'function' ? (args.pop() as (...results: unknown[]) => void) : undefined;
      if (callback) {
        return query(...args, (...results: unknown[]) => {
          running -= 1;
          callback(...results);
        });
      }
      const result = query(...args) as Promise<unknown>;
      result.then(
        () => (running -= 1),
        () => (running -= 1),
      );
      return result;
    };
  });
  return { ran, overlapping };
}

/** The store's pool, and whether each of its connections is back in it: none held, so no transaction left open. */
const poolOf = (gateway: TestGateway) => (gateway.app.store as PostgresStore).pool;
const allReturned = (gateway: TestGateway) => poolOf(gateway).idleCount === poolOf(gateway).totalCount;

/**
 * Sends `poll` while the jobs table is locked, and finishes the job once the poll's job read waits for the lock (its
 * event read does not).
 */
async function acrossLockedFinish<T>(gateway: TestGateway, ws: TestWorkspace, jobId: string, poll: () => Promise<T>, whileWaiting = () => {}): Promise<T> {
  const locker = await poolOf(gateway).connect();
  try {
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE');
    const { pid } = (await locker.query('SELECT pg_backend_pid() AS pid')).rows[0];
    const answer = poll();
    await waitFor(async () => {
      const { rows } = await locker.query('SELECT count(*)::int AS waiting FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))', [pid]);
      return rows[0].waiting > 0;
    });
    whileWaiting();
    for (const statement of finishing(ws, jobId, { date: (value) => value, bool: (value) => value }, (position) => `$${position}`)) {
      await locker.query(statement.text, statement.values);
    }
    await locker.query('COMMIT');
    return await answer;
  } finally {
    locker.release();
  }
}

const onPostgres: Harness = {
  name: postgres.name,
  skip: postgres.skip,
  start: () => postgres.startGateway(ENV),
  pollAcrossFinish: (gateway, ws, jobId, query) => acrossLockedFinish(gateway, ws, jobId, () => graphql(gateway.baseUrl, ws.key, query, { job: jobId })),
};

const onSqlite: Harness = {
  name: sqlite.name,
  skip: sqlite.skip,
  start: (between) =>
    sqlite.startGateway(ENV, {}, {
      // The commit is made in the turn of the event read, as the worker's could land there were it not for the
      // turn's read transaction.
      wrapStore: (store) =>
        new Proxy(store, {
          get(target, property) {
            const value = Reflect.get(target, property, target);
            if (property !== 'listEvents') return typeof value === 'function' ? value.bind(target) : value;
            return async (...args: Parameters<GatewayStore['listEvents']>) => {
              const events = await target.listEvents(...args);
              between.finish?.();
              between.finish = undefined;
              return events;
            };
          },
        }),
    }),
  async pollAcrossFinish(gateway, ws, jobId, query, between) {
    const db = new Database(join(gateway.dataDir, 'gateway.db'));
    try {
      const statements = finishing(ws, jobId, { date: (value) => value.getTime(), bool: (value) => (value ? 1 : 0) }, () => '?');
      between.finish = db.transaction(() => statements.forEach((statement) => db.prepare(statement.text).run(...statement.values)));
      const poll = await graphql(gateway.baseUrl, ws.key, query, { job: jobId });
      expect(between.finish).toBeUndefined();
      return poll;
    } finally {
      db.close();
    }
  },
};

for (const harness of [onSqlite, onPostgres]) {
  describe.skipIf(harness.skip)(`a poll answers for one moment, on a ${harness.name} store`, () => {
    let gateway: TestGateway | undefined;
    const between: { finish?: () => void } = {};

    afterEach(async () => {
      await gateway?.close();
      gateway = undefined;
    });

    it.each([
      ['the README\'s query, each event with its job', EVENTS_WITH_THEIR_JOB],
      ['the job beside its events', JOB_BESIDE_EVENTS],
    ])('%s: the job as it was when its events were read, though it finished in between', async (_shape, query) => {
      gateway = await harness.start(between);
      const ws = await gateway.workspace();
      const duplicate = async () => (await rest.duplicate(gateway!.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'copy' })).jobId!;
      // The first poll of an operation is Apollo's to answer, the next ones are prepared (src/graphql/prepared.ts).
      const jobs = [await duplicate(), await duplicate()];

      for (const jobId of jobs) {
        const across = pollView(await harness.pollAcrossFinish(gateway, ws, jobId, query, between));
        expect(across.types).toEqual(['CAMPAIGN_DUPLICATION_REQUESTED']);
        expect(across.statuses).toEqual(['PENDING']);
      }

      for (const jobId of jobs) {
        const after = pollView(await graphql(gateway.baseUrl, ws.key, query, { job: jobId }));
        expect(after.types).toEqual(['CAMPAIGN_DUPLICATED', 'CAMPAIGN_DUPLICATION_REQUESTED']);
        expect(new Set(after.statuses)).toEqual(new Set(['SUCCEEDED']));
      }
    });
  });
}

describe.skipIf(postgres.skip)('the snapshot of a query on a PostgreSQL store', () => {
  let gateway: TestGateway | undefined;

  afterEach(async () => {
    await gateway?.close();
    gateway = undefined;
  });

  it('gives its connection one statement at a time, every read of the operation in the one snapshot', async () => {
    gateway = await postgres.startGateway(ENV);
    const ws = await gateway.workspace();
    const jobId = (await rest.duplicate(gateway.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'copy' })).jobId!;
    const statements = watchStatements(poolOf(gateway));

    const severalReads = `query ($job: ID!) {
      a: duplicationJob(id: $job) { status }
      b: duplicationJob(id: $job) { status }
      c: securityEvents(filter: {jobId: $job}) { edges { node { type job { status } } } }
      d: securityEvents { edges { node { type } } }
    }`;
    const response = await graphql(gateway.baseUrl, ws.key, severalReads, { job: jobId });
    expect(response.body.errors).toBeUndefined();
    expect(response.body.data).toMatchObject({ a: { status: 'PENDING' }, b: { status: 'PENDING' }, c: { edges: [{ node: { job: { status: 'PENDING' } } }] } });

    expect(statements.overlapping).toEqual([]);
    const snapshots = statements.ran.filter(({ text }) => text.startsWith('BEGIN ISOLATION LEVEL REPEATABLE READ'));
    expect(snapshots).toHaveLength(1);
    const storeReads = statements.ran.filter(({ text }) => /FROM (jobs|security_events)\b/.test(text) && !/INSERT|UPDATE/.test(text));
    expect(storeReads.length).toBeGreaterThanOrEqual(4);
    expect(new Set(storeReads.map(({ client }) => client))).toEqual(new Set([snapshots[0].client]));
  });

  it('gives its connection back, its transaction ended, when the client goes away before the answer', async () => {
    gateway = await postgres.startGateway(ENV);
    const ws = await gateway.workspace();
    const jobId = (await rest.duplicate(gateway.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'copy' })).jobId!;
    const client = new AbortController();
    const poll = () =>
      http(gateway!.baseUrl, 'POST', '/graphql', {
        headers: { ...json, ...bearer(ws.key) },
        body: JSON.stringify({ query: EVENTS_WITH_THEIR_JOB, variables: { job: jobId } }),
        signal: client.signal,
      }).catch((error: Error) => error.name);
    // Gone while its job read waits, its snapshot begun.
    const abandoned = await acrossLockedFinish(gateway, ws, jobId, poll, () => client.abort());
    expect(abandoned).toBe('AbortError');
    await waitFor(async () => allReturned(gateway!));
  });
});

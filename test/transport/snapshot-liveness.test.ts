/**
 * A query's PostgreSQL snapshot holds a connection from its first read of the store to the end of its execution
 * (src/adapters/postgres/snapshots.ts). Here queries read Braze in upstream mode, the fake holding their calls: a
 * query that finds every snapshot's connection held waits for one no longer than for a connection of the pool.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { PostgresStore } from '../../src/adapters/postgres/store.js';
import { startFakeBraze, type FakeBraze } from '../support/fake-braze.js';
import { graphql, startGateway, waitFor, type HttpResult, type TestGateway } from '../support/gateway.js';
import { createTestSchema, skipWithoutPostgres, withAdmin } from '../support/postgres.js';
import { rest } from '../support/transports.js';

const UPSTREAM_KEY = 'braze-upstream-key-snapshots-5d2e91';
const LIST = 'GET /campaigns/list';
/** Three snapshots at most (pool size − 1). */
const POOL_SIZE = 4;
const SNAPSHOTS = POOL_SIZE - 1;
/** How long a connection, or a snapshot's, is waited for: short, so that a refusal comes soon. */
const CONNECTION_TIMEOUT_MS = 300;
/** Longer than the test: the fake Braze answers when it is told to, not the client's timeout. */
const UPSTREAM = { UPSTREAM_URL: '', UPSTREAM_API_KEY: UPSTREAM_KEY, UPSTREAM_TIMEOUT_MS: '120000', WORKER_CONCURRENCY: '0' };

const JOB = 'query ($job: ID!) { duplicationJob(id: $job) { status } }';
const JOB_AND_CAMPAIGNS = 'query ($job: ID!) { duplicationJob(id: $job) { status } campaigns(first: 1) { edges { node { id } } } }';

interface Harness {
  fake: FakeBraze;
  gateway: TestGateway;
  /** Connections of the store's pool not idle in it: what snapshots and statements hold now. */
  held(): number;
  /** The store's connections in a transaction between two statements: snapshots waiting on something else. */
  idleInTransaction(): Promise<number>;
  /** Lets the fake Braze answer what it holds. */
  release(): void;
  close(): Promise<void>;
}

async function start(): Promise<Harness> {
  const fake = await startFakeBraze(UPSTREAM_KEY);
  const schema = await createTestSchema();
  const store = new PostgresStore({
    connectionString: schema.url,
    schema: schema.schema,
    poolSize: POOL_SIZE,
    connectionTimeoutMs: CONNECTION_TIMEOUT_MS,
  });
  const pids = new Set<number>();
  store.pool.on('connect', (client) => pids.add((client as unknown as { processID: number }).processID));
  await store.migrate();
  const release = holdLists(fake, SNAPSHOTS);
  const gateway = await startGateway({ ...UPSTREAM, UPSTREAM_URL: fake.url }, { store });
  return {
    fake,
    gateway,
    held: () => store.pool.totalCount - store.pool.idleCount,
    idleInTransaction: () =>
      withAdmin(async (admin) => {
        const { rows } = await admin.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ANY($1) AND state = 'idle in transaction'", [[...pids]]);
        return rows[0].n as number;
      }),
    release,
    async close() {
      release();
      await gateway.close();
      await schema.drop();
      await fake.close();
    },
  };
}

/** Holds the fake's next `count` answers to `GET /campaigns/list` (a page of one campaign) until `release()`. */
function holdLists(fake: FakeBraze, count: number): () => void {
  let release!: () => void;
  const until = new Promise<void>((resolve) => (release = resolve));
  const json = { message: 'success', campaigns: [{ id: 'cmp-0001', name: 'Campaign 1', tags: [], last_edited: '2030-01-01T00:00:00Z' }] };
  fake.script(LIST, ...Array.from({ length: count }, () => ({ until, json })));
  return release;
}

const answered = (response: HttpResult) => {
  expect(response.body.errors).toBeUndefined();
  return response.body.data;
};

describe.skipIf(skipWithoutPostgres)('a query on PostgreSQL waiting on the upstream', () => {
  let harness: Harness | undefined;

  afterEach(async () => {
    await harness?.close();
    harness = undefined;
  });

  it('refuses a query 503 with Retry-After once every snapshot stays held longer than a connection is waited for', async () => {
    harness = await start();
    const { fake, gateway } = harness;
    const ws = await gateway.workspace();
    const jobId = (await rest.duplicate(gateway.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'copy' })).jobId!;

    // Each reads its job from the store first, and so holds its snapshot's connection while Braze keeps it waiting.
    const slow = Array.from({ length: SNAPSHOTS }, () => graphql(gateway.baseUrl, ws.key, JOB_AND_CAMPAIGNS, { job: jobId }));
    await waitFor(async () => fake.requestsTo(LIST).length === SNAPSHOTS);
    await waitFor(async () => (await harness!.idleInTransaction()) === SNAPSHOTS);

    const refused = await graphql(gateway.baseUrl, ws.key, JOB, { job: jobId });
    expect(refused.status).toBe(503);
    expect(refused.headers['retry-after']).toBe('5');
    expect(refused.body.errors.map((error: { extensions: { code: string } }) => error.extensions.code)).toEqual(['SERVICE_UNAVAILABLE']);

    harness.release();
    for (const answer of await Promise.all(slow)) {
      expect(answered(answer)).toMatchObject({ duplicationJob: { status: 'PENDING' }, campaigns: { edges: [{ node: {} }] } });
    }
    await waitFor(async () => harness!.held() === 0);
    expect(answered(await graphql(gateway.baseUrl, ws.key, JOB, { job: jobId })).duplicationJob.status).toBe('PENDING');
  });
});

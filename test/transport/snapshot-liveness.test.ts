/**
 * A query's PostgreSQL snapshot holds a connection from its first read of the store to the end of its execution
 * (src/adapters/postgres/snapshots.ts). Here queries read Braze in upstream mode, the fake holding their calls: one
 * that reads nothing of its view from the store holds no connection meanwhile, whatever its authentication read; and
 * a query that finds every snapshot's connection held waits for one no longer than for a connection of the pool.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { PostgresStore } from '../../src/adapters/postgres/store.js';
import type { GatewayStore } from '../../src/domain/ports.js';
import { ManualClock } from '../support/clock.js';
import { startFakeBraze, type FakeBraze } from '../support/fake-braze.js';
import { bearer, graphql, rawConnection, startGateway, waitFor, type HttpResult, type TestGateway } from '../support/gateway.js';
import { createTestSchema, skipWithoutPostgres, withAdmin } from '../support/postgres.js';
import { rest } from '../support/transports.js';

const UPSTREAM_KEY = 'braze-upstream-key-snapshots-5d2e91';
const LIST = 'GET /campaigns/list';
/** Three snapshots at most (pool size − 1). */
const POOL_SIZE = 4;
const SNAPSHOTS = POOL_SIZE - 1;
/**
 * How long a connection, or a snapshot's, is waited for: short, so that a refusal comes soon, yet long enough for the
 * pool to open a connection on a loaded machine, and for the test to see the refused query waiting.
 */
const CONNECTION_TIMEOUT_MS = 2000;
/** Longer than the test: the fake Braze answers when it is told to, not the client's timeout. */
const UPSTREAM = { UPSTREAM_URL: '', UPSTREAM_API_KEY: UPSTREAM_KEY, UPSTREAM_TIMEOUT_MS: '120000', WORKER_CONCURRENCY: '0' };
/** How long after its headers a request's key is checked again, its body having come late (authentication.ts). */
const KEY_RECHECK_AFTER_MS = 100;

const CAMPAIGNS = '{ campaigns(first: 1) { edges { node { id } } } }';
const JOB = 'query ($job: ID!) { duplicationJob(id: $job) { status } }';
const JOB_AND_CAMPAIGNS = 'query ($job: ID!) { duplicationJob(id: $job) { status } campaigns(first: 1) { edges { node { id } } } }';

interface Harness {
  fake: FakeBraze;
  gateway: TestGateway;
  /** Connections of the store's pool not idle in it: what snapshots and statements hold now. */
  held(): number;
  /** The requests waiting for a connection, as /metrics shows them. */
  awaited(): number;
  /** The store's connections in a transaction between two statements: snapshots waiting on something else. */
  idleInTransaction(): Promise<number>;
  /** Lets the fake Braze answer what it holds. */
  release(): void;
  close(): Promise<void>;
}

async function start(options: { clock?: ManualClock; wrap?: (store: GatewayStore) => GatewayStore } = {}): Promise<Harness> {
  const fake = await startFakeBraze(UPSTREAM_KEY);
  const schema = await createTestSchema();
  const store = new PostgresStore({
    connectionString: schema.url,
    schema: schema.schema,
    poolSize: POOL_SIZE,
    connectionTimeoutMs: CONNECTION_TIMEOUT_MS,
    jobTime: options.clock ? 'caller' : 'database',
  });
  const pids = new Set<number>();
  store.pool.on('connect', (client) => pids.add((client as unknown as { processID: number }).processID));
  await store.migrate();
  const release = holdLists(fake, SNAPSHOTS);
  const gateway = await startGateway({ ...UPSTREAM, UPSTREAM_URL: fake.url }, { store: options.wrap?.(store) ?? store, clock: options.clock });
  return {
    fake,
    gateway,
    held: () => store.pool.totalCount - store.pool.idleCount,
    awaited: () => store.connections().awaited,
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

  it('holds no connection while its campaigns are read, though its key was looked up in it, and other queries go on', async () => {
    // The key is looked up as the headers arrive, and again in the operation when the body comes late: the clock is
    // moved past that recheck between the two.
    const clock = new ManualClock();
    let keyLookups = 0;
    harness = await start({
      clock,
      wrap: (store) =>
        new Proxy(store, {
          get(target, property) {
            const value = Reflect.get(target, property, target);
            if (typeof value !== 'function') return value;
            if (property !== 'findApiKeyByHash') return value.bind(target);
            return async (hash: string) => {
              const found = await target.findApiKeyByHash(hash);
              keyLookups += 1;
              return found;
            };
          },
        }),
    });
    const { fake, gateway } = harness;
    const ws = await gateway.workspace();

    const body = JSON.stringify({ query: CAMPAIGNS });
    const slow = [];
    for (let index = 0; index < SNAPSHOTS; index += 1) {
      const lookedUp = keyLookups;
      const connection = rawConnection(gateway.baseUrl);
      connection.send(
        `POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${bearer(ws.key).authorization}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n`,
      );
      await waitFor(async () => keyLookups > lookedUp);
      clock.advance(KEY_RECHECK_AFTER_MS);
      connection.send(body);
      slow.push(connection.answer);
      await waitFor(async () => fake.requestsTo(LIST).length === index + 1);
    }
    // Every key looked up twice: the second time inside each operation, before its upstream call.
    expect(keyLookups).toBe(2 * SNAPSHOTS);

    expect(await harness.idleInTransaction()).toBe(0);
    const jobId = (await rest.duplicate(gateway.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'copy' })).jobId!;
    expect(answered(await graphql(gateway.baseUrl, ws.key, JOB, { job: jobId })).duplicationJob.status).toBe('PENDING');
    expect(fake.requestsTo(LIST)).toHaveLength(SNAPSHOTS);

    harness.release();
    for (const answer of await Promise.all(slow)) {
      expect(answer.head).toMatch(/^HTTP\/1\.1 200 /);
      expect(JSON.parse(answer.body).data.campaigns.edges).toHaveLength(1);
    }
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

    const refusal = graphql(gateway.baseUrl, ws.key, JOB, { job: jobId });
    // Counted as waiting for a connection while it waits for a snapshot's.
    await waitFor(async () => harness!.awaited() === 1);
    const refused = await refusal;
    expect(harness.awaited()).toBe(0);
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

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { transaction } from '../../src/adapters/postgres/pool.js';
import type { PostgresStore } from '../../src/adapters/postgres/store.js';
import { isUnavailable, unavailableCause } from '../../src/domain/errors.js';
import { waitFor } from '../support/gateway.js';
import { createTestSchema, openPostgresStore, skipWithoutPostgres, withAdmin } from '../support/postgres.js';
import { transports } from '../support/transports.js';
import { readiness, sharedDatabase, type ChildGateway, type SharedDatabase } from './support.js';

/**
 * `pg_terminate_backend`, and a PostgreSQL restart or fast shutdown, end connections with 57P01 whatever they
 * are doing: also one a transaction holds between two statements, which no query is waiting on to hear it.
 */
describe.skipIf(skipWithoutPostgres)('PostgreSQL ending the connections of a running store', () => {
  let schema: Awaited<ReturnType<typeof createTestSchema>>;
  let store: PostgresStore;

  beforeAll(async () => {
    schema = await createTestSchema();
    store = openPostgresStore(schema.url, schema.schema);
    await store.migrate();
  });

  afterAll(async () => {
    await store?.close();
    await schema?.drop();
  });

  it('fails a transaction whose connection is ended between two statements as UNAVAILABLE, and serves again', async () => {
    const outcome = await transaction(store.pool, async (client) => {
      const { rows } = await client.query('SELECT pg_backend_pid() AS pid');
      // Not events.once, which would itself listen for 'error' and so hide a missing listener.
      const ended = new Promise<void>((resolve) => client.once('end', () => resolve()));
      await withAdmin((admin) => admin.query('SELECT pg_terminate_backend($1)', [rows[0].pid]));
      await ended;
      await client.query('SELECT 1');
    }).catch((error: unknown) => error);

    expect(isUnavailable(outcome)).toBe(true);
    // The server's reason, for the log, rather than the driver's "not queryable" that followed it.
    expect(unavailableCause(outcome)).toMatchObject({ code: '57P01' });
    await store.ping();
    expect(await store.listWorkspaces()).toEqual([]);
  });
});

describe.skipIf(skipWithoutPostgres)('a gateway whose PostgreSQL connections are ended while requests flow', () => {
  let database: SharedDatabase;
  let gateway: ChildGateway;

  beforeAll(async () => {
    database = await sharedDatabase();
    // A short lease: a job whose outcome was lost with its connection is run again soon.
    [gateway] = await database.spawn(['terminated'], { JOB_LEASE_SECONDS: '2', DUPLICATE_RATE_LIMIT: '1000' });
  }, 120_000);

  afterAll(async () => {
    await database?.close();
  });

  /** Ends every connection of the gateways (and of this suite's store) on this suite's own database. */
  const terminateGatewayConnections = () =>
    withAdmin((admin) =>
      admin.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'campaign-gateway'",
      ),
    database.url);

  it('stays up, accepts each request or answers it 503 with Retry-After, and keeps every job it accepted', async () => {
    const tenant = await database.workspace();
    const refusals: { status: number; code: string | null; retryAfter: unknown }[] = [];
    const accepted: string[] = [];
    for (let round = 0; round < 25; round += 1) {
      // A request the gateway never answers (it died) is told apart below, by the process having exited.
      const requests = transports.map((transport) =>
        transport
          .duplicate(gateway.baseUrl, tenant.key, { campaignId: tenant.campaign.id, name: `copy ${round} over ${transport.name}` })
          .catch(() => ({ jobId: null, status: 0, code: 'no answer', response: { headers: {} as Record<string, unknown> } })),
      );
      await terminateGatewayConnections();
      for (const outcome of await Promise.all(requests)) {
        if (outcome.jobId) accepted.push(outcome.jobId);
        else refusals.push({ status: outcome.status, code: outcome.code, retryAfter: outcome.response.headers['retry-after'] });
      }
    }

    expect(await Promise.race([gateway.exited.then(() => 'exited'), Promise.resolve('running')])).toBe('running');
    for (const refusal of refusals) expect(refusal).toEqual({ status: 503, code: 'SERVICE_UNAVAILABLE', retryAfter: '5' });
    expect(accepted.length).toBeGreaterThan(0);
    await waitFor(async () => (await readiness(gateway)).code === 200);
    // Every job it accepted is in the store and runs to its end, however often its connections were ended.
    await waitFor(async () => {
      const jobs = await Promise.all(accepted.map((id) => database.store.getJob(tenant.workspace.id, id).catch(() => null)));
      return jobs.every((job) => job?.status === 'SUCCEEDED');
    }, 30_000);
    expect(gateway.logs.filter((line) => line.level >= 50)).toEqual([]);
  }, 120_000);
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresStore } from '../../src/adapters/postgres/store.js';
import { startGateway, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { createTestSchema, skipWithoutPostgres } from '../support/postgres.js';
import { TcpProxy } from '../support/tcp-proxy.js';
import { graphQL, rest } from '../support/transports.js';

describe.skipIf(skipWithoutPostgres)('a PostgreSQL that stops answering on connections the pool holds open', () => {
  let schema: Awaited<ReturnType<typeof createTestSchema>>;
  let proxy: TcpProxy;
  let gateway: TestGateway;
  let tenant: TestWorkspace;

  beforeAll(async () => {
    schema = await createTestSchema();
    const database = new URL(schema.url);
    proxy = await TcpProxy.start({ host: database.hostname, port: Number(database.port || 5432) });
    // A short bound, so that the test does not wait out the default one (the statement timeout and 2 s).
    const store = new PostgresStore({ connectionString: proxy.url(schema.url), schema: schema.schema, poolSize: 4, queryTimeoutMs: 500 });
    await store.migrate();
    gateway = await startGateway({ WORKER_CONCURRENCY: '0' }, { store });
    tenant = await gateway.workspace();
  });

  afterAll(async () => {
    // Cut first: queries still held in the black hole would keep the pool, and so the close, waiting.
    await proxy?.close();
    await gateway?.close();
    await schema?.drop();
  });

  it('answers 503 with Retry-After instead of leaving the request waiting, then serves again once it answers', async () => {
    const input = { campaignId: tenant.campaign.id, name: 'copy' };
    expect((await rest.duplicate(gateway.baseUrl, tenant.key, input)).status).toBe(202);

    proxy.blackHole();
    for (const transport of [rest, graphQL]) {
      const refused = await transport.duplicate(gateway.baseUrl, tenant.key, input);
      expect(refused).toMatchObject({ status: 503, code: 'SERVICE_UNAVAILABLE' });
      expect(refused.response.headers['retry-after']).toBe('5');
    }

    proxy.restore();
    await waitFor(async () => (await rest.duplicate(gateway.baseUrl, tenant.key, input)).status === 202);
  });
});

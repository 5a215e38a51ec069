import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { POSTGRES_MIGRATIONS } from '../../src/adapters/postgres/migrations.js';
import { SQLITE_MIGRATIONS } from '../../src/adapters/sqlite/migrations.js';
import type { GatewayStore } from '../../src/domain/ports.js';
import { bearer, componentLines, http, json, recordingLogger, startGateway, waitFor, type TestGateway } from '../support/gateway.js';
import { createTestDatabase, skipWithoutPostgres, withAdmin } from '../support/postgres.js';

/** How a newer version leaves each store's schema version as it migrates it, and how a restore puts it back. */
const stores = [
  {
    kind: 'sqlite',
    known: SQLITE_MIGRATIONS.length,
    database: (gateway: TestGateway) => `the SQLite database ${join(gateway.dataDir, 'gateway.db')}`,
    async open() {
      return { env: {}, drop: async () => undefined };
    },
    async setVersion(gateway: TestGateway, version: number) {
      const db = new Database(join(gateway.dataDir, 'gateway.db'));
      db.pragma(`user_version = ${version}`);
      db.close();
    },
  },
  {
    kind: 'postgres',
    known: POSTGRES_MIGRATIONS.length,
    database: () => 'the PostgreSQL database in DATABASE_URL',
    async open() {
      const database = await createTestDatabase();
      return { env: { DATABASE_URL: database.url }, drop: database.drop };
    },
    async setVersion(gateway: TestGateway, version: number) {
      await withAdmin(async (client) => {
        await client.query('DELETE FROM schema_migrations WHERE version > $1', [version]);
        await client.query('INSERT INTO schema_migrations (version) VALUES ($1) ON CONFLICT DO NOTHING', [version]);
      }, gateway.config.databaseUrl!);
    },
  },
];

describe.each(stores.filter((store) => store.kind === 'sqlite' || !skipWithoutPostgres))('a gateway on $kind whose store a newer version migrates under it', (store) => {
  let gateway: TestGateway | undefined;
  let drop: () => Promise<void> = async () => undefined;

  afterEach(async () => {
    await gateway?.close();
    gateway = undefined;
    await drop();
  });

  it('reports itself not ready, naming both versions, and claims no job until the schema is its own again', async () => {
    const opened = await store.open();
    drop = opened.drop;
    const calls = { newerSchema: 0, claimJobs: 0 };
    const counted = (target: GatewayStore): GatewayStore =>
      new Proxy(target, {
        get(inner, property) {
          const value = Reflect.get(inner, property, inner);
          if (typeof value !== 'function') return value;
          return (...args: unknown[]) => {
            if (property === 'newerSchema' || property === 'claimJobs') calls[property] += 1;
            return value.apply(inner, args);
          };
        },
      });
    const { logger, lines } = recordingLogger();
    gateway = await startGateway(opened.env, { logger, workerPollIntervalMs: 10 }, { wrapStore: counted });
    const ws = await gateway.workspace();
    const readyz = () => http(gateway!.baseUrl, 'GET', '/readyz');
    expect(await readyz()).toMatchObject({ status: 200, body: { checks: { store: { status: 'up', backend: store.kind } } } });

    await store.setVersion(gateway, store.known + 1);
    const message =
      `${store.database(gateway)} has schema version ${store.known + 1}, newer than this gateway's ${store.known}: ` +
      'a newer campaign-gateway has updated it since this one started. This instance is not ready and claims no jobs; ' +
      'replace it with the newer version (see "Upgrading" in the README)';
    expect(await readyz()).toMatchObject({ status: 503, body: { status: 'not ready', checks: { store: { status: 'down', backend: store.kind, message } } } });
    const stopped = await waitFor(async () => componentLines(lines, 'worker').find((line) => line.msg.startsWith('claiming no more jobs')));
    expect(stopped).toMatchObject({ level: 40, found: store.known + 1, known: store.known, msg: `claiming no more jobs: ${message}` });

    // Still served: only the load balancer's probe and the worker stop.
    const claimsBefore = calls.claimJobs;
    const accepted = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(ws.key) },
      body: JSON.stringify({ campaign_id: ws.campaign.id, name: 'during the upgrade' }),
    });
    expect(accepted.status).toBe(202);
    // The worker has woken for the job and read the schema again three times since, each time claiming nothing.
    const reads = calls.newerSchema;
    await waitFor(async () => calls.newerSchema >= reads + 3);
    expect(calls.claimJobs).toBe(claimsBefore);
    const job = () => http(gateway!.baseUrl, 'GET', `/duplication_jobs/${accepted.body.job_id}`, { headers: bearer(ws.key) });
    expect((await job()).body.status).toBe('pending');

    // A restore of the store as this version left it: ready again, and the job runs.
    await store.setVersion(gateway, store.known);
    await waitFor(async () => (await job()).body.status === 'succeeded');
    expect(await readyz()).toMatchObject({ status: 200, body: { checks: { store: { status: 'up' } } } });
    expect(componentLines(lines, 'worker').find((line) => line.msg.startsWith('claiming jobs again'))).toMatchObject({ level: 30, known: store.known });
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresStore } from '../../src/adapters/postgres/store.js';
import { createStore } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { waitFor } from '../support/gateway.js';
import { createTestDatabase, TEST_DATABASE_URL, withAdmin } from '../support/postgres.js';
import { transports } from '../support/transports.js';
import { duplicate, duplicateMany, readiness, sharedDatabase, tally, type ChildGateway, type SharedDatabase } from './support.js';

/** PgBouncer in front of the test database, one per pool mode (.ci/services.sh starts both). */
const POOLERS = [
  { mode: 'session', variable: 'TEST_PGBOUNCER_SESSION_URL' },
  { mode: 'transaction', variable: 'TEST_PGBOUNCER_TRANSACTION_URL' },
] as const;

/** The database of `direct` (its own, made for the suite) through the pooler at `pooler`. */
const throughPooler = (direct: string, pooler: string): string => {
  const url = new URL(pooler);
  url.pathname = new URL(direct).pathname;
  return url.toString();
};

/** What the README asks of the DBA for transaction mode, limited to the suite's own database. */
const roleSettings = (database: string) => [
  `ALTER ROLE CURRENT_USER IN DATABASE ${database} SET statement_timeout = '10s'`,
  `ALTER ROLE CURRENT_USER IN DATABASE ${database} SET idle_in_transaction_session_timeout = '60s'`,
  `ALTER ROLE CURRENT_USER IN DATABASE ${database} SET lock_timeout = '4s'`,
];

const QUOTA = 10;

for (const { mode, variable } of POOLERS) {
  const poolerUrl = process.env[variable];

  describe.skipIf((!poolerUrl || !TEST_DATABASE_URL) && !process.env.CI)(`the gateway behind PgBouncer in ${mode} mode`, () => {
    let shared: SharedDatabase;
    let url: string;
    let env: Record<string, string>;

    beforeAll(async () => {
      if (!poolerUrl) throw new Error(`${variable} is not set`);
      shared = await sharedDatabase();
      url = throughPooler(shared.url, poolerUrl);
      if (mode === 'transaction') {
        const database = new URL(shared.url).pathname.slice(1);
        await withAdmin(async (client) => {
          for (const statement of roleSettings(database)) await client.query(statement);
        });
      }
      // The quota in PostgreSQL, as without REDIS_URL.
      env = { DATABASE_URL: url, DATABASE_POOL_MODE: mode, DUPLICATE_RATE_LIMIT: String(QUOTA) };
    }, 60_000);

    afterAll(async () => {
      await shared?.close();
    });

    const succeeded = async (workspaceId: string): Promise<number> =>
      (await shared.query<{ n: number }>(`SELECT count(*)::int AS n FROM jobs WHERE workspace_id = $1 AND status = 'SUCCEEDED'`, [workspaceId]))[0].n;

    it('starts, keeps the quota exact over REST and GraphQL, runs the jobs, and is ready', async () => {
      const [gateway] = await shared.spawn([`${mode}-first`], env);
      const { workspace, key, campaign } = await shared.workspace();
      // More at once than one connection serves, so the pool opens several and the pooler mixes their statements.
      const attempts = await duplicateMany([gateway], key, campaign.id, QUOTA * 3);
      expect(tally(attempts.map((attempt) => attempt.outcome))).toEqual({ accepted: QUOTA, limited: QUOTA * 2 });
      expect(new Set(attempts.filter((a) => a.outcome === 'accepted').map((a) => a.transport))).toEqual(new Set(['REST', 'GRAPHQL']));
      await waitFor(async () => (await succeeded(workspace.id)) === QUOTA, 60_000, 100);
      expect(await readiness(gateway)).toMatchObject({ code: 200, status: 'ready', checks: { store: { status: 'up', backend: 'postgres' } } });
      expect(gateway.logs.filter((line) => line.level >= 50)).toEqual([]);
    }, 120_000);

    it('starts again on the schema it made (migrations and the schema check run again) and serves', async () => {
      await Promise.all(shared.gateways.map((gateway) => gateway.kill()));
      const [again]: ChildGateway[] = await shared.spawn([`${mode}-second`], env);
      const { workspace, key, campaign } = await shared.workspace();
      for (const transport of transports) {
        expect(await duplicate(again, transport, key, campaign.id, `again over ${transport.name}`)).toMatchObject({ outcome: 'accepted' });
      }
      await waitFor(async () => (await succeeded(workspace.id)) === transports.length, 60_000, 100);
      expect(await readiness(again)).toMatchObject({ code: 200, status: 'ready' });
      expect(again.logs.filter((line) => line.level >= 40)).toEqual([]);
    }, 120_000);

    it('runs every statement under the gateway\'s timeouts', async () => {
      const store = new PostgresStore({ connectionString: url, poolMode: mode, poolSize: 2 });
      try {
        // Both of the pool's connections, whichever server session each statement gets.
        const settings = await Promise.all(
          [1, 2].map(() =>
            store.pool.query(
              `SELECT current_setting('statement_timeout') AS statement, current_setting('idle_in_transaction_session_timeout') AS idle, current_setting('lock_timeout') AS lock`,
            ),
          ),
        );
        expect(settings.map((result) => result.rows[0])).toEqual([
          { statement: '10s', idle: '1min', lock: '4s' },
          { statement: '10s', idle: '1min', lock: '4s' },
        ]);
      } finally {
        await store.close();
      }
    });

    // The check exists in transaction mode only: in session mode the gateway sets these itself.
    if (mode === 'transaction') {
      it('refuses to start in transaction mode where the role does not bound its statements', async () => {
        const bare = await createTestDatabase();
        try {
          const name = new URL(bare.url).pathname.slice(1);
          const role = new URL(bare.url).username;
          const failure = await createStore(loadConfig({ LOG_LEVEL: 'silent', DATABASE_URL: throughPooler(bare.url, poolerUrl!), DATABASE_POOL_MODE: mode }), {
            olderSchema: 'upgrade',
          }).then(
            async (store) => {
              await store.close();
              return 'started';
            },
            (error: Error) => error.message,
          );
          expect(failure).toBe(
            "with DATABASE_POOL_MODE=transaction the role's own settings must bound the gateway's statements, and they do not " +
              '(statement_timeout = 0, idle_in_transaction_session_timeout = 0; the statement timeout must be more than 0 and at most 10s): ' +
              `ALTER ROLE ${role} IN DATABASE ${name} SET statement_timeout = '10s'; ALTER ROLE ${role} IN DATABASE ${name} SET idle_in_transaction_session_timeout = '60s'`,
          );
          // Refused before anything was made.
          expect(await withAdmin((client) => client.query(`SELECT to_regclass('schema_migrations') AS found`), bare.url)).toMatchObject({ rows: [{ found: null }] });
        } finally {
          await bare.drop();
        }
      });
    }
  });
}

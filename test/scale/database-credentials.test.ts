import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStore } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { bearer, componentLines, graphql, http, json, recordingLogger, startGateway, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { createTestDatabase, skipWithoutPostgres, withAdmin } from '../support/postgres.js';
import { freePort, startFailureOf } from '../support/process.js';
import { readiness, TEST_REDIS_URL } from './support.js';

const PASSWORD = 'pg-secret-2b7e41';
const CHANGED = 'pg-secret-changed-9d03';

/** The URL of `database` as `role` with `password`. */
const urlAs = (database: string, role: string, password: string): string => {
  const url = new URL(database);
  url.username = role;
  url.password = password;
  return url.toString();
};

/**
 * Waits for /readyz to answer `code` with the store's check as `expected`, and fails showing the last answer if it
 * never does. The first answers after the gateway's connections were ended can still be about their ending.
 */
async function expectStoreCheck(gateway: TestGateway, code: number, expected: Record<string, string>): Promise<void> {
  let last: unknown;
  await waitFor(async () => {
    const report = await readiness(gateway);
    last = { code: report.code, store: report.checks?.store };
    return isDeepStrictEqual(last, { code, store: expected });
  }).catch(() => undefined);
  expect(last).toEqual({ code, store: expected });
}

describe.skipIf(skipWithoutPostgres)('PostgreSQL credentials and start-up failures', () => {
  const role = `cgw_role_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
  const readOnlyRole = `${role}_ro`;
  const noLoginRole = `${role}_nologin`;
  let database: { url: string; drop(): Promise<void> };

  beforeAll(async () => {
    database = await createTestDatabase();
    const name = new URL(database.url).pathname.slice(1);
    await withAdmin(async (client) => {
      await client.query(`CREATE ROLE ${role} LOGIN PASSWORD '${PASSWORD}'`);
      await client.query(`CREATE ROLE ${readOnlyRole} LOGIN PASSWORD '${PASSWORD}'`);
      await client.query(`CREATE ROLE ${noLoginRole} NOLOGIN PASSWORD '${PASSWORD}'`);
      await client.query(`ALTER DATABASE ${name} OWNER TO ${role}`);
    });
    // A database's owner may create tables in its public schema, anyone else may not (PostgreSQL 15 on).
    await withAdmin((client) => client.query(`ALTER SCHEMA public OWNER TO ${role}`), database.url);
  });

  afterAll(async () => {
    await database?.drop();
    await withAdmin(async (client) => {
      await client.query(`DROP ROLE IF EXISTS ${role}`);
      await client.query(`DROP ROLE IF EXISTS ${readOnlyRole}`);
      await client.query(`DROP ROLE IF EXISTS ${noLoginRole}`);
    });
  });

  const startFailure = (databaseUrl: string) =>
    createStore(loadConfig({ LOG_LEVEL: 'silent', DATABASE_URL: databaseUrl }), { olderSchema: 'upgrade' }).then(
      () => 'started',
      (error: Error) => error.message,
    );

  it('a password PostgreSQL refuses stops start-up with one line naming DATABASE_URL, never the password', async () => {
    const failure = await startFailureOf({ SEED_DEMO: 'false', DATABASE_URL: urlAs(database.url, role, 'not-the-pg-secret-41c') });
    expect(failure).toBe(
      'dist/main.js exited with 1 before listening:\ncampaign-gateway: failed to start: PostgreSQL refused the user name or password in DATABASE_URL (28P01)\n',
    );
  });

  it('a login refused for another reason than the password says the server\'s reason', async () => {
    expect(await startFailure(urlAs(database.url, noLoginRole, PASSWORD))).toBe(
      `PostgreSQL refused the login in DATABASE_URL: role "${noLoginRole}" is not permitted to log in (28000)`,
    );
  });

  it('a database that cannot be reached is named as the one in DATABASE_URL', async () => {
    const port = await freePort();
    expect(await startFailure(`postgres://${role}:${PASSWORD}@127.0.0.1:${port}/gateway`)).toBe(
      `could not connect to the PostgreSQL database in DATABASE_URL: connect ECONNREFUSED 127.0.0.1:${port}`,
    );
  });

  it('a role that may not create the tables is told so, with the step that failed', async () => {
    const failure = await startFailure(urlAs(database.url, readOnlyRole, PASSWORD));
    expect(failure).toBe(
      `the PostgreSQL database in DATABASE_URL holds no gateway tables in schema public yet, which the role ${readOnlyRole} may not make ` +
        `(permission denied for schema public, 42501). Start this version's gateway once with a DATABASE_URL naming the role that owns the schema, ${role}: ` +
        `it makes the schema and may stop once it is ready; then start every instance with ${readOnlyRole} (see "PostgreSQL roles" in the README)`,
    );
    expect(failure).not.toContain(PASSWORD);
  });

  describe('a password changed under a running gateway', () => {
    let gateway: TestGateway;
    let tenant: TestWorkspace;
    const { logger, lines } = recordingLogger('info');

    beforeAll(async () => {
      // Limits in Redis, so that the key lookup is the first to meet the refused password.
      gateway = await startGateway({ DATABASE_URL: urlAs(database.url, role, PASSWORD), ...(TEST_REDIS_URL ? { REDIS_URL: TEST_REDIS_URL } : {}) }, { logger });
      tenant = await gateway.workspace();
      await withAdmin(async (client) => {
        await client.query(`ALTER ROLE ${role} PASSWORD '${CHANGED}'`);
        await client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [role]);
      });
    });

    afterAll(async () => {
      await gateway?.close();
    });

    it('is an outage to callers (503 with Retry-After), and /readyz names what PostgreSQL refused', async () => {
      await expectStoreCheck(gateway, 503, { status: 'down', message: 'refused the user name or password in DATABASE_URL (28P01)' });

      const rest = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
        headers: { ...json, ...bearer(tenant.key) },
        body: JSON.stringify({ campaign_id: tenant.campaign.id }),
      });
      expect(rest.status).toBe(503);
      expect(rest.headers['retry-after']).toBe('5');
      expect(rest.body).toEqual({ message: 'Service unavailable', code: 'UNAVAILABLE' });
      const overGraphQL = await graphql(gateway.baseUrl, tenant.key, 'mutation($id: ID!) { duplicateCampaign(input: { campaignId: $id, name: "copy" }) { job { id } } }', {
        id: tenant.campaign.id,
      });
      expect(overGraphQL.status).toBe(503);
      expect(overGraphQL.headers['retry-after']).toBe('5');
      expect(overGraphQL.body.errors.map((error: any) => error.extensions.code)).toEqual(['SERVICE_UNAVAILABLE']);
    });

    it('is logged as a warning with the driver\'s error, not as a bug, and never with the password', async () => {
      const failed = await waitFor(async () => componentLines(lines, 'readiness').find((line) => line.dependency === 'store' && line.msg === 'dependency check failed'));
      expect(failed).toMatchObject({ level: 40, cause: { code: '28P01' } });
      expect(failed).not.toHaveProperty('err');
      expect(lines.filter((line) => JSON.parse(line).level >= 50)).toEqual([]);
      expect(lines.join('\n')).not.toContain(PASSWORD);
      expect(lines.join('\n')).not.toContain(CHANGED);
    });

    it('recovers without a restart once the password is put back', async () => {
      await withAdmin((client) => client.query(`ALTER ROLE ${role} PASSWORD '${PASSWORD}'`));
      await expectStoreCheck(gateway, 200, { status: 'up', backend: 'postgres' });
    });
  });

  describe('a database that answers but cannot serve, under a running gateway', () => {
    let gateway: TestGateway;
    let tenant: TestWorkspace;
    const name = () => new URL(database.url).pathname.slice(1);
    const duplicate = () =>
      http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
        headers: { ...json, ...bearer(tenant.key) },
        body: JSON.stringify({ campaign_id: tenant.campaign.id, name: 'copy' }),
      });

    beforeAll(async () => {
      gateway = await startGateway({ DATABASE_URL: urlAs(database.url, role, PASSWORD), ...(TEST_REDIS_URL ? { REDIS_URL: TEST_REDIS_URL } : {}) });
      tenant = await gateway.workspace();
    });

    afterAll(async () => {
      await gateway?.close();
    });

    // Accepted jobs no worker could claim, or duplications all failing, while the instance reported itself ready.
    it('is not ready while its role lacks a grant the README gives it, and is again once it has it', async () => {
      await withAdmin((client) => client.query(`REVOKE UPDATE ON jobs FROM ${role}`), database.url);
      await expectStoreCheck(gateway, 503, {
        status: 'down',
        message: `the role ${role} lacks UPDATE on jobs: grant them as the README's "PostgreSQL roles" does`,
      });
      await withAdmin((client) => client.query(`GRANT UPDATE ON jobs TO ${role}`), database.url);
      await expectStoreCheck(gateway, 200, { status: 'up', backend: 'postgres' });
    });

    // A standby a failover has not promoted yet answers reads and refuses every write.
    it('is not ready while the database takes no writes, and refuses duplications as an outage (503), not as a bug', async () => {
      const reconnect = (setting: string) =>
        withAdmin(async (client) => {
          await client.query(`ALTER DATABASE ${name()} ${setting}`);
          await client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [role]);
        });
      await reconnect('SET default_transaction_read_only = on');
      try {
        await expectStoreCheck(gateway, 503, {
          status: 'down',
          message: 'the PostgreSQL database in DATABASE_URL takes no writes (transaction_read_only is on: a standby, or a database set read-only)',
        });
        const refused = await waitFor(async () => {
          const answer = await duplicate();
          return answer.status !== 202 && answer;
        });
        expect(refused.status).toBe(503);
        expect(refused.headers['retry-after']).toBe('5');
        // A start on it says so, not that the tables could not be made: they are there, up to date.
        expect(await startFailure(urlAs(database.url, role, PASSWORD))).toMatch(/^the PostgreSQL database in DATABASE_URL takes no writes \(a standby, or a database set read-only\): .*\(25006\)$/);
      } finally {
        await reconnect('RESET default_transaction_read_only');
      }
      await expectStoreCheck(gateway, 200, { status: 'up', backend: 'postgres' });
      expect((await waitFor(async () => (await duplicate()).status === 202 || null))).toBe(true);
    });
  });
});

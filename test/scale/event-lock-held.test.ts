import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EVENT_ORDER_LOCK } from '../../src/adapters/postgres/store.js';
import { EXIT } from '../../src/cli/commands.js';
import { cliProcess } from '../support/cli.js';
import { waitFor, type TestWorkspace } from '../support/gateway.js';
import { skipWithoutPostgres } from '../support/postgres.js';
import { graphQL, rest } from '../support/transports.js';
import { holdAdvisoryLock } from './locks.js';
import { readiness, sharedDatabase, type ChildGateway, type SharedDatabase } from './support.js';

/** What only the gateway's insides say: the driver's, the database's or the lock's own words. */
const INTERNAL_WORDS = /cancel|statement|timeout|advisory|lock|SQL|select|57014|pg_/i;

describe.skipIf(skipWithoutPostgres)('a workspace whose event lock another instance holds and does not let go (frozen)', () => {
  let shared: SharedDatabase;
  let gateway: ChildGateway;
  let tenant: TestWorkspace;

  beforeAll(async () => {
    shared = await sharedDatabase();
    [gateway] = await shared.spawn(['waiting']);
    tenant = await shared.workspace();
  }, 120_000);

  afterAll(async () => {
    await shared?.close();
  });

  it('answers its writes 503 with Retry-After (the CLI: busy) once the wait is given up, names the lock in the log, and accepts them once the lock is free', async () => {
    const args = (name: string) => ({ campaignId: tenant.campaign.id, name });
    // The lock every write of the workspace's security events takes, held as a transaction of a frozen instance would.
    const holder = await holdAdvisoryLock(shared.url, EVENT_ORDER_LOCK, tenant.workspace.id);
    let released = false;
    try {
      // Each waits for the lock until the statement timeout (10 s) cancels the wait; an operator's key change too.
      const [overRest, overGraphQL, keyCreated] = await Promise.all([
        rest.duplicate(gateway.baseUrl, tenant.key, args('while held, REST')),
        graphQL.duplicate(gateway.baseUrl, tenant.key, args('while held, GraphQL')),
        cliProcess(['keys', 'create', '--workspace', tenant.workspace.id, '--name', 'while held', '--permissions', 'campaigns.duplicate'], { DATABASE_URL: shared.url }),
      ]);
      expect(overRest.status).toBe(503);
      expect(overRest.response.headers['retry-after']).toBe('5');
      expect(overRest.response.body).toEqual({ message: 'Service unavailable', code: 'UNAVAILABLE' });
      expect(overGraphQL.status).toBe(503);
      expect(overGraphQL.response.headers['retry-after']).toBe('5');
      expect(overGraphQL.response.body).toEqual({
        errors: [expect.objectContaining({ message: 'Service unavailable', path: ['duplicateCampaign'], extensions: expect.objectContaining({ code: 'SERVICE_UNAVAILABLE' }) })],
      });
      for (const answer of [overRest, overGraphQL]) expect(JSON.stringify(answer.response.body)).not.toMatch(INTERNAL_WORDS);
      const lock = `the lock that orders the security events of workspace ${tenant.workspace.id}`;
      expect(keyCreated).toEqual({
        code: EXIT.failed,
        stdout: '',
        stderr: expect.stringMatching(new RegExp(`^campaign-gateway: the store is busy: waited for ${lock} .*; nothing was changed, try again\n$`)),
      });
      // Nothing was written for them: no job, no key.
      expect(await shared.query('SELECT name FROM jobs WHERE workspace_id = $1', [tenant.workspace.id])).toEqual([]);
      expect(await shared.query("SELECT name FROM api_keys WHERE name = 'while held'")).toEqual([]);

      // A warning naming the lock and the workspace, not an unexpected error.
      const refusals = () => gateway.logs.filter((line) => line.msg === 'a dependency is unavailable');
      await waitFor(async () => refusals().length > 0);
      expect(refusals()).toEqual([
        expect.objectContaining({
          level: 40,
          dependency: 'store',
          cause: expect.objectContaining({ code: '57014', message: expect.stringContaining(lock) }),
        }),
      ]);
      expect(gateway.logs.filter((line) => line.level >= 50)).toEqual([]);
      // Busy on one workspace, not down: the load balancer keeps sending the others' requests.
      expect(await readiness(gateway)).toMatchObject({ code: 200, status: 'ready' });

      await holder.release();
      released = true;
      const accepted = await rest.duplicate(gateway.baseUrl, tenant.key, args('once free, REST'));
      expect([accepted.status, accepted.jobId]).toEqual([202, expect.any(String)]);
      // The requests refused gave their quota points back: this is the first of 100 the workspace spent.
      expect(accepted.response.headers['x-ratelimit-remaining']).toBe('99');
      const acceptedOverGraphQL = await graphQL.duplicate(gateway.baseUrl, tenant.key, args('once free, GraphQL'));
      expect([acceptedOverGraphQL.status, acceptedOverGraphQL.jobId]).toEqual([200, expect.any(String)]);
    } finally {
      if (!released) await holder.release();
    }
  }, 60_000);
});

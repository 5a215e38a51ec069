import { describe, expect, it } from 'vitest';
import { EVENT_ORDER_LOCK } from '../../src/adapters/postgres/store.js';
import { EXIT } from '../../src/cli/commands.js';
import { cliProcess } from '../support/cli.js';
import { skipWithoutPostgres } from '../support/postgres.js';
import { graphQL, rest } from '../support/transports.js';
import { expectAcceptedAgain, expectRefusalWarning, expectRefusedUnavailable, gatewayOnItsOwnDatabase, holdAdvisoryLock } from './locks.js';
import { readiness } from './support.js';

describe.skipIf(skipWithoutPostgres)('a workspace whose event lock another instance holds and does not let go (frozen)', () => {
  const suite = gatewayOnItsOwnDatabase();

  it('answers its writes 503 with Retry-After (the CLI: busy) once the wait is given up, names the lock in the log, and accepts them once the lock is free', async () => {
    const { shared, gateway, tenant } = suite;
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
      expectRefusedUnavailable(overRest, overGraphQL);
      const lock = `the lock that orders the security events of workspace ${tenant.workspace.id}`;
      expect(keyCreated).toEqual({
        code: EXIT.failed,
        stdout: '',
        stderr: expect.stringMatching(new RegExp(`^campaign-gateway: the store is busy: waited for ${lock} .*; nothing was changed, try again\n$`)),
      });
      // Nothing was written for them: no job, no key.
      expect(await shared.query('SELECT name FROM jobs WHERE workspace_id = $1', [tenant.workspace.id])).toEqual([]);
      expect(await shared.query("SELECT name FROM api_keys WHERE name = 'while held'")).toEqual([]);

      // A warning naming the lock and the workspace.
      await expectRefusalWarning(gateway, { code: '57014', message: expect.stringContaining(lock) });
      expect(gateway.logs.filter((line) => line.level >= 50)).toEqual([]);
      // Busy on one workspace, not down: the load balancer keeps sending the others' requests.
      expect(await readiness(gateway)).toMatchObject({ code: 200, status: 'ready' });

      await holder.release();
      released = true;
      // The requests refused gave their quota points back: this is the first of 100 the workspace spent.
      await expectAcceptedAgain(gateway.baseUrl, tenant.key, args, 1);
    } finally {
      if (!released) await holder.release();
    }
  }, 60_000);
});

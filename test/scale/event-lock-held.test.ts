import { describe, expect, it } from 'vitest';
import { EVENT_ORDER_LOCK } from '../../src/adapters/postgres/store.js';
import { EXIT } from '../../src/cli/commands.js';
import { cliProcess } from '../support/cli.js';
import { http, metricSample, waitFor, type TestWorkspace } from '../support/gateway.js';
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
      // Each waits for the lock until its lock timeout (8 s) cancels the wait; an operator's key change too.
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
      await expectRefusalWarning(gateway, { code: '55P03', message: expect.stringContaining(lock) });
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

  it('keeps a quarter of the pool for the writes waiting on it: 30 accepts of the workspace at once are all refused 503, while another workspace is accepted and the instance stays ready', async () => {
    const { shared, gateway } = suite;
    const [held, other] = [await shared.workspace(), await shared.workspace()];
    const args = (tenant: TestWorkspace) => (name: string) => ({ campaignId: tenant.campaign.id, name });
    // The sessions waiting for the held workspace's event lock.
    const waiting = async () =>
      (
        await shared.query<{ count: number }>(
          "SELECT count(*)::int AS count FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = $1 AND objid = hashtext($2)::oid",
          [EVENT_ORDER_LOCK, held.workspace.id],
        )
      )[0].count;
    const holder = await holdAdvisoryLock(shared.url, EVENT_ORDER_LOCK, held.workspace.id);
    let released = false;
    try {
      const atOnce = Promise.all(Array.from({ length: 30 }, (_, n) => rest.duplicate(gateway.baseUrl, held.key, args(held)(`at once ${n}`))));
      await waitFor(async () => (await waiting()) === 2);
      // As /metrics shows it: two writes on connections, the other 28 parked, and no request waiting for a connection.
      const pool = async () => {
        const text = (await http(gateway.baseUrl, 'GET', '/metrics')).text;
        return {
          eventLockWrites: ['waiting', 'parked'].map((state) => metricSample(text, 'gateway_store_event_lock_writes', { state })),
          inUse: metricSample(text, 'gateway_store_connections', { state: 'in_use' }),
          awaited: metricSample(text, 'gateway_store_connection_waits'),
        };
      };
      await waitFor(async () => (await pool()).eventLockWrites[1] === 28);
      const seen = await pool();
      expect([seen.eventLockWrites, seen.awaited]).toEqual([[2, 28], 0]);
      // The two waiting, and whatever the worker and this scrape's own reads hold at that moment: never the whole pool.
      expect(seen.inUse).toBeGreaterThanOrEqual(2);
      expect(seen.inUse).toBeLessThan(10);
      // Two of the 10 connections wait on the server, the other writes in the instance's memory: the rest serve the others.
      const [otherAccepted, ready] = await Promise.all([rest.duplicate(gateway.baseUrl, other.key, args(other)('beside the held workspace')), readiness(gateway)]);
      expect([otherAccepted.status, otherAccepted.jobId]).toEqual([202, expect.any(String)]);
      expect(ready).toMatchObject({ code: 200, status: 'ready' });
      expect(await waiting()).toBe(2);

      const refused = await atOnce;
      for (const answer of refused) {
        expect([answer.status, answer.response.headers['retry-after'], answer.response.body]).toEqual([503, '5', { message: 'Service unavailable', code: 'UNAVAILABLE' }]);
      }
      expect(await shared.query('SELECT name FROM jobs WHERE workspace_id = $1', [held.workspace.id])).toEqual([]);
      expect(gateway.logs.filter((line) => line.level >= 50)).toEqual([]);

      await holder.release();
      released = true;
      await expectAcceptedAgain(gateway.baseUrl, held.key, args(held), 1);
    } finally {
      if (!released) await holder.release();
    }
  }, 60_000);

  it('says a workspace erasure whose last step the lock held up was interrupted, not that nothing was changed, and finishes it when run again', async () => {
    const { shared } = suite;
    const { workspace } = await shared.workspace();
    const erase = () => cliProcess(['workspaces', 'delete', workspace.id, '--confirm', workspace.name], { DATABASE_URL: shared.url });
    const holder = await holdAdvisoryLock(shared.url, EVENT_ORDER_LOCK, workspace.id);
    try {
      // Its first step and its batches commit; its last step waits for the lock until its lock timeout.
      expect(await erase()).toEqual({
        code: EXIT.failed,
        stdout: '',
        stderr:
          `campaign-gateway: the erasure of workspace '${workspace.name}' (id ${workspace.id}) was interrupted (the store is busy: waited for the lock that orders ` +
          `the security events of workspace ${workspace.id} (PostgreSQL advisory lock ${EVENT_ORDER_LOCK}, hashtext('${workspace.id}')) until the statement was ` +
          'cancelled (canceling statement due to lock timeout): another transaction held it all that time): the workspace is still listed, with no key, ' +
          'no job that can run and fewer rows; run the same command again and it finishes the erasure\n',
      });
      expect(await shared.query('SELECT name FROM api_keys WHERE workspace_id = $1', [workspace.id])).toEqual([]);
      expect(await shared.query('SELECT name FROM workspaces WHERE id = $1', [workspace.id])).toEqual([{ name: workspace.name }]);
    } finally {
      await holder.release();
    }
    const again = await erase();
    expect([again.code, again.stderr]).toEqual([EXIT.ok, '']);
    expect(again.stdout).toContain(`Deleted workspace "${workspace.name}" (id ${workspace.id}) and every row of it.`);
    expect(await shared.query('SELECT name FROM workspaces WHERE id = $1', [workspace.id])).toEqual([]);
  }, 60_000);
});

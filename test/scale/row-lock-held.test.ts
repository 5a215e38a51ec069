import { describe, expect, it } from 'vitest';
import { EXIT } from '../../src/cli/commands.js';
import { cliProcess } from '../support/cli.js';
import { waitFor } from '../support/gateway.js';
import { skipWithoutPostgres } from '../support/postgres.js';
import { graphQL, rest } from '../support/transports.js';
import { expectAcceptedAgain, expectRefusalWarning, expectRefusedUnavailable, gatewayOnItsOwnDatabase, holdInTransaction } from './locks.js';
import { readiness } from './support.js';

/**
 * The server's words for a wait on a row of `table`, as the cause of a refusal gives them. A statement that waited for
 * its place behind another waiter, and was cancelled there, has no row named.
 */
const waitedForRowOf = (table: string, named: 'named' | 'maybe named') => {
  const row = `( \\(while [a-z ]+ tuple \\(\\d+,\\d+\\) in relation "${table}"\\))${named === 'named' ? '' : '?'}`;
  return `waited for a lock${row} until the statement was cancelled \\(canceling statement due to lock timeout\\): another transaction held it all that time`;
};

describe.skipIf(skipWithoutPostgres)('a row another instance keeps locked and does not let go (frozen)', () => {
  const suite = gatewayOnItsOwnDatabase();
  const args = (name: string) => ({ campaignId: suite.tenant.campaign.id, name });

  it('answers the writes that wait for it 503 with Retry-After once the lock timeout ends the wait, logs a warning, not an error, and accepts them once it is let go', async () => {
    const { shared, gateway, tenant } = suite;
    const first = await rest.duplicate(gateway.baseUrl, tenant.key, args('first'));
    expect(first.status).toBe(202);
    // Its job run and finished, so that no write of the worker's waits for the rows held below.
    await waitFor(async () => (await shared.query(`SELECT status FROM jobs WHERE id = $1`, [first.jobId]))[0]?.status === 'SUCCEEDED');

    // The workspace's queue turn, which every accept moves in a statement of its own before its transaction.
    const turn = await holdInTransaction(shared.url, 'SELECT FROM job_queue_turns WHERE workspace_id = $1 FOR UPDATE', [tenant.workspace.id]);
    let released = false;
    try {
      // Two waiting at once: the second waits for its place behind the first, then for the holder.
      const [overRest, overGraphQL] = await Promise.all([
        rest.duplicate(gateway.baseUrl, tenant.key, args('while held, REST')),
        graphQL.duplicate(gateway.baseUrl, tenant.key, args('while held, GraphQL')),
      ]);
      expectRefusedUnavailable(overRest, overGraphQL);

      await expectRefusalWarning(gateway, { code: '55P03', message: expect.stringMatching(new RegExp(`^${waitedForRowOf('job_queue_turns', 'maybe named')}$`)) });
      // Busy on one row, not down.
      expect(await readiness(gateway)).toMatchObject({ code: 200, status: 'ready' });
      expect(await shared.query('SELECT name FROM jobs WHERE workspace_id = $1 ORDER BY created_at', [tenant.workspace.id])).toEqual([{ name: 'first' }]);

      await turn.release();
      released = true;
      // The requests refused gave their quota points back: this is the second of 100 the workspace spent.
      await expectAcceptedAgain(gateway.baseUrl, tenant.key, args, 2);
    } finally {
      if (!released) await turn.release();
    }
    expect(gateway.logs.filter((line) => line.level >= 50)).toEqual([]);
  }, 60_000);

  it('answers an accept and a key change behind the workspace row a stopped erasure keeps 503 and busy, nothing written, and takes them once it is let go', async () => {
    const { shared, gateway, tenant } = suite;
    // The jobs accepted so far finished, so that no copy the worker writes waits for the row held below.
    await waitFor(async () => (await shared.query(`SELECT count(*)::int AS n FROM jobs WHERE workspace_id = $1 AND finished_at IS NULL`, [tenant.workspace.id]))[0].n === 0);
    // What `workspaces delete` holds from its first statement until its step commits: every write that refers to the workspace waits.
    const erasure = await holdInTransaction(shared.url, 'SELECT FROM workspaces WHERE id = $1 FOR UPDATE', [tenant.workspace.id]);
    let released = false;
    try {
      const [accept, keyCreated] = await Promise.all([
        rest.duplicate(gateway.baseUrl, tenant.key, args('while the erasure holds it')),
        cliProcess(['keys', 'create', '--workspace', tenant.workspace.id, '--name', 'while held', '--permissions', 'campaigns.duplicate'], { DATABASE_URL: shared.url }),
      ]);
      expect([accept.status, accept.response.headers['retry-after'], accept.response.body]).toEqual([503, '5', { message: 'Service unavailable', code: 'UNAVAILABLE' }]);
      expect(keyCreated).toEqual({
        code: EXIT.failed,
        stdout: '',
        stderr: expect.stringMatching(new RegExp(`^campaign-gateway: the store is busy: ${waitedForRowOf('workspaces', 'named')}; nothing was changed, try again\n$`)),
      });
      expect(await shared.query("SELECT name FROM jobs WHERE name = 'while the erasure holds it'")).toEqual([]);
      expect(await shared.query("SELECT name FROM api_keys WHERE name = 'while held'")).toEqual([]);

      await erasure.release();
      released = true;
      expect((await rest.duplicate(gateway.baseUrl, tenant.key, args('once the erasure let go'))).status).toBe(202);
    } finally {
      if (!released) await erasure.release();
    }
    expect(gateway.logs.filter((line) => line.level >= 50)).toEqual([]);
  }, 60_000);
});

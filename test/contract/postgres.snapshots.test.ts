/**
 * A query's snapshot (src/adapters/postgres/snapshots.ts) gives its connection one statement at a time: the reads of
 * the operation's resolvers arrive together, and queue behind one another. One that fails aborts the transaction:
 * those queued behind it are refused with its error, without being sent.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Snapshots } from '../../src/adapters/postgres/snapshots.js';
import { queriesOf } from '../../src/adapters/postgres/pool.js';
import { currentReadScope, withReadScope } from '../../src/domain/read-scope.js';
import { skipWithoutPostgres } from '../support/postgres.js';

describe.skipIf(skipWithoutPostgres)("a query's PostgreSQL snapshot", () => {
  let pool: pg.Pool;
  const sent: string[] = [];

  beforeAll(() => {
    pool = new pg.Pool({ connectionString: process.env.TEST_DATABASE_URL, max: 3 });
    pool.on('acquire', (client) => {
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      (client as { query: unknown }).query = (...args: unknown[]) => {
        if (typeof args[0] === 'string') sent.push(args[0]);
        return query(...args);
      };
    });
  });

  afterAll(async () => {
    await pool.end();
  });

  /** The results of `statements` given to one scope's snapshot at once. */
  const inOneScope = (snapshots: Snapshots, statements: string[]) =>
    withReadScope(async () => {
      currentReadScope()!.begin();
      const view = snapshots.reads(queriesOf(pool));
      return Promise.allSettled(statements.map((text) => view.query(text)));
    });

  it('refuses the statements queued behind one that failed with its error, and the next scope reads again', async () => {
    const snapshots = new Snapshots(pool, 3, 1000);
    sent.length = 0;
    const [failed, ...behind] = await inOneScope(snapshots, ['SELECT 1/0 AS never', 'SELECT 1 AS one', 'SELECT 2 AS two']);
    expect(failed.status).toBe('rejected');
    const cause = (failed as PromiseRejectedResult).reason;
    expect(cause.code).toBe('22012');
    expect(behind).toEqual([
      { status: 'rejected', reason: cause },
      { status: 'rejected', reason: cause },
    ]);
    expect(sent).not.toContain('SELECT 1 AS one');
    expect(pool.idleCount).toBe(pool.totalCount);

    const [again] = await inOneScope(snapshots, ['SELECT 3 AS three']);
    expect(again).toMatchObject({ status: 'fulfilled', value: { rows: [{ three: 3 }] } });
  });
});

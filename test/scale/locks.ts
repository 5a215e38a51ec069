import pg from 'pg';
import { afterAll, beforeAll, expect } from 'vitest';
import { waitFor, type TestWorkspace } from '../support/gateway.js';
import { graphQL, rest, type DuplicateArgs, type DuplicateOutcome } from '../support/transports.js';
import { sharedDatabase, type ChildGateway, type SharedDatabase } from './support.js';

/**
 * Holds table locks in an open transaction on a connection of its own. With `campaigns` locked, workers
 * claim jobs but cannot write their copies, so jobs stay RUNNING for as long as the test needs them to.
 */
export async function holdLocks(url: string, tables: string[]): Promise<{ lock(table: string): Promise<void>; release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query('BEGIN');
  const lock = async (table: string) => {
    await client.query(`LOCK TABLE ${table} IN EXCLUSIVE MODE`);
  };
  for (const table of tables) await lock(table);
  return {
    lock,
    async release() {
      await client.query('COMMIT');
      await client.end();
    },
  };
}

/**
 * Holds the advisory lock (`key`, hashtext(`text`)) in an open transaction on a connection of its own, as an instance
 * frozen in the middle of a transaction that took it holds it.
 */
export function holdAdvisoryLock(url: string, key: number, text: string): Promise<{ release(): Promise<void> }> {
  return holdInTransaction(url, 'SELECT pg_advisory_xact_lock($1, hashtext($2))', [key, text]);
}

/**
 * Holds what `statement` locks (the rows of a `SELECT … FOR UPDATE`, an advisory lock) in an open transaction on a
 * connection of its own, as an instance frozen in the middle of a transaction that took them holds them.
 */
export async function holdInTransaction(url: string, statement: string, values: unknown[]): Promise<{ release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: url, application_name: 'lock-holder' });
  await client.connect();
  await client.query('BEGIN');
  await client.query(statement, values);
  return {
    async release() {
      await client.query('COMMIT');
      await client.end();
    },
  };
}

/** A suite's gateway process on a fresh database of its own, with a workspace: set by its first test, gone after its last. */
export function gatewayOnItsOwnDatabase(): { shared: SharedDatabase; gateway: ChildGateway; tenant: TestWorkspace } {
  const suite = {} as { shared: SharedDatabase; gateway: ChildGateway; tenant: TestWorkspace };
  beforeAll(async () => {
    suite.shared = await sharedDatabase();
    [suite.gateway] = await suite.shared.spawn(['waiting']);
    suite.tenant = await suite.shared.workspace();
  }, 120_000);
  afterAll(async () => {
    await suite.shared?.close();
  });
  return suite;
}

/** What only the gateway's insides say: the driver's, the database's or a lock's own words. */
const INTERNAL_WORDS = /cancel|statement|timeout|advisory|lock|tuple|relation|SQL|select|55P03|57014|pg_/i;

/** A duplication over REST and one over GraphQL refused as when the store is down: 503 with Retry-After, in each one's words for it, and no others. */
export function expectRefusedUnavailable(overRest: DuplicateOutcome, overGraphQL: DuplicateOutcome): void {
  expect(overRest.status).toBe(503);
  expect(overRest.response.headers['retry-after']).toBe('5');
  expect(overRest.response.body).toEqual({ message: 'Service unavailable', code: 'UNAVAILABLE' });
  expect(overGraphQL.status).toBe(503);
  expect(overGraphQL.response.headers['retry-after']).toBe('5');
  expect(overGraphQL.response.body).toEqual({
    errors: [expect.objectContaining({ message: 'Service unavailable', path: ['duplicateCampaign'], extensions: expect.objectContaining({ code: 'SERVICE_UNAVAILABLE' }) })],
  });
  for (const answer of [overRest, overGraphQL]) expect(JSON.stringify(answer.response.body)).not.toMatch(INTERNAL_WORDS);
}

/**
 * Once the lock is let go: a duplication accepted over each transport, the first taking the workspace's `nth` point of
 * 100 (those refused while it was held were given back).
 */
export async function expectAcceptedAgain(baseUrl: string, key: string, args: (name: string) => DuplicateArgs, nth: number): Promise<void> {
  const accepted = await rest.duplicate(baseUrl, key, args('once free, REST'));
  expect([accepted.status, accepted.jobId]).toEqual([202, expect.any(String)]);
  expect(accepted.response.headers['x-ratelimit-remaining']).toBe(String(100 - nth));
  const acceptedOverGraphQL = await graphQL.duplicate(baseUrl, key, args('once free, GraphQL'));
  expect([acceptedOverGraphQL.status, acceptedOverGraphQL.jobId]).toEqual([200, expect.any(String)]);
}

/**
 * What the gateway logs for the requests a held lock refused: one warning, a database outage's (the others are counted
 * as an outage's are), its cause like `cause`; not an unexpected error.
 */
export async function expectRefusalWarning(gateway: ChildGateway, cause: Record<string, unknown>): Promise<void> {
  const refusals = () => gateway.logs.filter((line) => line.msg === 'a dependency is unavailable');
  await waitFor(async () => refusals().length > 0);
  expect(refusals()).toEqual([expect.objectContaining({ level: 40, dependency: 'store', cause: expect.objectContaining(cause) })]);
}

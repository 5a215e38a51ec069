import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_DATABASE_URL } from '../support/postgres.js';
import { duplicateMany, sharedDatabase, tally, TEST_REDIS_URL, type ChildGateway, type SharedDatabase } from './support.js';

const ROUNDS = 10;
const REQUESTS = 1000;
const QUOTA = 100;

describe.skipIf((!TEST_DATABASE_URL || !TEST_REDIS_URL) && !process.env.CI)('two instances, one Redis quota', () => {
  let shared: SharedDatabase;
  let gateways: ChildGateway[];

  beforeAll(async () => {
    if (!TEST_REDIS_URL) throw new Error('TEST_REDIS_URL is not set');
    shared = await sharedDatabase();
    gateways = await shared.spawn(['a', 'b'], { REDIS_URL: TEST_REDIS_URL, DUPLICATE_RATE_LIMIT: String(QUOTA), LOG_LEVEL: 'warn' });
  }, 120_000);

  afterAll(async () => {
    await shared?.close();
  });

  it(`accepts exactly ${QUOTA} of ${REQUESTS} concurrent duplicates over both instances and transports, ${ROUNDS} rounds in a row`, async () => {
    for (let round = 1; round <= ROUNDS; round += 1) {
      // A fresh workspace is a fresh quota.
      const { workspace, key, campaign } = await shared.workspace();
      const attempts = await duplicateMany(gateways, key, campaign.id, REQUESTS);

      expect({ round, ...tally(attempts.map((attempt) => attempt.outcome)) }).toEqual({ round, accepted: QUOTA, limited: REQUESTS - QUOTA });
      const [{ jobs }] = await shared.query('SELECT count(*)::int AS jobs FROM jobs WHERE workspace_id = $1', [workspace.id]);
      expect(jobs).toBe(QUOTA);
    }
  }, 300_000);
});

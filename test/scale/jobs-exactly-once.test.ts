import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../support/gateway.js';
import { TEST_DATABASE_URL } from '../support/postgres.js';
import { duplicateMany, sharedDatabase, tally, TEST_REDIS_URL, type ChildGateway, type SharedDatabase } from './support.js';

const JOBS = 2000;

describe.skipIf((!TEST_DATABASE_URL || !TEST_REDIS_URL) && !process.env.CI)('two instances, one job queue', () => {
  let shared: SharedDatabase;
  let gateways: ChildGateway[];

  beforeAll(async () => {
    if (!TEST_REDIS_URL) throw new Error('TEST_REDIS_URL is not set');
    shared = await sharedDatabase();
    gateways = await shared.spawn(['a', 'b'], { REDIS_URL: TEST_REDIS_URL, DUPLICATE_RATE_LIMIT: '1000000' });
  }, 120_000);

  afterAll(async () => {
    await shared?.close();
  });

  it(`runs ${JOBS} jobs accepted across both instances exactly once each, one new campaign per job`, async () => {
    const { workspace, key, campaign } = await shared.workspace();
    const attempts = await duplicateMany(gateways, key, campaign.id, JOBS);
    expect(tally(attempts.map((attempt) => attempt.outcome))).toEqual({ accepted: JOBS });
    expect(new Set(attempts.map((attempt) => attempt.jobId)).size).toBe(JOBS);

    const statuses = async () =>
      Object.fromEntries(
        (await shared.query('SELECT status, count(*)::int AS n FROM jobs WHERE workspace_id = $1 GROUP BY status', [workspace.id])).map(
          (row) => [row.status, row.n],
        ),
      );
    await waitFor(async () => (await statuses()).SUCCEEDED === JOBS, 120_000, 250);
    expect(await statuses()).toEqual({ SUCCEEDED: JOBS });

    const [copies] = await shared.query(
      `SELECT count(*)::int AS total, count(DISTINCT c.id)::int AS distinct_ids,
         count(*) FILTER (WHERE j.id IS NOT NULL AND c.name = j.name)::int AS matching_jobs
       FROM campaigns c LEFT JOIN jobs j ON j.result_campaign_id = c.id
       WHERE c.workspace_id = $1 AND c.duplicated_from = $2`,
      [workspace.id, campaign.id],
    );
    expect(copies).toEqual({ total: JOBS, distinct_ids: JOBS, matching_jobs: JOBS });

    const [events] = await shared.query(
      `SELECT count(*)::int AS total, count(DISTINCT job_id)::int AS jobs FROM security_events
       WHERE workspace_id = $1 AND type = 'CAMPAIGN_DUPLICATED'`,
      [workspace.id],
    );
    expect(events).toEqual({ total: JOBS, jobs: JOBS });

    // Both instances worked the one queue, and between them finished each job once.
    const finished = gateways.map((gateway) => gateway.logs.filter((line) => line.msg === 'job finished').length);
    expect(finished.every((count) => count > 0)).toBe(true);
    expect(finished.reduce((sum, count) => sum + count, 0)).toBe(JOBS);
  }, 300_000);
});

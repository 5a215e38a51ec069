import { join } from 'node:path';
import Database from 'better-sqlite3';
import { expect } from 'vitest';
import { waitFor, type TestGateway } from './gateway.js';

/**
 * Once every job has finished: each job has exactly one REQUESTED event and one outcome event matching its
 * state, no event points at a missing job, a succeeded job's copy exists, and no idempotency reservation was
 * left without a job. Reads the embedded store's file directly, in one snapshot.
 */
export async function assertStoreConsistent(gw: TestGateway): Promise<void> {
  expect(gw.app.store.kind).toBe('sqlite');
  await waitFor(async () => {
    const counts = await gw.app.store.countJobsByStatus();
    return !counts.PENDING && !counts.RUNNING;
  });
  const db = new Database(join(gw.config.dataDir, 'gateway.db'), { readonly: true });
  try {
    const rows = (sql: string) => db.prepare(sql).all();
    const problems = db.transaction(() => ({
      jobsWithoutOneRequest: rows(`SELECT id FROM jobs j WHERE (SELECT COUNT(*) FROM security_events e
        WHERE e.job_id = j.id AND e.type = 'CAMPAIGN_DUPLICATION_REQUESTED') != 1`),
      jobsWithoutOneOutcome: rows(`SELECT id, status FROM jobs j WHERE (SELECT COUNT(*) FROM security_events e WHERE e.job_id = j.id
        AND e.type = CASE j.status WHEN 'SUCCEEDED' THEN 'CAMPAIGN_DUPLICATED' ELSE 'CAMPAIGN_DUPLICATION_FAILED' END) != 1`),
      eventsWithoutJob: rows(`SELECT id, type FROM security_events e WHERE job_id IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = e.job_id)`),
      copiesMissing: rows(`SELECT id FROM jobs j WHERE status = 'SUCCEEDED'
        AND NOT EXISTS (SELECT 1 FROM campaigns c WHERE c.id = j.result_campaign_id AND c.workspace_id = j.workspace_id)`),
      reservationsWithoutJob: rows('SELECT workspace_id, key FROM idempotency_keys WHERE job_id IS NULL'),
    }))();
    expect(problems).toEqual({ jobsWithoutOneRequest: [], jobsWithoutOneOutcome: [], eventsWithoutJob: [], copiesMissing: [], reservationsWithoutJob: [] });
  } finally {
    db.close();
  }
}

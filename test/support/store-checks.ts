import { closeSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { expect } from 'vitest';
import type { GatewayStore } from '../../src/domain/ports.js';
import { JOB_STATUSES, type JobStatus } from '../../src/domain/types.js';
import { waitFor, type TestGateway } from './gateway.js';

/** How many jobs the store holds in each status. */
export async function jobCounts(store: GatewayStore): Promise<Record<JobStatus, number>> {
  const counts = await Promise.all(JOB_STATUSES.map((status) => store.countJobs(status)));
  return Object.fromEntries(JOB_STATUSES.map((status, index) => [status, counts[index]])) as Record<JobStatus, number>;
}

/**
 * How many jobs the store holds, whatever their status. Each status is counted by a query of its own, so a job the
 * worker moves on meanwhile can be counted twice (PENDING, then RUNNING) or not at all: the counts are read again
 * until two reads in a row agree on every status.
 */
export async function jobTotal(store: GatewayStore): Promise<number> {
  for (let last = await jobCounts(store); ; ) {
    const counts = await jobCounts(store);
    if (JOB_STATUSES.every((status) => counts[status] === last[status])) return Object.values(counts).reduce((sum, count) => sum + count, 0);
    last = counts;
  }
}

/**
 * Once every job has finished: each job has exactly one REQUESTED event and one outcome event matching its
 * state, no event points at a missing job, a succeeded job's copy exists, and no idempotency reservation was
 * left without a job. Reads the embedded store's file directly, in one snapshot.
 */
export async function assertStoreConsistent(gw: TestGateway): Promise<void> {
  expect(gw.app.store.kind).toBe('sqlite');
  await waitFor(async () => {
    const { store } = gw.app;
    return (await store.countJobs('PENDING')) === 0 && (await store.countJobs('RUNNING')) === 0;
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

/** Overwrites the first page of `table` in the SQLite file, once its WAL is copied in, as a failing disk would. */
export function damageTable(file: string, table: string): void {
  const db = new Database(file);
  const { rootpage } = db.prepare('SELECT rootpage FROM sqlite_schema WHERE name = ?').get(table) as { rootpage: number };
  const pageSize = Number(db.pragma('page_size', { simple: true }));
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
  const fd = openSync(file, 'r+');
  writeSync(fd, Buffer.alloc(pageSize, 0xff), 0, pageSize, (rootpage - 1) * pageSize);
  closeSync(fd);
}

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, http, json, waitFor } from '../support/gateway.js';
import { TEST_DATABASE_URL } from '../support/postgres.js';
import { holdLocks } from './locks.js';
import { sharedDatabase, type ChildGateway, type SharedDatabase } from './support.js';

const JOBS = 12;
const LEASE_MS = 2000;

describe.skipIf(!TEST_DATABASE_URL && !process.env.CI)('an instance killed while it runs jobs', () => {
  let shared: SharedDatabase;
  let survivor: ChildGateway;
  let victim: ChildGateway;

  beforeAll(async () => {
    shared = await sharedDatabase();
    // Short leases, so the dead instance's jobs are taken over soon.
    [survivor, victim] = await shared.spawn(['survivor', 'victim'], { JOB_LEASE_SECONDS: String(LEASE_MS / 1000), DUPLICATE_RATE_LIMIT: '1000' });
  }, 120_000);

  afterAll(async () => {
    await shared?.close();
  });

  it('leaves its jobs to the other instance once the leases expire: all finish, none is copied twice', async () => {
    const { workspace, key, campaign } = await shared.workspace();
    const locks = await holdLocks(shared.url, ['campaigns']);
    let held: { id: string }[] = [];
    try {
      const ids: string[] = [];
      for (let i = 0; i < JOBS; i += 1) {
        const response = await http(victim.baseUrl, 'POST', '/campaigns/duplicate', {
          headers: { ...json, ...bearer(key) },
          body: JSON.stringify({ campaign_id: campaign.id, name: `copy ${i}` }),
        });
        expect(response.status).toBe(202);
        ids.push(response.body.job_id);
      }
      // The jobs running under the victim's leases; with `leaseLeftMs`, only those with at least that much lease left.
      const runningUnderVictim = (leaseLeftMs: number | null = null) =>
        shared.query<{ id: string }>(
          `SELECT id FROM jobs WHERE status = 'RUNNING' AND lease_owner LIKE $1
             AND ($2::int IS NULL OR lease_expires_at > clock_timestamp() + $2 * interval '1 millisecond')`,
          [`%:${victim.pid}:%`, leaseLeftMs],
        );
      // Killed within 500 ms of a claim: a job whose copy has waited for the lock past its lock_timeout (4 s) goes
      // back to the queue, and one doing so as the kill lands would not be the dead instance's to take over.
      await waitFor(async () => (await runningUnderVictim(LEASE_MS - 500)).length > 0);
      victim.signal('SIGKILL');
      expect(await victim.exited).toMatchObject({ signal: 'SIGKILL' });
      held = await runningUnderVictim();
      expect(held.length).toBeGreaterThan(0);
    } finally {
      await locks.release();
    }

    const unfinished = async () =>
      (await shared.query("SELECT count(*)::int AS n FROM jobs WHERE workspace_id = $1 AND status NOT IN ('SUCCEEDED', 'FAILED')", [workspace.id]))[0].n;
    await waitFor(async () => (await unfinished()) === 0, 60_000, 100);

    const jobs = await shared.query(
      `SELECT j.id, j.status, j.attempts, (SELECT count(*)::int FROM campaigns c WHERE c.duplicated_from = $2 AND c.name = j.name) AS copies,
         (SELECT count(*)::int FROM security_events e WHERE e.job_id = j.id AND e.type = 'CAMPAIGN_DUPLICATED') AS outcomes
       FROM jobs j WHERE j.workspace_id = $1`,
      [workspace.id, campaign.id],
    );
    expect(jobs).toHaveLength(JOBS);
    for (const job of jobs) expect(job).toMatchObject({ status: 'SUCCEEDED', copies: 1, outcomes: 1 });
    // The jobs the dead instance held were run again, by the survivor.
    for (const { id } of held) expect(jobs.find((job) => job.id === id)?.attempts).toBeGreaterThanOrEqual(2);
    const takenOver = new Set(survivor.logs.filter((line) => line.msg === 'job finished').map((line) => line.jobId));
    for (const { id } of held) expect(takenOver.has(id)).toBe(true);
  }, 120_000);
});

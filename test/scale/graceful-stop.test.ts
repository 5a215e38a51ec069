import { once } from 'node:events';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, http, json, waitFor } from '../support/gateway.js';
import { TEST_DATABASE_URL } from '../support/postgres.js';
import { isListening } from '../support/process.js';
import { holdLocks } from './locks.js';
import { sharedDatabase, type ChildGateway, type SharedDatabase } from './support.js';

describe.skipIf(!TEST_DATABASE_URL && !process.env.CI)('SIGTERM', () => {
  let shared: SharedDatabase;
  let gateway: ChildGateway;

  beforeAll(async () => {
    shared = await sharedDatabase();
    [gateway] = await shared.spawn(['stopping'], { WORKER_CONCURRENCY: '2', SHUTDOWN_GRACE_SECONDS: '10' });
  }, 120_000);

  afterAll(async () => {
    await shared?.close();
  });

  it('stops listening, completes the request in flight, finishes running jobs, leaves the rest queued and exits 0', async () => {
    const { workspace, key, campaign } = await shared.workspace();
    const submit = (name: string) =>
      http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
        headers: { ...json, ...bearer(key) },
        body: JSON.stringify({ campaign_id: campaign.id, name }),
      });

    // A client that has begun sending a request when the signal comes and finishes it after: its connection is
    // not idle, so it stays open, and the request arrives while the gateway is stopping.
    const late = connect(gateway.port, '127.0.0.1');
    let lateAnswer = '';
    late.on('data', (chunk) => (lateAnswer += chunk.toString('latin1')));
    const lateHungUp = once(late, 'end');
    const lateBody = JSON.stringify({ campaign_id: campaign.id, name: 'too late' });

    // Jobs get claimed but cannot write their copies yet: they are running when the signal comes.
    const locks = await holdLocks(shared.url, ['campaigns']);
    let inFlight: ReturnType<typeof submit>;
    try {
      for (let i = 0; i < 4; i += 1) expect((await submit(`queued ${i}`)).status).toBe(202);
      await waitFor(async () => (await shared.query("SELECT 1 FROM jobs WHERE status = 'RUNNING'")).length === 2);

      // Requests that are still being accepted when the signal comes.
      await locks.lock('security_events');
      inFlight = submit('in flight');
      await waitFor(async () => (await shared.query("SELECT 1 FROM pg_locks WHERE relation = 'security_events'::regclass AND NOT granted")).length > 0);
      late.write(`POST /campaigns/duplicate HTTP/1.1\r\nHost: 127.0.0.1\r\n`);

      gateway.signal('SIGTERM');
      await waitFor(async () => !(await isListening(gateway.port)));
      late.write(`Authorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: ${lateBody.length}\r\n\r\n${lateBody}`);
      await lateHungUp;
    } finally {
      await locks.release();
    }

    expect((await inFlight!).status).toBe(202);
    // Refused in the gateway's own shape, told when to retry (elsewhere), and hung up on.
    const [head, answer] = lateAnswer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 503 /);
    expect(head).toMatch(/^retry-after: 1\r?$/im);
    expect(head).toMatch(/^connection: close\r?$/im);
    expect(head).toMatch(/^x-request-id: [0-9a-f-]{36}\r?$/im);
    expect(JSON.parse(answer)).toEqual({ message: 'The gateway is shutting down' });
    // Exit code 1 would mean closing outlasted the grace period (main.ts gives up then).
    expect(await gateway.exited).toEqual({ code: 0, signal: null });

    const jobs = await shared.query('SELECT name, status, lease_owner, attempts FROM jobs WHERE workspace_id = $1 ORDER BY name', [workspace.id]);
    expect(jobs).toHaveLength(5);
    expect(jobs.filter((job) => job.status === 'SUCCEEDED')).toHaveLength(2);
    // Everything else is back in the queue, owned by nobody, with no attempt spent.
    for (const job of jobs.filter((job) => job.status !== 'SUCCEEDED')) {
      expect(job).toMatchObject({ status: 'PENDING', lease_owner: null, attempts: 0 });
    }
    expect(jobs.map((job) => job.name)).toContain('in flight');
  }, 120_000);
});

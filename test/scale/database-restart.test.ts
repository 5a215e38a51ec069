import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresStore } from '../../src/adapters/postgres/store.js';
import { AdminService } from '../../src/domain/admin.js';
import { systemClock } from '../../src/domain/ports.js';
import { CLAIM_RECOVERY_SETTLE_MS } from '../../src/jobs/worker.js';
import { ManualClock } from '../support/clock.js';
import { bearer, componentLines, createTestWorkspace, http, json, recordingLogger, startGateway, storeHeldOn, waitFor, type TestWorkspace } from '../support/gateway.js';
import { openPostgresStore } from '../support/postgres.js';
import { createPrivateCluster, readiness, spawnGateway, type ChildGateway, type PrivateCluster } from './support.js';

// Restarting the shared server would disturb other suites, so this one runs a PostgreSQL cluster of its own.
describe.skipIf(!existsSync('/usr/lib/postgresql') && !process.env.CI)('PostgreSQL restarting under a running gateway', () => {
  let cluster: PrivateCluster;
  let store: PostgresStore;
  let gateway: ChildGateway;
  let tenant: TestWorkspace;

  beforeAll(async () => {
    cluster = await createPrivateCluster();
    gateway = await spawnGateway('restarting', { DATABASE_URL: cluster.url });
    store = openPostgresStore(cluster.url);
    tenant = await createTestWorkspace(store, new AdminService(store, systemClock));
  }, 120_000);

  afterAll(async () => {
    await gateway?.kill();
    await store?.close();
    cluster?.destroy();
  });

  const duplicateAndFinish = async (name: string) => {
    const accepted = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(tenant.key) },
      body: JSON.stringify({ campaign_id: tenant.campaign.id, name }),
    });
    expect(accepted.status).toBe(202);
    return waitFor(async () => {
      const job = await http(gateway.baseUrl, 'GET', `/duplication_jobs/${accepted.body.job_id}`, { headers: bearer(tenant.key) });
      return job.body.status === 'succeeded' ? job.body : null;
    });
  };

  it('reports not ready and answers 503 with Retry-After while the database is down, then recovers without a restart', async () => {
    expect(await readiness(gateway)).toEqual({
      code: 200,
      status: 'ready',
      checks: { store: { status: 'up', backend: 'postgres' }, quota: { status: 'up', backend: 'postgres' } },
    });
    await duplicateAndFinish('before the restart');

    cluster.stop();
    const down = await waitFor(async () => {
      const report = await readiness(gateway);
      return report.code === 503 ? report : null;
    });
    expect(down).toMatchObject({ status: 'not ready', checks: { store: { status: 'down' } } });
    expect(down.checks!.store.message).toMatch(/ECONNREFUSED|57P0/);
    expect((down as { message?: string }).message).toMatch(/^store: /);
    // Callers are told to come back, over both transports, and the log says why.
    const refused = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(tenant.key) },
      body: JSON.stringify({ campaign_id: tenant.campaign.id, name: 'during the outage' }),
    });
    expect(refused.status).toBe(503);
    expect(refused.headers['retry-after']).toBe('5');
    expect(refused.body).toEqual({ message: 'Service unavailable', code: 'UNAVAILABLE' });
    const mutation = await http(gateway.baseUrl, 'POST', '/graphql', {
      headers: { ...json, ...bearer(tenant.key) },
      body: JSON.stringify({ query: 'mutation($id: ID!) { duplicateCampaign(input: {campaignId: $id, name: "during the outage"}) { job { id } } }', variables: { id: tenant.campaign.id } }),
    });
    expect(mutation.status).toBe(503);
    expect(mutation.headers['retry-after']).toBe('5');
    expect(mutation.body.errors.map((error: any) => error.extensions.code)).toEqual(['SERVICE_UNAVAILABLE']);
    // A poll too.
    const poll = await http(gateway.baseUrl, 'POST', '/graphql', {
      headers: { ...json, ...bearer(tenant.key) },
      body: JSON.stringify({ query: '{ securityEvents(first: 5) { edges { node { type } } } }' }),
    });
    expect(poll.status).toBe(503);
    expect(poll.headers['retry-after']).toBe('5');
    expect(poll.body).toMatchObject({ errors: [{ path: ['securityEvents'], extensions: { code: 'SERVICE_UNAVAILABLE' } }] });
    expect(poll.body).not.toHaveProperty('data');
    // Once for the outage, not once per request: at most once for each part the database plays (store, quota).
    const warnings = gateway.logs.filter((line) => line.msg === 'a dependency is unavailable');
    expect(new Set(warnings.map((line) => line.dependency)).size).toBe(warnings.length);
    expect(warnings[0]).toMatchObject({ level: 40, reqId: refused.headers['x-request-id'] });
    expect(warnings.every((line) => line.level === 40 && /ECONNREFUSED|57P0|terminated/.test(line.cause.message) && !('err' in line))).toBe(true);

    // The worker, which tries to claim jobs twice a second, says so once, as a warning with the driver's error.
    const worker = () => gateway.logs.filter((line) => line.component === 'worker' && line.msg.startsWith('claiming jobs'));
    const claimFailed = await waitFor(async () => worker()[0]);
    expect(claimFailed).toMatchObject({ level: 40, msg: 'claiming jobs failed; retrying', cause: { message: expect.stringMatching(/ECONNREFUSED|57P0|terminat|shutting down/) } });
    expect(claimFailed).not.toHaveProperty('err');

    cluster.start();
    await waitFor(async () => (await readiness(gateway)).code === 200);
    const recovered = await waitFor(async () => worker().find((line) => line.msg === 'claiming jobs works again'));
    expect(recovered).toMatchObject({ level: 30, failures: expect.any(Number) });
    expect(worker().map((line) => line.msg)).toEqual(['claiming jobs failed; retrying', 'claiming jobs works again']);
    const job = await duplicateAndFinish('after the restart');
    expect(job.result_campaign_id).toEqual(expect.any(String));
    expect(await Promise.race([gateway.exited.then(() => 'exited'), Promise.resolve('running')])).toBe('running');
  }, 120_000);

  it('logs the worker and the pruner failing on every try once, then once a minute, then once when they work again', async () => {
    const clock = new ManualClock(new Date());
    const started = clock.now().toISOString();
    const calls = { claimJobs: 0, pruneFinishedJobs: 0 };
    const counting = (method: keyof typeof calls) => () => void (calls[method] += 1);
    const store = storeHeldOn(
      storeHeldOn(openPostgresStore(cluster.url), ['claimJobs'], counting('claimJobs')),
      ['pruneFinishedJobs'],
      counting('pruneFinishedJobs'),
    );
    const { logger, lines } = recordingLogger();
    // Passes a few times a second, so the pruner fails as often as the worker does.
    const inProcess = await startGateway({}, { store, clock, logger }, { tuned: { retentionIntervalMs: 100 } });
    try {
      const logs = () => ({ worker: componentLines(lines, 'worker'), retention: componentLines(lines, 'retention') });
      cluster.stop();
      const first = await waitFor(async () => {
        const { worker, retention } = logs();
        return worker.length > 0 && retention.length > 0 && { worker: worker[0], retention: retention[0] };
      });
      const warning = { level: 40, cause: { message: expect.stringMatching(/ECONNREFUSED|57P0|terminat|shutting down/) } };
      expect(first).toMatchObject({ worker: { ...warning, msg: 'claiming jobs failed; retrying' }, retention: { ...warning, msg: 'retention pass failed' } });
      expect(first.worker).not.toHaveProperty('err');
      expect(first.retention).not.toHaveProperty('err');

      const seen = { ...calls };
      await waitFor(async () => calls.claimJobs >= seen.claimJobs + 3 && calls.pruneFinishedJobs >= seen.pruneFinishedJobs + 3);
      expect(logs()).toEqual({ worker: [first.worker], retention: [first.retention] });

      clock.advance(60_000);
      const reminders = await waitFor(async () => {
        const { worker, retention } = logs();
        return worker.length > 1 && retention.length > 1 && { worker: worker[1], retention: retention[1] };
      });
      expect(reminders).toMatchObject({
        worker: { ...warning, msg: 'claiming jobs still fails; retrying', since: started },
        retention: { ...warning, msg: 'retention passes still fail', since: started },
      });
      expect(reminders.worker.failures).toBeGreaterThan(3);
      expect(reminders.retention.failures).toBeGreaterThan(3);

      cluster.start();
      // The pruner says so at its first pass that works; the worker once its claims have worked for a while.
      await waitFor(async () => logs().retention.length > 2);
      const claimsSinceRestart = calls.claimJobs;
      await waitFor(async () => calls.claimJobs >= claimsSinceRestart + 2);
      clock.advance(CLAIM_RECOVERY_SETTLE_MS);
      const recovered = await waitFor(async () => {
        const { worker, retention } = logs();
        return worker.length > 2 && retention.length > 2 && { worker: worker.slice(2), retention: retention.slice(2) };
      });
      expect(recovered).toEqual({
        worker: [expect.objectContaining({ level: 30, msg: 'claiming jobs works again', since: started })],
        retention: [expect.objectContaining({ level: 30, msg: 'retention passes work again', since: started })],
      });
    } finally {
      await inProcess.close();
    }
  }, 120_000);
});

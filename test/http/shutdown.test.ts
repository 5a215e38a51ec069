import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createStore } from '../../src/app.js';
import { startFakeBraze } from '../support/fake-braze.js';
import { bearer, http, json, startGateway, waitFor } from '../support/gateway.js';
import { isListening, spawnGateway } from '../support/process.js';

describe('closing the gateway', () => {
  it('cuts a connection still sending its request when the grace period ends, instead of waiting for it', async () => {
    const gateway = await startGateway({ SHUTDOWN_GRACE_SECONDS: '1' });
    const slow = connect(Number(new URL(gateway.baseUrl).port), '127.0.0.1');
    await once(slow, 'connect');
    // Headers and 5 of the 100 body bytes promised: refused at once for want of a key, but the request is not
    // over until its body has arrived, and it never does.
    slow.write('POST /campaigns/duplicate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"cam');
    const [answer] = await once(slow, 'data');
    expect(String(answer)).toMatch(/^HTTP\/1\.1 401 /);
    const cut = once(slow, 'close');
    slow.resume();
    await gateway.close();
    await cut;
    expect(slow.destroyed).toBe(true);
  });

  it('lets a job still waiting on the upstream finish, instead of handing it back to be sent to Braze again', async () => {
    const fake = await startFakeBraze('upstream-key');
    // Well within the grace period, but still on its way when the gateway closes.
    fake.script('POST /campaigns/duplicate', { status: 202, json: { message: 'success' }, delayMs: 1000 });
    const gateway = await startGateway({ UPSTREAM_URL: fake.url, UPSTREAM_API_KEY: 'upstream-key', UPSTREAM_TIMEOUT_MS: '5000' });
    try {
      const { key, workspace } = await gateway.workspace();
      const accepted = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
        headers: { ...json, ...bearer(key) },
        body: JSON.stringify({ campaign_id: 'cmp-0001', name: 'copied while closing' }),
      });
      expect(accepted.status).toBe(202);
      await waitFor(async () => fake.requestsTo('POST /campaigns/duplicate').length === 1);
      await gateway.app.close();

      // What the next gateway on this store finds: the job done, nothing left to send again.
      const store = await createStore(gateway.config);
      try {
        expect(await store.getJob(workspace.id, accepted.body.job_id)).toMatchObject({ status: 'SUCCEEDED', attempts: 1, leaseOwner: null });
        const events = await store.listEvents(workspace.id, { jobId: accepted.body.job_id }, { first: 10 });
        expect(events.map((event) => event.type)).toEqual(['CAMPAIGN_DUPLICATED', 'CAMPAIGN_DUPLICATION_REQUESTED']);
      } finally {
        await store.close();
      }
      expect(fake.requestsTo('POST /campaigns/duplicate')).toHaveLength(1);
    } finally {
      await gateway.close();
      await fake.close();
    }
  });

  it('first fails readiness for SHUTDOWN_DRAIN_SECONDS while every other route still serves, then stops listening', async () => {
    const gateway = await startGateway({ SHUTDOWN_DRAIN_SECONDS: '3' });
    const port = Number(new URL(gateway.baseUrl).port);
    const tenant = await gateway.workspace();
    expect((await http(gateway.baseUrl, 'GET', '/readyz')).status).toBe(200);

    const closing = gateway.close();
    const draining = await http(gateway.baseUrl, 'GET', '/readyz');
    expect(draining.status).toBe(503);
    expect(draining.body).toEqual({
      status: 'stopping',
      message: 'The gateway is shutting down',
      checks: { store: { status: 'up', backend: 'sqlite' }, quota: { status: 'up', backend: 'memory' } },
    });
    expect((await http(gateway.baseUrl, 'GET', '/healthz')).status).toBe(200);
    const accepted = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(tenant.key) },
      body: JSON.stringify({ campaign_id: tenant.campaign.id, name: 'accepted while draining' }),
    });
    expect(accepted.status).toBe(202);
    expect(accepted.headers.connection).not.toBe('close');
    // The worker keeps running too.
    await waitFor(async () => {
      const job = await http(gateway.baseUrl, 'GET', `/duplication_jobs/${accepted.body.job_id}`, { headers: bearer(tenant.key) });
      return job.body.status === 'succeeded';
    });
    expect(await isListening(port)).toBe(true);

    await closing;
    expect(await isListening(port)).toBe(false);
  });

  it('on SIGTERM drains first, then stops within the grace period that follows, and exits 0', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'cgw-drain-'));
    try {
      // A drain longer than the grace period plus the 5 s main.ts allows beyond it: the drain counts on top.
      const gateway = await spawnGateway({ DATA_DIR: dataDir, SEED_DEMO: 'false', SHUTDOWN_DRAIN_SECONDS: '7', SHUTDOWN_GRACE_SECONDS: '1' });
      gateway.child.kill('SIGTERM');
      const draining = await waitFor(async () => {
        const answer = await http(gateway.baseUrl, 'GET', '/readyz');
        return answer.status === 503 && answer;
      });
      expect(draining.body).toMatchObject({ status: 'stopping', message: 'The gateway is shutting down' });
      expect((await http(gateway.baseUrl, 'GET', '/healthz')).status).toBe(200);
      expect(await gateway.exited).toEqual({ code: 0, signal: null });
      expect(gateway.logs.map((line) => line.msg)).toEqual(expect.arrayContaining(['shutting down', 'draining: /readyz answers 503 while requests are still served']));
      expect(await isListening(gateway.port)).toBe(false);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 60_000);
});

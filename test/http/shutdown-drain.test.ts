import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bearer, http, json, startGateway, waitFor } from '../support/gateway.js';
import { isListening, spawnGateway } from '../support/process.js';

describe('the drain before the gateway closes (SHUTDOWN_DRAIN_SECONDS)', () => {
  it('first fails readiness for SHUTDOWN_DRAIN_SECONDS while every other route still serves, then stops listening', async () => {
    let endDrain!: () => void;
    const drainEnded = new Promise<void>((resolve) => (endDrain = resolve));
    // The drain lasts until the test has seen what it serves, however slow the machine.
    const gateway = await startGateway({ SHUTDOWN_DRAIN_SECONDS: '3600' }, { drainWait: () => drainEnded });
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

    endDrain();
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

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SqliteStore } from '../../src/adapters/sqlite/store.js';
import { startFakeBraze, type FakeBraze } from '../support/fake-braze.js';
import { http, startGateway, type TestGateway } from '../support/gateway.js';

describe('/readyz', () => {
  let gateway: TestGateway | undefined;
  let fake: FakeBraze | undefined;
  const dirs: string[] = [];

  afterEach(async () => {
    // The upstream first: a call it still holds would keep the gateway's client from closing.
    await fake?.close();
    fake = undefined;
    await gateway?.close();
    gateway = undefined;
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('reports each dependency of the embedded default', async () => {
    gateway = await startGateway();
    const response = await http(gateway.baseUrl, 'GET', '/readyz');
    expect(response.status).toBe(200);
    expect(response.body).toEqual({
      status: 'ready',
      checks: { store: { status: 'up', backend: 'sqlite' }, quota: { status: 'up', backend: 'memory' } },
    });
  });

  it('answers 503 and names the dependency that is down', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cgw-ready-'));
    dirs.push(dir);
    const store = new SqliteStore({ filename: join(dir, 'gateway.db') });
    await store.migrate();
    gateway = await startGateway({ WORKER_CONCURRENCY: '0' }, { store });
    await store.close();
    const response = await http(gateway.baseUrl, 'GET', '/readyz');
    expect(response.status).toBe(503);
    expect(response.body).toMatchObject({
      status: 'not ready',
      message: expect.stringMatching(/^store: failing/),
      checks: { store: { status: 'down' }, quota: { status: 'up' } },
    });
  });

  it('names a dependency whose check hangs, without waiting for that dependency', async () => {
    fake = await startFakeBraze('upstream-key');
    fake.script('GET /', { hang: true });
    // Upstream calls may take a minute; a readiness probe cannot wait that long.
    gateway = await startGateway({
      UPSTREAM_URL: fake.url,
      UPSTREAM_API_KEY: 'upstream-key',
      UPSTREAM_TIMEOUT_MS: '60000',
      JOB_LEASE_SECONDS: '120',
      WORKER_CONCURRENCY: '0',
    });
    const response = await http(gateway.baseUrl, 'GET', '/readyz');
    // The upstream is not needed to accept jobs: its hang degrades the instance, it does not take it out.
    expect(response.status).toBe(200);
    expect(response.body.checks.upstream).toEqual({ status: 'degraded', message: 'did not answer within 2000 ms' });
  });
});

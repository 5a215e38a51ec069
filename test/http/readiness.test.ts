import { afterEach, describe, expect, it } from 'vitest';
import { startFakeBraze, type FakeBraze } from '../support/fake-braze.js';
import { http, startGateway, type TestGateway } from '../support/gateway.js';

describe('/readyz', () => {
  let gateway: TestGateway | undefined;
  let fake: FakeBraze | undefined;

  afterEach(async () => {
    // The upstream first: a call it still holds would keep the gateway's client from closing.
    await fake?.close();
    fake = undefined;
    await gateway?.close();
    gateway = undefined;
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

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selfSigned } from '../support/certificates.js';
import { startFakeBraze } from '../support/fake-braze.js';
import { bearer, http, json, metricSample, startGateway, waitFor, type TestGateway } from '../support/gateway.js';

const UPSTREAM_KEY = 'braze-upstream-key-tls-5b20c7';
const REFUSED = "The upstream's TLS certificate was refused (DEPTH_ZERO_SELF_SIGNED_CERT): if a private CA signed it, give that CA's certificate file in NODE_EXTRA_CA_CERTS";

describe('upstream mode over TLS: an upstream certificate Node does not trust', () => {
  let dir: string;
  let server: Server;
  let gateway: TestGateway;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cgw-upstream-tls-'));
    const { cert, key } = selfSigned(dir, 'upstream');
    // A real HTTPS upstream that would accept every duplication, were its certificate trusted.
    server = createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (_, response) => {
      response.writeHead(202, { 'content-type': 'application/json' });
      response.end('{"message":"success"}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    gateway = await startGateway({ UPSTREAM_URL: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, UPSTREAM_API_KEY: UPSTREAM_KEY });
  });
  afterAll(async () => {
    await gateway?.close();
    await new Promise((resolve) => server?.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  it('fails the job at once, naming the certificate refusal, and /readyz says the same', async () => {
    const ws = await gateway.workspace();
    const accepted = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(ws.key) },
      body: JSON.stringify({ campaign_id: 'cmp-0001', name: 'never sent' }),
    });
    expect(accepted.status).toBe(202);
    const failed = await waitFor(async () => {
      const job = await http(gateway.baseUrl, 'GET', `/duplication_jobs/${accepted.body.job_id}`, { headers: bearer(ws.key) });
      return job.body.status !== 'pending' && job.body.status !== 'running' && job.body;
    });
    expect(failed).toMatchObject({ status: 'failed', attempts: 1, error: { code: 'UPSTREAM_UNREACHABLE', message: REFUSED } });
    // Refused in the handshake, before the request was sent: Braze cannot have made the copy.
    const [outcome] = await gateway.app.store.listEvents(ws.workspace.id, { jobId: accepted.body.job_id }, { first: 1 });
    expect(outcome).toMatchObject({ type: 'CAMPAIGN_DUPLICATION_FAILED', details: { upstreamMayHaveActed: false } });

    const ready = await http(gateway.baseUrl, 'GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body.checks.upstream).toEqual({ status: 'degraded', message: REFUSED });
    // Not retried, yet timed as what it is: the connection failed.
    const text = (await http(gateway.baseUrl, 'GET', '/metrics')).text;
    expect(metricSample(text, 'gateway_upstream_request_duration_seconds_count', { endpoint: '/campaigns/duplicate', outcome: 'unreachable' })).toBe(1);
  });

  it('names a TLS handshake that fails for another reason (https:// to a plain HTTP port)', async () => {
    const fake = await startFakeBraze(UPSTREAM_KEY);
    const plain = await startGateway({ UPSTREAM_URL: fake.url.replace('http://', 'https://'), UPSTREAM_API_KEY: UPSTREAM_KEY });
    try {
      const ready = await http(plain.baseUrl, 'GET', '/readyz');
      expect(ready.body.checks.upstream).toEqual({ status: 'degraded', message: 'The connection to the upstream failed (TLS: ERR_SSL_WRONG_VERSION_NUMBER)' });
    } finally {
      await plain.close();
      await fake.close();
    }
  });
});

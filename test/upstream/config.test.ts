import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';

const upstream = { UPSTREAM_URL: 'https://rest.iad-01.braze.com', UPSTREAM_API_KEY: 'key' };

describe('upstream configuration', () => {
  it('has defaults that match the upstream limit, and runs more jobs at once locally than upstream', () => {
    expect(loadConfig(upstream)).toMatchObject({
      upstreamUrl: 'https://rest.iad-01.braze.com',
      upstreamTimeoutMs: 10_000,
      upstreamConnectTimeoutMs: 5000,
      upstreamRateLimit: 100,
      upstreamRateWindowSeconds: 60,
      workerConcurrency: 4,
    });
    expect(loadConfig({}).workerConcurrency).toBe(32);
    // Calls in flight end before the grace does, so no job is handed back while Braze may still act on it.
    expect(loadConfig(upstream).shutdownGraceMs).toBe(15_000);
    expect(loadConfig({ ...upstream, UPSTREAM_TIMEOUT_MS: '60000', JOB_LEASE_SECONDS: '90' }).shutdownGraceMs).toBe(65_000);
    expect(loadConfig({}).shutdownGraceMs).toBe(10_000);
    expect(loadConfig({ ...upstream, WORKER_CONCURRENCY: '8' }).workerConcurrency).toBe(8);
  });

  it('holds a job, unless told otherwise, at least 5 seconds longer than an upstream call may last', () => {
    expect(loadConfig({}).jobLeaseMs).toBe(30_000);
    expect(loadConfig(upstream).jobLeaseMs).toBe(30_000);
    expect(loadConfig({ ...upstream, UPSTREAM_TIMEOUT_MS: '26000' })).toMatchObject({ jobLeaseMs: 31_000, shutdownGraceMs: 31_000 });
    expect(loadConfig({ ...upstream, UPSTREAM_TIMEOUT_MS: '25500' }).jobLeaseMs).toBe(31_000);
    expect(loadConfig({ ...upstream, UPSTREAM_TIMEOUT_MS: '600000' }).jobLeaseMs).toBe(605_000);
    expect(loadConfig({ UPSTREAM_TIMEOUT_MS: '60000' }).jobLeaseMs).toBe(30_000);
    expect(loadConfig({ ...upstream, UPSTREAM_TIMEOUT_MS: '26000', JOB_LEASE_SECONDS: '40' }).jobLeaseMs).toBe(40_000);
  });

  it.each<[Record<string, string>, string]>([
    [{ UPSTREAM_URL: 'https://rest.iad-01.braze.com' }, 'invalid configuration: UPSTREAM_API_KEY must be set when UPSTREAM_URL is set'],
    [{ ...upstream, UPSTREAM_URL: 'ftp://braze' }, 'invalid configuration: UPSTREAM_URL must start with http:// or https://'],
    [{ ...upstream, UPSTREAM_URL: 'https://braze/?x=1' }, 'invalid configuration: UPSTREAM_URL must not have a query or a fragment'],
    [{ ...upstream, UPSTREAM_RATE_LIMIT: '0' }, "invalid configuration: UPSTREAM_RATE_LIMIT must be a whole number from 1 to 1000000000, got '0'"],
    [{ ...upstream, UPSTREAM_RATE_WINDOW_SECONDS: 'a minute' }, "invalid configuration: UPSTREAM_RATE_WINDOW_SECONDS must be a whole number from 1 to 86400, got 'a minute'"],
    [{ ...upstream, UPSTREAM_TIMEOUT_MS: '1.5' }, "invalid configuration: UPSTREAM_TIMEOUT_MS must be a whole number from 50 to 600000, got '1.5'"],
    [{ ...upstream, UPSTREAM_CONNECT_TIMEOUT_MS: '20000' }, "invalid configuration: UPSTREAM_CONNECT_TIMEOUT_MS must be a whole number from 50 to 10000, got '20000'"],
    [
      { ...upstream, UPSTREAM_TIMEOUT_MS: '26000', JOB_LEASE_SECONDS: '30' },
      'invalid configuration: JOB_LEASE_SECONDS must be at least 5 seconds longer than UPSTREAM_TIMEOUT_MS (26000 ms)',
    ],
    [
      { ...upstream, UPSTREAM_TIMEOUT_MS: '30000', JOB_LEASE_SECONDS: '30' },
      'invalid configuration: JOB_LEASE_SECONDS must be at least 5 seconds longer than UPSTREAM_TIMEOUT_MS (30000 ms)',
    ],
    [
      { ...upstream, UPSTREAM_TIMEOUT_MS: '20000', SHUTDOWN_GRACE_SECONDS: '3' },
      'invalid configuration: SHUTDOWN_GRACE_SECONDS must be longer than UPSTREAM_TIMEOUT_MS (20000 ms)',
    ],
  ])('refuses %o with one clear line', (env, message) => {
    expect(() => loadConfig(env)).toThrow(message);
  });
});

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, componentLines, http, json, metricSample, recordingLogger, startGateway, waitFor } from '../support/gateway.js';
import { freePort, startFailureOf } from '../support/process.js';
import { PrivateRedis, skipWithoutRedisServer } from '../support/redis.js';
import { readiness, spawnGateway } from './support.js';

const PASSWORD = 'acl-secret-27d4e1';
const FALLBACK = "each instance enforces its callers' limits on its own with an in-process limiter until Redis runs them again";

// Redis servers set up as operators run them, each the suite's own: the shared one is a fresh local default.
describe.skipIf(skipWithoutRedisServer)('Redis servers that are not fresh local defaults', () => {
  const dirs: string[] = [];
  const tempDir = (prefix: string) => {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(dir);
    return dir;
  };

  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  describe('an ACL user that may use some of the limiters’ keys and not the quota’s', () => {
    let redis: PrivateRedis;
    let admin: Redis;

    beforeAll(async () => {
      redis = await PrivateRedis.start();
      admin = new Redis(redis.url());
      // Everything the gateway needs, the readiness probe's key included, except the quota's keys.
      await admin.call('ACL', 'SETUSER', 'gateway', 'on', `>${PASSWORD}`, '+@all', '~readiness-probe:*', '~auth-failures:*', '~denied-permission-events:*');
    });

    afterAll(async () => {
      admin?.disconnect();
      await redis?.stop();
    });

    it('is logged once from the refused call itself, naming the keys, and shows in /readyz and the metric until the ACL allows them', async () => {
      const { logger, lines } = recordingLogger('info');
      const gateway = await startGateway({ REDIS_URL: redis.url(`gateway:${PASSWORD}`), DUPLICATE_RATE_LIMIT: '2' }, { logger });
      const limits = () => componentLines(lines, 'limits');
      const quotaUp = async () => metricSample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_dependency_up', { dependency: 'quota' });
      try {
        const tenant = await gateway.workspace();
        const duplicate = (name: string) =>
          http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
            headers: { ...json, ...bearer(tenant.key) },
            body: JSON.stringify({ campaign_id: tenant.campaign.id, name }),
          });
        // Counted in process, where the quota holds per instance.
        expect([(await duplicate('first')).status, (await duplicate('second')).status, (await duplicate('third')).status]).toEqual([202, 202, 429]);
        const message = `The user in REDIS_URL may not use the keys duplicate:* (NOPERM); ${FALLBACK}`;
        expect(limits().filter((line) => line.level >= 40)).toEqual([expect.objectContaining({ level: 40, msg: message })]);

        const report = await readiness(gateway);
        expect(report).toMatchObject({ code: 200, status: 'degraded', checks: { quota: { status: 'degraded', backend: 'redis', message } } });
        expect(await quotaUp()).toBe(0);
        expect(limits().filter((line) => line.level >= 40)).toHaveLength(1);

        await admin.call('ACL', 'SETUSER', 'gateway', '~duplicate:*');
        await waitFor(async () => limits().some((line) => line.msg === "Redis runs the limiters' commands again; limits are shared through Redis again"));
        expect((await readiness(gateway)).checks!.quota).toEqual({ status: 'up', backend: 'redis' });
        expect(await quotaUp()).toBe(1);
        // Back in Redis, counted from its own (empty) count.
        expect((await duplicate('shared')).status).toBe(202);
        expect(Number(await admin.get(`duplicate:${tenant.workspace.id}`))).toBe(1);
        expect(lines.join('\n')).not.toContain(PASSWORD);
      } finally {
        await gateway.close();
      }
    }, 60_000);

    it('without SELECT, a database in REDIS_URL stops start-up with one line instead of counting in database 0', async () => {
      await admin.call('ACL', 'SETUSER', 'no-select', 'on', `>${PASSWORD}`, '+@all', '-select', '~*');
      const failure = await startFailureOf({ DATA_DIR: tempDir('cgw-redis-select-'), SEED_DEMO: 'false', REDIS_URL: `${redis.url(`no-select:${PASSWORD}`)}/3` });
      expect(failure).toBe(
        'dist/main.js exited with 1 before listening:\ncampaign-gateway: failed to start: REDIS_URL selects a database, and Redis refuses its user the SELECT (NOPERM): allow it +select, or drop the database from REDIS_URL\n',
      );
    }, 60_000);
  });

  it('a Redis that may evict keys is warned about once and noted in /readyz, which stays ready', async () => {
    const redis = await PrivateRedis.start(['--maxmemory-policy', 'allkeys-lru']);
    const { logger, lines } = recordingLogger('info');
    const gateway = await startGateway({ REDIS_URL: redis.url() }, { logger });
    try {
      const message =
        "Redis may evict the limiters' keys to make room (maxmemory-policy allkeys-lru): spent quotas, failed-authentication blocks " +
        'and the upstream pace and pause can vanish; run it with maxmemory-policy noeviction';
      expect(await readiness(gateway)).toMatchObject({ code: 200, status: 'ready', checks: { quota: { status: 'up', backend: 'redis', message } } });
      expect(componentLines(lines, 'limits')).toEqual([expect.objectContaining({ level: 40, msg: message })]);

      // Set right on the running Redis, the note goes at the next check, with no reconnection.
      const admin = new Redis(redis.url(), { lazyConnect: true });
      await admin.connect();
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      await admin.quit();
      const ready = await readiness(gateway);
      expect(ready).toMatchObject({ code: 200, status: 'ready' });
      expect(ready.checks?.quota).toEqual({ status: 'up', backend: 'redis' });
    } finally {
      await gateway.close();
      await redis.stop();
    }
  }, 60_000);

  describe('TLS', () => {
    let redis: PrivateRedis;
    let tlsPort: number;
    let ca: string;

    beforeAll(async () => {
      const dir = tempDir('cgw-redis-tls-');
      const file = (name: string) => join(dir, name);
      const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
      const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
      ca = file('ca.crt');
      openssl('req', '-x509', ...ecKey, '-keyout', file('ca.key'), '-out', ca, '-days', '1', '-subj', '/CN=campaign-gateway test CA');
      openssl('req', ...ecKey, '-keyout', file('redis.key'), '-out', file('redis.csr'), '-subj', '/CN=127.0.0.1');
      writeFileSync(file('san.ext'), 'subjectAltName=IP:127.0.0.1\n');
      openssl('x509', '-req', '-in', file('redis.csr'), '-CA', ca, '-CAkey', file('ca.key'), '-CAcreateserial', '-out', file('redis.crt'), '-days', '1', '-extfile', file('san.ext'));
      tlsPort = await freePort();
      // The plain port stays open for the helper's PING; the gateway connects to the TLS one.
      redis = await PrivateRedis.start([
        '--tls-port', String(tlsPort), '--tls-cert-file', file('redis.crt'), '--tls-key-file', file('redis.key'),
        '--tls-ca-cert-file', ca, '--tls-auth-clients', 'no',
      ]);
    }, 60_000);

    afterAll(async () => {
      await redis?.stop();
    });

    it('a certificate Node does not trust stops start-up with one line naming the problem', async () => {
      const failure = await startFailureOf({ DATA_DIR: tempDir('cgw-redis-tls-'), SEED_DEMO: 'false', REDIS_URL: `rediss://127.0.0.1:${tlsPort}` });
      expect(failure).toBe(
        'dist/main.js exited with 1 before listening:\ncampaign-gateway: failed to start: ' +
          "Redis's TLS certificate is not trusted (SELF_SIGNED_CERT_IN_CHAIN): if a private CA signed it, give that CA's certificate file in NODE_EXTRA_CA_CERTS\n",
      );
    }, 60_000);

    it('is trusted once NODE_EXTRA_CA_CERTS names the private CA', async () => {
      const gateway = await spawnGateway('tls', { REDIS_URL: `rediss://127.0.0.1:${tlsPort}`, NODE_EXTRA_CA_CERTS: ca });
      try {
        expect((await readiness(gateway)).checks!.quota).toEqual({ status: 'up', backend: 'redis' });
      } finally {
        await gateway.kill();
      }
    }, 60_000);
  });
});

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { bearer, componentLines, http, json, recordingLogger, startGateway, waitFor, type TestGateway } from '../support/gateway.js';
import { freePort, startFailureOf } from '../support/process.js';
import { PrivateRedis, skipWithoutRedisServer } from '../support/redis.js';
import { readiness } from './support.js';

const PASSWORD = 'redis-secret-5f1c0a';
const WRONG = 'not-the-redis-secret-93be';

describe.skipIf(skipWithoutRedisServer)('Redis credentials', () => {
  let redis: PrivateRedis;
  const dirs: string[] = [];
  const dataDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'cgw-redis-auth-'));
    dirs.push(dir);
    return dir;
  };

  beforeAll(async () => {
    redis = await PrivateRedis.start(['--requirepass', PASSWORD]);
  });

  afterAll(async () => {
    await redis?.stop();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('a password Redis refuses stops start-up with one line naming REDIS_URL, never the password', async () => {
    const failure = await startFailureOf({ DATA_DIR: dataDir(), SEED_DEMO: 'false', REDIS_URL: redis.url(`:${WRONG}`) });
    expect(failure).toBe(
      'dist/main.js exited with 1 before listening:\ncampaign-gateway: failed to start: Redis refused the user name or password in REDIS_URL (WRONGPASS)\n',
    );
    expect(failure).not.toContain(WRONG);
  });

  it.each([
    ['no password where one is required', '', 'Redis requires a password and REDIS_URL gives none (NOAUTH)'],
    ['a user Redis does not know', `someone:${PASSWORD}`, 'Redis refused the user name or password in REDIS_URL (WRONGPASS)'],
  ])('%s stops start-up too', async (_case, credentials, message) => {
    await expect(buildApp(loadConfig({ LOG_LEVEL: 'silent', DATA_DIR: dataDir(), REDIS_URL: redis.url(credentials) }))).rejects.toThrow(
      new Error(message),
    );
  });

  it('a database index Redis does not have stops start-up instead of counting in database 0', async () => {
    await expect(
      buildApp(loadConfig({ LOG_LEVEL: 'silent', DATA_DIR: dataDir(), REDIS_URL: `${redis.url(`:${PASSWORD}`)}/99` })),
    ).rejects.toThrow(new Error('REDIS_URL selects a database this Redis does not have (ERR DB index is out of range)'));
  });

  it('a database index met only once Redis comes up after start is reported and warned about, not taken for a recovery', async () => {
    const late = await PrivateRedis.start(['--databases', '4']);
    await late.stop();
    const { logger, lines } = recordingLogger('info');
    const gateway = await startGateway({ REDIS_URL: `${late.url()}/9` }, { logger });
    try {
      expect((await readiness(gateway)).checks!.quota.message).toMatch(/^Redis is unreachable; /);
      await late.start(['--databases', '4']);
      const message =
        'REDIS_URL selects a database this Redis does not have (ERR DB index is out of range); the limits are kept in its database 0, ' +
        'still shared by every instance, until REDIS_URL or Redis is fixed';
      const report = await waitFor(async () => {
        const current = await readiness(gateway);
        return current.checks!.quota.message === message && current;
      });
      expect(report).toMatchObject({ code: 200, status: 'degraded', checks: { quota: { status: 'degraded', backend: 'redis' } } });
      expect(componentLines(lines, 'limits').filter((line) => line.msg === message)).toEqual([expect.objectContaining({ level: 40 })]);
    } finally {
      await gateway.close();
      await late.stop();
    }
  });

  it('a Redis that cannot be reached at start does not stop it: the instance starts degraded', async () => {
    const gateway = await startGateway({ REDIS_URL: `redis://:${PASSWORD}@127.0.0.1:${await freePort()}` });
    try {
      const report = await readiness(gateway);
      expect(report).toMatchObject({ code: 200, status: 'degraded', checks: { quota: { status: 'degraded', backend: 'redis' } } });
      expect(report.checks!.quota.message).toMatch(/^Redis is unreachable; /);
    } finally {
      await gateway.close();
    }
  });

  describe('a password that stops working under a running gateway', () => {
    let gateway: TestGateway;
    let admin: Redis;
    const logs: Record<string, any>[] = [];

    beforeAll(async () => {
      admin = new Redis(redis.url(`:${PASSWORD}`));
      gateway = await startGateway(
        { REDIS_URL: redis.url(`:${PASSWORD}`) },
        { logger: { level: 'info', stream: { write: (line: string) => void logs.push(JSON.parse(line)) } } },
      );
    });

    afterAll(async () => {
      await gateway?.close();
      admin?.disconnect();
    });

    it('is reported as refused, not as an unreachable Redis, and the gateway returns to Redis once it works again', async () => {
      const tenant = await gateway.workspace();
      expect(await readiness(gateway)).toMatchObject({ code: 200, status: 'ready', checks: { quota: { status: 'up', backend: 'redis' } } });

      // As when Redis restarts with a new password: its connections are dropped and must authenticate again.
      await admin.config('SET', 'requirepass', `${PASSWORD}-rotated`);
      await admin.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
      const refused = await waitFor(async () => {
        const report = await readiness(gateway);
        return /refused/.test(report.checks?.quota.message ?? '') && report;
      });
      expect(refused).toMatchObject({ code: 200, status: 'degraded' });
      expect(refused.checks!.quota.message).toBe(
        "Redis refused the user name or password in REDIS_URL (WRONGPASS); each instance enforces its callers' limits on its own with an in-process limiter until Redis accepts the credentials",
      );
      await waitFor(async () => logs.some((line) => line.level === 40 && /^Redis refused the user name or password in REDIS_URL/.test(line.msg)));
      const accepted = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
        headers: { ...json, ...bearer(tenant.key) },
        body: JSON.stringify({ campaign_id: tenant.campaign.id, name: 'counted in process' }),
      });
      expect(accepted.status).toBe(202);

      await admin.config('SET', 'requirepass', PASSWORD);
      await waitFor(async () => (await readiness(gateway)).status === 'ready');
      expect(JSON.stringify(logs)).not.toContain(PASSWORD);
    });
  });
});

import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RateLimiterAuthFailures } from '../../src/adapters/rate-limiter-auth-failures.js';
import { runCli } from '../../src/cli/commands.js';
import { RateLimiterQuota } from '../../src/adapters/rate-limiter-quota.js';
import { RedisLimiters } from '../../src/adapters/redis/limiters.js';
import { UpstreamPacer } from '../../src/adapters/upstream-pacer.js';
import type { DuplicationJob } from '../../src/domain/types.js';
import { startFakeBraze, type FakeBraze } from '../support/fake-braze.js';
import { bearer, componentLines, graphql, http, json, recordingLogger, startGateway, waitFor, type TestGateway } from '../support/gateway.js';
import { PrivateRedis, skipWithoutRedisServer } from '../support/redis.js';
import { readiness } from './support.js';

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const UPSTREAM_KEY = 'Braze-Upstream-Key-7A0C3E91B2';

/** Every key in the database `client` is connected to. */
async function keysOf(client: Redis): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await client.scan(cursor, 'COUNT', 1000);
    keys.push(...batch);
    cursor = next;
  } while (cursor !== '0');
  return keys.sort();
}

// A Redis of its own: its database is scanned whole, and the README's ACL user is created in it.
describe.skipIf(skipWithoutRedisServer)('Redis keys and permissions', () => {
  let redis: PrivateRedis;
  let admin: Redis;

  beforeAll(async () => {
    redis = await PrivateRedis.start();
    admin = new Redis(redis.url());
  });

  afterAll(async () => {
    admin?.disconnect();
    await redis?.stop();
  });

  it('limiters under different REDIS_KEY_PREFIX values on one database share no quota, pace, pause or failed-authentication block', async () => {
    await admin.flushall();
    const [staging, production] = [new RedisLimiters(redis.url(), 'staging'), new RedisLimiters(redis.url(), 'production')];
    try {
      await Promise.all([staging.connect(), production.connect()]);
      const quota = (limiters: RedisLimiters) => new RateLimiterQuota(limiters.limiter({ keyPrefix: 'duplicate', points: 2, durationSeconds: 60 }));
      const pacer = (limiters: RedisLimiters) =>
        new UpstreamPacer(limiters.limiter({ keyPrefix: 'upstream', points: 1, durationSeconds: 60, sharedOnly: true }), 60 * 60_000);
      const authFailures = (limiters: RedisLimiters) =>
        new RateLimiterAuthFailures(limiters.limiter({ keyPrefix: 'auth-failures', points: 1, durationSeconds: 60 }), 60);

      await quota(staging).consume('workspace-1', 2);
      await expect(quota(staging).consume('workspace-1')).rejects.toMatchObject({ code: 'RATE_LIMITED' });
      expect((await quota(production).consume('workspace-1')).remaining).toBe(1);

      expect(await pacer(staging).take()).toBe(0);
      expect(await pacer(staging).take()).toBeGreaterThan(0);
      expect(await pacer(production).take()).toBe(0);
      await pacer(staging).pause(30_000);
      expect(await pacer(staging).remainingMs()).toBeGreaterThan(0);
      expect(await pacer(production).remainingMs()).toBe(0);

      await authFailures(staging).recordFailure('192.0.2.1');
      await expect(authFailures(staging).check('192.0.2.1')).rejects.toMatchObject({ code: 'AUTH_BLOCKED' });
      await expect(authFailures(production).check('192.0.2.1')).resolves.toBeUndefined();

      expect(await staging.check()).toEqual({ status: 'up', backend: 'redis' });
      const keys = await keysOf(admin);
      expect(keys).toContain('staging:readiness-probe:probe');
      expect(keys.filter((key) => !key.startsWith('staging:') && !key.startsWith('production:'))).toEqual([]);
    } finally {
      await staging.close();
      await production.close();
    }
  });

  it('says once when the Redis user may not read when a window ends, and still counts exactly', async () => {
    await admin.flushall();
    const line = /^ACL SETUSER .+$/m.exec(README)?.[0] ?? '';
    // The README's line as an earlier version gave it: without the command that reads a window's end, nor TIME.
    const rules = line.split(' ').slice(3).filter((rule) => rule !== '+pexpiretime' && !rule.startsWith('~'));
    expect(rules).toContain('-@all');
    await admin.call('ACL', 'SETUSER', 'earlier', ...rules.map((rule) => (rule.startsWith('>') ? '>earlier-password' : rule)), '~*');
    const limiters = new RedisLimiters(redis.url('earlier:earlier-password'));
    const warnings: string[] = [];
    try {
      // As the gateway starts: the connection's probe write meets the refusal before there is a logger.
      await limiters.connect();
      limiters.logTo({ info: () => undefined, warn: (_details: object, message: string) => void warnings.push(message) });
      const quota = new RateLimiterQuota(limiters.limiter({ keyPrefix: 'duplicate', points: 3, durationSeconds: 60 }));
      const taken = [];
      for (let i = 0; i < 4; i++) taken.push(await quota.consume('workspace-1').then(({ remaining }) => remaining, ({ code }) => code));
      expect(taken).toEqual([2, 1, 0, 'RATE_LIMITED']);
      expect(warnings.filter((message) => message.includes('PEXPIRETIME'))).toEqual([expect.stringMatching(/^the Redis user may run neither PEXPIRETIME nor TIME .*grant \+pexpiretime/)]);
    } finally {
      await limiters.close();
      await admin.call('ACL', 'DELUSER', 'earlier');
    }
  });

  it('names a command the Redis user is not granted, in the log, /readyz and clients unblock, rather than an outage', async () => {
    await admin.flushall();
    const line = /^ACL SETUSER .+$/m.exec(README)?.[0] ?? '';
    // The README's line as an earlier version gave it: without DEL, which clears an earlier version's pause.
    const rules = line.split(' ').slice(3).filter((rule) => rule !== '+del' && !rule.startsWith('~') && !rule.startsWith('>'));
    await admin.call('ACL', 'SETUSER', 'earlier', ...rules, '>earlier-password', '~*');
    const url = redis.url('earlier:earlier-password');
    const fake = await startFakeBraze(UPSTREAM_KEY);
    const { logger, lines } = recordingLogger();
    const gateway = await startGateway({ REDIS_URL: url, UPSTREAM_URL: fake.url, UPSTREAM_API_KEY: UPSTREAM_KEY }, { logger });
    try {
      const ws = await gateway.workspace();
      const { upstreamRateLimit: points, upstreamRateWindowSeconds: durationSeconds } = gateway.app.config;
      const earlier = new RedisLimiters(redis.url());
      try {
        await earlier.connect();
        const pace = earlier.limiter({ keyPrefix: 'upstream', points, durationSeconds, sharedOnly: true });
        await pace.block('duplicate', 86_400);
        await pace.set('paused', 0, 86_400);
        await earlier.limiter({ keyPrefix: 'auth-failures', points: 1, durationSeconds: 60 }).block('192.0.2.7', 600);
      } finally {
        await earlier.close();
      }
      const sent = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
        headers: { ...json, ...bearer(ws.key) },
        body: JSON.stringify({ campaign_id: 'cmp-0001', name: 'A copy' }),
      });
      expect(sent.status).toBe(202);
      const refused = await waitFor(async () => componentLines(lines, 'upstream').find(({ msg }) => /pacing store/.test(msg)));
      expect(refused).toMatchObject({
        level: 40,
        msg: 'the upstream pacing store refuses the gateway a command; upstream calls are held until it is granted',
        cause: { message: 'The user in REDIS_URL may not run DEL (NOPERM)' },
      });
      expect(await readiness(gateway)).toMatchObject({
        checks: {
          upstream: {
            status: 'degraded',
            message: 'The pacing store refuses the gateway a command (The user in REDIS_URL may not run DEL (NOPERM)): no duplication is sent upstream until it is granted',
          },
        },
      });
      expect(fake.requestsTo('POST /campaigns/duplicate')).toEqual([]);

      let stderr = '';
      const code = await runCli(['clients', 'unblock', '192.0.2.7'], { env: { DATA_DIR: gateway.dataDir, REDIS_URL: url }, stdout: () => undefined, stderr: (text) => void (stderr += text) });
      expect(code).not.toBe(0);
      expect(stderr).toContain('the Redis in REDIS_URL refuses it (The user in REDIS_URL may not run DEL (NOPERM)): nothing was unblocked');
    } finally {
      await gateway.close();
      await fake.close();
      await admin.call('ACL', 'DELUSER', 'earlier');
    }
  });

  describe('a gateway whose Redis user is made by the README\'s ACL SETUSER line', () => {
    const line = /^ACL SETUSER .+$/m.exec(README)?.[0] ?? '';
    const [user, ...rules] = line.split(' ').slice(2);
    const password = rules.find((rule) => rule.startsWith('>'))?.slice(1) ?? '';
    const prefix = /^~(.+):\*$/.exec(rules.find((rule) => rule.startsWith('~')) ?? '')?.[1] ?? '';
    // The README's table of keys, each `<…>` standing for any name.
    const documented = [...README.matchAll(/^\| `([a-z][^`]*)` \| [^|]+ \| [^|]+ \|$/gm)].map(
      ([, key]) => new RegExp(`^${key.split(/<[^>]+>/).map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.+')}$`),
    );
    let fake: FakeBraze;
    let gateway: TestGateway;
    // In a database of its own, named in REDIS_URL: SELECT is part of what the user needs.
    let database: Redis;
    const { logger, lines } = recordingLogger();

    beforeAll(async () => {
      await admin.flushall();
      // Without the script cached, the limiters' first call needs EVAL as well as EVALSHA.
      await admin.script('FLUSH');
      await admin.call('ACL', 'SETUSER', user, ...rules);
      await admin.call('ACL', 'LOG', 'RESET');
      database = new Redis(`${redis.url()}/3`);
      fake = await startFakeBraze(UPSTREAM_KEY);
      gateway = await startGateway(
        {
          REDIS_URL: `${redis.url(`${user}:${password}`)}/3`,
          REDIS_KEY_PREFIX: prefix,
          UPSTREAM_URL: fake.url,
          UPSTREAM_API_KEY: UPSTREAM_KEY,
          AUTH_FAILURE_LIMIT: '2',
        },
        { logger },
      );
    });

    afterAll(async () => {
      await gateway?.close();
      await fake?.close();
      database?.disconnect();
    });

    it('runs every path that uses Redis without a refusal, and keeps every key under the prefix, documented, and expiring', async () => {
      expect(line).toMatch(/^ACL SETUSER \S+ on >\S+ ~\S+:\* -@all /);
      const ws = await gateway.workspace();
      const duplicate = (key: string) =>
        http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
          headers: { ...json, ...bearer(key) },
          body: JSON.stringify({ campaign_id: 'cmp-0001', name: 'A copy' }),
        });
      const job = (id: string, done: (found: DuplicationJob) => boolean) =>
        waitFor(async () => {
          const found = (await gateway.app.store.getJob(ws.workspace.id, id)) as DuplicationJob;
          return done(found) && found;
        });

      // A day-long upstream pause an earlier version left, which the first slot taken clears.
      const earlier = new RedisLimiters(`${redis.url()}/3`, prefix);
      try {
        await earlier.connect();
        const { upstreamRateLimit: points, upstreamRateWindowSeconds: durationSeconds } = gateway.app.config;
        const pace = earlier.limiter({ keyPrefix: 'upstream', points, durationSeconds, sharedOnly: true });
        await pace.block('duplicate', 86_400);
        await pace.set('paused', 0, 86_400);
      } finally {
        await earlier.close();
      }
      // The quota and upstream pacing; then a 429 from upstream, which pauses the pace.
      const sent = await duplicate(ws.key);
      expect(sent.status).toBe(202);
      expect(await job(sent.body.job_id, (found) => found.status !== 'PENDING' && found.status !== 'RUNNING')).toMatchObject({ status: 'SUCCEEDED' });
      expect(componentLines(lines, 'upstream').map(({ msg }) => msg)).toContainEqual(expect.stringMatching(/^cleared an upstream pause longer than this version holds one/));
      fake.script('POST /campaigns/duplicate', { status: 429, json: { message: 'Rate limit exceeded' }, headers: { 'retry-after': '30' } });
      const limited = await duplicate(ws.key);
      expect(await job(limited.body.job_id, (found) => found.error !== null)).toMatchObject({ status: 'PENDING', error: { code: 'UPSTREAM_RATE_LIMITED' } });
      // Upstream reads.
      expect((await graphql(gateway.baseUrl, ws.key, '{ campaigns(first: 5) { edges { cursor } } }')).body.errors).toBeUndefined();
      // A permission refusal's event budget.
      const reader = await ws.addKey(['campaigns.list']);
      expect((await duplicate(reader.key)).status).toBe(403);
      // A security event download's budget.
      expect((await http(gateway.baseUrl, 'GET', '/security_events/download?start=1999-01-01&end=1999-02-01', { headers: bearer(ws.key) })).status).toBe(200);
      // Failed authentications, up to a block.
      const failures = [];
      for (let i = 0; i < 3; i++) failures.push((await duplicate('not-a-key')).status);
      expect(failures).toEqual([401, 401, 429]);
      // Lifted with the CLI, as the same user; then counted again, so that the key is there to be checked below.
      let stderr = '';
      const unblocked = await runCli(['clients', 'unblock', '127.0.0.1'], {
        env: { DATA_DIR: gateway.dataDir, REDIS_URL: `${redis.url(`${user}:${password}`)}/3`, REDIS_KEY_PREFIX: prefix },
        stdout: () => undefined,
        stderr: (text) => void (stderr += text),
      });
      expect({ unblocked, stderr }).toEqual({ unblocked: 0, stderr: '' });
      expect((await duplicate('not-a-key')).status).toBe(401);
      // Readiness: the limiters' probe, a quota read, the pacer's probe and the pause.
      expect(await readiness(gateway)).toMatchObject({ code: 200, checks: { quota: { status: 'up', backend: 'redis' }, upstream: { status: 'up' } } });

      // ioredis sends CLIENT SETINFO (Redis 7.2 and later know it) and ignores its refusal: the README says it needs no grant.
      const refused = ((await admin.call('ACL', 'LOG')) as unknown[][]).filter((entry) => !entry.includes('client|setinfo'));
      expect(refused).toEqual([]);
      expect(componentLines(lines, 'limits')).toEqual([]);

      const keys = await keysOf(database);
      expect(keys.filter((key) => !key.startsWith(`${prefix}:`))).toEqual([]);
      expect(keys.filter((key) => !documented.some((pattern) => pattern.test(key)))).toEqual([]);
      const families = new Set(keys.map((key) => key.split(':')[1]));
      // The readiness probe's key, which lasts a second, may be gone already.
      expect([...families]).toEqual(expect.arrayContaining(['auth-failures', 'denied-permission-events', 'duplicate', 'security-event-downloads', 'upstream', 'upstream-reads']));
      for (const key of keys) expect(await database.pttl(key), key).not.toBe(-1);
      // Without a prefix, the README grants each family instead: every family the gateway wrote is among them.
      const perFamily = /grant each key family instead of `[^`]+`: `([^`]+)`/.exec(README.replace(/\n/g, ' '))?.[1] ?? '';
      expect([...families].filter((family) => !perFamily.split(/\s+/).includes(`~${family}:*`))).toEqual([]);
      expect(await keysOf(admin)).toEqual([]);
    });
  });
});

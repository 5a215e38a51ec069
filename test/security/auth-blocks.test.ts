import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT, runCli } from '../../src/cli/commands.js';
import { generateApiKey } from '../../src/domain/keys.js';
import { bearer, startGateway, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { LogSink } from '../support/log-sink.js';
import { createTestDatabase, skipWithoutPostgres } from '../support/postgres.js';
import { freePort } from '../support/process.js';
import { graphQL, rest, type Transport } from '../support/transports.js';

const LIMIT = 3;
const TEST_REDIS_URL = process.env.TEST_REDIS_URL;

async function cli(argv: string[], env: Record<string, string>) {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, { env, stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) });
  return { code, stdout, stderr };
}

/** The shared limiter backends a fleet can lift a block through, each with the variables the gateway and the CLI share. */
const backends = [
  {
    name: 'Redis',
    skip: !TEST_REDIS_URL && !process.env.CI,
    async env() {
      if (!TEST_REDIS_URL) throw new Error('TEST_REDIS_URL is not set');
      return { env: { REDIS_URL: TEST_REDIS_URL, REDIS_KEY_PREFIX: `blocks-${randomUUID().slice(0, 8)}` }, drop: async () => undefined };
    },
  },
  {
    name: 'PostgreSQL',
    skip: skipWithoutPostgres,
    async env() {
      const database = await createTestDatabase();
      return { env: { DATABASE_URL: database.url }, drop: database.drop };
    },
  },
];

describe.each(backends)('a client blocked after failed authentications, limits in $name', (backend) => {
  let gw: TestGateway;
  let ws: TestWorkspace;
  let revoked: { key: string; keyId: string };
  let env: Record<string, string>;
  let drop: () => Promise<void>;
  const log = new LogSink();
  const serviceLines = () => log.lines().filter((line) => line.component === 'service');

  beforeAll(async () => {
    if (backend.skip) return;
    ({ env, drop } = await backend.env());
    env = { ...env, DATA_DIR: mkdtempSync(join(tmpdir(), 'cgw-blocks-')) };
    gw = await startGateway(
      {
        ...env,
        LOG_LEVEL: 'info',
        LOG_FORMAT: 'json',
        TRUST_PROXY: '127.0.0.1',
        AUTH_FAILURE_LIMIT: String(LIMIT),
        AUTH_FAILURE_BLOCK_SECONDS: '600',
        DUPLICATE_RATE_LIMIT: '10000',
      },
      { logDestination: log },
    );
    ws = await gw.workspace('blocks');
    revoked = await ws.addKey(['campaigns.duplicate']);
    await gw.app.admin.revokeKey(revoked.keyId);
  });

  afterAll(async () => {
    await gw?.close();
    await drop?.();
    if (env?.DATA_DIR) rmSync(env.DATA_DIR, { recursive: true, force: true });
  });

  const attempt = (client: Transport, ip: string, headers: Record<string, string>) =>
    client.duplicate(gw.baseUrl, null, { campaignId: ws.campaign.id, name: 'Copy' }, { headers: { 'x-forwarded-for': ip, ...headers } });

  it.skipIf(backend.skip)('warns once as the block starts, logs its refusals as AUTH_BLOCKED, and lifts it with clients unblock', async () => {
    const client = '203.0.113.61';
    for (const headers of [bearer(generateApiKey()), {}, bearer(revoked.key)]) {
      expect((await attempt(rest, client, headers)).status).toBe(401);
    }
    for (const transport of [rest, graphQL]) {
      // The caller's answer is as it was: a 429 RATE_LIMITED.
      expect(await attempt(transport, client, bearer(ws.key))).toMatchObject({ status: 429, code: 'RATE_LIMITED' });
    }

    const warnings = serviceLines().filter((line) => line.level === 40);
    expect(warnings).toEqual([
      expect.objectContaining({
        client,
        blockSeconds: 600,
        channel: 'REST',
        code: 'UNAUTHENTICATED',
        reason: 'revoked',
        keyId: revoked.keyId,
        msg:
          `blocked ${client} for 600 s after too many failed authentications (the last: revoked); every request from it is refused ` +
          `with 429 until then, or until 'npm run -s cli -- clients unblock ${client}'`,
      }),
    ]);
    const completed = log.lines().filter((line) => line.msg === 'request completed' && line.res?.statusCode === 429);
    expect(completed.map((line) => line.res.code)).toEqual(['AUTH_BLOCKED', 'AUTH_BLOCKED']);

    // The CLI lifts it through the backend the running gateway counts in.
    const lifted = await cli(['clients', 'unblock', client, '--json'], env);
    expect(lifted).toMatchObject({ code: EXIT.ok, stderr: '' });
    expect(JSON.parse(lifted.stdout)).toEqual({ client, unblocked: true, backend: backend.name === 'Redis' ? 'redis' : 'postgres' });
    expect((await attempt(rest, client, bearer(ws.key))).status).toBe(202);
    expect(JSON.parse((await cli(['clients', 'unblock', client, '--json'], env)).stdout)).toMatchObject({ unblocked: false });
  });

  it.skipIf(backend.skip)('lifts the block of an IPv6 client, its /64, given any address in it', async () => {
    for (let index = 0; index < LIMIT; index += 1) expect((await attempt(rest, `2001:db8:61::${index + 1}`, bearer(generateApiKey()))).status).toBe(401);
    expect((await attempt(rest, '2001:db8:61::99', bearer(ws.key))).status).toBe(429);
    const warning = serviceLines().find((line) => line.client === '2001:db8:61::/64');
    expect(warning).toMatchObject({ reason: 'unknown_key' });
    expect(warning).not.toHaveProperty('keyId');
    const lifted = await cli(['clients', 'unblock', '2001:db8:61::abcd'], env);
    expect(lifted).toMatchObject({ code: EXIT.ok, stdout: expect.stringContaining('Lifted the block of 2001:db8:61::/64') });
    expect((await attempt(rest, '2001:db8:61::99', bearer(ws.key))).status).toBe(202);
  });
});

describe('a client blocked after failed authentications, limits in memory', () => {
  let gw: TestGateway;
  const log = new LogSink();
  beforeAll(async () => {
    gw = await startGateway({ LOG_LEVEL: 'info', LOG_FORMAT: 'json', TRUST_PROXY: '127.0.0.1', AUTH_FAILURE_LIMIT: String(LIMIT) }, { logDestination: log });
  });
  afterAll(() => gw.close());

  it('advises waiting or restarting the instance, which clients unblock cannot reach', async () => {
    const client = '203.0.113.64';
    for (let index = 0; index < LIMIT; index += 1) {
      expect((await rest.duplicate(gw.baseUrl, generateApiKey(), { campaignId: 'c', name: 'Copy' }, { headers: { 'x-forwarded-for': client } })).status).toBe(401);
    }
    const warning = log.lines().find((line) => line.component === 'service' && line.level === 40);
    expect(warning?.msg).toMatch(
      new RegExp(`^blocked ${client} for \\d+ s after too many failed authentications \\(the last: unknown_key\\); every request from it is refused with 429 until then, or until this instance restarts, which forgets every block$`),
    );
  });
});

describe('clients unblock where it cannot reach the limits', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startGateway();
  });
  afterAll(() => gw.close());

  it('says that it cannot reach them, and how a block ends', async () => {
    const result = await cli(['clients', 'unblock', '203.0.113.62'], { DATA_DIR: gw.dataDir });
    expect(result.code).toBe(EXIT.failed);
    expect(result.stderr).toContain("each gateway keeps its failed authentications in its own memory");
  });

  it('says that Redis cannot be reached, and why, rather than lift a block in its own memory', async () => {
    const port = await freePort();
    const result = await cli(['clients', 'unblock', '203.0.113.63'], { DATA_DIR: gw.dataDir, REDIS_URL: `redis://127.0.0.1:${port}` });
    expect(result).toMatchObject({ code: EXIT.failed, stdout: '' });
    expect(result.stderr).toBe(`campaign-gateway: the Redis in REDIS_URL cannot be reached (connect ECONNREFUSED 127.0.0.1:${port}): nothing was unblocked; try again\n`);
    // An outage to a script: try again, as the CLI's error table says.
    const json = await cli(['clients', 'unblock', '203.0.113.63', '--json'], { DATA_DIR: gw.dataDir, REDIS_URL: `redis://127.0.0.1:${port}` });
    expect(JSON.parse(json.stderr).error.code).toBe('UNAVAILABLE');
  });

  it('refuses what is no IP address', async () => {
    const result = await cli(['clients', 'unblock', 'example.com'], { DATA_DIR: gw.dataDir });
    expect(result).toMatchObject({ code: EXIT.failed, stderr: expect.stringContaining("'example.com' is no IP address") });
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateApiKey } from '../../src/domain/keys.js';
import { dependencyUnavailable } from '../../src/domain/errors.js';
import { bearer, http, startGateway, storeFailingOn, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { graphQL, rest, transports, type Transport } from '../support/transports.js';

const LIMIT = 5;
const AUTHENTICATION_BLOCKED = 'Too many failed authentications from this address; retry later';

describe.each([
  { trust: '127.0.0.1', label: 'TRUST_PROXY=<the proxy address>', innerProxies: ['127.0.0.1'] },
  { trust: '10.0.0.0/8, 127.0.0.0/8, ::1', label: 'TRUST_PROXY=<the proxies\' ranges>', innerProxies: ['10.0.0.5', '[::1]'] },
  { trust: '::ffff:127.0.0.0/104, ::ffff:10.0.0.0/104', label: 'TRUST_PROXY=<IPv4-mapped ranges>', innerProxies: ['10.0.0.5'] },
])('failed authentications behind a trusted proxy ($label)', ({ trust, innerProxies }) => {
  let gw: TestGateway;
  let ws: TestWorkspace;
  let revokedKey: string;

  beforeAll(async () => {
    gw = await startGateway({
      TRUST_PROXY: trust,
      AUTH_FAILURE_LIMIT: String(LIMIT),
      AUTH_FAILURE_WINDOW_SECONDS: '60',
      AUTH_FAILURE_BLOCK_SECONDS: '120',
      DUPLICATE_RATE_LIMIT: '10000',
    });
    ws = await gw.workspace('brute');
    const revoked = await ws.addKey(['campaigns.duplicate']);
    await gw.app.admin.revokeKey(revoked.keyId);
    revokedKey = revoked.key;
  });

  afterAll(() => gw.close());

  const from = (ip: string, auth: Record<string, string>) => ({ 'x-forwarded-for': ip, ...auth });
  const attempt = (client: Transport, headers: Record<string, string>) =>
    client.duplicate(gw.baseUrl, null, { campaignId: ws.campaign.id, name: 'Copy' }, { headers });

  it.each([0, 1])('blocks an IP that failed too often (over transport #%i) with 429 and Retry-After, whatever key it then sends', async (index) => {
    const client = transports[index];
    const attacker = `203.0.113.${10 + index}`;
    const failures = [{}, bearer('cgw_short'), bearer(generateApiKey()), bearer(revokedKey), { authorization: 'Basic dXNlcjpwYXNz' }];
    for (const headers of failures) {
      expect(await attempt(client, from(attacker, headers))).toMatchObject({ status: 401, code: 'UNAUTHENTICATED' });
    }
    for (const other of transports) {
      for (const headers of [bearer(generateApiKey()), bearer(ws.key)]) {
        const blocked = await attempt(other, from(attacker, headers));
        expect(blocked).toMatchObject({ status: 429, code: 'RATE_LIMITED', restCode: 'AUTH_BLOCKED' });
        const retryAfter = Number(blocked.response.headers['retry-after']);
        expect(retryAfter).toBeGreaterThan(60);
        expect(retryAfter).toBeLessThanOrEqual(120);
        expect(blocked.response.headers['x-ratelimit-limit']).toBeUndefined();
      }
      // Valid keys from other addresses are unaffected.
      expect((await attempt(other, from(`203.0.113.${100 + index}`, bearer(ws.key)))).status).toBeLessThan(300);
      expect((await attempt(other, from('2001:db8::42', bearer(ws.key)))).status).toBeLessThan(300);
    }
    // Worded apart from a spent quota, on both doors, so that a person or a UI can tell the two apart.
    expect((await attempt(rest, from(attacker, bearer(ws.key)))).response.body).toEqual({ message: AUTHENTICATION_BLOCKED, code: 'AUTH_BLOCKED' });
    expect((await attempt(graphQL, from(attacker, bearer(ws.key)))).response.body).toEqual({
      errors: [{ message: AUTHENTICATION_BLOCKED, extensions: { code: 'RATE_LIMITED', reason: 'AUTH_BLOCKED', retryAfterSeconds: expect.any(Number) } }],
    });
  });

  it('counts an IPv6 client by its /64, so that it cannot spread failures over the addresses it holds', async () => {
    for (let index = 0; index < LIMIT; index += 1) {
      const client = transports[index % 2];
      expect((await attempt(client, from(`2001:db8:7:1::${index + 1}`, bearer(generateApiKey())))).status).toBe(401);
    }
    for (const client of transports) {
      expect(await attempt(client, from('2001:db8:7:1:ffff::9', bearer(ws.key)))).toMatchObject({ status: 429, code: 'RATE_LIMITED' });
      expect((await attempt(client, from('2001:db8:7:2::1', bearer(ws.key)))).status).toBeLessThan(300);
    }
  });

  it.each([
    ['IPv4', '203.0.113.77', '203.0.113.78'],
    ['IPv6', '[2001:db8:9::5]', '[2001:db8:a::5]'],
  ])('counts a client whose proxy appends its port (%s) by its address, not by the port it picks', async (_, attacker, other) => {
    for (let index = 0; index < LIMIT; index += 1) {
      expect((await attempt(transports[index % 2], from(`${attacker}:${40_000 + index}`, bearer(generateApiKey())))).status).toBe(401);
    }
    for (const client of transports) {
      expect(await attempt(client, from(`${attacker}:50000`, bearer(ws.key)))).toMatchObject({ status: 429, code: 'RATE_LIMITED' });
    }
    const accepted = await attempt(rest, from(`${other}:40000`, bearer(ws.key)));
    expect(accepted.status).toBe(202);
    const job = await gw.app.store.getJob(ws.workspace.id, accepted.response.body.job_id);
    expect(job?.ip).toBe(other.replace(/^\[|\]$/g, ''));
  });

  it.each(innerProxies)('sees through a trusted inner proxy (%s) whose entry the outer one wrote with its port', async (proxy) => {
    const [attacker, other] = [`198.51.100.${innerProxies.indexOf(proxy) * 2 + 20}`, `198.51.100.${innerProxies.indexOf(proxy) * 2 + 21}`];
    const through = (client: string) => `${client}, ${proxy}:3333`;
    for (let index = 0; index < LIMIT; index += 1) {
      expect((await attempt(transports[index % 2], from(through(attacker), bearer(generateApiKey())))).status).toBe(401);
    }
    for (const client of transports) {
      expect(await attempt(client, from(through(attacker), bearer(ws.key)))).toMatchObject({ status: 429, code: 'RATE_LIMITED' });
      // Another client behind the same proxies is not blocked, and its job records its own address.
      const accepted = await attempt(client, from(through(other), bearer(ws.key)));
      expect(accepted.jobId).not.toBeNull();
      expect((await gw.app.store.getJob(ws.workspace.id, accepted.jobId!))?.ip).toBe(other);
    }
  });

  it('does not count a valid key refused a permission as a failed authentication', async () => {
    const { key } = await ws.addKey(['campaigns.list']);
    for (let index = 0; index < LIMIT * 2; index += 1) {
      expect((await attempt(transports[index % 2], from('198.51.100.7', bearer(key)))).status).toBe(transports[index % 2].name === 'REST' ? 403 : 200);
    }
    expect((await attempt(transports[0], from('198.51.100.7', bearer(ws.key)))).status).toBe(202);
  });
});

describe('failed authentications without a trusted proxy (the default)', () => {
  let gw: TestGateway;
  let ws: TestWorkspace;

  beforeAll(async () => {
    gw = await startGateway({ AUTH_FAILURE_LIMIT: String(LIMIT) });
    ws = await gw.workspace('no-proxy');
  });

  afterAll(() => gw.close());

  it('ignores X-Forwarded-For: an attacker cannot spread failures over made-up addresses', async () => {
    for (let index = 0; index < LIMIT; index += 1) {
      const client = index % 2 ? graphQL : rest;
      const answer = await client.job(gw.baseUrl, generateApiKey(), 'x', { headers: { 'x-forwarded-for': `192.0.2.${index}` } });
      expect(answer.status).toBe(401);
    }
    for (const client of [rest, graphQL]) {
      const blocked = await client.job(gw.baseUrl, ws.key, 'x', { headers: { 'x-forwarded-for': '192.0.2.200' } });
      expect(blocked.status).toBe(429);
    }
    const events = await gw.app.store.listEvents(ws.workspace.id, { types: ['PERMISSION_DENIED'] }, { first: 10 });
    expect(events).toEqual([]);
  });
});

describe('a store that cannot look keys up', () => {
  let gw: TestGateway;
  let ws: TestWorkspace;
  let storeDown = false;

  beforeAll(async () => {
    gw = await startGateway(
      { AUTH_FAILURE_LIMIT: '2' },
      {},
      { wrapStore: (store) => storeFailingOn(store, ['findApiKeyByHash'], () => storeDown, () => dependencyUnavailable(new Error('connect ECONNREFUSED'))) },
    );
    ws = await gw.workspace('outage');
  });

  afterAll(() => gw.close());

  it('is no failed authentication: a client whose valid key met the outage is not blocked once it ends', async () => {
    storeDown = true;
    for (const client of [rest, graphQL, rest]) {
      const outcome = await client.duplicate(gw.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'Copy' });
      expect(outcome).toMatchObject({ status: 503 });
      // No refusal of the key: over GraphQL each field that needed it says it could not be checked.
      if (client === graphQL) expect(outcome.response.body.errors).toEqual([expect.objectContaining({ path: ['duplicateCampaign'], extensions: expect.objectContaining({ code: 'SERVICE_UNAVAILABLE' }) })]);
    }
    storeDown = false;
    expect((await rest.duplicate(gw.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'Copy' })).status).toBe(202);
    const { text } = await http(gw.baseUrl, 'GET', '/metrics');
    expect(text.split('\n').filter((line) => line.startsWith('gateway_auth_failures_total{') && !line.endsWith(' 0'))).toEqual([]);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { bearer, graphql, http, json, rawHttp, startGateway, type HttpResult, type TestGateway, type TestWorkspace } from '../support/gateway.js';

const APP = 'https://app.example.com';
const LOCAL = 'http://localhost:3000';
/** Routes of every kind, an unknown one included: a preflight is answered the same on each. */
const ROUTES = ['/graphql', '/campaigns/duplicate', '/duplication_jobs/some-job', '/security_events/download', '/healthz', '/no-such-route'];

const preflight = (baseUrl: string, path: string, origin: string) =>
  http(baseUrl, 'OPTIONS', path, {
    headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
  });

const corsHeaders = (result: Pick<HttpResult, 'headers'>) =>
  Object.fromEntries(Object.entries(result.headers).filter(([name]) => name.startsWith('access-control-')));

/** A browser's preflight, byte for byte as it sends one, and the answer as it sees it. */
async function browserPreflight(baseUrl: string, path: string, origin: string, requestHeaders = 'authorization,content-type') {
  const { head, body } = await rawHttp(
    baseUrl,
    [
      `OPTIONS ${path} HTTP/1.1`,
      `Host: ${new URL(baseUrl).host}`,
      `Origin: ${origin}`,
      'Access-Control-Request-Method: POST',
      `Access-Control-Request-Headers: ${requestHeaders}`,
      'Connection: close',
      '',
      '',
    ].join('\r\n'),
  );
  const [statusLine, ...lines] = head.split('\r\n');
  const headers = Object.fromEntries(lines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]));
  return { status: Number(statusLine.split(' ')[1]), headers, body };
}

/** A preflight the gateway does not allow: 204 and no CORS headers, so the browser reports a CORS failure. */
async function expectRefusedPreflight(baseUrl: string, origin: string) {
  for (const path of ROUTES) {
    const answer = await browserPreflight(baseUrl, path, origin);
    expect({ path, status: answer.status, cors: corsHeaders(answer), body: answer.body }).toEqual({ path, status: 204, cors: {}, body: '' });
  }
}

describe('CORS with CORS_ORIGINS set', () => {
  let gw: TestGateway;
  let ws: TestWorkspace;

  beforeAll(async () => {
    gw = await startGateway({ CORS_ORIGINS: `${APP},${LOCAL}` });
    ws = await gw.workspace('cors');
  });

  afterAll(() => gw.close());

  it.each(['/graphql', '/campaigns/duplicate'])('answers a preflight to %s from a configured origin, without credentials', async (path) => {
    for (const origin of [APP, LOCAL]) {
      const result = await preflight(gw.baseUrl, path, origin);
      expect(result.status).toBe(204);
      expect(result.headers['access-control-allow-origin']).toBe(origin);
      expect(String(result.headers['access-control-allow-headers'])).toMatch(/authorization/);
      expect(String(result.headers['access-control-allow-methods'])).toMatch(/POST/);
      expect(result.headers['access-control-allow-credentials']).toBeUndefined();
      expect(String(result.headers.vary)).toMatch(/origin/i);
    }
  });

  it('lets a configured origin read responses and the headers it needs', async () => {
    const result = await http(gw.baseUrl, 'POST', '/graphql', {
      headers: { ...json, ...bearer(ws.key), origin: APP },
      body: JSON.stringify({ query: '{ securityEvents { edges { node { id } } } }' }),
    });
    expect(result.status).toBe(200);
    expect(result.headers['access-control-allow-origin']).toBe(APP);
    expect(String(result.headers['access-control-expose-headers'])).toMatch(/x-request-id.*x-ratelimit-remaining.*retry-after/);
    expect(result.headers['access-control-allow-credentials']).toBeUndefined();
  });

  it("lets a configured origin send Idempotency-Key to POST /campaigns/duplicate and read the 202's headers", async () => {
    const listed = (value: string | string[] | undefined) => String(value).toLowerCase().split(/\s*,\s*/);
    const allowed = await http(gw.baseUrl, 'OPTIONS', '/campaigns/duplicate', {
      headers: { origin: APP, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type, idempotency-key' },
    });
    expect(allowed.status).toBe(204);
    expect(allowed.headers['access-control-allow-origin']).toBe(APP);
    expect(listed(allowed.headers['access-control-allow-headers'])).toEqual(expect.arrayContaining(['authorization', 'content-type', 'idempotency-key']));

    const accepted = await http(gw.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(ws.key), origin: APP, 'idempotency-key': 'from-a-browser' },
      body: JSON.stringify({ campaign_id: ws.campaign.id, name: 'copied from a browser' }),
    });
    expect(accepted.status).toBe(202);
    expect(accepted.headers['access-control-allow-origin']).toBe(APP);
    // What a client reads from a 202, and Retry-After, which the same route sends on a 409 or a 429.
    const read = ['location', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'x-request-id'];
    for (const name of read) expect(accepted.headers[name]).toBeDefined();
    expect(listed(accepted.headers['access-control-expose-headers'])).toEqual(expect.arrayContaining([...read, 'retry-after']));
  });

  it('lets Apollo Client configured with a name and a version send them', async () => {
    const headers = 'authorization, content-type, apollographql-client-name, apollographql-client-version';
    const allowed = await browserPreflight(gw.baseUrl, '/graphql', APP, headers);
    expect(allowed.status).toBe(204);
    expect(allowed.headers['access-control-allow-origin']).toBe(APP);
    expect(allowed.headers['access-control-allow-headers'].split(/\s*,\s*/)).toEqual(expect.arrayContaining(headers.split(', ')));

    const result = await http(gw.baseUrl, 'POST', '/graphql', {
      headers: { ...json, ...bearer(ws.key), origin: APP, 'apollographql-client-name': 'campaign-ui', 'apollographql-client-version': '1.4.2' },
      body: JSON.stringify({ query: '{ __typename }' }),
    });
    expect(result.status).toBe(200);
    expect(result.headers['access-control-allow-origin']).toBe(APP);
  });

  it.each(['https://evil.example', 'null', `${APP}.evil.example`, 'https://APP.example.com', 'http://app.example.com', `${APP}:8443`])(
    'gives origin %s nothing: a preflight on any route gets 204 without CORS headers, a request none either',
    async (origin) => {
      await expectRefusedPreflight(gw.baseUrl, origin);
      const request = await http(gw.baseUrl, 'POST', '/graphql', {
        headers: { ...json, ...bearer(ws.key), origin },
        body: JSON.stringify({ query: '{ __typename }' }),
      });
      expect(request.status).toBe(200);
      expect(corsHeaders(request)).toEqual({});
    },
  );
});

describe('CORS by default', () => {
  let gw: TestGateway;
  let ws: TestWorkspace;

  beforeAll(async () => {
    gw = await startGateway();
    ws = await gw.workspace('no-cors');
  });

  afterAll(() => gw.close());

  it('allows no origin at all: a preflight on any route gets 204 without CORS headers, never a CSRF refusal', async () => {
    for (const origin of [APP, 'http://127.0.0.1:47210']) await expectRefusedPreflight(gw.baseUrl, origin);
    const request = await graphql(gw.baseUrl, ws.key, '{ __typename }');
    expect(corsHeaders(request)).toEqual({});
  });
});

describe('CORS_ORIGINS validation', () => {
  it.each(['*', 'https://app.example.com/', 'https://app.example.com/path', 'app.example.com', 'ftp://files.example.com', 'https://a.example.com,,'])(
    'refuses %j with one line naming the variable',
    (value) => {
      expect(() => loadConfig({ CORS_ORIGINS: value })).toThrow(/^invalid configuration: CORS_ORIGINS must be a comma-separated list of origins/);
    },
  );

  it('accepts exact origins, trimmed', () => {
    expect(loadConfig({ CORS_ORIGINS: ` ${APP} , ${LOCAL}` }).corsOrigins).toEqual([APP, LOCAL]);
    expect(loadConfig({}).corsOrigins).toEqual([]);
  });
});

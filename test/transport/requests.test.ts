/**
 * How the gateway reads a request before the service sees it: its method and path, its headers, the coding and
 * charset of its body. Over real HTTP, on both transports where both read the same thing.
 */
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, http, json, rawHttp, startGateway, type HttpResult, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { jobTotal } from '../support/store-checks.js';
import { rest, transports, type DuplicateArgs } from '../support/transports.js';

const LIMIT = 1000;
let gateway: TestGateway;
let team: TestWorkspace;

beforeAll(async () => {
  gateway = await startGateway({ DUPLICATE_RATE_LIMIT: String(LIMIT), DUPLICATE_RATE_WINDOW_SECONDS: '3600', WORKER_CONCURRENCY: '0' });
  team = await gateway.workspace();
});

afterAll(async () => {
  await gateway?.close();
});

const args = (name = 'Café crème'): DuplicateArgs => ({ campaignId: team.campaign.id, name });

/** The message of a refusal, REST's or GraphQL's. */
const message = (response: HttpResult): string | undefined => response.body?.message ?? response.body?.errors?.[0]?.message;

/** The job a transport's answer names, or null. */
const jobOf = (response: HttpResult): string | null => response.body?.job_id ?? response.body?.data?.duplicateCampaign?.job?.id ?? null;

/** The quota points left once an accepted request took one: a request refused between two such counts took none when they differ by one. */
async function pointsLeft(): Promise<number> {
  const accepted = await rest.duplicate(gateway.baseUrl, team.key, args('counts the points'));
  expect(accepted.jobId).not.toBeNull();
  return Number(accepted.response.headers['x-ratelimit-remaining']);
}

describe.each(transports)('a body over $name', (transport) => {
  const post = (body: string | Buffer, headers: Record<string, string> = {}) =>
    http(gateway.baseUrl, 'POST', transport.endpoint, { headers: { ...json, ...bearer(team.key), ...headers }, body });

  /** Sends a request that must be refused before any point or job, and returns the answer. */
  async function refusedBeforeThePoint(send: () => Promise<HttpResult>): Promise<HttpResult> {
    const points = await pointsLeft();
    const jobs = await jobTotal(gateway.app.store);
    const response = await send();
    expect(jobOf(response)).toBeNull();
    if (transport.name === 'GRAPHQL') expect(response.body.errors[0].extensions.code).toBe('BAD_USER_INPUT');
    expect(await jobTotal(gateway.app.store)).toBe(jobs);
    expect(await pointsLeft()).toBe(points - 1);
    return response;
  }

  it.each(['iso-8859-1', 'ISO-8859-1', 'windows-1252', 'utf-16', '"latin1"', 'no-such-charset'])(
    'refuses a charset other than UTF-8 (%s) with 415, naming it, rather than reading its bytes as UTF-8',
    async (charset) => {
      const response = await refusedBeforeThePoint(() =>
        post(Buffer.from(transport.body(args()), 'latin1'), { 'content-type': `application/json; charset=${charset}` }),
      );
      expect(response.status).toBe(415);
      expect(message(response)).toBe(`JSON bodies must be UTF-8; charset ${charset.replaceAll('"', '')} is not supported`);
    },
  );

  it.each(['', '""'])('refuses an empty charset (charset=%s) with 415, saying it is empty', async (charset) => {
    const response = await refusedBeforeThePoint(() => post(transport.body(args()), { 'content-type': `application/json; charset=${charset}` }));
    expect(response.status).toBe(415);
    expect(message(response)).toBe('JSON bodies must be UTF-8; the charset parameter is empty');
  });

  it.each(['utf-8', 'UTF-8', '"utf-8"', 'utf8'])('reads a body whose charset is UTF-8 (%s) as it is', async (charset) => {
    const response = await post(transport.body(args()), { 'content-type': `application/json;charset=${charset}` });
    const jobId = jobOf(response);
    expect(jobId).not.toBeNull();
    expect((await gateway.app.store.getJob(team.workspace.id, jobId!))?.name).toBe('Café crème');
  });

  it('refuses bytes that are not UTF-8 with 400, rather than replacing them and copying under another name', async () => {
    const response = await refusedBeforeThePoint(() => post(Buffer.from(transport.body(args()), 'latin1')));
    expect(response.status).toBe(400);
    expect(message(response)).toBe('Request body is not valid UTF-8');
  });

  it.each([
    ['a gzip body', 'gzip', (body: string) => gzipSync(body), 'gzip'],
    ['a plain body said to be in br', 'br', (body: string) => body, 'br'],
    ['two codings', 'identity, deflate, GZIP', (body: string) => body, 'deflate, gzip'],
  ])('refuses %s with 415 naming the coding, and says what it takes (Accept-Encoding)', async (_label, coding, encode, named) => {
    const response = await refusedBeforeThePoint(() => post(encode(transport.body(args())), { 'content-encoding': coding }));
    expect(response.status).toBe(415);
    expect(message(response)).toBe(`Content-Encoding ${named} is not supported; send the body without a content coding`);
    expect(response.headers['accept-encoding']).toBe('identity');
  });

  it('takes a body whose Content-Encoding is identity', async () => {
    expect(jobOf(await post(transport.body(args()), { 'content-encoding': 'identity' }))).not.toBeNull();
  });

  it.each([
    ['__proto__', '{"__proto__": {"polluted": true}, '],
    ['constructor.prototype', '{"constructor": {"prototype": {"polluted": true}}, '],
  ])('takes a valid body with a %s key, without the key', async (_label, prefix) => {
    const response = await post(transport.body(args('proto')).replace('{', prefix));
    const jobId = jobOf(response);
    expect(jobId).not.toBeNull();
    expect((await gateway.app.store.getJob(team.workspace.id, jobId!))?.name).toBe('proto');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe.each(transports)('the request id of a request over $name', (transport) => {
  /** The events a key's requests caused, newest first, with the request id each keeps. */
  const requestIds = async (keyId: string) =>
    (await gateway.app.store.listEvents(team.workspace.id, { apiKeyId: keyId, types: ['CAMPAIGN_DUPLICATION_REQUESTED', 'PERMISSION_DENIED'] }, { first: 10 })).map((event) => [event.type, event.details.requestId]);

  it('is kept in the events the request causes: the id the gateway answered with, the caller\'s own when it is within bounds', async () => {
    const { key, keyId } = await team.addKey(['campaigns.duplicate']);
    const accepted = await transport.duplicate(gateway.baseUrl, key, args(), { headers: { 'x-request-id': 'client-trace.42:a_b-c' } });
    expect(accepted.jobId).not.toBeNull();
    expect(accepted.response.headers['x-request-id']).toBe('client-trace.42:a_b-c');

    const refusedKey = await team.addKey(['campaigns.list']);
    const refused = await transport.duplicate(gateway.baseUrl, refusedKey.key, args(), { headers: { 'x-request-id': 'refused-1' } });
    expect(refused.code).toBe('FORBIDDEN');

    expect(await requestIds(keyId)).toEqual([['CAMPAIGN_DUPLICATION_REQUESTED', 'client-trace.42:a_b-c']]);
    expect(await requestIds(refusedKey.keyId)).toEqual([['PERMISSION_DENIED', 'refused-1']]);
  });

  it.each([
    ['too long', 'x'.repeat(129)],
    ['with a space, a quote and angle brackets', 'a b"<script>'],
    ['with a tab', 'a\tb'],
    ['with bytes outside ASCII', Buffer.from('caf\u00e9', 'utf8').toString('latin1')],
  ])('is a new UUID, in the answer and the event, when the caller\'s is %s', async (_, sent) => {
    const { key, keyId } = await team.addKey(['campaigns.duplicate']);
    const accepted = await transport.duplicate(gateway.baseUrl, key, args(), { headers: { 'x-request-id': sent } });
    expect(accepted.jobId).not.toBeNull();
    const answered = accepted.response.headers['x-request-id'];
    expect(answered).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(await requestIds(keyId)).toEqual([['CAMPAIGN_DUPLICATION_REQUESTED', answered]]);
  });
});

describe('POST /campaigns/duplicate', () => {
  const duplicate = (headers: Record<string, string>, body?: string) => http(gateway.baseUrl, 'POST', '/campaigns/duplicate', { headers, body });

  it('refuses an empty body without a Content-Type as it refuses one with, before the quota point', async () => {
    const points = await pointsLeft();
    const without = await duplicate(bearer(team.key));
    const withJson = await duplicate({ ...json, ...bearer(team.key) }, '');
    for (const response of [without, withJson]) {
      expect(response.status).toBe(400);
      expect(response.body).toEqual({ message: 'Request body is empty; send a JSON object', code: 'BAD_USER_INPUT' });
      expect(response.headers['x-ratelimit-remaining']).toBe(String(points));
    }
    expect(await pointsLeft()).toBe(points - 1);
  });

  it('refuses two Idempotency-Key headers as such, before the quota point', async () => {
    const points = await pointsLeft();
    const response = await http(gateway.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: ['content-type', 'application/json', 'authorization', `Bearer ${team.key}`, 'idempotency-key', 'a', 'idempotency-key', 'b'] as unknown as Record<string, string>,
      body: rest.body(args()),
    });
    expect(response.status).toBe(400);
    expect(response.body).toEqual({ message: 'Send at most one Idempotency-Key header', code: 'BAD_USER_INPUT' });
    expect(response.headers['x-ratelimit-remaining']).toBe(String(points));
  });

  it('takes one Idempotency-Key header as its value, surrounding spaces aside', async () => {
    const first = await rest.duplicate(gateway.baseUrl, team.key, args('spaced key'), { headers: { 'idempotency-key': '  spaced-key ' } });
    const again = await rest.duplicate(gateway.baseUrl, team.key, args('spaced key'), { idempotencyKey: 'spaced-key' });
    expect(first.jobId).not.toBeNull();
    expect(again.jobId).toBe(first.jobId);
  });

  it.each(['/campaigns/duplicate', '/campaigns/duplicate/', '//campaigns/duplicate', '//campaigns//duplicate//', '/campaigns/duplicate?via=proxy'])(
    'is reached at %s, and its Location leads to the job from there, behind a path prefix too',
    async (path) => {
      const response = await http(gateway.baseUrl, 'POST', path, { headers: { ...json, ...bearer(team.key) }, body: rest.body(args()) });
      expect(response.status).toBe(202);
      const location = String(response.headers.location);
      expect(location).not.toMatch(/^\//);
      // As a client behind a proxy that adds /api resolves it, and the proxy passes it on without the prefix.
      const resolved = new URL(location, `http://proxy.example/api${path}`).pathname;
      expect(resolved.replace(/\/+/g, '/')).toBe(`/api/duplication_jobs/${response.body.job_id}`);
      const job = await http(gateway.baseUrl, 'GET', resolved.slice('/api'.length), { headers: bearer(team.key) });
      expect(job.status).toBe(200);
      expect(job.body.job_id).toBe(response.body.job_id);
    },
  );
});

describe('a method a route does not have', () => {
  const job = '/duplication_jobs/00000000-0000-4000-8000-000000000000';

  it.each([
    ['GET', '/campaigns/duplicate', 'POST'],
    ['PUT', '/campaigns/duplicate', 'POST'],
    ['DELETE', '/campaigns/duplicate/', 'POST'],
    ['POST', job, 'GET, HEAD'],
    ['PUT', job, 'GET, HEAD'],
    ['DELETE', job, 'GET, HEAD'],
  ] as const)('%s %s → 405 with Allow: %s, in the error shape, whatever the body', async (method, path, allow) => {
    // A body that does not parse: the method is refused before any body is read.
    const body = method === 'GET' ? undefined : '{"campaign_id": ';
    const response = await http(gateway.baseUrl, method, path, { headers: { ...json, ...bearer(team.key) }, body });
    expect(response.status).toBe(405);
    expect(response.headers.allow).toBe(allow);
    expect(response.body).toEqual({ message: 'Method Not Allowed', code: 'METHOD_NOT_ALLOWED' });
  });

  it.each([
    ['PATCH', '/campaigns/duplicate', 'POST'],
    ['HEAD', '/campaigns/duplicate', 'POST'],
    ['PATCH', job, 'GET, HEAD'],
  ] as const)('%s %s → 405 with Allow: %s', async (method, path, allow) => {
    const response = await http(gateway.baseUrl, method, path, { headers: bearer(team.key) });
    expect(response.status).toBe(405);
    expect(response.headers.allow).toBe(allow);
  });

  // Any method Node hands on, whether or not fastify knows it; an OPTIONS that is no CORS preflight included.
  it.each(['OPTIONS', 'TRACE', 'PROPFIND', 'SEARCH', 'PURGE', 'LOCK', 'MKCOL', 'QUERY'].flatMap((method) => [
    [method, '/campaigns/duplicate', 'POST'],
    [method, job, 'GET, HEAD'],
  ]))('%s %s → 405 with Allow: %s, in the error shape, with a request id', async (method, path, allow) => {
    const { head, body } = await rawHttp(gateway.baseUrl, `${method} ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${team.key}\r\nConnection: close\r\n\r\n`);
    expect(head).toMatch(/^HTTP\/1\.1 405 /);
    expect(head).toMatch(new RegExp(`\r\nallow: ${allow}\r\n`, 'i'));
    expect(head).toMatch(/\r\nx-request-id: [0-9a-f-]{36}\r\n/i);
    expect(JSON.parse(body)).toEqual({ message: 'Method Not Allowed', code: 'METHOD_NOT_ALLOWED' });
  });

  it('refuses an OPTIONS /graphql that is no CORS preflight with 405 and the methods it has, not a CSRF refusal', async () => {
    const { head, body } = await rawHttp(gateway.baseUrl, `OPTIONS /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n`);
    expect(head).toMatch(/^HTTP\/1\.1 405 /);
    expect(head).toMatch(/\r\nallow: GET, HEAD, POST\r\n/i);
    expect(JSON.parse(body).errors).toEqual([expect.objectContaining({ message: 'Method Not Allowed', extensions: expect.objectContaining({ code: 'BAD_REQUEST' }) })]);
  });

  // As the README's 404 row says: only the two Braze routes answer 405, and /graphql to a mutation sent with GET or an OPTIONS.
  it('leaves every other unknown route, and a method the other routes lack, a 404', async () => {
    const others = [['PUT', '/graphql'], ['POST', '/healthz'], ['PATCH', '/readyz'], ['PUT', '/metrics'], ['DELETE', '/openapi.json'], ['POST', '/security_events/download']] as const;
    for (const [method, path] of [...others, ['GET', '/campaigns'], ['POST', '/campaigns/duplicate/x']] as const) {
      const response = await http(gateway.baseUrl, method, path, { headers: { ...json, ...bearer(team.key) }, body: method === 'GET' ? undefined : '{}' });
      expect(response.status, `${method} ${path}`).toBe(404);
      expect(response.body).toEqual({ message: 'Not Found', code: 'NOT_FOUND' });
    }
  });
});

describe('the other routes, with trailing and doubled slashes ignored', () => {
  it.each(['/healthz', '/healthz/', '/readyz', '//readyz', '/metrics', '/metrics/', '/openapi.json', '/openapi.json/'])('GET %s answers 200', async (path) => {
    expect((await http(gateway.baseUrl, 'GET', path)).status).toBe(200);
  });

  it('keeps the OpenAPI document to the routes, each named once', async () => {
    const document = (await http(gateway.baseUrl, 'GET', '/openapi.json')).body;
    expect(Object.keys(document.paths).every((path) => !path.endsWith('/') && !path.includes('//'))).toBe(true);
    expect(document.paths['/campaigns/duplicate']).toBeDefined();
  });

  it.each(['/graphql', '/graphql/', '//graphql'])('answers GraphQL at %s', async (path) => {
    const response = await http(gateway.baseUrl, 'POST', path, { headers: { ...json, ...bearer(team.key) }, body: JSON.stringify({ query: '{ __typename }' }) });
    expect(response.body).toEqual({ data: { __typename: 'Query' } });
  });

  it.each(['/graphql', '/graphql/', '//graphql', '/graphql//'])('serves the explorer at %s with every asset it loads', async (path) => {
    const page = await http(gateway.baseUrl, 'GET', path, { headers: { accept: 'text/html' } });
    expect(page.status).toBe(200);
    const assets = [...page.text.matchAll(/(?:src|href)="([^"]+\?v=[^"]+)"/g)].map((match) => match[1]);
    expect(assets.length).toBe(6);
    for (const asset of assets) {
      // Resolved as a browser resolves it against the page's URL.
      const url = new URL(asset, `${gateway.baseUrl}${path}`);
      expect((await http(gateway.baseUrl, 'GET', `${url.pathname}${url.search}`)).status, url.pathname).toBe(200);
    }
  });
});

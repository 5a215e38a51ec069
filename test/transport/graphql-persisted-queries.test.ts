import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dependencyUnavailable } from '../../src/domain/errors.js';
import { bearer, flipLastChecksumCharacter, http, json, metricSample, recordingLogger, startGateway, storeFailingOn, type TestGateway, type TestWorkspace } from '../support/gateway.js';

let gateway: TestGateway;
let ws: TestWorkspace;
const logs = recordingLogger();

beforeAll(async () => {
  gateway = await startGateway({}, { logger: logs.logger });
  ws = await gateway.workspace();
});

afterAll(async () => {
  await gateway?.close();
});

const MALFORMED_HASH = "The persisted query's sha256Hash must be 64 lower-case hexadecimal characters";
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
const send = (body: Record<string, unknown>) =>
  http(gateway.baseUrl, 'POST', '/graphql', { headers: { ...json, ...bearer(ws.key) }, body: JSON.stringify(body) });

describe('automatic persisted queries', () => {
  it('a hash alone is PERSISTED_QUERY_NOT_FOUND until it has been sent with its query, then it runs', async () => {
    const query = '{ campaigns(first: 1) { edges { node { id name } } } }';
    const extensions = { persistedQuery: { version: 1, sha256Hash: sha256(query) } };
    const unknown = await send({ extensions });
    expect(unknown.body.errors).toEqual([expect.objectContaining({ message: 'PersistedQueryNotFound', extensions: expect.objectContaining({ code: 'PERSISTED_QUERY_NOT_FOUND' }) })]);
    const registered = await send({ query, extensions });
    expect(registered.status).toBe(200);
    expect(registered.body.data.campaigns.edges[0].node).toEqual({ id: ws.campaign.id, name: ws.campaign.name });
    const byHash = await send({ extensions });
    expect(byHash.status).toBe(200);
    expect(byHash.body).toEqual(registered.body);
  });

  it("looks a hash up among its own workspace's texts only: another workspace's document is not found", async () => {
    const other = await gateway.workspace();
    const query = `{ campaign(id: "${ws.campaign.id}") { name } }`;
    const extensions = { persistedQuery: { version: 1, sha256Hash: sha256(query) } };
    const asOther = (body: Record<string, unknown>) =>
      http(gateway.baseUrl, 'POST', '/graphql', { headers: { ...json, ...bearer(other.key) }, body: JSON.stringify(body) });
    expect((await send({ query, extensions })).body.data.campaign).toEqual({ name: ws.campaign.name });
    const guessed = await asOther({ extensions });
    expect([guessed.status, guessed.body.errors?.[0]?.extensions?.code]).toEqual([200, 'PERSISTED_QUERY_NOT_FOUND']);
    expect((await asOther({ query, extensions })).body).toEqual({ data: { campaign: null } });
    expect((await asOther({ extensions })).body).toEqual({ data: { campaign: null } });
    expect((await send({ extensions })).body.data.campaign).toEqual({ name: ws.campaign.name });
  });

  it('keeps no text whose operation does not run', async () => {
    for (const query of ['{ noSuchField }', `{ ${Array.from({ length: 40 }, (_, index) => `a${index}: viewer { workspaceId }`).join(' ')} }`]) {
      const extensions = { persistedQuery: { version: 1, sha256Hash: sha256(query) } };
      const refused = await send({ query, extensions });
      expect(refused.status, query).toBe(400);
      expect((await send({ extensions })).body.errors?.[0]?.extensions?.code, query).toBe('PERSISTED_QUERY_NOT_FOUND');
    }
  });

  it.each([
    ['POST, application/json', 'POST', 'application/json'],
    ['POST, application/graphql-response+json', 'POST', 'application/graphql-response+json'],
    ['GET', 'GET', 'application/graphql-response+json'],
  ])('an unknown hash is answered 200 without data, as Apollo clients expect (%s)', async (_case, method, accept) => {
    const extensions = { persistedQuery: { version: 1, sha256Hash: sha256(`{ unknown${method}${accept} }`) } };
    const answer =
      method === 'POST'
        ? await http(gateway.baseUrl, 'POST', '/graphql', { headers: { ...json, accept, ...bearer(ws.key) }, body: JSON.stringify({ extensions }) })
        : await http(gateway.baseUrl, 'GET', `/graphql?extensions=${encodeURIComponent(JSON.stringify(extensions))}`, {
            headers: { accept, 'apollo-require-preflight': 'true', ...bearer(ws.key) },
          });
    expect(answer.status).toBe(200);
    expect(String(answer.headers['content-type'])).toContain(accept);
    expect(answer.body).toEqual({ errors: [expect.objectContaining({ message: 'PersistedQueryNotFound', extensions: expect.objectContaining({ code: 'PERSISTED_QUERY_NOT_FOUND' }) })] });
  });

  it.each([
    ['a hash that is not the query’s', { query: '{ __typename }', extensions: { persistedQuery: { version: 1, sha256Hash: '0'.repeat(64) } } }, 'provided sha does not match query'],
    ['a query without its hash', { query: '{ __typename }', extensions: { persistedQuery: { version: 1 } } }, MALFORMED_HASH],
    ['a hash alone that is a number', { extensions: { persistedQuery: { version: 1, sha256Hash: 5 } } }, MALFORMED_HASH],
    ['a hash alone of 60,000 characters', { extensions: { persistedQuery: { version: 1, sha256Hash: 'a'.repeat(60_000) } } }, MALFORMED_HASH],
    ['a hash alone in upper case, which no text has', { extensions: { persistedQuery: { version: 1, sha256Hash: sha256('{ __typename }').toUpperCase() } } }, MALFORMED_HASH],
    ['no hash and no query', { extensions: { persistedQuery: { version: 1 } } }, MALFORMED_HASH],
    ['a version Apollo does not know', { query: '{ __typename }', extensions: { persistedQuery: { version: 2, sha256Hash: sha256('{ __typename }') } } }, 'Unsupported persisted query version'],
    ['an extension that is no object', { query: '{ __typename }', extensions: { persistedQuery: 'x' } }, 'Unsupported persisted query version'],
  ])('%s: 400 BAD_REQUEST saying so, not an internal error', async (_case, body, message) => {
    const errorsLogged = () => logs.lines.filter((line) => JSON.parse(line).level >= 50).length;
    const before = errorsLogged();
    const answer = await send(body);
    expect(answer.status).toBe(400);
    expect(answer.headers['cache-control']).toBe('no-store');
    expect(answer.body).toEqual({ errors: [{ message, extensions: { code: 'BAD_REQUEST' } }] });
    expect(errorsLogged()).toBe(before);
  });

  it('refuses a malformed hash in a GET as in a POST, and keeps no text for it', async () => {
    const extensions = { persistedQuery: { version: 1, sha256Hash: 5 } };
    const get = await http(gateway.baseUrl, 'GET', `/graphql?query=${encodeURIComponent('{ viewer { workspaceId } }')}&extensions=${encodeURIComponent(JSON.stringify(extensions))}`, {
      headers: { 'apollo-require-preflight': 'true', ...bearer(ws.key) },
    });
    expect([get.status, get.body]).toEqual([400, { errors: [{ message: MALFORMED_HASH, extensions: { code: 'BAD_REQUEST' } }] }]);
    expect((await send({ extensions })).status).toBe(400);
  });

  it('keeps the texts of persisted queries within their budget, the least recently registered dropped first', async () => {
    // 60 KB each, valid and short in tokens: a comment pads it. 40 of them are far past the 4 MiB budget.
    const texts = Array.from({ length: 40 }, (_, index) => `query Padded${index} { __typename }\n#${'x'.repeat(60_000)}`);
    const register = (query: string) => send({ query, extensions: { persistedQuery: { version: 1, sha256Hash: sha256(query) } } });
    for (const query of texts) expect((await register(query)).body).toEqual({ data: { __typename: 'Query' } });
    const byHash = (query: string) => send({ extensions: { persistedQuery: { version: 1, sha256Hash: sha256(query) } } });
    expect((await byHash(texts[0])).body.errors?.[0]?.extensions?.code).toBe('PERSISTED_QUERY_NOT_FOUND');
    expect((await byHash(texts[texts.length - 1])).body).toEqual({ data: { __typename: 'Query' } });
    const held = metricSample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_graphql_document_cache_bytes', { cache: 'persisted' });
    expect(held).toBeGreaterThan(3 * 2 ** 20);
    expect(held).toBeLessThanOrEqual(4 * 2 ** 20);
  });

  describe('without a key that is accepted', () => {
    const UNAUTHENTICATED = { errors: [{ message: 'Invalid API key', extensions: { code: 'UNAUTHENTICATED' } }] };
    const persisted = (query: string, withText = false) => ({
      ...(withText ? { query } : {}),
      extensions: { persistedQuery: { version: 1, sha256Hash: sha256(query) } },
    });
    const post = (body: Record<string, unknown>, headers: Record<string, string> = {}) =>
      http(gateway.baseUrl, 'POST', '/graphql', { headers: { ...json, ...headers }, body: JSON.stringify(body) });

    it("answers 401 whether or not some workspace sent the document: a hash tells nothing of others' documents", async () => {
      const registered = `{ campaign(id: "${ws.campaign.id}") { name } }`;
      expect((await send(persisted(registered, true))).body.data.campaign).toEqual({ name: ws.campaign.name });
      const known = await post(persisted(registered));
      const unknown = await post(persisted(`{ campaign(id: "${ws.campaign.id}-guess") { name } }`));
      for (const answer of [known, unknown]) {
        expect(answer.status).toBe(401);
        expect(answer.headers['www-authenticate']).toBe('Bearer');
        expect(answer.body).toEqual(UNAUTHENTICATED);
      }
      // A key that is refused is answered alike, whatever the hash, as is a GET.
      const refusedKey = await post(persisted(registered), bearer(flipLastChecksumCharacter(ws.key)));
      expect([refusedKey.status, refusedKey.body]).toEqual([401, UNAUTHENTICATED]);
      const get = await http(gateway.baseUrl, 'GET', `/graphql?extensions=${encodeURIComponent(JSON.stringify(persisted(registered).extensions))}`, {
        headers: { 'apollo-require-preflight': 'true' },
      });
      expect([get.status, get.body]).toEqual([401, UNAUTHENTICATED]);
    });

    it('answers a malformed hash sent without a key 401, as any other', async () => {
      const answer = await post({ extensions: { persistedQuery: { version: 1, sha256Hash: 5 } } });
      expect([answer.status, answer.body]).toEqual([401, UNAUTHENTICATED]);
    });

    it('keeps no text sent without a key, whatever it asks for', async () => {
      const query = '{ __typename unregistered: __typename }';
      expect((await post(persisted(query, true))).status).toBe(401);
      expect((await send(persisted(query))).body.errors[0].extensions.code).toBe('PERSISTED_QUERY_NOT_FOUND');
    });

    it('answers a key that cannot be checked (a store outage) with that outage alone, and an internal failure as one', async () => {
      let failure: (() => unknown) | undefined;
      const failing = await startGateway({}, {}, { wrapStore: (store) => storeFailingOn(store, ['findApiKeyByHash'], () => failure !== undefined, () => failure?.()) });
      try {
        const other = await failing.workspace();
        const query = '{ viewer { workspaceId } }';
        const ask = () => http(failing.baseUrl, 'POST', '/graphql', { headers: { ...json, ...bearer(other.key) }, body: JSON.stringify(persisted(query)) });
        failure = () => dependencyUnavailable(new Error('connection refused'));
        const outage = await ask();
        expect(outage.status).toBe(503);
        expect(outage.headers['retry-after']).toBe('5');
        expect(outage.body).toEqual({ errors: [{ message: 'Service unavailable', extensions: { code: 'SERVICE_UNAVAILABLE', reason: 'UNAVAILABLE', retryAfterSeconds: 5 } }] });
        failure = () => new Error('disk /var/secret/gateway.db exploded');
        const internal = await ask();
        expect(internal.status).toBe(500);
        expect(internal.body).toEqual({ errors: [{ message: 'Internal server error', extensions: { code: 'INTERNAL_SERVER_ERROR', reason: 'INTERNAL', requestId: internal.headers['x-request-id'] } }] });
      } finally {
        await failing.close();
      }
    });

    it('counts each such request as a failed authentication, up to the block', async () => {
      const guarded = await startGateway({ AUTH_FAILURE_LIMIT: '3' });
      try {
        const probe = () => http(guarded.baseUrl, 'POST', '/graphql', { headers: json, body: JSON.stringify(persisted(`{ probe${Math.random()} }`)) });
        const failures = async () => metricSample((await http(guarded.baseUrl, 'GET', '/metrics')).text, 'gateway_auth_failures_total', { channel: 'GRAPHQL', code: 'UNAUTHENTICATED' }) ?? 0;
        for (let attempt = 1; attempt <= 3; attempt++) {
          expect((await probe()).status).toBe(401);
          expect(await failures()).toBe(attempt);
        }
        const blocked = await probe();
        expect(blocked.status).toBe(429);
        expect(blocked.headers['retry-after']).toBeDefined();
        expect(blocked.body.errors).toEqual([expect.objectContaining({ extensions: expect.objectContaining({ code: 'RATE_LIMITED' }) })]);
      } finally {
        await guarded.close();
      }
    });
  });
});

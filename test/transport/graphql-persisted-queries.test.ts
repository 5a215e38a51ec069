import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, http, json, metricSample, recordingLogger, startGateway, type TestGateway, type TestWorkspace } from '../support/gateway.js';

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
    ['a query without its hash', { query: '{ __typename }', extensions: { persistedQuery: { version: 1 } } }, 'provided sha does not match query'],
    ['a version Apollo does not know', { query: '{ __typename }', extensions: { persistedQuery: { version: 2, sha256Hash: sha256('{ __typename }') } } }, 'Unsupported persisted query version'],
    ['an extension that is no object', { query: '{ __typename }', extensions: { persistedQuery: 'x' } }, 'Unsupported persisted query version'],
  ])('%s: 400 BAD_REQUEST saying so, not an internal error', async (_case, body, message) => {
    const errorsLogged = () => logs.lines.filter((line) => JSON.parse(line).level >= 50).length;
    const before = errorsLogged();
    const answer = await send(body);
    expect(answer.status).toBe(400);
    expect(answer.body).toEqual({ errors: [{ message, extensions: { code: 'BAD_REQUEST' } }] });
    expect(errorsLogged()).toBe(before);
  });

  it('keeps the texts of persisted queries within their budget, without a key, the least recently registered dropped first', async () => {
    // 60 KB each, valid and short in tokens: a comment pads it. 40 of them are far past the 4 MiB budget.
    const texts = Array.from({ length: 40 }, (_, index) => `query Padded${index} { __typename }\n#${'x'.repeat(60_000)}`);
    const register = (query: string) =>
      http(gateway.baseUrl, 'POST', '/graphql', { headers: json, body: JSON.stringify({ query, extensions: { persistedQuery: { version: 1, sha256Hash: sha256(query) } } }) });
    for (const query of texts) expect((await register(query)).body).toEqual({ data: { __typename: 'Query' } });
    const byHash = (query: string) =>
      http(gateway.baseUrl, 'POST', '/graphql', { headers: json, body: JSON.stringify({ extensions: { persistedQuery: { version: 1, sha256Hash: sha256(query) } } }) });
    expect((await byHash(texts[0])).body.errors?.[0]?.extensions?.code).toBe('PERSISTED_QUERY_NOT_FOUND');
    expect((await byHash(texts[texts.length - 1])).body).toEqual({ data: { __typename: 'Query' } });
    const held = metricSample((await http(gateway.baseUrl, 'GET', '/metrics')).text, 'gateway_graphql_document_cache_bytes', { cache: 'persisted' });
    expect(held).toBeGreaterThan(3 * 2 ** 20);
    expect(held).toBeLessThanOrEqual(4 * 2 ** 20);
  });
});

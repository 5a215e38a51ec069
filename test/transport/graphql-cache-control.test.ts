import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, graphql, http, json, startGateway, type TestGateway, type TestWorkspace } from '../support/gateway.js';

let gateway: TestGateway;
let ws: TestWorkspace;

beforeAll(async () => {
  gateway = await startGateway();
  ws = await gateway.workspace();
});

afterAll(async () => {
  await gateway?.close();
});

describe('GraphQL responses', () => {
  it('are never cacheable: Cache-Control no-store on data and on errors', async () => {
    const page = await graphql(gateway.baseUrl, ws.key, '{ securityEvents { edges { node { id } } } }');
    expect(page.status).toBe(200);
    expect(page.headers['cache-control']).toBe('no-store');
    const refused = await graphql(gateway.baseUrl, null, '{ securityEvents { edges { node { id } } } }');
    expect(refused.status).toBe(401);
    expect(refused.headers['cache-control']).toBe('no-store');
  });

  const operation = () => JSON.stringify({ query: '{ viewer { workspaceId } }' });
  // Each is answered by the gateway itself, before Apollo reads the request.
  const refusals: { name: string; status: number; body: () => string | Buffer; headers?: Record<string, string> }[] = [
    { name: 'malformed JSON', status: 400, body: () => '{"query": ' },
    { name: 'bytes that are not UTF-8', status: 400, body: () => Buffer.from(JSON.stringify({ query: '{ viewer { workspaceId } } # Café' }), 'latin1') },
    { name: 'a body over the limit', status: 413, body: () => JSON.stringify({ query: `{ viewer { workspaceId } } #${'x'.repeat(70 * 1024)}` }) },
    { name: 'text/plain', status: 415, body: operation, headers: { 'content-type': 'text/plain' } },
    { name: 'a charset other than UTF-8', status: 415, body: operation, headers: { 'content-type': 'application/json; charset=iso-8859-1' } },
    { name: 'a content coding', status: 415, body: () => gzipSync(operation()), headers: { 'content-encoding': 'gzip' } },
  ];
  const accepts = [
    { accept: 'application/json', type: 'application/json; charset=utf-8' },
    { accept: 'application/graphql-response+json', type: 'application/graphql-response+json; charset=utf-8' },
    // Quality values, as HTTP libraries write them, are weighed as Apollo weighs them.
    { accept: 'application/json;q=0.5, application/graphql-response+json', type: 'application/graphql-response+json; charset=utf-8' },
    { accept: 'application/graphql-response+json;q=0.2, application/json;q=0.8', type: 'application/json; charset=utf-8' },
    { accept: 'text/html, application/graphql-response+json;q=0.9, */*;q=0.1', type: 'application/graphql-response+json; charset=utf-8' },
  ];

  describe.each(accepts)('refused before Apollo, with Accept: $accept', ({ accept, type }) => {
    it.each(refusals)('$name: in the media type accepted, and no-store', async ({ status, body, headers }) => {
      const response = await http(gateway.baseUrl, 'POST', '/graphql', {
        headers: { 'content-type': 'application/json', accept, ...bearer(ws.key), ...headers },
        body: body(),
      });
      expect(response.status).toBe(status);
      expect(response.headers['content-type']).toBe(type);
      expect(response.headers['cache-control']).toBe('no-store');
      expect(response.body.errors[0].extensions.code).toBe('BAD_USER_INPUT');
    });

    it('in the media type Apollo answers the same Accept with', async () => {
      const answered = await http(gateway.baseUrl, 'POST', '/graphql', {
        headers: { 'content-type': 'application/json', accept, ...bearer(ws.key) },
        body: operation(),
      });
      expect(answered.status).toBe(200);
      expect(answered.headers['content-type']).toBe(type);
    });
  });
});

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const graphqlSection = readme.slice(readme.indexOf('### GraphQL'), readme.indexOf('`BAD_USER_INPUT` comes in two shapes'));

describe("/graphql's refusals other than 400, as the README gives them", () => {
  it('a mutation over GET: 405 with Allow: POST, BAD_REQUEST, and nothing runs', async () => {
    const mutation = `mutation { duplicateCampaign(input: {campaignId: "${ws.campaign.id}", name: "over GET"}) { job { id } } }`;
    const answer = await http(gateway.baseUrl, 'GET', `/graphql?query=${encodeURIComponent(mutation)}`, {
      headers: { 'apollo-require-preflight': 'true', ...bearer(ws.key) },
    });
    expect([answer.status, answer.headers.allow]).toEqual([405, 'POST']);
    expect(answer.body).toEqual({ errors: [{ message: 'GET requests only support query operations, not mutation operations', extensions: { code: 'BAD_REQUEST' } }] });
    const events = await http(gateway.baseUrl, 'POST', '/graphql', {
      headers: { ...json, ...bearer(ws.key) },
      body: JSON.stringify({ query: '{ securityEvents(filter: {types: [CAMPAIGN_DUPLICATION_REQUESTED]}) { edges { node { id } } } }' }),
    });
    expect(events.body).toEqual({ data: { securityEvents: { edges: [] } } });
    expect(graphqlSection).toMatch(/HTTP 405 with `Allow: POST`/);
    expect(readme).not.toMatch(/no other route answers `405`/);
  });

  it.each(['text/html', 'application/xml'])('an Accept header that takes neither JSON type (%s) on a POST: 406, BAD_REQUEST', async (accept) => {
    const answer = await http(gateway.baseUrl, 'POST', '/graphql', {
      headers: { ...json, accept, ...bearer(ws.key) },
      body: JSON.stringify({ query: '{ __typename }' }),
    });
    expect(answer.status).toBe(406);
    expect(answer.body.errors).toEqual([expect.objectContaining({ extensions: { code: 'BAD_REQUEST' } })]);
    expect(graphqlSection).toMatch(/HTTP 406/);
  });
});

import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, http, json, startGateway, type TestGateway, type TestWorkspace } from '../support/gateway.js';

let gateway: TestGateway;
let ws: TestWorkspace;

beforeAll(async () => {
  gateway = await startGateway();
  ws = await gateway.workspace();
});

afterAll(async () => {
  await gateway?.close();
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

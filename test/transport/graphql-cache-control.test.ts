import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { graphql, startGateway, type TestGateway, type TestWorkspace } from '../support/gateway.js';

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
});

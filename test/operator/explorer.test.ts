import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXAMPLE_VARIABLES, explorerPage } from '../../src/http/explorer.js';
import { bearer, graphql, http, recordingLogger, startGateway, type HttpResult, type TestGateway } from '../support/gateway.js';

const BROWSER_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';

describe('the GraphQL explorer, outside production', () => {
  let gateway: TestGateway;
  beforeAll(async () => {
    gateway = await startGateway({ NODE_ENV: 'development' });
  });
  afterAll(() => gateway?.close());

  it('is what a browser gets from GET /graphql: a page that loads only the gateway\'s own files', async () => {
    const page = await http(gateway.baseUrl, 'GET', '/graphql', { headers: { accept: BROWSER_ACCEPT } });
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    // Each directive's sources exactly: a source added to one ('unsafe-inline', a CDN) must fail here.
    const csp = new Map(
      String(page.headers['content-security-policy'])
        .split(';')
        .map((directive) => directive.trim().split(/\s+/))
        .map(([name, ...sources]) => [name, sources]),
    );
    const config = JSON.parse(/<script id="explorer-config" type="application\/json">(.*?)<\/script>/s.exec(page.text)![1]);
    expect(csp.get('default-src')).toEqual(["'self'"]);
    expect(csp.get('script-src')).toEqual(["'self'"]);
    // The only inline style is the one the page's script adds with the nonce (GraphiQL's dialogs'), new on every page.
    expect(csp.get('style-src')).toEqual(["'self'", `'nonce-${config.styleNonce}'`]);
    expect(config.styleNonce).toMatch(/^[A-Za-z0-9+/]{22}==$/);
    const again = await http(gateway.baseUrl, 'GET', '/graphql', { headers: { accept: BROWSER_ACCEPT } });
    expect(again.headers['content-security-policy']).not.toContain(config.styleNonce);
    expect(page.text).not.toMatch(/<style|style=/);
    expect(page.headers['x-frame-options']).toBe('DENY');
    expect(page.text).not.toMatch(/(src|href)="(https?:)?\/\//);

    expect(JSON.parse(config.headers)).toEqual({ Authorization: 'Bearer ' });
    expect(config.query).toContain('mutation DuplicateCampaign(');
    // As the README's poll: a job's two events, at the price of two (a read costs the page it asks for).
    expect(config.query).toContain('securityEvents(filter: { jobId: $jobId }, first: 2)');
    // The guide at the top names the operations in the order they follow it, and says when polling is done.
    const operations = [...config.query.matchAll(/^(?:query|mutation) (\w+)/gm)].map((match) => match[1]);
    expect(operations).toEqual(['ListCampaigns', 'DuplicateCampaign', 'PollJob']);
    expect([...config.query.matchAll(/^# \d\. Run (\w+)/gm)].map((match) => match[1])).toEqual(operations);
    expect(config.query).toMatch(/Run PollJob until job\.status is\s+#\s+SUCCEEDED or FAILED\./);

    const assets = [...page.text.matchAll(/(?:src|href)="(explorer\/assets\/[^"]+)"/g)].map((match) => match[1]);
    expect(assets.map((asset) => asset.split('?')[0]).sort()).toEqual(
      ['explorer/assets/explorer.css', 'explorer/assets/explorer.js', 'explorer/assets/graphiql.css', 'explorer/assets/graphiql.js', 'explorer/assets/react-dom.js', 'explorer/assets/react.js'],
    );
    for (const asset of assets) {
      const response = await request(`${gateway.baseUrl}/${asset}`, { headers: { 'accept-encoding': 'gzip' } });
      const body = Buffer.from(await response.body.arrayBuffer());
      expect(response.statusCode, asset).toBe(200);
      expect(response.headers['content-encoding']).toBe('gzip');
      expect(response.headers['content-type']).toMatch(asset.includes('.css') ? /^text\/css/ : /^text\/javascript/);
      expect(gunzipSync(body).length).toBeGreaterThan(asset.includes('explorer.') ? 40 : 10_000);
      // Named by a hash of what is served, so any change is a new URL, which may be kept for good.
      expect(new URL(asset, 'http://page/').searchParams.get('v')).toBe(createHash('sha256').update(gunzipSync(body)).digest('hex').slice(0, 20));
      expect(response.headers['cache-control']).toBe('public, max-age=31536000, immutable');
    }
    // A URL naming other content (an older page's) or none must be checked again.
    for (const query of ['', '?v=0123456789abcdef0123']) {
      expect((await http(gateway.baseUrl, 'GET', `/explorer/assets/explorer.js${query}`)).headers['cache-control']).toBe('no-cache');
    }
    const plain = await http(gateway.baseUrl, 'GET', '/explorer/assets/react.js');
    expect(plain.headers['content-encoding']).toBeUndefined();
    expect(plain.text).toContain('React');
    // A file it does not serve is answered as any unknown URL is.
    const answer = ({ status, headers, body }: HttpResult) => ({ status, type: headers['content-type'], body });
    const unknown = answer(await http(gateway.baseUrl, 'GET', '/no-such-page'));
    expect(unknown).toEqual({ status: 404, type: 'application/json; charset=utf-8', body: { message: 'Not Found', code: 'NOT_FOUND' } });
    for (const file of ['..%2Fpackage.json', 'nothing.js']) expect(answer(await http(gateway.baseUrl, 'GET', `/explorer/assets/${file}`))).toEqual(unknown);
  });

  it('names each file by its content: a change to any file, the gateway\'s own included, changes its URL', () => {
    const urls = (versions: [string, string][]) => [...explorerPage('/graphql', new Map(versions), 'nonce').matchAll(/(?:src|href)="(explorer\/assets\/[^"]+)"/g)].map((match) => match[1]);
    const before = urls([['explorer.js', 'aaaa'], ['graphiql.js', 'bbbb']]);
    const after = urls([['explorer.js', 'cccc'], ['graphiql.js', 'bbbb']]);
    expect(before).toContain('explorer/assets/explorer.js?v=aaaa');
    expect(after).toContain('explorer/assets/explorer.js?v=cccc');
    expect(after.filter((url) => !before.includes(url))).toEqual(['explorer/assets/explorer.js?v=cccc']);
  });

  it('answers PollJob with its example variables by an error naming $jobId, not with an empty list', async () => {
    const { key } = await gateway.workspace();
    const polled = await graphql(gateway.baseUrl, key, 'query PollJob($jobId: ID!) { securityEvents(filter: { jobId: $jobId }) { edges { node { type } } } }', JSON.parse(EXAMPLE_VARIABLES));
    expect(polled.body.data).toBeUndefined();
    expect(polled.body.errors.map((error: { message: string }) => error.message)).toEqual([expect.stringContaining('"$jobId"')]);
  });

  it('leaves every other GET /graphql to Apollo', async () => {
    const response = await http(gateway.baseUrl, 'GET', '/graphql?query=%7B__typename%7D', {
      headers: { accept: 'application/graphql-response+json, application/json', 'apollo-require-preflight': 'true' },
    });
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ data: { __typename: 'Query' } });
    expect((await http(gateway.baseUrl, 'GET', '/graphql', { headers: { accept: '*/*' } })).headers['content-type']).not.toMatch(/html/);
  });
});

describe.each([
  ['in production', { NODE_ENV: 'production' }, false],
  ['in production with GRAPHQL_EXPLORER=true', { NODE_ENV: 'production', GRAPHQL_EXPLORER: 'true' }, true],
  ['outside production with GRAPHQL_EXPLORER=false', { NODE_ENV: 'development', GRAPHQL_EXPLORER: 'false' }, false],
])('the explorer %s', (_name, env, enabled) => {
  let gateway: TestGateway;
  beforeAll(async () => {
    gateway = await startGateway(env);
  });
  afterAll(() => gateway?.close());

  it(enabled ? 'is served, with introspection' : 'is not served, nor is introspection', async () => {
    const page = await http(gateway.baseUrl, 'GET', '/graphql', { headers: { accept: BROWSER_ACCEPT } });
    expect(String(page.headers['content-type']).startsWith('text/html')).toBe(enabled);
    if (!enabled) {
      expect(page.status).toBe(404);
      expect(page.text).toMatch(/explorer is not enabled on this server/);
    }
    // HEAD answers as GET does, without the body.
    const head = await http(gateway.baseUrl, 'HEAD', '/graphql', { headers: { accept: BROWSER_ACCEPT } });
    expect({ status: head.status, type: head.headers['content-type'], length: head.headers['content-length'], text: head.text }).toEqual({
      status: page.status,
      type: page.headers['content-type'],
      length: String(Buffer.byteLength(page.text)),
      text: '',
    });
    // A GraphQL client whose GET also accepts HTML gets the API, whether the explorer is on or off.
    const { key } = await gateway.workspace();
    const client = await http(gateway.baseUrl, 'GET', `/graphql?query=${encodeURIComponent('{ __typename }')}`, {
      headers: { accept: 'application/json, text/html', 'apollo-require-preflight': 'true', ...bearer(key) },
    });
    expect(client.status).toBe(200);
    expect(client.body).toEqual({ data: { __typename: 'Query' } });
    // Without introspection a request without a key can only be refused, and is, before its body is read.
    const anonymous = await http(gateway.baseUrl, 'POST', '/graphql', { headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ __typename }' }) });
    expect(anonymous.status).toBe(enabled ? 200 : 401);
    expect((await http(gateway.baseUrl, 'GET', '/explorer/assets/graphiql.js')).status).toBe(enabled ? 200 : 404);
    const introspection = await http(gateway.baseUrl, 'POST', '/graphql', {
      headers: { 'content-type': 'application/json', ...bearer(key) },
      body: JSON.stringify({ query: '{ __schema { queryType { name } } }' }),
    });
    expect(introspection.body.data?.__schema?.queryType?.name === 'Query').toBe(enabled);
  });

  it('leaves to the API a GET that accepts HTML and carries any GraphQL parameter, a persisted query\'s hash alone included', async () => {
    // A persisted query is looked up only for a caller with a key.
    const { key } = await gateway.workspace();
    const get = (parameters: Record<string, string>) =>
      http(gateway.baseUrl, 'GET', `/graphql?${new URLSearchParams(parameters)}`, {
        headers: { accept: 'application/json, text/html', 'apollo-require-preflight': 'true', authorization: `Bearer ${key}` },
      });
    const query = '{ __typename }';
    const extensions = JSON.stringify({ persistedQuery: { version: 1, sha256Hash: createHash('sha256').update(query).digest('hex') } });
    expect((await get({ query, extensions })).body).toEqual({ data: { __typename: 'Query' } });
    const byHash = await get({ extensions });
    expect(byHash.status).toBe(200);
    expect(byHash.body).toEqual({ data: { __typename: 'Query' } });
    // A client that left the query out is told what is missing.
    for (const parameters of [{ operationName: 'Q' }, { variables: '{}' }] as Record<string, string>[]) {
      const incomplete = await get(parameters);
      expect({ parameters, status: incomplete.status, type: incomplete.headers['content-type'] }).toEqual({
        parameters,
        status: 400,
        type: expect.stringMatching(/^application\/json/),
      });
      expect(incomplete.body.errors[0].message).toMatch(/non-empty `query`/);
    }
  });
});

describe('the explorer on in production', () => {
  it.each([
    [{ GRAPHQL_EXPLORER: 'true' }, true],
    [{}, false],
  ])('is said once at start (%o)', async (env, said) => {
    const { logger, lines } = recordingLogger('info');
    const gateway = await startGateway({ NODE_ENV: 'production', ...env }, { logger });
    await gateway.close();
    const warnings = lines.map((line) => JSON.parse(line)).filter((line) => /explorer/i.test(line.msg));
    expect(warnings.map(({ level, msg }) => ({ level, msg }))).toEqual(
      said ? [{ level: 40, msg: 'the GraphQL explorer and introspection are on in production (GRAPHQL_EXPLORER=true)' }] : [],
    );
  });
});

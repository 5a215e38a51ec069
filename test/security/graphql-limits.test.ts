import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getIntrospectionQuery } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStore } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { bearer, flipLastChecksumCharacter, graphql, http, json, metricSample, rawConnection, recordingLogger, startGateway, storeFailingOn, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { jobTotal } from '../support/store-checks.js';

const EVENTS_DEPTH_6 = '{ securityEvents { edges { node { job { apiKey { id } } } } } }';

const codeOf = (body: any): string | undefined => body?.errors?.[0]?.extensions?.code;

describe('GraphQL limits', () => {
  let gw: TestGateway;
  let ws: TestWorkspace;

  beforeAll(async () => {
    gw = await startGateway({
      GRAPHQL_MAX_DEPTH: '5',
      GRAPHQL_MAX_COST: '500',
      GRAPHQL_MAX_ALIASES: '6',
      DUPLICATE_RATE_LIMIT: '4',
      DUPLICATE_RATE_WINDOW_SECONDS: '3600',
    });
    ws = await gw.workspace('limits');
  });

  afterAll(() => gw.close());

  const refused = async (query: string, variables?: Record<string, unknown>) => {
    const result = await graphql(gw.baseUrl, ws.key, query, variables);
    expect(result.status).toBe(400);
    expect(result.body.data).toBeUndefined();
    return result;
  };

  it('refuses an operation nested deeper than the limit, fragments included', async () => {
    const deep = await refused(EVENTS_DEPTH_6);
    expect(deep.body.errors[0]).toMatchObject({ message: expect.stringMatching(/nested 6 levels deep; at most 5/), extensions: { code: 'GRAPHQL_VALIDATION_FAILED' } });
    await refused('{ securityEvents { ...E } } fragment E on SecurityEventConnection { edges { node { ...N } } } fragment N on SecurityEvent { job { apiKey { id } } }');
    const shallow = await graphql(gw.baseUrl, ws.key, '{ securityEvents { edges { node { job { id } } } } }');
    expect(shallow.status).toBe(200);
  });

  it('does not count introspection fields, so the explorer can load the schema', async () => {
    const result = await graphql(gw.baseUrl, ws.key, getIntrospectionQuery());
    expect(result.status).toBe(200);
    expect(result.body.data.__schema.queryType.name).toBe('Query');
  });

  it('refuses an operation whose estimated cost is over the limit, counting page sizes and variables', async () => {
    const query = 'query($n: Int!) { securityEvents(first: $n) { edges { node { id } } } }';
    const costly = await refused(query, { n: 200 });
    expect(costly.body.errors[0]).toMatchObject({
      message: expect.stringMatching(/estimated cost is 601; at most 500/),
      extensions: { code: 'GRAPHQL_VALIDATION_FAILED', cost: 601, maxCost: 500 },
    });
    expect(costly.body.errors[0].extensions.http).toBeUndefined();
    expect((await graphql(gw.baseUrl, ws.key, query, { n: 100 })).status).toBe(200);
  });

  it('estimates again whenever the cost can depend on the variables, and never remembers a refusal', async () => {
    // Within the limit first, then over it with other variables: through a directive, through a fragment.
    const included = 'query($all: Boolean!) { securityEvents(first: 100) { edges { node { id job @include(if: $all) { id status } } } } }';
    expect((await graphql(gw.baseUrl, ws.key, included, { all: false })).status).toBe(200);
    expect((await refused(included, { all: true })).body.errors[0].extensions.cost).toBe(601);
    const fragment = 'query($n: Int!) { ...F } fragment F on Query { securityEvents(first: $n) { edges { node { id } } } }';
    expect((await graphql(gw.baseUrl, ws.key, fragment, { n: 10 })).status).toBe(200);
    expect((await refused(fragment, { n: 200 })).body.errors[0].extensions.cost).toBe(601);
    // A fixed cost over the limit is refused the same way every time; a fixed one within it is answered every time.
    const fixed = '{ securityEvents(first: 200) { edges { node { id } } } }';
    const [first, second] = [await refused(fixed), await refused(fixed)];
    expect(second.text).toBe(first.text);
    const small = 'query($job: ID) { securityEvents(first: 2, filter: {jobId: $job}) { edges { node { id } } } }';
    expect((await graphql(gw.baseUrl, ws.key, small, { job: null })).status).toBe(200);
    expect((await graphql(gw.baseUrl, ws.key, small, { job: 'x' })).status).toBe(200);
    const bad = await graphql(gw.baseUrl, ws.key, small, { job: { not: 'an id' } });
    expect(bad.status).toBe(400);
    expect(codeOf(bad.body)).toBe('BAD_USER_INPUT');
  });

  it('estimates first: null as the default page it is answered with', async () => {
    const page = (first: string) => `securityEvents(first: ${first}) { edges { node { id job { id status } } } }`;
    const pages = (first: string) => `{ a: ${page(first)} b: ${page(first)} }`;
    const byDefault = await refused(pages('null'));
    expect(byDefault.body.errors[0].extensions.cost).toBe((await refused(pages('50'))).body.errors[0].extensions.cost);
    const viaVariable = await refused(`query($n: Int) ${pages('$n')}`, { n: null });
    expect(viaVariable.body.errors[0].extensions.cost).toBe(byDefault.body.errors[0].extensions.cost);
  });

  it('refuses more aliases than the limit, counting a fragment each time it is spread', async () => {
    const aliased = (count: number, field = 'campaigns') =>
      Array.from({ length: count }, (_, index) => `${field[0]}${index}: ${field}(first: 1) { pageInfo { hasNextPage } }`).join(' ');
    const seven = await refused(`{ ${aliased(7)} }`);
    expect(seven.body.errors[0].message).toMatch(/7 aliases; at most 6/);
    // Four aliases in a fragment spread twice (through another fragment once) are eight.
    await refused(`query { ...F ...G } fragment F on Query { ${aliased(4)} } fragment G on Query { ...F }`);
    expect((await graphql(gw.baseUrl, ws.key, `{ ${aliased(6, 'securityEvents')} }`)).status).toBe(200);
  });

  it('allows a few duplicateCampaign fields per operation, each taking its own quota point', async () => {
    const field = (index: number) => `d${index}: duplicateCampaign(input: {campaignId: "${ws.campaign.id}", name: "copy ${index}"}) { job { id } }`;
    const fields = (count: number) => Array.from({ length: count }, (_, index) => field(index)).join(' ');
    const jobsBefore = await jobTotal(gw.app.store);
    const tooMany = await refused(`mutation { ${fields(6)} }`);
    expect(tooMany.body.errors[0].message).toMatch(/6 duplicateCampaign fields; at most 5/);
    expect(await jobTotal(gw.app.store)).toBe(jobsBefore);

    // Five fields against a quota of four points: four jobs, whose ids the caller gets, and one RATE_LIMITED field.
    const five = await graphql(gw.baseUrl, ws.key, `mutation { ${fields(5)} }`);
    expect(five.status).toBe(200);
    expect(await jobTotal(gw.app.store)).toBe(jobsBefore + 4);
    expect(five.body.errors.map((error: any) => [error.extensions.code, error.path])).toEqual([['RATE_LIMITED', ['d4']]]);
    const accepted = ['d0', 'd1', 'd2', 'd3'].map((name) => five.body.data[name].job.id);
    for (const id of accepted) expect(await gw.app.store.getJob(ws.workspace.id, id)).not.toBeNull();
    expect(five.body.data.d4).toBeNull();
    expect(five.headers['x-ratelimit-remaining']).toBe('0');

    // Every executed field refused is a 429, however the operation spells its fields.
    for (const operation of [
      `mutation { ${field(0)} }`,
      `mutation { ...Both } fragment Both on Mutation { ${fields(2)} }`,
      `mutation { ${field(0)} skipped: duplicateCampaign(input: {campaignId: "x", name: "y"}) @skip(if: true) { job { id } } }`,
    ]) {
      const limited = await graphql(gw.baseUrl, ws.key, operation);
      expect(limited.body.errors.every((error: any) => error.extensions.code === 'RATE_LIMITED')).toBe(true);
      expect(limited.status).toBe(429);
      expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    }
  });

  it('holds only the operation asked for to the limits, and names it when it refuses', async () => {
    const aliases = Array.from({ length: 7 }, (_, index) => `c${index}: campaigns(first: 1) { pageInfo { hasNextPage } }`).join(' ');
    const document = [
      'query Small { securityEvents(first: 1) { edges { node { id } } } }',
      `query Deep ${EVENTS_DEPTH_6}`,
      `query Aliased { ${aliases} }`,
      'query Costly { securityEvents(first: 200) { edges { node { id } } } }',
    ].join('\n');
    const run = (operationName?: string) =>
      http(gw.baseUrl, 'POST', '/graphql', { headers: { ...json, ...bearer(ws.key) }, body: JSON.stringify({ query: document, operationName }) });
    // Twice each: the second request for an accepted operation is answered without Apollo (src/graphql/prepared.ts).
    for (let round = 0; round < 2; round += 1) {
      const small = await run('Small');
      expect(small.status).toBe(200);
      expect(small.body.data.securityEvents.edges).toEqual(expect.any(Array));
      for (const [name, message] of [
        ['Deep', /^Operation Deep is nested 6 levels deep; at most 5 are allowed$/],
        ['Aliased', /^Operation Aliased has 7 aliases; at most 6 are allowed$/],
        ['Costly', /^Operation Costly's estimated cost is 601; at most 500 is allowed$/],
      ] as const) {
        const over = await run(name);
        expect(over.status).toBe(400);
        expect(over.body.data).toBeUndefined();
        expect(over.body.errors).toEqual([expect.objectContaining({ message: expect.stringMatching(message), extensions: expect.objectContaining({ code: 'GRAPHQL_VALIDATION_FAILED' }) })]);
      }
    }
    expect((await run()).body.errors[0].message).toMatch(/operation name/);
  });

  it('refuses batched (array) requests', async () => {
    const result = await http(gw.baseUrl, 'POST', '/graphql', {
      headers: { ...json, ...bearer(ws.key) },
      body: JSON.stringify([{ query: '{ __typename }' }, { query: '{ __typename }' }]),
    });
    expect(result.status).toBe(400);
    expect(codeOf(result.body)).toBe('BAD_REQUEST');
  });

  it('prevents CSRF: simple requests a browser would send cross-site are refused', async () => {
    const query = encodeURIComponent('{ __typename }');
    const get = await http(gw.baseUrl, 'GET', `/graphql?query=${query}`, { headers: bearer(ws.key) });
    expect(get.status).toBe(400);
    expect(get.body.errors[0].message).toMatch(/Cross-Site Request Forgery/);
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
      const post = await http(gw.baseUrl, 'POST', '/graphql', { headers: { 'content-type': type, ...bearer(ws.key) }, body: '{"query":"{ __typename }"}' });
      expect(post.status).toBe(415);
      expect(post.body.errors[0].extensions.code).toBe('BAD_USER_INPUT');
    }
    const preflighted = await http(gw.baseUrl, 'GET', `/graphql?query=${query}`, { headers: { ...bearer(ws.key), 'apollo-require-preflight': 'true' } });
    expect(preflighted.status).toBe(200);
  });

  it('refuses documents over the token limit and deeply nested documents with a parse error, not a crash', async () => {
    const long = await refused(`{ ${Array.from({ length: 1100 }, (_, index) => `f${index}: __typename`).join(' ')} }`);
    expect(long.body.errors[0]).toMatchObject({ message: expect.stringMatching(/more th\w+ 2000 tokens/), extensions: { code: 'GRAPHQL_PARSE_FAILED' } });
    const nested = await refused(`{ ${'a { '.repeat(700)}b${' }'.repeat(700)} }`);
    expect(nested.body.errors[0].extensions.code).toBe('GRAPHQL_PARSE_FAILED');
    expect(nested.text).not.toMatch(/call stack/i);
    const bomb = [
      'query { ...F0 }',
      ...Array.from({ length: 30 }, (_, index) => `fragment F${index} on Query { ...F${index + 1} ...F${index + 1} }`),
      'fragment F30 on Query { __typename }',
    ].join('\n');
    const exploded = await refused(bomb);
    expect(exploded.text).not.toMatch(/call stack|internal/i);
    expect((await http(gw.baseUrl, 'GET', '/healthz')).status).toBe(200);
  });
});

describe('GraphQL in production', () => {
  let gw: TestGateway;
  let ws: TestWorkspace;
  let failing = false;
  const logs = recordingLogger();
  const dir = mkdtempSync(join(tmpdir(), 'cgw-prod-'));

  beforeAll(async () => {
    const env = { NODE_ENV: 'production', DATA_DIR: dir };
    const store = await createStore(loadConfig(env), { olderSchema: 'upgrade' });
    const broken = storeFailingOn(store, ['listEvents', 'getJob'], () => failing);
    gw = await startGateway(env, { store: broken, logger: logs.logger });
    ws = await gw.workspace('production');
  });

  afterAll(async () => {
    await gw.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses, before validation compares them, documents that merge too many same-named fields or fragments into one selection set', async () => {
    const range = (n: number) => Array.from({ length: n }, (_, index) => index);
    const cases: [string, RegExp][] = [
      [`{ ${'viewer { workspaceId } '.repeat(51)} }`, /^A selection set merges 51 fields named "viewer"; at most 50 are allowed$/],
      [`{ ${'__typename '.repeat(400)} }`, /merges 51 fields named "__typename"/],
      [`{ ${'... on Query { viewer { workspaceId } } '.repeat(51)} }`, /merges 51 fields named "viewer"/],
      [`{ viewer { ${range(51).map((index) => `...V${index}`).join(' ')} } } ${range(51).map((index) => `fragment V${index} on Viewer { workspaceId }`).join(' ')}`, /^A selection set spreads 51 fragments; at most 50 are allowed$/],
      [`{ ...A } fragment A on Query { ...C viewer { workspaceId } } fragment C on Query { ${'viewer { workspaceId } '.repeat(50)} }`, /merges 51 fields named "viewer"/],
    ];
    for (const [query, message] of cases) {
      const answer = await graphql(gw.baseUrl, ws.key, query);
      expect(answer.status, query.slice(0, 60)).toBe(400);
      expect(answer.body.errors, query.slice(0, 60)).toEqual([{ message: expect.stringMatching(message), extensions: { code: 'GRAPHQL_VALIDATION_FAILED' } }]);
      // In production a request without a key is refused before its body is read, let alone parsed.
      expect((await graphql(gw.baseUrl, null, query)).status).toBe(401);
    }
    for (const within of [`{ ${'viewer { workspaceId } '.repeat(50)} }`, `{ ${'...F '.repeat(900)} } fragment F on Query { viewer { workspaceId } }`]) {
      const answer = await graphql(gw.baseUrl, ws.key, within);
      expect([answer.status, answer.body.data?.viewer]).toEqual([200, { workspaceId: ws.workspace.id }]);
    }
  });

  it('refuses a request without a key, or with one that is refused, before its body has arrived', async () => {
    for (const authorization of ['', `Authorization: Bearer ${flipLastChecksumCharacter(ws.key)}\r\n`]) {
      const { socket, send } = rawConnection(gw.baseUrl);
      // The answer, read as soon as it is whole: the connection stays open for the rest of the body.
      const answered = new Promise<{ head: string; body: string }>((resolve) => {
        let text = '';
        socket.on('data', (chunk: Buffer) => {
          text += chunk.toString('latin1');
          const end = text.indexOf('\r\n\r\n');
          const length = Number(/content-length: (\d+)/i.exec(text)?.[1]);
          if (end >= 0 && text.length >= end + 4 + length) resolve({ head: text.slice(0, end), body: text.slice(end + 4) });
        });
      });
      send(`POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${authorization}Content-Length: 65536\r\n\r\n{"query":"`);
      const { head, body } = await answered.finally(() => socket.destroy());
      expect(head).toMatch(/^HTTP\/1\.1 401 /);
      expect(JSON.parse(body)).toEqual({ errors: [{ message: 'Invalid API key', extensions: { code: 'UNAUTHENTICATED' } }] });
    }
  });

  it('counts no request without a key as a failed authentication: a probe of { __typename } blocks nobody', async () => {
    const failures = async () => metricSample((await http(gw.baseUrl, 'GET', '/metrics')).text, 'gateway_auth_failures_total', { channel: 'GRAPHQL', code: 'UNAUTHENTICATED' });
    const before = await failures();
    for (let probe = 0; probe < 25; probe++) {
      const answer = await http(gw.baseUrl, 'GET', `/graphql?query=${encodeURIComponent('{ __typename }')}`, { headers: { 'apollo-require-preflight': 'true' } });
      expect(answer.status).toBe(401);
      expect(answer.headers['www-authenticate']).toBe('Bearer');
    }
    expect(await failures()).toBe(before);
    expect((await graphql(gw.baseUrl, ws.key, '{ __typename }')).body).toEqual({ data: { __typename: 'Query' } });
  });

  it('answers variables that do not fit with their first error, and cuts long messages short', async () => {
    const mutation = 'mutation Copy($input: DuplicateCampaignInput!) { duplicateCampaign(input: $input) { job { id } } }';
    const accepted = await graphql(gw.baseUrl, ws.key, mutation, { input: { campaignId: ws.campaign.id, name: 'copy' } });
    expect(accepted.body.data.duplicateCampaign.job.id).toBeTruthy();
    const unknownFields = Object.fromEntries(Array.from({ length: 4000 }, (_, index) => [`f${index}`, 1]));
    // Twice: the second request finds the operation prepared.
    for (let attempt = 0; attempt < 2; attempt++) {
      const answer = await graphql(gw.baseUrl, ws.key, mutation, { input: unknownFields });
      expect(answer.status).toBe(400);
      expect(answer.body.errors).toHaveLength(1);
      expect(answer.body.errors[0].extensions).toEqual({ code: 'BAD_USER_INPUT' });
      expect(answer.body.errors[0].message).toMatch(/^Variable "\$input" got invalid value \{ f0: 1, f1: 1/);
      expect(answer.body.errors[0].message).toHaveLength(1000);
      expect(answer.body.errors[0].message.endsWith('…')).toBe(true);
    }
    const echoed = await graphql(gw.baseUrl, ws.key, `{ campaigns(first: ${'9'.repeat(5000)}) { edges { cursor } } }`);
    expect(echoed.status).toBe(400);
    expect(echoed.body.errors[0].message).toHaveLength(1000);
    const hints = await graphql(gw.baseUrl, ws.key, 'query($n: Int) { campaigns(first: $n) { edges { cursor } } }', { n: 'Did you mean '.repeat(4900) });
    expect(hints.status).toBe(400);
    expect(hints.body.errors).toEqual([{ message: expect.stringMatching(/^Variable "\$n" got invalid value "Did you mean Did you mean/), locations: [{ line: 1, column: 7 }], extensions: { code: 'BAD_USER_INPUT' } }]);
  });

  it('turns introspection off', async () => {
    for (const query of ['{ __schema { types { name } } }', '{ __type(name: "Query") { fields { name } } }', getIntrospectionQuery()]) {
      const result = await graphql(gw.baseUrl, ws.key, query);
      expect(result.status).toBe(400);
      expect(result.body.errors).toHaveLength(1);
      expect(result.body.errors[0].message).toBe('GraphQL introspection has been disabled on this server');
    }
  });

  it('gives no "Did you mean" hints about the schema', async () => {
    const result = await graphql(gw.baseUrl, ws.key, '{ securityEvent { edges { node { id } } } }');
    expect(result.status).toBe(400);
    expect(result.text).not.toMatch(/did you mean/i);
    expect(result.text).not.toContain('securityEvents');
    const input = await graphql(gw.baseUrl, ws.key, 'mutation { duplicateCampaign(input: {campaignID: "x", name: "y"}) { job { id } } }');
    expect(input.status).toBe(400);
    expect(input.text).not.toMatch(/did you mean/i);
    // Variables are coerced outside validation, and graphql-js suggests names there too.
    const enumValue = await graphql(gw.baseUrl, ws.key, 'query($t: [SecurityEventType!]) { securityEvents(filter: {types: $t}) { edges { node { id } } } }', { t: ['API_KEY_CREATE'] });
    const inputField = await graphql(gw.baseUrl, ws.key, 'mutation($input: DuplicateCampaignInput!) { duplicateCampaign(input: $input) { job { id } } }', { input: { campaignId: 'x', nam: 'y' } });
    for (const refused of [enumValue, inputField]) {
      expect(refused.status).toBe(400);
      expect(refused.body.errors[0].message).toMatch(/^Variable "\$\w+" got invalid value/);
      expect(refused.text).not.toMatch(/did you mean/i);
      expect(refused.text).not.toMatch(/API_KEY_CREATED|"name"/);
    }
  });

  it('answers an unexpected failure with INTERNAL_SERVER_ERROR and a request id that is in the log, over both transports', async () => {
    failing = true;
    try {
      const gqlAnswer = await graphql(gw.baseUrl, ws.key, '{ securityEvents { edges { node { id } } } }');
      // An id of the gateway's shape, so that the store is asked for it.
      const restAnswer = await http(gw.baseUrl, 'GET', '/duplication_jobs/00000000-0000-4000-8000-000000000000', { headers: bearer(ws.key) });

      const gqlError = gqlAnswer.body.errors[0];
      expect(gqlError).toEqual({
        message: 'Internal server error',
        locations: [{ line: 1, column: 3 }],
        path: ['securityEvents'],
        extensions: { code: 'INTERNAL_SERVER_ERROR', reason: 'INTERNAL', requestId: gqlAnswer.headers['x-request-id'] },
      });
      expect(restAnswer.status).toBe(500);
      expect(restAnswer.body).toEqual({ message: 'Internal server error', code: 'INTERNAL' });

      for (const answer of [gqlAnswer, restAnswer]) {
        expect(answer.text).not.toMatch(/exploded|secret|gateway\.db|at .*\.ts|stack/i);
        const requestId = String(answer.headers['x-request-id']);
        expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
        const logged = logs.lines.filter((line) => line.includes(requestId) && line.includes('exploded'));
        expect(logged.length).toBeGreaterThan(0);
        expect(JSON.parse(logged[0]).level).toBe(50);
      }
    } finally {
      failing = false;
    }
  });
});

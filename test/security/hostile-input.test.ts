import { Readable } from 'node:stream';
import { Client, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bearer,
  http,
  json,
  pipelinedAfterADuplicate,
  rawConnection,
  rawHttp,
  recordingLogger,
  startGateway,
  storeHeldOn,
  waitFor,
  type HttpResult,
  type TestGateway,
  type TestWorkspace,
} from '../support/gateway.js';
import { assertStoreConsistent } from '../support/store-checks.js';
import { DUPLICATE_MUTATION } from '../support/transports.js';

type Transport = 'REST' | 'GRAPHQL';

/** One hostile request. `headers` replace the defaults (a valid key, JSON) when given as a function. */
interface HostileCase {
  name: string;
  transport: Transport;
  method?: 'GET' | 'POST' | 'OPTIONS';
  path?: string;
  headers?: (key: string) => Record<string, string> | string[];
  body?: (ws: TestWorkspace) => string | Buffer;
  /** The HTTP status, and for GraphQL the error code, the case must get. */
  status: number;
  code?: string;
}

const PATH: Record<Transport, string> = { REST: '/campaigns/duplicate', GRAPHQL: '/graphql' };
const CLIENT_CODES = ['BAD_USER_INPUT', 'BAD_REQUEST', 'GRAPHQL_PARSE_FAILED', 'GRAPHQL_VALIDATION_FAILED', 'UNAUTHENTICATED', 'OPERATION_RESOLUTION_FAILURE'];

const gqlBody = (input: unknown) => JSON.stringify({ query: DUPLICATE_MUTATION, variables: { input } });

/** Raw bodies that are broken before any field is read: the same on both transports. */
const RAW: { name: string; body: string | Buffer; contentType?: string | null; status: number }[] = [
  { name: 'broken JSON', body: '{"campaign_id": ', status: 400 },
  { name: 'JSON with trailing garbage', body: '{"query": "x"} trailing', status: 400 },
  { name: 'single-quoted JSON', body: "{'campaign_id': 'x'}", status: 400 },
  { name: 'empty body with a JSON content type', body: '', status: 400 },
  { name: 'JSON with a byte-order mark', body: '\ufeff{"campaign_id": "x", "name": "y"}', status: 400 },
  { name: 'invalid UTF-8 bytes', body: Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]), status: 400 },
  { name: 'NaN and Infinity literals', body: '{"campaign_id": NaN, "name": Infinity}', status: 400 },
  { name: 'a JSON comment', body: '{"campaign_id": "x" /* hi */}', status: 400 },
  { name: 'text/plain content type', body: '{"campaign_id": "x"}', contentType: 'text/plain', status: 415 },
  { name: 'form-encoded content type', body: 'campaign_id=x&name=y', contentType: 'application/x-www-form-urlencoded', status: 415 },
  { name: 'multipart content type', body: '--b\r\n\r\nx\r\n--b--', contentType: 'multipart/form-data; boundary=b', status: 415 },
  { name: 'XML content type', body: '<campaign/>', contentType: 'application/xml', status: 415 },
  { name: 'no content type', body: '{"campaign_id": "x"}', contentType: null, status: 415 },
  { name: 'a value nested 20,000 levels deep', body: `{"query": "x", "campaign_id": ${'['.repeat(20_000)}${']'.repeat(20_000)}, "name": "y"}`, status: 400 },
  { name: 'objects nested 5,000 levels deep', body: `{"campaign_id": ${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}, "name": "y"}`, status: 400 },
  { name: 'body over the size limit', body: JSON.stringify({ campaign_id: 'x', name: 'y', pad: 'z'.repeat(70_000) }), status: 413 },
];

/** Bodies that parse but hold the wrong things: REST sends them as the body, GraphQL as $input. */
const FIELDS: { name: string; input: (ws: TestWorkspace) => Record<string, unknown>; graphqlStatus: 200 | 400 }[] = [
  { name: 'campaign id missing', input: () => ({ name: 'Copy' }), graphqlStatus: 400 },
  { name: 'name missing', input: (ws) => ({ campaignId: ws.campaign.id }), graphqlStatus: 400 },
  { name: 'campaign id a number', input: () => ({ campaignId: 12345, name: 'Copy' }), graphqlStatus: 200 },
  { name: 'name a number', input: (ws) => ({ campaignId: ws.campaign.id, name: 42 }), graphqlStatus: 400 },
  { name: 'name a boolean', input: (ws) => ({ campaignId: ws.campaign.id, name: true }), graphqlStatus: 400 },
  { name: 'campaign id an object', input: () => ({ campaignId: { $ne: null }, name: 'Copy' }), graphqlStatus: 400 },
  { name: 'campaign id an array', input: (ws) => ({ campaignId: [ws.campaign.id], name: 'Copy' }), graphqlStatus: 400 },
  { name: 'name an array', input: (ws) => ({ campaignId: ws.campaign.id, name: ['Copy'] }), graphqlStatus: 400 },
  { name: 'name null', input: (ws) => ({ campaignId: ws.campaign.id, name: null }), graphqlStatus: 400 },
  { name: 'campaign id null', input: () => ({ campaignId: null, name: 'Copy' }), graphqlStatus: 400 },
  { name: 'tags an object', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Copy', tagNames: { promo: true } }), graphqlStatus: 400 },
  { name: 'tags of numbers', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Copy', tagNames: [1, 2] }), graphqlStatus: 400 },
  { name: 'tags nested in arrays', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Copy', tagNames: [['promo']] }), graphqlStatus: 400 },
  { name: 'too many tags', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Copy', tagNames: Array.from({ length: 51 }, (_, i) => `t${i}`) }), graphqlStatus: 200 },
  { name: 'an over-long tag', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Copy', tagNames: ['t'.repeat(101)] }), graphqlStatus: 200 },
  { name: 'description a number', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Copy', description: 7 }), graphqlStatus: 400 },
  { name: 'an over-long description', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Copy', description: 'd'.repeat(4097) }), graphqlStatus: 200 },
  { name: 'an over-long name', input: (ws) => ({ campaignId: ws.campaign.id, name: 'n'.repeat(256) }), graphqlStatus: 200 },
  { name: 'an over-long campaign id', input: () => ({ campaignId: 'c'.repeat(129), name: 'Copy' }), graphqlStatus: 200 },
  { name: 'an empty name', input: (ws) => ({ campaignId: ws.campaign.id, name: '' }), graphqlStatus: 200 },
  { name: 'a name of spaces', input: (ws) => ({ campaignId: ws.campaign.id, name: '   \t ' }), graphqlStatus: 200 },
  { name: 'a name of zero-width spaces', input: (ws) => ({ campaignId: ws.campaign.id, name: '\u200b\u200b\ufeff' }), graphqlStatus: 200 },
  { name: 'a name of Hangul fillers', input: (ws) => ({ campaignId: ws.campaign.id, name: '\u3164\u115f\u1160\uffa0' }), graphqlStatus: 200 },
  { name: 'a name of blank Braille patterns', input: (ws) => ({ campaignId: ws.campaign.id, name: '\u2800\u2800' }), graphqlStatus: 200 },
  { name: 'a name of variation selectors and joiners', input: (ws) => ({ campaignId: ws.campaign.id, name: '\ufe0f\u{e0100}\u034f\u17b4' }), graphqlStatus: 200 },
  { name: 'a name of combining marks alone', input: (ws) => ({ campaignId: ws.campaign.id, name: '\u0301\u0308' }), graphqlStatus: 200 },
  { name: 'a name of a null notehead and an object replacement', input: (ws) => ({ campaignId: ws.campaign.id, name: '\u{1d159}\ufffc' }), graphqlStatus: 200 },
  { name: 'a NUL in the name', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Co\u0000py' }), graphqlStatus: 200 },
  { name: 'a NUL in the campaign id', input: (ws) => ({ campaignId: `${ws.campaign.id}\u0000`, name: 'Copy' }), graphqlStatus: 200 },
  { name: 'a bell character in the name', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Copy\u0007' }), graphqlStatus: 200 },
  { name: 'an escape sequence in the name', input: (ws) => ({ campaignId: ws.campaign.id, name: '\u001b[31mred\u001b[0m' }), graphqlStatus: 200 },
  { name: 'a C1 control in the name', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Copy\u0085' }), graphqlStatus: 200 },
  { name: 'a NUL in the description', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Copy', description: 'a\u0000b' }), graphqlStatus: 200 },
  { name: 'a lone high surrogate in the name', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Copy \ud800' }), graphqlStatus: 200 },
  { name: 'a lone low surrogate in a tag', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Copy', tagNames: ['\udc00promo'] }), graphqlStatus: 200 },
  { name: 'a right-to-left override in the name', input: (ws) => ({ campaignId: ws.campaign.id, name: 'invoice\u202egnp.exe' }), graphqlStatus: 200 },
  { name: 'a bidi isolate in a tag', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Copy', tagNames: ['\u2066promo\u2069'] }), graphqlStatus: 200 },
  { name: 'a line separator in the name', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Copy\u2028two' }), graphqlStatus: 200 },
  { name: 'SQL in the campaign id', input: () => ({ campaignId: "' OR 1=1; DROP TABLE jobs; --", name: 'Copy' }), graphqlStatus: 200 },
  { name: 'SQL in a tag', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Copy', tagNames: ["promo' OR '1'='1"] }), graphqlStatus: 200 },
  { name: '__proto__ as a tag', input: (ws) => ({ campaignId: ws.campaign.id, name: 'Copy', tagNames: ['__proto__'] }), graphqlStatus: 200 },
  { name: 'constructor as the campaign id', input: () => ({ campaignId: 'constructor', name: 'Copy' }), graphqlStatus: 200 },
];

const REST_FIELD_NAMES: Record<string, string> = { campaignId: 'campaign_id', tagNames: 'tag_names' };
const restBody = (input: Record<string, unknown>) =>
  JSON.stringify(Object.fromEntries(Object.entries(input).map(([field, value]) => [REST_FIELD_NAMES[field] ?? field, value])));

/** Authorization headers that must all be refused with 401, before anything else is looked at. */
const AUTH: { name: string; headers: (key: string) => Record<string, string> | string[] }[] = [
  { name: 'no Authorization header', headers: () => ({}) },
  { name: 'an empty Bearer', headers: () => ({ authorization: 'Bearer' }) },
  { name: 'Bearer and spaces only', headers: () => ({ authorization: 'Bearer    ' }) },
  { name: 'an empty Authorization header', headers: () => ({ authorization: '' }) },
  { name: 'the Basic scheme', headers: (key) => ({ authorization: `Basic ${Buffer.from(`${key}:`).toString('base64')}` }) },
  { name: 'the key without a scheme', headers: (key) => ({ authorization: key }) },
  { name: 'another scheme name', headers: (key) => ({ authorization: `Token ${key}` }) },
  { name: 'a tab instead of a space', headers: (key) => ({ authorization: `Bearer\t${key}` }) },
  { name: 'a second credential after the key', headers: (key) => ({ authorization: `Bearer ${key} ${key}` }) },
  { name: 'the key in lower case', headers: (key) => ({ authorization: `Bearer ${key.toLowerCase()}` }) },
  { name: 'the key with one character more', headers: (key) => ({ authorization: `Bearer ${key}x` }) },
  // A key whose checksum is `zz` already (one in 3,844) would be sent unchanged.
  { name: 'a mangled checksum', headers: (key) => ({ authorization: `Bearer ${key.slice(0, -2)}${key.endsWith('zz') ? 'yy' : 'zz'}` }) },
  { name: 'a SQL-looking key', headers: () => ({ authorization: "Bearer cgw_' OR '1'='1" }) },
  { name: 'an 8 KB key', headers: () => ({ authorization: `Bearer cgw_${'a'.repeat(8000)}` }) },
  { name: 'two Authorization headers, the valid one first', headers: (key) => ['authorization', `Bearer ${key}`, 'authorization', 'Bearer cgw_other'] },
  { name: 'two Authorization headers, the valid one second', headers: (key) => ['authorization', 'Bearer cgw_other', 'authorization', `Bearer ${key}`] },
  { name: 'two identical Authorization headers', headers: (key) => ['authorization', `Bearer ${key}`, 'authorization', `Bearer ${key}`] },
];

/** GraphQL requests that are malformed as GraphQL requests. */
const GRAPHQL_ONLY: HostileCase[] = ([
  { name: 'a batched (array) request', body: () => JSON.stringify([{ query: '{ __typename }' }]), status: 400, code: 'BAD_REQUEST' },
  { name: 'query a number', body: () => JSON.stringify({ query: 42 }), status: 400, code: 'BAD_REQUEST' },
  { name: 'query an empty string', body: () => JSON.stringify({ query: '' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'no query at all', body: () => JSON.stringify({ variables: {} }), status: 400, code: 'BAD_REQUEST' },
  { name: 'variables a string', body: () => JSON.stringify({ query: DUPLICATE_MUTATION, variables: 'input' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'variables an array', body: () => JSON.stringify({ query: DUPLICATE_MUTATION, variables: [1] }), status: 400, code: 'BAD_REQUEST' },
  { name: 'operationName a number', body: () => JSON.stringify({ query: DUPLICATE_MUTATION, operationName: 1 }), status: 400, code: 'BAD_REQUEST' },
  { name: 'an unknown operationName', body: () => JSON.stringify({ query: DUPLICATE_MUTATION, operationName: 'Nope' }), status: 400, code: 'OPERATION_RESOLUTION_FAILURE' },
  { name: 'two operations and no operationName', body: () => JSON.stringify({ query: 'query A { __typename } query B { __typename }' }), status: 400, code: 'OPERATION_RESOLUTION_FAILURE' },
  { name: 'an anonymous operation beside a named one', body: () => JSON.stringify({ query: '{ __typename } query B { __typename }' }), status: 400, code: 'GRAPHQL_VALIDATION_FAILED' },
  { name: 'input a string', body: () => gqlBody('campaign'), status: 400, code: 'BAD_USER_INPUT' },
  { name: 'an unknown input field', body: (ws) => gqlBody({ campaignId: ws.campaign.id, name: 'Copy', admin: true }), status: 400, code: 'BAD_USER_INPUT' },
  {
    name: 'a deeply nested variable',
    body: () => `{"query": ${JSON.stringify(DUPLICATE_MUTATION)}, "variables": {"input": {"campaignId": ${'['.repeat(20_000)}${']'.repeat(20_000)}, "name": "y"}}}`,
    status: 400,
    code: 'BAD_USER_INPUT',
  },
  { name: 'a subscription', body: () => JSON.stringify({ query: 'subscription { jobs }' }), status: 400, code: 'GRAPHQL_VALIDATION_FAILED' },
  { name: 'a syntax error', body: () => JSON.stringify({ query: 'mutation { duplicateCampaign(input: {campaignId: "x" name: }) }' }), status: 400, code: 'GRAPHQL_PARSE_FAILED' },
  { name: 'a lone surrogate escape in a string literal', body: () => JSON.stringify({ query: '{ campaign(id: "\\uD800") { id } }' }), status: 400, code: 'GRAPHQL_PARSE_FAILED' },
  { name: 'a NUL in the document', body: () => JSON.stringify({ query: '{ __typename \u0000 }' }), status: 400, code: 'GRAPHQL_PARSE_FAILED' },
  { name: 'a field that does not exist', body: () => JSON.stringify({ query: '{ workspaces { id } }' }), status: 400, code: 'GRAPHQL_VALIDATION_FAILED' },
  {
    name: 'a mutation over GET',
    method: 'GET',
    path: `/graphql?query=${encodeURIComponent('mutation { duplicateCampaign(input: {campaignId: "x", name: "y"}) { job { id } } }')}`,
    headers: (key) => ({ ...bearer(key), 'apollo-require-preflight': 'true' }),
    status: 405,
    code: 'BAD_REQUEST',
  },
  {
    name: 'an invalid date in a filter',
    body: () => JSON.stringify({ query: 'query($since: DateTime) { securityEvents(filter: {since: $since}) { edges { node { id } } } }', variables: { since: '2020-13-45T99:00:00Z' } }),
    status: 400,
    code: 'BAD_USER_INPUT',
  },
  {
    name: 'an empty operationName',
    body: () => JSON.stringify({ query: 'query($id: ID!) { campaign(id: $id) { id } }', variables: null, operationName: '' }),
    status: 400,
    code: 'OPERATION_RESOLUTION_FAILURE',
  },
] as Omit<HostileCase, 'transport'>[]).map((entry) => ({ ...entry, transport: 'GRAPHQL' as const }));

const REST_ONLY: HostileCase[] = ([
  { name: 'a JSON array body', body: () => '[]', status: 400 },
  { name: 'a JSON number body', body: () => '42', status: 400 },
  { name: 'a JSON string body', body: () => '"campaign"', status: 400 },
  { name: 'a JSON null body', body: () => 'null', status: 400 },
  { name: 'an Idempotency-Key with spaces and non-ASCII', headers: (key) => ({ ...json, ...bearer(key), 'idempotency-key': 'clé à moi' }), body: (ws) => restBody({ campaignId: ws.campaign.id, name: 'Copy' }), status: 400 },
  { name: 'an over-long Idempotency-Key', headers: (key) => ({ ...json, ...bearer(key), 'idempotency-key': 'k'.repeat(256) }), body: (ws) => restBody({ campaignId: ws.campaign.id, name: 'Copy' }), status: 400 },
  { name: 'two Idempotency-Key headers', headers: (key) => ['content-type', 'application/json', 'authorization', `Bearer ${key}`, 'idempotency-key', 'a', 'idempotency-key', 'b'], body: (ws) => restBody({ campaignId: ws.campaign.id, name: 'Copy' }), status: 400 },
  { name: 'an unknown route', path: '/campaigns/duplicate/../../admin', body: () => '{}', status: 404 },
  { name: 'GET on the POST route', method: 'GET', body: undefined, status: 405 },
] as Omit<HostileCase, 'transport'>[]).map((entry) => ({ ...entry, transport: 'REST' as const }));

const CATALOGUE: HostileCase[] = [
  ...(['REST', 'GRAPHQL'] as const).flatMap((transport) =>
    RAW.map(({ name, body, contentType, status }): HostileCase => ({
      name,
      transport,
      headers: (key) => ({ ...bearer(key), ...(contentType === null ? {} : { 'content-type': contentType ?? 'application/json' }) }),
      body: () => body,
      status,
    })),
  ),
  ...FIELDS.flatMap(({ name, input, graphqlStatus }): HostileCase[] => [
    { name, transport: 'REST', body: (ws) => restBody(input(ws)), status: 400 },
    // Values the GraphQL types refuse are invalid variables (HTTP 400); the rest reach the service's validation.
    { name, transport: 'GRAPHQL', body: (ws) => gqlBody(input(ws)), status: graphqlStatus, code: 'BAD_USER_INPUT' },
  ]),
  ...AUTH.flatMap(({ name, headers }): HostileCase[] =>
    (['REST', 'GRAPHQL'] as const).map((transport) => ({
      name,
      transport,
      headers: (key) => {
        const auth = headers(key);
        return Array.isArray(auth) ? [...auth, 'content-type', 'application/json'] : { ...json, ...auth };
      },
      body: (ws) => (transport === 'REST' ? restBody({ campaignId: ws.campaign.id, name: 'Copy' }) : gqlBody({ campaignId: ws.campaign.id, name: 'Copy' })),
      status: 401,
      code: 'UNAUTHENTICATED',
    })),
  ),
  ...GRAPHQL_ONLY,
  ...REST_ONLY,
];

describe('hostile input', () => {
  let gw: TestGateway;
  let ws: TestWorkspace;
  const answers: { entry: HostileCase; result: HttpResult }[] = [];

  beforeAll(async () => {
    gw = await startGateway({ DUPLICATE_RATE_LIMIT: '100000', AUTH_FAILURE_LIMIT: '100000' });
    ws = await gw.workspace('hostile');
  });

  afterAll(() => gw.close());

  it('has a catalogue of well over 60 requests', () => {
    expect(CATALOGUE.length).toBeGreaterThan(150);
    expect(new Set(CATALOGUE.map((entry) => `${entry.transport} ${entry.name}`)).size).toBe(CATALOGUE.length);
  });

  it.each(CATALOGUE.map((entry) => ({ ...entry, label: `${entry.transport}: ${entry.name}` })))('$label → $status', async (entry) => {
    const result = await http(gw.baseUrl, entry.method ?? 'POST', entry.path ?? PATH[entry.transport], {
      headers: (entry.headers ?? ((key: string) => ({ ...json, ...bearer(key) })))(ws.key) as Record<string, string>,
      body: entry.body?.(ws),
    });
    answers.push({ entry, result });
    expect(result.status).toBe(entry.status);
    expect(String(result.headers['content-type'])).toMatch(/^application\/json/);
    expect(result.body).toBeTypeOf('object');
    if (entry.transport === 'REST') {
      expect(result.body.message).toBeTypeOf('string');
    } else {
      const codes = result.body.errors.map((error: any) => error.extensions.code);
      expect(codes[0]).toBe(entry.code ?? codes[0]);
      for (const code of codes) expect(CLIENT_CODES).toContain(code);
      expect(result.body.data?.duplicateCampaign ?? null).toBeNull();
    }
    expect(result.text).not.toMatch(/stack|at .*\.(ts|js):\d|internal server error/i);
  });

  it('refuses an over-long body sent in chunks, without a Content-Length', async () => {
    const chunks = Array.from({ length: 40 }, () => Buffer.from('x'.repeat(4096)));
    for (const path of Object.values(PATH)) {
      const response = await request(`${gw.baseUrl}${path}`, {
        method: 'POST',
        headers: { ...json, ...bearer(ws.key) },
        body: Readable.from([Buffer.from('{"pad":"'), ...chunks, Buffer.from('"}')]),
      });
      expect(response.statusCode).toBe(413);
      expect(await response.body.json()).toBeTypeOf('object');
    }
  });

  const malformed = 'Malformed request';
  it.each([
    { name: 'Content-Length and Transfer-Encoding together', raw: 'POST /campaigns/duplicate HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', status: 400, message: malformed, code: 'BAD_USER_INPUT' },
    { name: 'a header name with a space', raw: 'POST /graphql HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n', status: 400, message: malformed, code: 'BAD_USER_INPUT' },
    { name: 'a bare line feed in a header value', raw: 'POST /graphql HTTP/1.1\r\nHost: x\r\nX-A: 1\nX-B: 2\r\n\r\n', status: 400, message: malformed, code: 'BAD_USER_INPUT' },
    { name: 'no Host header', raw: 'POST /campaigns/duplicate HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}', status: 400, message: 'An HTTP/1.1 request must have a Host header', code: 'BAD_USER_INPUT' },
    { name: 'not HTTP at all', raw: '\u0016\u0003\u0001\u0000\u00a5\u0001\u0000\u0000\u00a1\u0003\u0003\r\n\r\n', status: 400, message: malformed, code: 'BAD_USER_INPUT' },
    { name: 'headers over 16 KiB', raw: `GET /duplication_jobs/x HTTP/1.1\r\nHost: x\r\nX-Pad: ${'p'.repeat(17_000)}\r\n\r\n`, status: 431, message: 'Request headers are too large', code: 'HEADERS_TOO_LARGE' },
  ])('answers a malformed HTTP request ($name) with $status, an error body like any other and a request id', async ({ raw, status, message, code }) => {
    const { head, body } = await rawHttp(gw.baseUrl, raw);
    expect(head).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    expect(head).toMatch(/\r\ncontent-type: application\/json; charset=utf-8\r\n/i);
    expect(head).toMatch(/\r\nx-request-id: [0-9a-f-]{36}(\r\n|$)/i);
    expect(JSON.parse(body)).toEqual({ message, code });
  });

  it('answers a URL it cannot decode like any other bad request, without repeating it', async () => {
    const response = await http(gw.baseUrl, 'POST', '/campaigns/duplicate%', { headers: { ...json, ...bearer(ws.key) }, body: '{}' });
    expect(response.status).toBe(400);
    expect(response.body).toEqual({ message: 'Malformed URL', code: 'BAD_USER_INPUT' });
    expect(response.headers['x-request-id']).toBeTypeOf('string');
  });

  it('says an empty body is empty, on both transports', async () => {
    const message = 'Request body is empty; send a JSON object';
    const rest = await http(gw.baseUrl, 'POST', PATH.REST, { headers: { ...json, ...bearer(ws.key) }, body: '' });
    expect(rest.status).toBe(400);
    expect(rest.body).toEqual({ message, code: 'BAD_USER_INPUT' });
    const graphql = await http(gw.baseUrl, 'POST', PATH.GRAPHQL, { headers: { ...json, ...bearer(ws.key) }, body: '' });
    expect(graphql.status).toBe(400);
    expect(graphql.body.errors.map((error: any) => [error.message, error.extensions.code])).toEqual([[message, 'BAD_USER_INPUT']]);
  });

  // Braze's own wording, which Braze client libraries and callers' error handling may match on.
  it.each([
    { name: 'missing', campaignId: undefined },
    { name: 'a number', campaignId: 12345 },
    { name: 'null', campaignId: null },
    { name: 'an array', campaignId: ['x'] },
    { name: 'an object', campaignId: { $ne: null } },
    { name: 'empty', campaignId: '' },
  ])('answers a REST campaign_id that is $name with Braze\'s message', async ({ campaignId }) => {
    const result = await http(gw.baseUrl, 'POST', PATH.REST, { headers: { ...json, ...bearer(ws.key) }, body: restBody({ campaignId, name: 'Copy' }) });
    expect(result.status).toBe(400);
    const braze = "'campaign_id' must be a string of the object api identifier";
    expect(result.body).toEqual({ message: braze, code: 'BAD_USER_INPUT', errors: [braze] });
  });

  it.each([
    { what: 'a name that is a number', fields: { name: 123 }, error: "'name' must be a string" },
    { what: 'a null name', fields: { name: null }, error: "'name' must be a string" },
    { what: 'no name', fields: {}, error: "'name' is required" },
    { what: 'a blank name', fields: { name: '  ' }, error: "'name' must be a non-empty string" },
    { what: 'a description that is a number', fields: { name: 'Copy', description: 1 }, error: "'description' must be a string" },
  ])('says what is wrong with $what: a wrong type is not an empty string', async ({ fields, error }) => {
    const result = await http(gw.baseUrl, 'POST', PATH.REST, { headers: { ...json, ...bearer(ws.key) }, body: JSON.stringify({ campaign_id: ws.campaign.id, ...fields }) });
    expect(result.status).toBe(400);
    expect(result.body.errors).toEqual([error]);
  });

  it.each([
    ['a right-to-left name', 'حملة الترحيب — نسخة'],
    ['emoji with zero-width joiners', '👩‍💻 launch 🚀'],
    ['combining characters, stored composed (NFC)', 'Ünïcödé ñ e\u0301 x\u0301'],
    ['a SQL-looking name', "Robert'); DROP TABLE jobs;--"],
    ['__proto__ as the name', '__proto__'],
    ['a name with quotes and backslashes', 'a "quoted" \\ name'],
  ])('accepts %s as ordinary text and stores it as sent, on both transports', async (_name, name) => {
    for (const body of [restBody({ campaignId: ws.campaign.id, name }), gqlBody({ campaignId: ws.campaign.id, name })]) {
      const path = body.includes('"query"') ? PATH.GRAPHQL : PATH.REST;
      const result = await http(gw.baseUrl, 'POST', path, { headers: { ...json, ...bearer(ws.key) }, body });
      const jobId = result.body.job_id ?? result.body.data?.duplicateCampaign?.job?.id;
      expect(jobId).toBeTypeOf('string');
      expect((await gw.app.store.getJob(ws.workspace.id, jobId))?.name).toBe(name.normalize('NFC'));
    }
  });

  it.each([
    ['bearer in lower case', (key: string) => `bearer ${key}`],
    ['BEARER in upper case', (key: string) => `BEARER ${key}`],
    ['several spaces before the key', (key: string) => `Bearer    ${key}`],
  ])('accepts %s (RFC 7235: the scheme is case-insensitive, 1*SP before the credentials)', async (_name, header) => {
    const rest = await http(gw.baseUrl, 'POST', PATH.REST, { headers: { ...json, authorization: header(ws.key) }, body: restBody({ campaignId: ws.campaign.id, name: 'Copy' }) });
    expect(rest.status).toBe(202);
    const gql = await http(gw.baseUrl, 'POST', PATH.GRAPHQL, { headers: { ...json, authorization: header(ws.key) }, body: gqlBody({ campaignId: ws.campaign.id, name: 'Copy' }) });
    expect(gql.body.data.duplicateCampaign.job.id).toBeTypeOf('string');
  });

  it('ignores unknown fields in a REST body, as Braze does', async () => {
    const result = await http(gw.baseUrl, 'POST', PATH.REST, {
      headers: { ...json, ...bearer(ws.key) },
      body: JSON.stringify({ campaign_id: ws.campaign.id, name: 'Copy', workspace_id: 'other', status: 'succeeded', constructor: 'x' }),
    });
    expect(result.status).toBe(202);
    const job = await gw.app.store.getJob(ws.workspace.id, result.body.job_id);
    expect(job).toMatchObject({ workspaceId: ws.workspace.id, status: expect.stringMatching(/PENDING|RUNNING|SUCCEEDED/) });
  });

  it('is still up, and left nothing half-written: every job has its event and nothing refused was stored', async () => {
    expect(answers.length).toBe(CATALOGUE.length);
    expect((await http(gw.baseUrl, 'GET', '/healthz')).status).toBe(200);
    const refusedJobIds = answers.map(({ result }) => result.body?.job_id ?? result.body?.data?.duplicateCampaign?.job?.id).filter(Boolean);
    expect(refusedJobIds).toEqual([]);
    await assertStoreConsistent(gw);
  });
});

describe('slow senders', () => {
  let gw: TestGateway;
  let ws: TestWorkspace;

  const logs = recordingLogger();

  beforeAll(async () => {
    gw = await startGateway({ REQUEST_TIMEOUT_SECONDS: '1' }, { logger: logs.logger });
    ws = await gw.workspace('slow');
  });

  afterAll(() => gw.close());

  it.each([
    {
      part: 'body',
      head: () => `POST /campaigns/duplicate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer ${ws.key}\r\nContent-Length: 1000\r\n\r\n{`,
      drip: ' ',
      // Its head was read: it is logged as every request is, under its own id.
      logged: { msg: 'request completed', res: { statusCode: 408 } },
    },
    { part: 'headers', head: () => 'POST /campaigns/duplicate HTTP/1.1\r\nHost: x\r\n', drip: 'X-Drip: 1\r\n', logged: { msg: 'request timed out before it arrived in full' } },
  ])('answers 408 and hangs up when the $part of a request keeps trickling in past REQUEST_TIMEOUT_SECONDS', async ({ head, drip, logged }) => {
    const connection = rawConnection(gw.baseUrl);
    connection.send(head());
    // A few bytes now and then, as a slow sender keeps a connection from looking idle; then nothing, so that
    // no unread byte turns the gateway's close into a reset that could overtake its answer.
    let drips = 3;
    const dripping = setInterval(() => (drips-- > 0 ? connection.send(drip) : clearInterval(dripping)), 150);
    const { head: answerHead, body } = await connection.answer.finally(() => clearInterval(dripping));
    expect(answerHead).toMatch(/^HTTP\/1\.1 408 /);
    expect(JSON.parse(body)).toEqual({ message: 'Request timeout', code: 'REQUEST_TIMEOUT' });
    const requestId = /^x-request-id: (.+)$/im.exec(answerHead)?.[1];
    const line = await waitFor(async () => logs.lines.map((text) => JSON.parse(text)).find((entry) => entry.reqId === requestId && entry.msg === logged.msg));
    expect(line).toMatchObject({ level: 30, code: 'ERR_HTTP_REQUEST_TIMEOUT', ...logged });
  });

  it('answers a request refused before its body has arrived once: no 408 follows when the rest never comes', async () => {
    const connection = rawConnection(gw.baseUrl);
    connection.send('POST /campaigns/duplicate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{');
    const { head, body } = await connection.answer;
    expect(head).toMatch(/^HTTP\/1\.1 401 /);
    expect(JSON.parse(body)).toEqual({ message: 'Invalid API key', code: 'UNAUTHENTICATED' });
  });

  it('answers a job being accepted before the 408 of the request pipelined after it, which stopped arriving', async () => {
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const gateway = await startGateway({ REQUEST_TIMEOUT_SECONDS: '1', WORKER_CONCURRENCY: '0' }, {}, { wrapStore: (store) => storeHeldOn(store, ['enqueueJob'], () => held) });
    try {
      const team = await gateway.workspace('held');
      const timedOut = new Promise((resolve) => gateway.app.http.server.once('clientError', resolve));
      const answer = pipelinedAfterADuplicate(gateway.baseUrl, team, 'held-job', 'POST /campaigns/duplicate HTTP/1.1\r\nHost: x\r\n');
      // The next request's head times out while the job is still being written.
      expect(await timedOut).toMatchObject({ code: 'ERR_HTTP_REQUEST_TIMEOUT' });
      release();
      const [accepted, refused] = (await answer).split(/(?=HTTP\/1\.1 )/);
      expect(accepted).toMatch(/^HTTP\/1\.1 202 [\s\S]*\r\nx-request-id: held-job\r\n/i);
      expect(refused).toMatch(/^HTTP\/1\.1 408 /);
      expect(await gateway.app.store.listJobs({ workspaceId: team.workspace.id }, 10, null)).toHaveLength(1);
    } finally {
      release();
      await gateway.close();
    }
  });

  it('keeps the connection of a request whose body had arrived, whatever the answer', async () => {
    const client = new Client(gw.baseUrl);
    let connections = 0;
    client.on('connect', () => (connections += 1));
    try {
      const statuses = [];
      for (const [method, path, body] of [['GET', '/no-such-route'], ['POST', PATH.REST, '{}'], ['GET', '/healthz']]) {
        const response = await client.request({ method: method as 'GET' | 'POST', path, body, headers: json });
        await response.body.dump();
        statuses.push(response.statusCode);
      }
      expect(statuses).toEqual([404, 401, 200]);
      expect(connections).toBe(1);
    } finally {
      await client.close();
    }
  });
});

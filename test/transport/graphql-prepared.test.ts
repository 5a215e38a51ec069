import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApolloServer, type ApolloServerPlugin } from '@apollo/server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStore } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { systemClock } from '../../src/domain/ports.js';
import { graphQLErrorFormatter } from '../../src/graphql/apollo.js';
import { createContext, type GraphQLContext } from '../../src/graphql/context.js';
import { DOCUMENT_CACHE_BYTES } from '../../src/graphql/document-cache.js';
import { OperationLimits } from '../../src/graphql/limits.js';
import { PreparedOperations } from '../../src/graphql/prepared.js';
import { gatewaySchema } from '../../src/graphql/schema.js';
import { DependencyRefusals } from '../../src/http/dependency-refusals.js';
import { bearer, http, json, metricSample, recordingLogger, startGateway, storeFailingOn, waitFor, type HttpResult, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { DUPLICATE_MUTATION, rest } from '../support/transports.js';

/**
 * Prepared operations (src/graphql/prepared.ts): the same request sent twice, first answered by Apollo (which
 * prepares the operation), then without it, must get the same answer byte for byte. Every case has a query
 * text of its own (a comment names it), so its first request is always Apollo's.
 */

let gw: TestGateway;
let failing = false;
const logs = recordingLogger();
const dir = mkdtempSync(join(tmpdir(), 'cgw-prepared-'));

beforeAll(async () => {
  const env = { DATA_DIR: dir, DUPLICATE_RATE_LIMIT: '3', DUPLICATE_RATE_WINDOW_SECONDS: '3600', GRAPHQL_MAX_COST: '1000' };
  const store = await createStore(loadConfig(env), { olderSchema: 'upgrade' });
  const broken = storeFailingOn(store, ['listEvents'], () => failing);
  gw = await startGateway(env, { store: broken, logger: logs.logger });
});

afterAll(async () => {
  await gw?.close();
  rmSync(dir, { recursive: true, force: true });
});

interface Sent {
  headers: Record<string, string>;
  body: string;
  method?: 'GET' | 'POST';
  path?: string;
}

const post = (key: string | null, query: string, variables?: unknown, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}): Sent => ({
  headers: { ...json, ...(key ? bearer(key) : {}), ...headers },
  body: JSON.stringify({ query, variables, ...extra }),
});

/** A query text of its own for each case. */
const named = (query: string, label: string) => `${query}\n# ${label}`;

const duplicate = (ws: TestWorkspace, label: string, input: Record<string, unknown> = {}, key: string | null = ws.key, job = 'id status name tagNames channel') =>
  post(key, named(DUPLICATE_MUTATION.replace('job { id status }', `job { ${job} }`), label), {
    input: { campaignId: ws.campaign.id, name: 'Copy of welcome', ...input },
  });

const metrics = async () => (await http(gw.baseUrl, 'GET', '/metrics')).text;

async function paths(): Promise<Record<string, number>> {
  const text = await metrics();
  const count = (path: string) => metricSample(text, 'gateway_graphql_requests_total', { path }) ?? Number.NaN;
  return { prepared: count('prepared'), apollo: count('apollo') };
}

let sequence = 0;

/** Both requests of a case, with one request id (so INTERNAL_SERVER_ERROR answers can match), and the paths that answered them. */
async function twice(first: Sent, second: Sent = first) {
  const requestId = `prepared-${++sequence}`;
  const before = await paths();
  const send = ({ method = 'POST', path = '/graphql', headers, body }: Sent) =>
    http(gw.baseUrl, method, path, { headers: { ...headers, 'x-request-id': requestId }, body: method === 'GET' ? undefined : body });
  const answers = [await send(first), await send(second)] as const;
  const after = await paths();
  return { answers, requestId, taken: { prepared: after.prepared - before.prepared, apollo: after.apollo - before.apollo } };
}

const NEW_JOB = /"id":"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}"/g;
/** Headers that count seconds: two requests may straddle a second. */
const SECONDS = ['x-ratelimit-reset', 'retry-after'];

function expectSameAnswer(first: HttpResult, second: HttpResult, options: { newJob?: boolean; takesPoint?: boolean } = {}) {
  expect(second.status).toBe(first.status);
  const text = (answer: HttpResult) => (options.newJob ? answer.text.replace(NEW_JOB, '"id":"<new job>"') : answer.text);
  expect(text(second)).toBe(text(first));
  for (const name of ['content-type', 'content-length', 'cache-control', 'x-ratelimit-limit', 'x-request-id', 'www-authenticate']) {
    expect(second.headers[name], name).toBe(first.headers[name]);
  }
  if (first.headers['x-ratelimit-remaining'] === undefined) expect(second.headers['x-ratelimit-remaining']).toBeUndefined();
  else expect(Number(second.headers['x-ratelimit-remaining'])).toBe(Number(first.headers['x-ratelimit-remaining']) - (options.takesPoint ? 1 : 0));
  for (const name of SECONDS) {
    expect(second.headers[name] === undefined, name).toBe(first.headers[name] === undefined);
    if (first.headers[name] !== undefined) expect(Math.abs(Number(second.headers[name]) - Number(first.headers[name])), name).toBeLessThanOrEqual(1);
  }
}

/** Quota points of the workspace spent over REST, leaving `left`. */
async function spend(ws: TestWorkspace, left: number) {
  for (let index = 0; index < 3 - left; index += 1) {
    expect((await rest.duplicate(gw.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'spent' })).status).toBe(202);
  }
}

const errorsOf = (answer: HttpResult) => (answer.body.errors ?? []).map((error: any) => error.extensions.code);

/** What the GraphQL-over-HTTP spec's own media type asks for: with it, data present and not null means a 2xx. */
const GRAPHQL_RESPONSE = { accept: 'application/graphql-response+json' };
const accepting = (sent: Sent, headers: Record<string, string> = GRAPHQL_RESPONSE): Sent => ({ ...sent, headers: { ...sent.headers, ...headers } });

const errorCount = async (code: string) => metricSample(await metrics(), 'gateway_graphql_errors_total', { code }) ?? 0;

describe('prepared GraphQL operations answer exactly as Apollo does', () => {
  it('an accepted mutation', async () => {
    const ws = await gw.workspace();
    const { answers, taken } = await twice(duplicate(ws, 'accepted'));
    expect(taken).toEqual({ apollo: 1, prepared: 1 });
    expect(answers[0].status).toBe(200);
    expect(answers[1].body.data.duplicateCampaign.job).toMatchObject({ status: 'PENDING', name: 'Copy of welcome', channel: 'GRAPHQL' });
    expect(answers[1].body.data.duplicateCampaign.job.id).not.toBe(answers[0].body.data.duplicateCampaign.job.id);
    expectSameAnswer(...answers, { newJob: true, takesPoint: true });
    expect(answers[1].text.endsWith('}\n')).toBe(true);
    const job = await gw.app.store.getJob(ws.workspace.id, answers[1].body.data.duplicateCampaign.job.id);
    expect(job).toMatchObject({ channel: 'GRAPHQL', sourceCampaignId: ws.campaign.id });
  });

  it('an accepted mutation repeated with its idempotency key: the same job, no second point', async () => {
    const ws = await gw.workspace();
    // Not the status: the worker may have run the job by the second request.
    const { answers, taken } = await twice(duplicate(ws, 'idempotent', { idempotencyKey: 'prepared-1' }, ws.key, 'id name channel'));
    expect(taken).toEqual({ apollo: 1, prepared: 1 });
    expect(answers[1].text).toBe(answers[0].text);
    expectSameAnswer(...answers);
  });

  it.each([
    ['no key', null, 401],
    ['a key nobody issued', 'cgw_0000000000000000000000000000000000000A', 401],
  ])('%s: 401 with WWW-Authenticate, the refusal once and no data', async (label, key, status) => {
    const ws = await gw.workspace();
    const { answers, taken } = await twice(accepting(duplicate(ws, label, {}, key)));
    // A key that is refused is refused before the body is read, by neither path.
    expect(taken).toEqual(key === null ? { apollo: 1, prepared: 1 } : { apollo: 0, prepared: 0 });
    expect(answers[0].status).toBe(status);
    expect(answers[0].headers['www-authenticate']).toBe('Bearer');
    expect(answers[0].body).toEqual({ errors: [{ message: 'Invalid API key', extensions: { code: 'UNAUTHENTICATED' } }] });
    // Byte for byte Apollo's, whether Apollo or the refusal before the body made it.
    expect(answers[0].text).toBe(`${JSON.stringify(answers[0].body)}\n`);
    expectSameAnswer(...answers);
  });

  it('no key for three root fields: one error for the request, not one per field, counted once', async () => {
    const query = named('{ a: duplicationJob(id: "a") { id } b: duplicationJob(id: "b") { id } __typename }', 'three fields');
    const before = await errorCount('UNAUTHENTICATED');
    const { answers, taken } = await twice(accepting(post(null, query)));
    expect(taken).toEqual({ apollo: 1, prepared: 1 });
    expect(answers[0].status).toBe(401);
    expect(answers[0].body).toEqual({ errors: [{ message: 'Invalid API key', extensions: { code: 'UNAUTHENTICATED' } }] });
    expectSameAnswer(...answers);
    expect((await errorCount('UNAUTHENTICATED')) - before).toBe(2);
  });

  it('a key without the permission: FORBIDDEN, and PERMISSION_DENIED recorded each time', async () => {
    const ws = await gw.workspace();
    const { key, keyId } = await ws.addKey(['campaigns.list']);
    const { answers, taken } = await twice(duplicate(ws, 'forbidden', {}, key));
    expect(taken).toEqual({ apollo: 1, prepared: 1 });
    expect(answers[0].status).toBe(200);
    expect(errorsOf(answers[0])).toEqual(['FORBIDDEN']);
    expect(answers[0].headers['x-ratelimit-remaining']).toBe('3');
    expectSameAnswer(...answers);
    const denied = await gw.app.store.listEvents(ws.workspace.id, { apiKeyId: keyId, types: ['PERMISSION_DENIED'] }, { first: 10 });
    expect(denied.map((event) => event.channel)).toEqual(['GRAPHQL', 'GRAPHQL']);
  });

  it.each([
    ['one field', 'duplicateCampaign', [['duplicateCampaign']]],
    ['two aliased fields', 'a: duplicateCampaign(input: $input) { job { id } } b: duplicateCampaign', [['a'], ['b']]],
  ])("every root field rate limited (%s): 429 with Retry-After, each field's error and no data", async (label, fields, paths) => {
    const ws = await gw.workspace();
    await spend(ws, 0);
    const query = named(DUPLICATE_MUTATION.replace('duplicateCampaign', fields), `limited ${label}`);
    const { answers, taken } = await twice(accepting(post(ws.key, query, { input: { campaignId: ws.campaign.id, name: 'limited' } })));
    expect(taken).toEqual({ apollo: 1, prepared: 1 });
    expect(answers[0].status).toBe(429);
    expect(Number(answers[0].headers['retry-after'])).toBeGreaterThan(0);
    expect(Object.keys(answers[0].body)).toEqual(['errors']);
    expect(answers[0].body.errors.map((error: any) => [error.path, error.extensions.code, error.message])).toEqual(
      paths.map((path) => [path, 'RATE_LIMITED', 'Rate limit exceeded']),
    );
    expectSameAnswer(...answers);
  });

  it('one of two aliased fields rate limited: 200 with the job and the error', async () => {
    // Two workspaces with one point left each: the second request must meet the quota the first one met.
    const [one, two] = [await gw.workspace(), await gw.workspace()];
    await spend(one, 1);
    await spend(two, 1);
    const query = named(
      'mutation Two($input: DuplicateCampaignInput!) { a: duplicateCampaign(input: $input) { job { id } } b: duplicateCampaign(input: $input) { job { id } } }',
      'aliases',
    );
    const sent = (ws: TestWorkspace) => post(ws.key, query, { input: { campaignId: ws.campaign.id, name: 'two' } });
    const { answers, taken } = await twice(sent(one), sent(two));
    expect(taken).toEqual({ apollo: 1, prepared: 1 });
    expect(answers[0].status).toBe(200);
    expect(errorsOf(answers[1])).toEqual(['RATE_LIMITED']);
    expect(answers[1].body.data.a.job.id).toEqual(expect.any(String));
    expect(answers[1].body.data.b).toBeNull();
    expectSameAnswer(...answers, { newJob: true });
  });

  it.each([
    ['invalid input', { name: '   ', tagNames: ['promo', 'no-such-tag'] }, /'name'/],
    ['a campaign that does not exist', { campaignId: '00000000-0000-4000-8000-000000000000' }, /Invalid Campaign ID/],
  ])('%s: BAD_USER_INPUT naming the problem', async (label, input, message) => {
    const ws = await gw.workspace();
    const { answers, taken } = await twice(duplicate(ws, label, input));
    expect(taken).toEqual({ apollo: 1, prepared: 1 });
    expect(answers[0].status).toBe(200);
    expect(errorsOf(answers[0])).toEqual(['BAD_USER_INPUT']);
    expect(answers[0].body.errors[0].message).toMatch(message);
    expectSameAnswer(...answers, { takesPoint: true });
  });

  it('securityEvents of a finished job, and a page of events by operation name', async () => {
    const ws = await gw.workspace();
    const { jobId } = await rest.duplicate(gw.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'polled' });
    await waitFor(async () => (await gw.app.store.getJob(ws.workspace.id, jobId!))?.status === 'SUCCEEDED');
    const poll = 'query Poll($job: ID!) { securityEvents(filter: {jobId: $job}) { edges { node { id type occurredAt details job { status resultCampaignId } } } pageInfo { hasNextPage } } }';
    const polled = await twice(post(ws.key, poll, { job: jobId }));
    expect(polled.taken).toEqual({ apollo: 1, prepared: 1 });
    expect(polled.answers[0].body.data.securityEvents.edges).toHaveLength(2);
    expectSameAnswer(...polled.answers);

    const page = 'query Other { __typename } query Page { securityEvents(first: 1) { edges { cursor node { id type channel apiKey { id name } } } pageInfo { hasNextPage endCursor } } }';
    const paged = await twice(post(ws.key, page, undefined, { operationName: 'Page' }));
    expect(paged.taken).toEqual({ apollo: 1, prepared: 1 });
    expect(paged.answers[0].body.data.securityEvents.pageInfo.hasNextPage).toBe(true);
    expectSameAnswer(...paged.answers);
    // The other operation of the same text is an operation of its own.
    const other = await twice(post(ws.key, page, undefined, { operationName: 'Other' }));
    expect(other.taken).toEqual({ apollo: 1, prepared: 1 });
    expect(other.answers[0].body).toEqual({ data: { __typename: 'Query' } });
  });

  it('an internal error: INTERNAL_SERVER_ERROR with the request id, logged both times', async () => {
    const ws = await gw.workspace();
    failing = true;
    try {
      const { answers, taken, requestId } = await twice(post(ws.key, named('{ securityEvents { edges { node { id } } } }', 'internal')));
      expect(taken).toEqual({ apollo: 1, prepared: 1 });
      expect(answers[0].body.errors).toEqual([
        { message: 'Internal server error', locations: [{ line: 1, column: 3 }], path: ['securityEvents'], extensions: { code: 'INTERNAL_SERVER_ERROR', reason: 'INTERNAL', requestId } },
      ]);
      expectSameAnswer(...answers);
      const logged = logs.lines.map((line) => JSON.parse(line)).filter((line) => line.reqId === requestId && line.msg === 'unexpected error in a GraphQL request');
      expect(logged.map((line) => [line.level, line.err.message])).toEqual([
        [50, 'disk /var/secret/gateway.db exploded'],
        [50, 'disk /var/secret/gateway.db exploded'],
      ]);
    } finally {
      failing = false;
    }
  });

  it.each([
    ['letters', 'x'],
    ['emoji, two UTF-16 units each', '😀'],
  ])('a message past 1,000 characters, quoting 12 unknown tags of 99 %s: cut to 1,000 code points both times', async (_label, letter) => {
    const ws = await gw.workspace();
    const tagNames = Array.from({ length: 12 }, (_, index) => `${index}`.padStart(2, '0') + letter.repeat(97));
    const { answers, taken } = await twice(duplicate(ws, `long message ${letter}`, { tagNames }));
    expect(taken).toEqual({ apollo: 1, prepared: 1 });
    const [message] = answers[0].body.errors.map((error: { message: string }) => error.message);
    expect(message.startsWith("Invalid request: 'tagNames' contains unknown tag '00")).toBe(true);
    expect([...message]).toHaveLength(1000);
    expect(message.isWellFormed()).toBe(true);
    expect(message.endsWith('…')).toBe(true);
    expect(answers[0].body.errors[0].extensions.issues).toHaveLength(12);
    expectSameAnswer(...answers, { takesPoint: true });
  });

  it.each([
    [undefined, 'application/json; charset=utf-8'],
    ['*/*', 'application/json; charset=utf-8'],
    ['application/json', 'application/json; charset=utf-8'],
    ['application/json, text/plain, */*', 'application/json; charset=utf-8'],
    // GraphiQL's: multipart/mixed is for incremental delivery, which no operation here uses.
    ['application/json, multipart/mixed', 'application/json; charset=utf-8'],
    ['application/graphql-response+json', 'application/graphql-response+json; charset=utf-8'],
    ['application/graphql-response+json, application/json', 'application/graphql-response+json; charset=utf-8'],
    ['application/graphql-response+json,application/json;q=0.9', 'application/graphql-response+json; charset=utf-8'],
  ])('Accept %s: %s', async (accept, contentType) => {
    const ws = await gw.workspace();
    const headers: Record<string, string> = accept === undefined ? {} : { accept };
    const { answers, taken } = await twice(post(ws.key, named('{ campaigns(first: 1) { edges { node { id name } } } }', `accept ${accept}`), undefined, {}, headers));
    expect(taken).toEqual({ apollo: 1, prepared: 1 });
    expect(answers[0].headers['content-type']).toBe(contentType);
    expectSameAnswer(...answers);
  });

  it.each([
    ["Apollo Client 4's", { clientLibrary: { name: '@apollo/client', version: '4.0.7' } }],
    ['empty', {}],
    ['null', null],
  ])('%s extensions, which change nothing that runs', async (label, extensions) => {
    const ws = await gw.workspace();
    const { answers, taken } = await twice(post(ws.key, named('{ campaigns(first: 1) { edges { node { id name } } } }', `extensions ${label}`), undefined, { extensions }));
    expect(taken).toEqual({ apollo: 1, prepared: 1 });
    expect(answers[0].body.data.campaigns.edges).toHaveLength(1);
    expectSameAnswer(...answers);
  });

  it("Apollo Client 4's request, as it sends one, for its mutation", async () => {
    const ws = await gw.workspace();
    const sent = duplicate(ws, 'apollo client 4');
    const body = { ...JSON.parse(sent.body), operationName: 'Duplicate', extensions: { clientLibrary: { name: '@apollo/client', version: '4.0.7' } } };
    const headers = { ...sent.headers, accept: 'application/graphql-response+json,application/json;q=0.9', 'apollographql-client-name': 'ui', 'apollographql-client-version': '1' };
    const { answers, taken } = await twice({ headers, body: JSON.stringify(body) });
    expect(taken).toEqual({ apollo: 1, prepared: 1 });
    expect(answers[0].headers['content-type']).toBe('application/graphql-response+json; charset=utf-8');
    expectSameAnswer(...answers, { newJob: true, takesPoint: true });
  });
});

describe('what prepared operations leave to Apollo', () => {
  it('variables that do not fit a prepared operation: Apollo words the refusal', async () => {
    const ws = await gw.workspace();
    const label = 'bad variables';
    expect((await twice(duplicate(ws, label))).taken).toEqual({ apollo: 1, prepared: 1 });
    const bad = post(ws.key, named(DUPLICATE_MUTATION.replace('job { id status }', 'job { id status name tagNames channel }'), label), {
      input: { name: 'no campaign id' },
    });
    const { answers, taken } = await twice(bad);
    expect(taken).toEqual({ apollo: 2, prepared: 0 });
    expect(answers[0].status).toBe(400);
    expect(errorsOf(answers[0])).toEqual(['BAD_USER_INPUT']);
    expectSameAnswer(...answers);
  });

  it('documents that fail validation or the cost limit, and costs that depend on variables, are never prepared', async () => {
    const ws = await gw.workspace();
    for (const [query, variables, status] of [
      ['{ securityEvents { nope } }', undefined, 400],
      ['{ securityEvents(first: 200) { edges { cursor node { id type channel } } } }', undefined, 400],
      ['query($n: Int!) { securityEvents(first: $n) { edges { node { id } } } }', { n: 2 }, 200],
      ['query($all: Boolean!) { campaigns(first: 1) @include(if: $all) { edges { node { id } } } }', { all: true }, 200],
    ] as const) {
      const { answers, taken } = await twice(post(ws.key, query, variables));
      expect(taken, query).toEqual({ apollo: 2, prepared: 0 });
      expect(answers[0].status, query).toBe(status);
      expectSameAnswer(...answers);
    }
  });

  it('other methods, content types, Accept headers and extensions', async () => {
    const ws = await gw.workspace();
    const query = named('{ campaigns(first: 1) { edges { node { id } } } }', 'unusual');
    expect((await twice(post(ws.key, query))).taken).toEqual({ apollo: 1, prepared: 1 });
    for (const sent of [
      post(ws.key, query, undefined, {}, { accept: 'text/html' }),
      post(ws.key, query, undefined, {}, { accept: 'application/json;q=0.5, application/graphql-response+json' }),
      post(ws.key, query, undefined, {}, { 'content-type': 'application/json; charset=UTF-8' }),
      post(ws.key, query, undefined, { extensions: { persistedQuery: { version: 1, sha256Hash: createHash('sha256').update(query).digest('hex') } } }),
      post(ws.key, query, undefined, { extensions: { persistedQuery: null } }),
      post(ws.key, query, undefined, { extensions: [] }),
      post(ws.key, query, undefined, { extensions: 'clientLibrary' }),
      post(ws.key, query, 'not an object' as unknown),
      { ...post(ws.key, query), method: 'GET' as const, path: `/graphql?query=${encodeURIComponent(query)}`, headers: { ...bearer(ws.key), 'apollo-require-preflight': 'true' } },
    ]) {
      const { answers, taken } = await twice(sent);
      expect(taken, JSON.stringify(sent.headers)).toEqual({ apollo: 2, prepared: 0 });
      expectSameAnswer(...answers);
    }
  });

  it('neither, for a Host header that is no host name: a 400 in the GraphQL error shape, nothing logged as ours', async () => {
    const ws = await gw.workspace();
    const query = named('{ campaigns(first: 1) { edges { node { id } } } }', 'bad host');
    const { answers, requestId, taken } = await twice(post(ws.key, query, undefined, {}, { host: 'no such host' }));
    expect(taken).toEqual({ apollo: 0, prepared: 0 });
    for (const answer of answers) {
      expect(answer.status).toBe(400);
      expect(answer.body).toEqual({ errors: [{ message: 'The Host header is not a valid host name', extensions: { code: 'BAD_USER_INPUT' } }] });
    }
    expect(logs.lines.filter((line) => line.includes(requestId) && /"level":50/.test(line))).toEqual([]);
  });
});

describe('once Apollo has stopped', () => {
  /*
   * Over HTTP no request gets here once Apollo has stopped: fastify stops listening and waits for every
   * connection first. The operations prepared must still never outlive the Apollo that accepted them.
   */
  it('answers no operation itself, not even one Apollo was still running as it stopped: Apollo refuses them all', async () => {
    const schema = await gatewaySchema();
    const limits = new OperationLimits(schema, {
      maxDepth: gw.config.graphqlMaxDepth,
      maxCost: gw.config.graphqlMaxCost,
      maxAliases: gw.config.graphqlMaxAliases,
      maxDuplicatesPerOperation: gw.config.graphqlMaxDuplicatesPerOperation,
    });
    const log = gw.app.http.log;
    const prepared = new PreparedOperations(schema, limits, log, new DependencyRefusals(log, systemClock), graphQLErrorFormatter(false), () => {});
    // Holds a request before Apollo has run anything of it, while the test says so.
    let hold: Promise<void> | undefined;
    let held = false;
    const holding: ApolloServerPlugin<GraphQLContext> = {
      requestDidStart: async () => {
        held = true;
        await hold;
        return {};
      },
    };
    const apollo = new ApolloServer<GraphQLContext>({ schema, plugins: [holding, limits.plugin(), prepared.plugin()] });
    await apollo.start();
    const ws = await gw.workspace();
    const query = '{ viewer { workspaceId } }';
    const context = () => createContext(gw.app.service, { authorization: `Bearer ${ws.key}`, ip: '127.0.0.1', channel: 'GRAPHQL', requestId: 'stopped-apollo' });
    const run = () => apollo.executeOperation({ query }, { contextValue: context() });
    const request = { method: 'POST', headers: json, body: { query } };
    const answered = { body: { kind: 'single', singleResult: { data: { viewer: { workspaceId: ws.workspace.id } } } } };

    expect(await run()).toMatchObject(answered);
    expect(JSON.parse((await prepared.answer(request, context))!.body)).toEqual(answered.body.singleResult);

    let release!: () => void;
    hold = new Promise<void>((resolve) => (release = resolve));
    held = false;
    const inFlight = run();
    await waitFor(async () => held);
    await apollo.stop();
    release();
    // Accepted before the stop, it is answered, and so prepared again: not for any request after it.
    expect(await inFlight).toMatchObject(answered);
    expect(await prepared.answer(request, context)).toBeUndefined();
    await expect(run()).rejects.toThrow(/stopped/);
  });
});

describe('the document caches', () => {
  /** Distinct valid documents near the 2,000-token limit, from 5 KB of text: half a megabyte of heap each, 1 MB accounted. */
  const spreads = (index: number) => `query Flood${index} { ${'...F '.repeat(980)}} fragment F on Query { __typename }`;
  /** The same past 8,192 characters: Apollo keeps it, prepared operations leave it to Apollo. */
  const padded = (index: number) => `${spreads(index)}\n#${' '.repeat(8200 - spreads(index).length)}`;
  const ROUNDS = 20;

  async function cacheBytes(): Promise<Record<'apollo' | 'prepared', number | undefined>> {
    const text = await metrics();
    const bytes = (cache: string) => metricSample(text, 'gateway_graphql_document_cache_bytes', { cache });
    return { apollo: bytes('apollo'), prepared: bytes('prepared') };
  }

  it('many distinct large documents without a key: each cache stays within its budget, the least recently used evicted, the operation in use kept', async () => {
    const ws = await gw.workspace();
    const inUse = post(ws.key, named('{ campaigns(first: 1) { edges { node { id name } } } }', 'in use'));
    expect((await twice(inUse)).taken).toEqual({ apollo: 1, prepared: 1 });
    for (let index = 0; index < ROUNDS; index += 1) {
      for (const query of [spreads(index), padded(index)]) {
        const answer = await http(gw.baseUrl, 'POST', '/graphql', post(null, query));
        expect(answer.status).toBe(200);
        expect(answer.body).toEqual({ data: { __typename: 'Query' } });
      }
      expect((await twice(inUse)).taken).toEqual({ apollo: 0, prepared: 2 });
    }

    // Evicted least recently used first: the latest documents are still prepared, the first ones no longer.
    expect((await twice(post(null, spreads(ROUNDS - 1)))).taken).toEqual({ apollo: 0, prepared: 2 });
    expect((await twice(post(null, spreads(0)))).taken).toEqual({ apollo: 1, prepared: 1 });
    const bytes = await cacheBytes();
    for (const cache of ['apollo', 'prepared'] as const) {
      expect(bytes[cache], cache).toBeLessThanOrEqual(DOCUMENT_CACHE_BYTES);
      // Full to within one document: every document kept is accounted for.
      expect(bytes[cache], cache).toBeGreaterThan(DOCUMENT_CACHE_BYTES * 0.9);
    }
    expect((await twice(inUse)).taken).toEqual({ apollo: 0, prepared: 2 });
  });
});

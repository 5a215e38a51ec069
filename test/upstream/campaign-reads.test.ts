import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UPSTREAM_READS_SPENT_MESSAGE } from '../../src/adapters/braze-campaign-reader.js';
import { sampleCampaigns, startFakeBraze, type FakeBraze, type FakeReply } from '../support/fake-braze.js';
import { graphql, startGateway, type TestGateway, type TestWorkspace } from '../support/gateway.js';

const UPSTREAM_KEY = 'braze-upstream-key-reads-8c41b0';
const LIST = 'GET /campaigns/list';
const DETAILS = 'GET /campaigns/details';

const CAMPAIGNS = `query ($first: Int, $after: String) {
  campaigns(first: $first, after: $after) { edges { cursor node { id name tagNames updatedAt } } pageInfo { hasNextPage endCursor } }
}`;
const CAMPAIGN = `query ($id: ID!) { campaign(id: $id) { id name description tagNames draft createdAt updatedAt duplicatedFrom } }`;

describe('upstream mode: campaigns and campaign read through to the upstream', () => {
  let fake: FakeBraze;
  let gateway: TestGateway;
  let ws: TestWorkspace;

  beforeAll(async () => {
    fake = await startFakeBraze(UPSTREAM_KEY, sampleCampaigns(150));
    gateway = await startGateway({ UPSTREAM_URL: fake.url, UPSTREAM_API_KEY: UPSTREAM_KEY, UPSTREAM_TIMEOUT_MS: '300' });
    ws = await gateway.workspace();
  });
  afterAll(async () => {
    await gateway?.close();
    await fake?.close();
  });

  it("pages through the upstream's 100-campaign pages, newest first, with the upstream key", async () => {
    const before = fake.requestsTo(LIST).length;
    const first = await graphql(gateway.baseUrl, ws.key, CAMPAIGNS, { first: 120 });
    expect(first.body.errors).toBeUndefined();
    const page = first.body.data.campaigns;
    expect(page.edges).toHaveLength(120);
    expect(page.edges[0].node).toEqual({ id: 'cmp-0150', name: 'Campaign 150', tagNames: [], updatedAt: '2030-01-01T02:29:00.000Z' });
    expect(page.edges[119].node.id).toBe('cmp-0031');
    expect(page.pageInfo.hasNextPage).toBe(true);

    const calls = fake.requestsTo(LIST).slice(before);
    expect(calls.map((call) => call.query)).toEqual([
      { page: '0', sort_direction: 'desc' },
      { page: '1', sort_direction: 'desc' },
    ]);
    expect(calls.every((call) => call.headers.authorization === `Bearer ${UPSTREAM_KEY}`)).toBe(true);

    const rest = await graphql(gateway.baseUrl, ws.key, CAMPAIGNS, { first: 50, after: page.pageInfo.endCursor });
    const tail = rest.body.data.campaigns;
    expect(tail.edges.map((edge: { node: { id: string } }) => edge.node.id)).toEqual(
      Array.from({ length: 30 }, (_, index) => `cmp-${String(30 - index).padStart(4, '0')}`),
    );
    expect(tail.pageInfo.hasNextPage).toBe(false);
    expect(tail.edges[2].node).toMatchObject({ id: 'cmp-0028', tagNames: ['promo'] });
  });

  it("maps the upstream's details; an id the upstream does not know is null", async () => {
    const found = await graphql(gateway.baseUrl, ws.key, CAMPAIGN, { id: 'cmp-0001' });
    expect(found.body.data.campaign).toEqual({
      id: 'cmp-0001',
      name: 'Campaign 1',
      description: 'Description 1',
      tagNames: ['promo'],
      draft: false,
      createdAt: '2030-01-01T00:00:00.000Z',
      updatedAt: '2030-01-01T00:00:00.000Z',
      duplicatedFrom: null,
    });
    expect(fake.requestsTo(DETAILS).at(-1)?.query).toEqual({ campaign_id: 'cmp-0001' });
    const draft = await graphql(gateway.baseUrl, ws.key, CAMPAIGN, { id: 'cmp-0002' });
    expect(draft.body.data.campaign).toMatchObject({ description: null, draft: true, tagNames: [] });

    const missing = await graphql(gateway.baseUrl, ws.key, CAMPAIGN, { id: 'nope' });
    expect(missing.body).toEqual({ data: { campaign: null } });
  });

  /** An error's GraphQL code, and REST's code as `reason` where GraphQL names it otherwise. */
  type Codes = { code: string; reason?: string };
  const UNAVAILABLE: Codes = { code: 'SERVICE_UNAVAILABLE', reason: 'UNAVAILABLE' };
  const UPSTREAM_ERROR: Codes = { code: 'UPSTREAM_ERROR' };

  it.each<[string, FakeReply, Codes, string, number | undefined]>([
    ['a 500', { status: 500, json: { message: 'Internal Server Error' } }, UNAVAILABLE, 'The upstream answered 500: Internal Server Error', undefined],
    ['a 503 with a non-JSON body', { status: 503, raw: '<html>down</html>' }, UNAVAILABLE, 'The upstream answered 503 with an HTML page (text/html) without a title', undefined],
    ['a 429', { status: 429, json: { message: 'Rate limit exceeded' }, headers: { 'retry-after': '5' } }, UNAVAILABLE, 'The upstream answered 429: Rate limit exceeded', 5],
    ['a slow upstream', { status: 200, json: { message: 'success' }, delayMs: 10_000 }, UNAVAILABLE, 'The upstream did not answer within 300 ms', undefined],
    ['a dropped connection', { drop: true }, UNAVAILABLE, 'The connection to the upstream failed', undefined],
    ['a 401 for the gateway', { status: 401, json: { message: `Invalid API key ${UPSTREAM_KEY}` } }, UPSTREAM_ERROR, 'The upstream answered 401: Invalid API key [redacted]', undefined],
    ['a 200 that is not JSON', { status: 200, raw: 'hello', headers: { 'content-type': 'text/plain' } }, UPSTREAM_ERROR, 'The upstream returned campaign details the gateway cannot read', undefined],
    ['a 200 web page', { status: 200, raw: '<html>hello</html>' }, UPSTREAM_ERROR, "The upstream answered 200 with an HTML page, not Braze's API", undefined],
  ])('%s reaches the caller as a clear GraphQL error, never a hang or internals', async (_, reply, codes, message, retryAfterSeconds) => {
    fake.script(DETAILS, reply);
    const response = await graphql(gateway.baseUrl, ws.key, CAMPAIGN, { id: 'cmp-0001' });
    expect(response.status).toBe(200);
    expect(response.body.data).toEqual({ campaign: null });
    expect(response.body.errors).toEqual([
      {
        message,
        locations: expect.any(Array),
        path: ['campaign'],
        extensions: { ...codes, ...(retryAfterSeconds === undefined ? {} : { retryAfterSeconds }) },
      },
    ]);
    expect(response.text).not.toContain(UPSTREAM_KEY);
  });

  it('a failing list page fails the whole list with the same mapping', async () => {
    fake.script(LIST, { status: 502, json: { message: 'Bad Gateway' } });
    const response = await graphql(gateway.baseUrl, ws.key, CAMPAIGNS, { first: 10 });
    expect(response.body.errors[0]).toMatchObject({ message: 'The upstream answered 502: Bad Gateway', extensions: { code: 'SERVICE_UNAVAILABLE' } });
  });

  it('still checks the caller: no campaigns.details, no upstream call', async () => {
    const { key } = await ws.addKey(['campaigns.duplicate']);
    const before = fake.requests.length;
    const response = await graphql(gateway.baseUrl, key, CAMPAIGN, { id: 'cmp-0001' });
    expect(response.body.errors[0].extensions.code).toBe('FORBIDDEN');
    expect(fake.requests).toHaveLength(before);
  });

  it('passes on no upstream text that holds the upstream key: a campaign echoing it reads [redacted]', async () => {
    const echo = `sent with ${UPSTREAM_KEY}`;
    fake.script(DETAILS, {
      status: 200,
      json: { message: 'success', name: echo, description: echo, tags: [echo, 'promo'], draft: false, created_at: '2030-01-01T00:00:00Z', updated_at: '2030-01-01T00:00:00Z' },
    });
    const details = await graphql(gateway.baseUrl, ws.key, CAMPAIGN, { id: 'cmp-0001' });
    expect(details.body.data.campaign).toMatchObject({ name: 'sent with [redacted]', description: 'sent with [redacted]', tagNames: ['sent with [redacted]', 'promo'] });
    fake.script(LIST, { status: 200, json: { message: 'success', campaigns: [{ id: 'cmp-9', name: echo, tags: [echo], last_edited: '2030-01-01T00:00:00Z' }] } });
    const list = await graphql(gateway.baseUrl, ws.key, CAMPAIGNS, { first: 1 });
    expect(list.body.data.campaigns.edges[0].node).toMatchObject({ id: 'cmp-9', name: 'sent with [redacted]', tagNames: ['sent with [redacted]'] });
    expect(details.text + list.text).not.toContain(UPSTREAM_KEY);
  });
});

const TEST_REDIS_URL = process.env.TEST_REDIS_URL;

// The limiter backend the budget is counted on: the embedded default, and Redis, shared by instances (a missing one fails under CI).
const readBackends = ([
  { backend: 'memory', env: {}, missing: false },
  { backend: 'Redis', env: { REDIS_URL: TEST_REDIS_URL ?? '' }, missing: !TEST_REDIS_URL },
] as { backend: string; env: Record<string, string>; missing: boolean }[]).filter(({ missing }) => !missing || process.env.CI);

describe.each(readBackends)('upstream mode: each workspace has its own budget of upstream reads ($backend)', ({ env, missing }) => {
  const BUDGET = 4;
  let fake: FakeBraze;
  let gateway: TestGateway;

  beforeAll(async () => {
    if (missing) throw new Error('TEST_REDIS_URL is not set');
    fake = await startFakeBraze(UPSTREAM_KEY, sampleCampaigns(150));
    gateway = await startGateway({ UPSTREAM_URL: fake.url, UPSTREAM_API_KEY: UPSTREAM_KEY, UPSTREAM_READ_RATE_LIMIT: String(BUDGET), ...env });
  });
  afterAll(async () => {
    await gateway?.close();
    await fake?.close();
  });

  const aliased = (count: number) => `{ ${Array.from({ length: count }, (_, index) => `c${index}: campaign(id: "cmp-0001") { id }`).join(' ')} }`;

  it('refuses the aliased reads past the budget as RATE_LIMITED, which never reach the upstream', async () => {
    const ws = await gateway.workspace();
    const before = fake.requestsTo(DETAILS).length;
    const response = await graphql(gateway.baseUrl, ws.key, aliased(BUDGET + 3));
    expect(response.status).toBe(200);
    expect(fake.requestsTo(DETAILS).length - before).toBe(BUDGET);
    const answered = Object.values(response.body.data).filter((campaign) => campaign !== null);
    expect(answered).toEqual(Array.from({ length: BUDGET }, () => ({ id: 'cmp-0001' })));
    expect(response.body.errors).toHaveLength(3);
    for (const error of response.body.errors) {
      expect(error).toMatchObject({ message: UPSTREAM_READS_SPENT_MESSAGE, extensions: { code: 'RATE_LIMITED', retryAfterSeconds: expect.any(Number) } });
      expect(response.body.data[error.path[0]]).toBeNull();
    }

    // Every field refused: the request is, as a spent quota's is.
    const refused = await graphql(gateway.baseUrl, ws.key, CAMPAIGN, { id: 'cmp-0001' });
    expect(refused.status).toBe(429);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(refused.body.errors[0].extensions.code).toBe('RATE_LIMITED');
    expect(fake.requestsTo(DETAILS).length - before).toBe(BUDGET);

    // The duplication quota is another budget, untouched.
    const quota = await graphql(gateway.baseUrl, ws.key, '{ viewer { duplicationQuota { remaining } } }');
    expect(quota.body.data.viewer.duplicationQuota.remaining).toBe(gateway.config.duplicateRateLimit);
  });

  it("counts every page of a list, and leaves another workspace's reads alone", async () => {
    const spender = await gateway.workspace();
    const other = await gateway.workspace();
    const before = fake.requests.length;
    // Each list of 120 reads two upstream pages: five reads asked for, one over.
    const response = await graphql(gateway.baseUrl, spender.key, `{ a: campaigns(first: 120) { edges { cursor } } b: campaigns(first: 120) { edges { cursor } } c: campaign(id: "cmp-0002") { id } }`);
    expect(fake.requests.length - before).toBe(BUDGET);
    expect(response.body.errors).toEqual([expect.objectContaining({ extensions: expect.objectContaining({ code: 'RATE_LIMITED' }) })]);

    const unaffected = await graphql(gateway.baseUrl, other.key, aliased(BUDGET));
    expect(unaffected.status).toBe(200);
    expect(unaffected.body.errors).toBeUndefined();
    expect(Object.values(unaffected.body.data)).toEqual(Array.from({ length: BUDGET }, () => ({ id: 'cmp-0001' })));
  });
});

// What Braze's list leaves out.
const DETAIL_FIELDS = 'description draft createdAt';
// Created a day before their last edit, so that a creation time taken from the edit shows.
const listedCampaigns = (count: number) =>
  sampleCampaigns(count).map((campaign) => ({ ...campaign, created_at: new Date(Date.parse(campaign.updated_at) - 86_400_000).toISOString() }));
const LIST_WITH_DETAILS = `query ($first: Int) {
  campaigns(first: $first) { edges { node { id name description tagNames draft createdAt updatedAt duplicatedFrom } } }
}`;

interface ListedNode {
  id: string;
  [field: string]: unknown;
}
const nodesOf = (response: { body: { data: { campaigns: { edges: { node: ListedNode }[] } } } }) =>
  response.body.data.campaigns.edges.map((edge) => edge.node);

describe("upstream mode: a list entry's fields the upstream's list leaves out come from the campaign's details", () => {
  const BUDGET = 6;
  let fake: FakeBraze;
  let gateway: TestGateway;

  beforeAll(async () => {
    fake = await startFakeBraze(UPSTREAM_KEY, listedCampaigns(8));
    gateway = await startGateway({ UPSTREAM_URL: fake.url, UPSTREAM_API_KEY: UPSTREAM_KEY, UPSTREAM_READ_RATE_LIMIT: String(BUDGET) });
  });
  afterAll(async () => {
    await gateway?.close();
    await fake?.close();
  });

  it('answers each entry as campaign(id) answers it, to a key that may only list', async () => {
    const ws = await gateway.workspace();
    const { key } = await ws.addKey(['campaigns.list']);
    const list = await graphql(gateway.baseUrl, key, LIST_WITH_DETAILS, { first: 4 });
    expect(list.body.errors).toBeUndefined();
    const nodes = nodesOf(list);
    expect(nodes.map((node) => node.id)).toEqual(['cmp-0008', 'cmp-0007', 'cmp-0006', 'cmp-0005']);
    // campaign(id) read by another workspace, whose budget is its own.
    const other = await gateway.workspace();
    for (const node of nodes) {
      const single = await graphql(gateway.baseUrl, other.key, CAMPAIGN, { id: node.id });
      expect(node).toEqual(single.body.data.campaign);
    }
    // Both kinds of entry are in the page: with and without a description, drafts and not.
    expect(new Set(nodes.map((node) => node.draft))).toEqual(new Set([true, false]));
    expect(nodes.some((node) => node.description === null)).toBe(true);
  });

  it('reads no details for a list that does not select those fields', async () => {
    const ws = await gateway.workspace();
    const before = fake.requests.length;
    const list = await graphql(gateway.baseUrl, ws.key, CAMPAIGNS, { first: 8 });
    expect(list.body.errors).toBeUndefined();
    expect(list.body.data.campaigns.edges).toHaveLength(8);
    // The list took one read of the budget, no more: the rest is there for campaign fields, which the answer
    // to this request follows, so that a details read the list had started in the background would show.
    const fields = await graphql(gateway.baseUrl, ws.key, `{ ${Array.from({ length: BUDGET }, (_, index) => `c${index}: campaign(id: "cmp-0001") { id }`).join(' ')} }`);
    expect(fields.body.errors).toEqual([expect.objectContaining({ extensions: expect.objectContaining({ code: 'RATE_LIMITED' }) })]);
    expect(fake.requests.slice(before).map((request) => request.path)).toEqual(['/campaigns/list', ...Array<string>(BUDGET - 1).fill('/campaigns/details')]);
  });

  it('reads the details of a campaign once per request, however many entries and fields ask', async () => {
    const ws = await gateway.workspace();
    const before = fake.requestsTo(DETAILS).length;
    const response = await graphql(
      gateway.baseUrl,
      ws.key,
      `{ a: campaigns(first: 2) { edges { node { id ${DETAIL_FIELDS} } } } b: campaigns(first: 2) { edges { node { id description again: draft } } } }`,
    );
    expect(response.body.errors).toBeUndefined();
    expect(response.body.data.a.edges).toHaveLength(2);
    const asked = fake.requestsTo(DETAILS).slice(before).map((request) => request.query.campaign_id);
    expect(asked.sort()).toEqual(['cmp-0007', 'cmp-0008']);
  });

  it("refuses at its own path a field whose details read is past the budget or fails, and answers the rest", async () => {
    const ws = await gateway.workspace();
    const before = fake.requests.length;
    // One read for the list, then one per entry: two entries past the budget.
    const response = await graphql(gateway.baseUrl, ws.key, `{ campaigns(first: ${BUDGET + 1}) { edges { node { id name draft description } } } }`);
    expect(response.status).toBe(200);
    expect(fake.requests.length - before).toBe(BUDGET);
    const nodes = nodesOf(response);
    expect(nodes).toHaveLength(BUDGET + 1);
    const refused = nodes.filter((node) => node.draft === null);
    expect(refused).toHaveLength(2);
    for (const node of refused) {
      expect(node).toEqual({ id: node.id, name: expect.stringMatching(/^Campaign /), draft: null, description: null });
    }
    expect(response.body.errors).toHaveLength(4);
    for (const error of response.body.errors) {
      expect(error).toMatchObject({ message: UPSTREAM_READS_SPENT_MESSAGE, extensions: { code: 'RATE_LIMITED', retryAfterSeconds: expect.any(Number) } });
      const [root, edges, index, node, field] = error.path;
      expect([root, edges, node]).toEqual(['campaigns', 'edges', 'node']);
      expect(refused).toContain(nodes[index]);
      expect(['draft', 'description']).toContain(field);
    }

    const fresh = await gateway.workspace();
    fake.script(DETAILS, { status: 500, json: { message: 'Internal Server Error' } });
    const failing = await graphql(gateway.baseUrl, fresh.key, `{ campaigns(first: 2) { edges { node { id createdAt } } } }`);
    expect(failing.status).toBe(200);
    expect(failing.body.errors).toEqual([
      {
        message: 'The upstream answered 500: Internal Server Error',
        locations: expect.any(Array),
        path: ['campaigns', 'edges', expect.any(Number), 'node', 'createdAt'],
        extensions: { code: 'SERVICE_UNAVAILABLE', reason: 'UNAVAILABLE' },
      },
    ]);
    expect(nodesOf(failing).filter((node) => node.createdAt === null)).toHaveLength(1);
    expect(nodesOf(failing).map((node) => node.id)).toEqual(['cmp-0008', 'cmp-0007']);

    // Deleted upstream between the list and its details: no value to answer with.
    fake.script(DETAILS, { status: 400, json: { message: 'Invalid campaign_id' } });
    const deleted = await graphql(gateway.baseUrl, fresh.key, `{ campaigns(first: 1) { edges { node { id description } } } }`);
    expect(deleted.body).toEqual({
      data: { campaigns: { edges: [{ node: { id: 'cmp-0008', description: null } }] } },
      errors: [expect.objectContaining({ message: 'The upstream no longer has campaign cmp-0008', path: ['campaigns', 'edges', 0, 'node', 'description'], extensions: { code: 'UPSTREAM_ERROR' } })],
    });
  });
});

import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kind, parse, print, visit, type OperationDefinitionNode } from 'graphql';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { DEFAULT_READ_BUDGET_PER_MINUTE, JOB_READ_COST } from '../../src/domain/read-budget.js';
import type { GatewayStore } from '../../src/domain/ports.js';
import { estimatedCost } from '../../src/graphql/limits.js';
import { gatewaySchema } from '../../src/graphql/schema.js';
import { bearer, graphql, http, metricSample, scrape, startGateway, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { createTestDatabase, skipWithoutPostgres } from '../support/postgres.js';
import { JOB_QUERY, transports } from '../support/transports.js';
import type { PostgresStore } from '../../src/adapters/postgres/store.js';

const README = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const schema = await gatewaySchema();
/** A query's estimated cost; the queries here take ids alone, which no estimate reads. */
const costOf = (query: string): number => {
  const document = parse(query);
  const operation = document.definitions[0] as OperationDefinitionNode;
  const ids = Object.fromEntries((operation.variableDefinitions ?? []).map((definition) => [definition.variable.name.value, randomUUID()]));
  return estimatedCost(schema, document, operation, ids);
};

/** What REST's job read answers, asked of GraphQL: the fields of GET /duplication_jobs/{id}. */
const JOB_AS_REST_ANSWERS = `query ($id: ID!) { duplicationJob(id: $id) {
  id status sourceCampaignId name description tagNames keepsSourceTags channel apiKey { id } attempts
  createdAt updatedAt finishedAt resultCampaignId error { code message } pollAfterSeconds
} }`;

describe("the README's read budget", () => {
  const section = README.slice(README.indexOf('### Read budget'), README.indexOf('### Idempotency'));
  const rows = new Map(
    [...section.matchAll(/^\| (.+?) \| ([\d,]+) \| ([\d,]+) \|$/gm)].map((row) => [row[1], { cost: Number(row[2].replace(/,/g, '')), perMinute: Number(row[3].replace(/,/g, '')) }]),
  );
  const poll = /Poll until an event[\s\S]*?```graphql\n([\s\S]*?)```/.exec(README)?.[1] ?? '';

  it('gives each read the cost the gateway estimates for it, and how many of them the default budget takes a minute', () => {
    expect(poll).toContain('securityEvents(filter: {jobId: $job}, first: 2)');
    const estimated = [
      costOf(poll),
      costOf(poll.replace('securityEvents(filter: {jobId: $job}, first: 2)', 'securityEvents(filter: {jobId: $job})')),
      costOf('query ($job: ID!) { duplicationJob(id: $job) { status pollAfterSeconds } }'),
      JOB_READ_COST,
      loadConfig({}).graphqlMaxCost,
    ];
    expect([...rows.values()].map((row) => row.cost)).toEqual(estimated);
    for (const row of rows.values()) expect(row.perMinute).toBe(Math.floor(DEFAULT_READ_BUDGET_PER_MINUTE / row.cost));
    expect(README).toMatch(new RegExp(`\\| \`READ_BUDGET_PER_MINUTE\` \\| \`${DEFAULT_READ_BUDGET_PER_MINUTE}\``));
  });

  it("gives the job poll's cost as Apollo Client sends it, a __typename in every selection set below the root", () => {
    const withTypenames = (query: string) =>
      print(
        visit(parse(query), {
          SelectionSet: (set, _key, parent) =>
            (parent as { kind?: string }).kind === Kind.OPERATION_DEFINITION
              ? undefined
              : { ...set, selections: [...set.selections, { kind: Kind.FIELD, name: { kind: Kind.NAME, value: '__typename' } }] },
        }),
      );
    const pagedPoll = poll.replace('securityEvents(filter: {jobId: $job}, first: 2)', 'securityEvents(filter: {jobId: $job})');
    const [asSent, pageAsSent] = [costOf(withTypenames(poll)), costOf(withTypenames(pagedPoll))];
    expect(section).toContain(`the job poll above costs ${asSent}\nas Apollo Client sends it, ${pageAsSent.toLocaleString('en-US')} without its \`first: 2\``);
  });

  it("charges a REST job read what GraphQL's duplicationJob asking for the same fields costs", () => {
    expect(JOB_READ_COST).toBe(costOf(JOB_AS_REST_ANSWERS));
  });
});

/** A budget of 100 and queries of at most 100: a few reads spend it. */
const BUDGET = 100;
const budgetEnv = { READ_BUDGET_PER_MINUTE: String(BUDGET), GRAPHQL_MAX_COST: String(BUDGET) };

describe.each(transports)('a workspace past its read budget, $name', (transport) => {
  let gw: TestGateway;
  let ws: TestWorkspace;
  let neighbour: TestWorkspace;
  let jobId: string;
  const cost = transport.name === 'REST' ? JOB_READ_COST : costOf(JOB_QUERY);

  beforeAll(async () => {
    gw = await startGateway(budgetEnv);
    ws = await gw.workspace();
    neighbour = await gw.workspace();
    const accepted = await transport.duplicate(gw.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'read budget' });
    jobId = accepted.jobId!;
  });

  afterAll(async () => {
    await gw?.close();
  });

  it('answers reads until their costs would pass the budget, then refuses them with Retry-After until the minute ends', async () => {
    const allowed = Math.floor(BUDGET / cost);
    for (let read = 1; read <= allowed; read += 1) {
      expect({ read, job: (await transport.job(gw.baseUrl, ws.key, jobId)).job?.id }).toEqual({ read, job: jobId });
    }
    const refused = await transport.job(gw.baseUrl, ws.key, jobId);
    expect(refused).toMatchObject({ status: 429, code: 'RATE_LIMITED', restCode: 'READ_BUDGET_EXCEEDED', job: null });
    const retryAfter = Number(refused.response.headers['retry-after']);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    if (transport.name === 'GRAPHQL') {
      expect(refused.response.body.errors).toEqual([
        expect.objectContaining({ path: ['duplicationJob'], extensions: { code: 'RATE_LIMITED', reason: 'READ_BUDGET_EXCEEDED', retryAfterSeconds: retryAfter } }),
      ]);
    } else {
      expect(refused.response.body).toEqual({ message: 'Read budget exceeded; retry later', code: 'READ_BUDGET_EXCEEDED' });
    }
    expect(metricSample(await scrape(gw), 'gateway_read_budget_refusals_total', { channel: transport.name })).toBe(1);
  });

  it('charges a read whatever it is answered: a job that does not exist costs what one that does costs', async () => {
    const other = await gw.workspace();
    const allowed = Math.floor(BUDGET / cost);
    for (let read = 1; read <= allowed; read += 1) expect((await transport.job(gw.baseUrl, other.key, randomUUID())).job).toBeNull();
    expect(await transport.job(gw.baseUrl, other.key, randomUUID())).toMatchObject({ status: 429, restCode: 'READ_BUDGET_EXCEEDED' });
  });

  it("leaves the workspace's duplications, and another workspace's reads, as they were", async () => {
    expect((await transport.duplicate(gw.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'still accepted' })).jobId).toEqual(expect.any(String));
    const theirs = await transport.duplicate(gw.baseUrl, neighbour.key, { campaignId: neighbour.campaign.id, name: 'neighbour' });
    expect((await transport.job(gw.baseUrl, neighbour.key, theirs.jobId!)).job?.id).toBe(theirs.jobId);
  });
});

/** One query for each root query field, with what it needs: the test fails when a field is added without one. */
const ROOT_QUERIES: Record<string, (ws: TestWorkspace, jobId: string) => [string, Record<string, unknown>?]> = {
  campaign: (ws) => ['query ($id: ID!) { campaign(id: $id) { id } }', { id: ws.campaign.id }],
  campaigns: () => ['{ campaigns(first: 1) { edges { node { id } } } }'],
  duplicationJob: (_, jobId) => ['query ($id: ID!) { duplicationJob(id: $id) { id } }', { id: jobId }],
  securityEvents: (_, jobId) => ['query ($job: ID!) { securityEvents(filter: {jobId: $job}, first: 2) { edges { node { id } } } }', { job: jobId }],
  viewer: () => ['{ viewer { workspaceId duplicationQuota { remaining } } }'],
};

/** Counts the store's reads a query's fields make. */
function countingReads(store: GatewayStore, counted: { reads: number }): GatewayStore {
  const reads = new Set<string>(['getJob', 'getJobs', 'listEvents', 'listCampaigns', 'getCampaign']);
  return new Proxy(store, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (typeof property !== 'string' || !reads.has(property) || typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        counted.reads += 1;
        return value.apply(target, args);
      };
    },
  });
}

describe('every root query field', () => {
  let gw: TestGateway;
  const counted = { reads: 0 };

  beforeAll(async () => {
    // No worker: its runs read the store too.
    gw = await startGateway({ ...budgetEnv, WORKER_CONCURRENCY: '0' }, {}, { wrapStore: (store) => countingReads(store, counted) });
  });

  afterAll(async () => {
    await gw?.close();
  });

  it('is covered here', () => {
    expect(Object.keys(ROOT_QUERIES).sort()).toEqual(Object.keys(schema.getQueryType()!.getFields()).sort());
  });

  it.each(Object.keys(ROOT_QUERIES))('%s is refused once its workspace has spent the budget, before it reads anything', async (field) => {
    const ws = await gw.workspace();
    const accepted = await transports[1].duplicate(gw.baseUrl, ws.key, { campaignId: ws.campaign.id, name: field });
    const [query, variables] = ROOT_QUERIES[field](ws, accepted.jobId!);
    expect((await graphql(gw.baseUrl, ws.key, query, variables)).body).toMatchObject({ data: { [field]: expect.anything() } });
    // What the answered query left, spent.
    const principal = await gw.app.service.authenticate({ authorization: `Bearer ${ws.key}`, ip: '127.0.0.1', channel: 'GRAPHQL', requestId: field });
    await gw.app.service.takeReadBudget(principal, BUDGET - costOf(query));

    const readsBefore = counted.reads;
    const refused = await graphql(gw.baseUrl, ws.key, query, variables);
    expect(refused.status).toBe(429);
    expect(refused.body).toEqual({ errors: [expect.objectContaining({ path: [field], extensions: expect.objectContaining({ code: 'RATE_LIMITED', reason: 'READ_BUDGET_EXCEEDED' }) })] });
    expect(counted.reads).toBe(readsBefore);
  });

  it('is charged once per query, however many root fields it has', async () => {
    const ws = await gw.workspace();
    const query = '{ a: viewer { workspaceId } b: viewer { workspaceId } c: viewer { workspaceId } }';
    // Each alias costs 2: three of them 6, which a budget charged per field would take three times.
    expect(costOf(query)).toBe(6);
    const answered = [];
    for (let request = 0; request < 20; request += 1) answered.push((await graphql(gw.baseUrl, ws.key, query)).status);
    expect(answered).toEqual(Array.from({ length: 20 }, (_, index) => (index < Math.floor(BUDGET / 6) ? 200 : 429)));
  });
});

describe('what a read spends', () => {
  let gw: TestGateway;
  let ws: TestWorkspace;
  const cheap = '{ viewer { workspaceId } }';

  beforeAll(async () => {
    gw = await startGateway({ ...budgetEnv, WORKER_CONCURRENCY: '0' });
  });

  beforeEach(async () => {
    ws = await gw.workspace();
  });

  afterAll(async () => {
    await gw?.close();
  });

  /** How many of the cheap query the workspace is still answered, up to the whole budget's worth and one more. */
  const cheapLeft = async (): Promise<number> => {
    for (let answered = 0; answered <= BUDGET / costOf(cheap); answered += 1) {
      if ((await graphql(gw.baseUrl, ws.key, cheap)).status !== 200) return answered;
    }
    return Infinity;
  };

  it('takes the same cost from a GET as from a POST', async () => {
    const url = `/graphql?query=${encodeURIComponent(cheap)}`;
    const statuses = [];
    for (let request = 0; request < 10; request += 1) {
      statuses.push((await http(gw.baseUrl, 'GET', url, { headers: { ...bearer(ws.key), 'apollo-require-preflight': 'true' } })).status);
    }
    expect(statuses).toEqual(Array.from({ length: 10 }, () => 200));
    expect(await cheapLeft()).toBe(BUDGET / costOf(cheap) - 10);
  });

  it('takes nothing for a query refused for its cost, nor for duplications', async () => {
    const tooCostly = '{ securityEvents(first: 200) { edges { node { id type } } } }';
    expect(costOf(tooCostly)).toBeGreaterThan(BUDGET);
    for (let request = 0; request < 5; request += 1) expect((await graphql(gw.baseUrl, ws.key, tooCostly)).status).toBe(400);
    for (let request = 0; request < 5; request += 1) {
      expect((await transports[1].duplicate(gw.baseUrl, ws.key, { campaignId: ws.campaign.id, name: `copy ${request}` })).jobId).toEqual(expect.any(String));
    }
    expect(await cheapLeft()).toBe(BUDGET / costOf(cheap));
  });

  it('takes nothing for a query it refuses, so that a smaller one still fits what is left', async () => {
    const costly = '{ securityEvents(first: 11) { edges { node { id type occurredAt } } } }';
    expect(costOf(costly)).toBeGreaterThan(BUDGET / 2);
    expect((await graphql(gw.baseUrl, ws.key, costly)).status).toBe(200);
    expect((await graphql(gw.baseUrl, ws.key, costly)).status).toBe(429);
    expect(await cheapLeft()).toBe(Math.floor((BUDGET - costOf(costly)) / costOf(cheap)));
  });

  it('answers 200 when a field that reads nothing still has its answer beside the refused ones', async () => {
    for (let request = 0; request < BUDGET / costOf(cheap); request += 1) await graphql(gw.baseUrl, ws.key, cheap);
    const answer = await graphql(gw.baseUrl, ws.key, '{ __typename viewer { workspaceId } }');
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ data: { __typename: 'Query', viewer: null }, errors: [{ path: ['viewer'], extensions: { reason: 'READ_BUDGET_EXCEEDED' } }] });
  });
});

describe('no read budget', () => {
  it('answers every read when READ_BUDGET_PER_MINUTE is 0', async () => {
    const gw = await startGateway({ READ_BUDGET_PER_MINUTE: '0', GRAPHQL_MAX_COST: String(BUDGET) });
    try {
      const ws = await gw.workspace();
      const statuses = new Set<number>();
      for (let request = 0; request < 3 * BUDGET; request += 1) statuses.add((await graphql(gw.baseUrl, ws.key, '{ viewer { workspaceId } }')).status);
      expect([...statuses]).toEqual([200]);
    } finally {
      await gw.close();
    }
  });
});

describe.skipIf(skipWithoutPostgres)('two instances on one PostgreSQL database', () => {
  let database: { url: string; drop(): Promise<void> };
  let gateways: TestGateway[] = [];
  let dataDir: string;

  beforeAll(async () => {
    database = await createTestDatabase();
    dataDir = mkdtempSync(join(tmpdir(), 'cgw-reads-'));
    const env = { ...budgetEnv, DATABASE_URL: database.url, DATA_DIR: dataDir };
    gateways = [await startGateway(env), await startGateway(env)];
  });

  afterAll(async () => {
    for (const gateway of gateways) await gateway.close();
    await database?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it("each answer a workspace's whole budget, and write nothing to the database to count it", async () => {
    const [first, second] = gateways;
    const ws = await first.workspace();
    const query = '{ viewer { workspaceId } }';
    const allowed = Math.floor(BUDGET / costOf(query));
    for (const gateway of [first, second]) {
      const answered = [];
      for (let request = 0; request <= allowed; request += 1) answered.push((await graphql(gateway.baseUrl, ws.key, query)).status);
      expect(answered).toEqual([...Array.from({ length: allowed }, () => 200), 429]);
    }
    const store = first.app.store as PostgresStore;
    const { rows } = await store.pool.query<{ counters: number }>("SELECT count(*)::int AS counters FROM rate_limits WHERE key LIKE 'reads%'");
    expect(rows[0].counters).toBe(0);
  });
});

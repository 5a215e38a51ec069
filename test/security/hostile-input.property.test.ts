import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, http, json, startGateway, type HttpResult, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { assertStoreConsistent } from '../support/store-checks.js';
import { DUPLICATE_MUTATION } from '../support/transports.js';

/** 4 properties × 500 runs: 2,000 generated requests in all. */
const RUNS = 500;

describe('hostile input, generated', () => {
  let gw: TestGateway;
  let ws: TestWorkspace;

  beforeAll(async () => {
    gw = await startGateway({ DUPLICATE_RATE_LIMIT: '100000', AUTH_FAILURE_LIMIT: '100000' });
    ws = await gw.workspace('generated');
  });

  afterAll(() => gw.close());

  /** Any string, lone surrogates and control characters included. */
  const anyString = fc.oneof(fc.string({ unit: 'binary', maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 300 }));
  /** A value for one field: often plausible (so some requests are accepted), often anything at all. */
  const fieldValue = (plausible: fc.Arbitrary<unknown>) =>
    fc.oneof(
      { weight: 4, arbitrary: plausible },
      { weight: 3, arbitrary: anyString },
      { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
      { weight: 1, arbitrary: fc.constantFrom(null, 0, -1, true, [], {}, '', ' ', '__proto__', "'; DROP TABLE jobs; --") },
    );
  const input = () =>
    fc.record(
      {
        campaignId: fieldValue(fc.constant(ws.campaign.id)),
        name: fieldValue(fc.string({ minLength: 1, maxLength: 60 })),
        description: fieldValue(fc.option(fc.string({ maxLength: 200 }))),
        tagNames: fieldValue(fc.subarray(['promo', 'newsletter', 'onboarding'])),
      },
      { requiredKeys: [] },
    );

  /**
   * Whatever the request, a JSON answer below 500; an accepted one has its job stored under the name sent, trimmed
   * and composed (NFC). Says whether the request was accepted.
   */
  const check = async (result: HttpResult, sent: Record<string, unknown> | null): Promise<boolean> => {
    expect(result.status).toBeLessThan(500);
    expect(String(result.headers['content-type'])).toMatch(/^application\/json/);
    expect(result.body).toBeTypeOf('object');
    const jobId: unknown = result.body?.job_id ?? result.body?.data?.duplicateCampaign?.job?.id;
    if (typeof jobId !== 'string') return false;
    const job = await gw.app.store.getJob(ws.workspace.id, jobId);
    expect(job?.name).toBe(String(sent?.name).trim().normalize('NFC'));
    return true;
  };

  /** After a property: the gateway is still up, and every job it accepted has run and has its events. */
  const stayedUpAndConsistent = async () => {
    expect((await http(gw.baseUrl, 'GET', '/healthz')).status).toBe(200);
    await assertStoreConsistent(gw);
  };

  const post = (path: string, body: string | Buffer) => http(gw.baseUrl, 'POST', path, { headers: { ...json, ...bearer(ws.key) }, body });

  // Field-shaped input is plausible often enough (about one request in ten) that the checks of accepted requests run.
  it('REST: field-shaped bodies', async () => {
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(input(), async (generated) => {
        const body = { campaign_id: generated.campaignId, name: generated.name, description: generated.description, tag_names: generated.tagNames };
        if (await check(await post('/campaigns/duplicate', JSON.stringify(body)), generated)) accepted += 1;
      }),
      { numRuns: RUNS },
    );
    expect(accepted).toBeGreaterThan(20);
    await stayedUpAndConsistent();
  });

  it('GraphQL: field-shaped variables', async () => {
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(input(), async (generated) => {
        const body = { query: DUPLICATE_MUTATION, variables: { input: generated } };
        if (await check(await post('/graphql', JSON.stringify(body)), generated)) accepted += 1;
      }),
      { numRuns: RUNS },
    );
    expect(accepted).toBeGreaterThan(20);
    await stayedUpAndConsistent();
  });

  it('both transports: arbitrary JSON and arbitrary bytes', async () => {
    const body = fc.oneof(
      fc.jsonValue({ maxDepth: 6 }).map((value) => JSON.stringify(value)),
      fc.string({ unit: 'binary', maxLength: 200 }),
      fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes)),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('/campaigns/duplicate', '/graphql'), body, async (path, generated) => {
        await check(await post(path, generated), null);
      }),
      { numRuns: RUNS },
    );
    await stayedUpAndConsistent();
  });

  it('GraphQL: arbitrary documents and variables', async () => {
    const document = fc.oneof(
      anyString,
      fc.constantFrom(DUPLICATE_MUTATION, '{ securityEvents { edges { node { id } } } }', 'query($id: ID!) { campaign(id: $id) { id } }'),
      fc.array(fc.constantFrom('{', '}', '(', ')', 'query', 'mutation', 'duplicateCampaign', '$input', ':', '...', 'on', '"x"', 'campaign', 'id', '@skip'), { maxLength: 40 }).map((tokens) => tokens.join(' ')),
    );
    await fc.assert(
      fc.asyncProperty(document, fc.option(fc.jsonValue({ maxDepth: 4 })), fc.option(anyString), async (query, variables, operationName) => {
        await check(await post('/graphql', JSON.stringify({ query, variables, operationName })), null);
      }),
      { numRuns: RUNS },
    );
    await stayedUpAndConsistent();
  });
}, 120_000);

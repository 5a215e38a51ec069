import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, graphql, http, startGateway, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { rest } from '../support/transports.js';

let gateway: TestGateway;
let team: TestWorkspace;

beforeAll(async () => {
  gateway = await startGateway();
  team = await gateway.workspace();
});

afterAll(async () => {
  await gateway?.close();
});

describe('GET /duplication_jobs/{job_id}', () => {
  it('is where the 202 points, and follows the job to its end in snake_case', async () => {
    const accepted = await rest.duplicate(gateway.baseUrl, team.key, { campaignId: team.campaign.id, name: 'followed', tagNames: ['promo'] });
    expect(accepted.response.headers.location).toBe(`../duplication_jobs/${accepted.jobId}`);
    const job = new URL(accepted.response.headers.location as string, `${gateway.baseUrl}/campaigns/duplicate`).pathname;
    const done = await waitFor(async () => {
      const response = await http(gateway.baseUrl, 'GET', job, { headers: bearer(team.key) });
      expect(response.status).toBe(200);
      if (response.body.status === 'pending' || response.body.status === 'running') {
        expect(response.headers['retry-after']).toBe('1');
        return null;
      }
      return response;
    });
    expect(done.headers['retry-after']).toBeUndefined();
    expect(done.body).toMatchObject({
      job_id: accepted.jobId,
      status: 'succeeded',
      source_campaign_id: team.campaign.id,
      name: 'followed',
      tag_names: ['promo'],
      channel: 'REST',
      api_key_id: team.keyId,
      attempts: 1,
      error: null,
    });
    expect(done.body.result_campaign_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(Date.parse(done.body.finished_at)).not.toBeNaN();
  });

  it('says when to ask again as GraphQL says it: pollAfterSeconds, null once the job is finished', async () => {
    const accepted = await graphql(gateway.baseUrl, team.key, 'mutation($id: ID!) { duplicateCampaign(input: {campaignId: $id, name: "polled"}) { job { id status pollAfterSeconds } } }', {
      id: team.campaign.id,
    });
    const { id, status, pollAfterSeconds } = accepted.body.data.duplicateCampaign.job;
    expect({ status, pollAfterSeconds }).toEqual({ status: 'PENDING', pollAfterSeconds: 1 });
    const finished = await waitFor(async () => {
      const job = (await graphql(gateway.baseUrl, team.key, 'query($id: ID!) { duplicationJob(id: $id) { status pollAfterSeconds } }', { id })).body.data.duplicationJob;
      return job.status === 'SUCCEEDED' && job;
    });
    expect(finished.pollAfterSeconds).toBeNull();
    expect((await http(gateway.baseUrl, 'GET', `/duplication_jobs/${id}`, { headers: bearer(team.key) })).headers['retry-after']).toBeUndefined();
  });

  it("shows a job to its own key and to security_events.read, and to nobody else", async () => {
    const { jobId } = await rest.duplicate(gateway.baseUrl, team.key, { campaignId: team.campaign.id, name: 'private' });
    const colleague = await team.addKey(['campaigns.duplicate']);
    const auditor = await team.addKey(['security_events.read']);
    const stranger = await gateway.workspace();
    const get = (key: string) => http(gateway.baseUrl, 'GET', `/duplication_jobs/${jobId}`, { headers: bearer(key) });
    expect((await get(auditor.key)).status).toBe(200);
    const hidden = [await get(colleague.key), await get(stranger.key)];
    const missing = await http(gateway.baseUrl, 'GET', '/duplication_jobs/00000000-0000-4000-8000-000000000000', { headers: bearer(stranger.key) });
    for (const response of hidden) {
      expect(response.status).toBe(404);
      expect(response.body).toEqual(missing.body);
    }
    expect((await http(gateway.baseUrl, 'GET', `/duplication_jobs/${jobId}`)).status).toBe(401);
  });

  it.each([37, 101, 4000])('answers an id of %i characters like any unknown id, without repeating it', async (length) => {
    const id = 'j'.repeat(length);
    const unknown = await http(gateway.baseUrl, 'GET', '/duplication_jobs/00000000-0000-4000-8000-000000000000', { headers: bearer(team.key) });
    const response = await http(gateway.baseUrl, 'GET', `/duplication_jobs/${id}`, { headers: bearer(team.key) });
    expect(response.status).toBe(404);
    expect(response.body).toEqual(unknown.body);
    expect(response.body).toEqual({ message: 'Job not found', code: 'NOT_FOUND' });
    expect(response.headers['x-request-id']).toBeTypeOf('string');
    // Who asks still comes first.
    expect((await http(gateway.baseUrl, 'GET', `/duplication_jobs/${id}`)).status).toBe(401);
  });
});

describe("a job says whether the copy keeps the source campaign's tags", () => {
  const jobQuery = 'query($id: ID!) { duplicationJob(id: $id) { tagNames keepsSourceTags description } }';

  it.each([
    ['no tags named', {}, { tagNames: [], keeps: true }],
    ['an empty list', { tagNames: [] }, { tagNames: [], keeps: false }],
    ['a tag', { tagNames: ['promo'] }, { tagNames: ['promo'], keeps: false }],
  ])('with %s, over both transports', async (_label, tags, expected) => {
    const { jobId } = await rest.duplicate(gateway.baseUrl, team.key, { campaignId: team.campaign.id, name: 'tags', ...tags });
    const viaRest = await http(gateway.baseUrl, 'GET', `/duplication_jobs/${jobId}`, { headers: bearer(team.key) });
    expect(viaRest.body).toMatchObject({ tag_names: expected.tagNames, keeps_source_tags: expected.keeps });
    const viaGraphQL = await graphql(gateway.baseUrl, team.key, jobQuery, { id: jobId });
    expect(viaGraphQL.body.data.duplicationJob).toEqual({ tagNames: expected.tagNames, keepsSourceTags: expected.keeps, description: null });
  });
});

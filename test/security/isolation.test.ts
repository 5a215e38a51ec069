import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SECURITY_EVENT_TYPES } from '../../src/domain/types.js';
import { bearer, graphql, http, json, startGateway, waitFor, type HttpResult, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { graphQL, rest, transports } from '../support/transports.js';

/**
 * Workspace A's key (every permission) tries every id of workspace B on every route and field. Each answer
 * must be the answer for an id that does not exist, and nothing of B may be returned or changed.
 */
describe('workspace isolation', () => {
  let gw: TestGateway;
  let a: TestWorkspace;
  let b: TestWorkspace;
  const bIds: Record<string, string> = {};
  let bSecrets: string[] = [];
  let bCursor: string;

  const snapshotB = async () => {
    const store = gw.app.store;
    const events = await store.listEvents(b.workspace.id, {}, { first: 1000 });
    const campaigns = await store.listCampaigns(b.workspace.id, { first: 1000 });
    const jobs = await Promise.all([bIds.job, bIds.restJob].map((id) => store.getJob(b.workspace.id, id)));
    const keys = await store.listApiKeys(b.workspace.id);
    return JSON.stringify({ events, campaigns, jobs, keys: keys.map(({ lastUsedAt: _lastUsedAt, ...key }) => key) });
  };

  beforeAll(async () => {
    gw = await startGateway({ DUPLICATE_RATE_LIMIT: '100000' });
    a = await gw.workspace('isolation-a');
    b = await gw.workspace('isolation-b');
    await gw.app.store.upsertTags(b.workspace.id, ['b-only-tag']);
    const restJob = await rest.duplicate(gw.baseUrl, b.key, { campaignId: b.campaign.id, name: 'B copy' }, { idempotencyKey: 'shared-idempotency-key' });
    const gqlJob = await graphQL.duplicate(gw.baseUrl, b.key, { campaignId: b.campaign.id, name: 'B copy 2', tagNames: ['b-only-tag'] });
    const done = await waitFor(async () => {
      const job = await gw.app.store.getJob(b.workspace.id, gqlJob.jobId!);
      const other = await gw.app.store.getJob(b.workspace.id, restJob.jobId!);
      return job?.status === 'SUCCEEDED' && other?.status === 'SUCCEEDED' ? job : null;
    });
    const events = await gw.app.store.listEvents(b.workspace.id, {}, { first: 100 });
    const listed = await graphql(gw.baseUrl, b.key, '{ securityEvents(first: 1) { pageInfo { endCursor } } }');
    bCursor = listed.body.data.securityEvents.pageInfo.endCursor;
    Object.assign(bIds, {
      campaign: b.campaign.id,
      copy: done.resultCampaignId!,
      job: gqlJob.jobId!,
      restJob: restJob.jobId!,
      event: events[0].id,
      key: b.keyId,
      workspace: b.workspace.id,
    });
    bSecrets = [...Object.values(bIds), ...events.map((event) => event.id), b.campaign.name, 'B copy', 'b-only-tag', b.workspace.name];
  });

  afterAll(() => gw.close());

  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    http(gw.baseUrl, 'POST', path, { headers: { ...json, ...bearer(a.key), ...headers }, body: JSON.stringify(body) });
  const gql = (query: string, variables: Record<string, unknown>) => graphql(gw.baseUrl, a.key, query, variables);
  const ALL_TYPES = [...SECURITY_EVENT_TYPES];
  const EVENT_FIELDS = 'edges { cursor node { id type apiKey { id name } jobId campaignId details job { id name } } } pageInfo { hasNextPage }';

  const PROBES: Record<string, (id: string) => Promise<HttpResult>> = {
    'REST POST /campaigns/duplicate campaign_id': (id) => post('/campaigns/duplicate', { campaign_id: id, name: 'probe' }),
    'REST POST /campaigns/duplicate tag_names': (id) => post('/campaigns/duplicate', { campaign_id: a.campaign.id, name: 'probe', tag_names: [id] }),
    'REST POST /campaigns/duplicate Idempotency-Key': (id) =>
      post('/campaigns/duplicate', { campaign_id: a.campaign.id, name: 'probe' }, { 'idempotency-key': id }),
    'REST GET /duplication_jobs/:id': (id) => http(gw.baseUrl, 'GET', `/duplication_jobs/${encodeURIComponent(id)}`, { headers: bearer(a.key) }),
    'GraphQL duplicateCampaign campaignId': (id) =>
      gql('mutation($id: ID!) { duplicateCampaign(input: {campaignId: $id, name: "probe"}) { job { id status sourceCampaignId } } }', { id }),
    'GraphQL duplicateCampaign tagNames': (id) =>
      gql('mutation($c: ID!, $id: String!) { duplicateCampaign(input: {campaignId: $c, name: "probe", tagNames: [$id]}) { job { id } } }', { c: a.campaign.id, id }),
    'GraphQL duplicateCampaign idempotencyKey': (id) =>
      gql('mutation($c: ID!, $id: String!) { duplicateCampaign(input: {campaignId: $c, name: "probe", idempotencyKey: $id}) { job { id name sourceCampaignId } } }', {
        c: a.campaign.id,
        id,
      }),
    'GraphQL duplicationJob': (id) => gql('query($id: ID!) { duplicationJob(id: $id) { id name apiKey { id name } resultCampaignId } }', { id }),
    'GraphQL campaign': (id) => gql('query($id: ID!) { campaign(id: $id) { id name tagNames duplicatedFrom } }', { id }),
    'GraphQL securityEvents jobId': (id) => gql(`query($id: ID!) { securityEvents(filter: {jobId: $id}) { ${EVENT_FIELDS} } }`, { id }),
    'GraphQL securityEvents apiKeyId': (id) => gql(`query($id: ID!) { securityEvents(filter: {apiKeyId: $id}) { ${EVENT_FIELDS} } }`, { id }),
    'GraphQL securityEvents every filter': (id) =>
      gql(`query($id: ID!, $types: [SecurityEventType!]) { securityEvents(filter: {jobId: $id, apiKeyId: $id, types: $types, since: "2000-01-01T00:00:00Z", until: "2100-01-01T00:00:00Z"}) { ${EVENT_FIELDS} } }`, {
        id,
        types: ALL_TYPES,
      }),
    'GraphQL securityEvents jobId with every type': (id) =>
      gql(`query($id: ID!, $types: [SecurityEventType!]) { securityEvents(filter: {jobId: $id, types: $types}) { ${EVENT_FIELDS} } }`, { id, types: ALL_TYPES }),
  };

  /** The answer with everything that differs between two calls anyway (new ids, times) blanked out. */
  const normalise = (result: HttpResult, probedId: string): string =>
    JSON.stringify({ status: result.status, body: result.body })
      .split(probedId)
      .join('<PROBED>')
      .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, '<UUID>')
      .replace(/\d{4}-\d{2}-\d{2}T[\d:.]+Z/g, '<TIME>');

  const cases = Object.entries(PROBES).flatMap(([route, probe]) =>
    ['campaign', 'copy', 'job', 'restJob', 'event', 'key', 'workspace'].map((kind) => ({ route, kind, probe })),
  );

  it.each(cases)('$route with B\'s $kind id answers as for an id that does not exist', async ({ kind, probe }) => {
    const before = await snapshotB();
    const id = bIds[kind];
    const nothing = randomUUID();
    const withB = await probe(id);
    const withNothing = await probe(nothing);
    expect(withB.status).toBeLessThan(500);
    expect(normalise(withB, id)).toBe(normalise(withNothing, nothing));
    const shown = withB.text.split(id).join('');
    for (const secret of bSecrets) expect(shown).not.toContain(secret);
    expect(await snapshotB()).toBe(before);
  });

  it('the same idempotency key in two workspaces makes two jobs', async () => {
    const accepted = await rest.duplicate(gw.baseUrl, a.key, { campaignId: a.campaign.id, name: 'probe' }, { idempotencyKey: 'shared-idempotency-key' });
    expect(accepted.status).toBe(202);
    expect(accepted.jobId).not.toBe(bIds.restJob);
    expect((await gw.app.store.getJob(a.workspace.id, accepted.jobId!))?.workspaceId).toBe(a.workspace.id);
  });

  it('lists nothing of B, whatever the cursor, on the listing queries', async () => {
    const before = await snapshotB();
    const answers = [
      await gql(`{ securityEvents(first: 200) { ${EVENT_FIELDS} } }`, {}),
      await gql(`query($after: String) { securityEvents(first: 200, after: $after) { ${EVENT_FIELDS} } }`, { after: bCursor }),
      await gql('{ campaigns(first: 200) { edges { cursor node { id name duplicatedFrom } } } }', {}),
      await gql('query($after: String) { campaigns(first: 200, after: $after) { edges { node { id name } } } }', { after: bCursor }),
    ];
    for (const answer of answers) {
      expect(answer.status).toBeLessThan(500);
      for (const secret of bSecrets) expect(answer.text).not.toContain(secret);
    }
    expect(answers[0].body.data.securityEvents.edges.length).toBeGreaterThan(0);
    expect(answers[2].body.data.campaigns.edges.map((edge: any) => edge.node.id)).toContain(a.campaign.id);
    expect(await snapshotB()).toBe(before);
  });

  it('gives cursors that carry only the row\'s own id: nothing of how much other workspaces did meanwhile', async () => {
    // Events enough in A for two full pages: its key's creation and three requests.
    for (let i = 0; i < 3; i += 1) expect((await rest.duplicate(gw.baseUrl, a.key, { campaignId: a.campaign.id, name: `A page ${i}` })).status).toBe(202);
    const page = async (after: string | null) =>
      (await gql('query($after: String) { securityEvents(first: 2, after: $after) { edges { cursor node { id } } pageInfo { endCursor } } }', { after })).body.data
        .securityEvents;
    const first = await page(null);
    for (const edge of first.edges) expect(Buffer.from(edge.cursor, 'base64url').toString()).toBe(`e:${edge.node.id}`);
    // Another workspace writes between A's pages; A's next page follows A's own cursor all the same.
    const c = await gw.workspace('isolation-c');
    await graphQL.duplicate(gw.baseUrl, c.key, { campaignId: c.campaign.id, name: 'C meanwhile' });
    // A's own worker may still add outcome events, newer than the first page: what follows its end is unchanged.
    const all = await gw.app.store.listEvents(a.workspace.id, {}, { first: 200 });
    const end = all.findIndex((event) => event.id === first.edges.at(-1).node.id);
    expect(end).toBeGreaterThan(0);
    const next = (await page(first.pageInfo.endCursor)).edges.map((edge: any) => edge.node.id);
    expect(next).toHaveLength(2);
    expect(next).toEqual(all.slice(end + 1, end + 3).map((event) => event.id));
  });

  it.each(transports)('B\'s own key still sees B\'s jobs over $name, which nothing above changed', async (client) => {
    expect((await client.job(gw.baseUrl, b.key, bIds.job)).job).toMatchObject({ id: bIds.job, status: 'SUCCEEDED' });
    const copies = await gw.app.store.listCampaigns(b.workspace.id, { first: 100 });
    expect(copies.map((campaign) => campaign.name).sort()).toEqual(['B copy', 'B copy 2', b.campaign.name].sort());
  });
});

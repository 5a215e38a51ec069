import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dependencyUnavailable } from '../../src/domain/errors.js';
import { PERMISSIONS } from '../../src/domain/permissions.js';
import type { Quota } from '../../src/domain/ports.js';
import { graphql, startGateway, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { rest } from '../support/transports.js';

const VIEWER = '{ viewer { apiKey { id name } workspaceId permissions duplicationQuota { limit remaining resetAt } } }';

/** Every non-empty set of permissions a key can hold (a key holds at least one). */
const COMBINATIONS = Array.from({ length: 2 ** PERMISSIONS.length - 1 }, (_, index) =>
  PERMISSIONS.filter((_permission, bit) => ((index + 1) >> bit) & 1),
);

async function viewer(gw: TestGateway, key: string) {
  const response = await graphql(gw.baseUrl, key, VIEWER);
  expect(response.status).toBe(200);
  expect(response.body.errors).toBeUndefined();
  return response.body.data.viewer;
}

describe('viewer', () => {
  const LIMIT = 7;
  let gw: TestGateway;
  let ws: TestWorkspace;

  beforeAll(async () => {
    // A window far longer than the test, so that it cannot roll over between two reads.
    gw = await startGateway({ DUPLICATE_RATE_LIMIT: String(LIMIT), DUPLICATE_RATE_WINDOW_SECONDS: '3600' });
    ws = await gw.workspace('viewer');
  });

  afterAll(() => gw.close());

  it.each(COMBINATIONS.map((permissions) => ({ permissions, label: permissions.join(', ') })))(
    'shows a key holding $label exactly those, with its id, name and workspace',
    async ({ permissions }) => {
      const { key, keyId } = await ws.addKey([...permissions].reverse(), `holding ${permissions.length}`);
      expect(await viewer(gw, key)).toEqual({
        apiKey: { id: keyId, name: `holding ${permissions.length}` },
        workspaceId: ws.workspace.id,
        permissions,
        duplicationQuota: { limit: LIMIT, remaining: expect.any(Number), resetAt: expect.any(String) },
      });
    },
  );

  it('shows a key of another workspace only its own key, workspace and quota', async () => {
    const other = await gw.workspace('viewer-other');
    expect((await rest.duplicate(gw.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'spent here' })).jobId).not.toBeNull();
    const mine = await viewer(gw, ws.key);
    const theirs = await viewer(gw, other.key);
    expect(theirs).toMatchObject({ apiKey: { id: other.keyId }, workspaceId: other.workspace.id, duplicationQuota: { remaining: LIMIT } });
    expect(mine).toMatchObject({ apiKey: { id: ws.keyId }, workspaceId: ws.workspace.id });
    expect(mine.duplicationQuota.remaining).toBeLessThan(LIMIT);
  });

  it('shows the quota as the X-RateLimit-* of the next duplication will show it, less the point that one takes', async () => {
    const team = await gw.workspace('viewer-quota');
    const opened = await rest.duplicate(gw.baseUrl, team.key, { campaignId: team.campaign.id, name: 'opens the window' });
    expect(opened.response.headers['x-ratelimit-remaining']).toBe(String(LIMIT - 1));
    const { duplicationQuota: quota } = await viewer(gw, team.key);
    // Reading it took no point: a second read shows the same, its window's end worked out at its own moment from the
    // time left then (below), so a pause of the process between two clock readings moves it by that pause.
    const again = (await viewer(gw, team.key)).duplicationQuota;
    expect({ limit: again.limit, remaining: again.remaining }).toEqual({ limit: quota.limit, remaining: quota.remaining });
    expect(Math.abs(Date.parse(again.resetAt) - Date.parse(quota.resetAt))).toBeLessThan(1000);
    const next = await rest.duplicate(gw.baseUrl, team.key, { campaignId: team.campaign.id, name: 'after the viewer' });
    expect(next.jobId).not.toBeNull();
    expect(quota.limit).toBe(LIMIT);
    expect(next.response.headers['x-ratelimit-limit']).toBe(String(quota.limit));
    expect(next.response.headers['x-ratelimit-remaining']).toBe(String(quota.remaining - 1));
    // Each answer works the window's end out from the time left at its own moment, a millisecond apart at most:
    // the header's whole second is the viewer's, rounded up, or the next one.
    const reset = Math.ceil(Date.parse(quota.resetAt) / 1000);
    expect(Number(next.response.headers['x-ratelimit-reset']) - reset).toBeGreaterThanOrEqual(0);
    expect(Number(next.response.headers['x-ratelimit-reset']) - reset).toBeLessThanOrEqual(1);
  });

  it('records nothing, for a key holding any permission or none of those another field needs', async () => {
    const team = await gw.workspace('viewer-events');
    const { key } = await team.addKey(['campaigns.duplicate']);
    const events = () => gw.app.store.listEvents(team.workspace.id, {}, { first: 200 });
    const before = await events();
    for (const asking of [team.key, key]) await viewer(gw, asking);
    expect(await events()).toEqual(before);
    expect(before.map((event) => event.type)).toEqual(['API_KEY_CREATED', 'API_KEY_CREATED']);
  });

  it('needs a valid key', async () => {
    const response = await graphql(gw.baseUrl, 'cgw_not-a-key', VIEWER);
    expect(response.status).toBe(401);
    expect(response.body.errors[0].extensions.code).toBe('UNAUTHENTICATED');
  });
});

describe('viewer while the quota cannot be read', () => {
  let gw: TestGateway;

  beforeAll(async () => {
    const outage = () => Promise.reject(dependencyUnavailable(new Error('quota store unreachable')));
    const quota: Quota = { limit: 5, consume: outage, peek: outage, refund: outage };
    gw = await startGateway({}, { quota });
  });

  afterAll(() => gw.close());

  it('still shows the key, with no quota', async () => {
    const team = await gw.workspace();
    expect(await viewer(gw, team.key)).toEqual({
      apiKey: { id: team.keyId, name: expect.any(String) },
      workspaceId: team.workspace.id,
      permissions: [...PERMISSIONS],
      duplicationQuota: null,
    });
  });
});

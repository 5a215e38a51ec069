import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PERMISSIONS, type Permission } from '../../src/domain/permissions.js';
import { bearer, graphql, http, json, startGateway, waitFor, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { transports } from '../support/transports.js';

const EVENTS_QUERY = `query Events($filter: SecurityEventFilter) {
  securityEvents(filter: $filter, first: 200) { edges { node { id type apiKey { id } jobId channel details job { id } } } }
}`;

type Probe = (gw: TestGateway, ws: TestWorkspace, key: string) => Promise<{ status: number; code: string | null; channel: 'REST' | 'GRAPHQL' }>;

const gqlCode = (body: any): string | null => body?.errors?.[0]?.extensions?.code ?? null;

/** Every operation that requires a permission, on every transport that offers it. */
const GUARDED: Record<Exclude<Permission, 'security_events.read'>, Record<string, Probe>> = {
  'campaigns.duplicate': {
    'REST POST /campaigns/duplicate': async (gw, ws, key) => {
      const result = await http(gw.baseUrl, 'POST', '/campaigns/duplicate', {
        headers: { ...json, ...bearer(key) },
        body: JSON.stringify({ campaign_id: ws.campaign.id, name: 'Copy' }),
      });
      return { status: result.status, code: result.status === 403 ? 'FORBIDDEN' : result.status === 202 ? null : String(result.status), channel: 'REST' };
    },
    'GraphQL duplicateCampaign': async (gw, ws, key) => {
      const result = await graphql(gw.baseUrl, key, 'mutation($id: ID!) { duplicateCampaign(input: {campaignId: $id, name: "Copy"}) { job { id } } }', { id: ws.campaign.id });
      return { status: result.status, code: gqlCode(result.body), channel: 'GRAPHQL' };
    },
  },
  'campaigns.list': {
    'GraphQL campaigns': async (gw, _ws, key) => {
      const result = await graphql(gw.baseUrl, key, '{ campaigns { edges { node { id } } } }');
      return { status: result.status, code: gqlCode(result.body), channel: 'GRAPHQL' };
    },
  },
  'campaigns.details': {
    'GraphQL campaign': async (gw, ws, key) => {
      const result = await graphql(gw.baseUrl, key, 'query($id: ID!) { campaign(id: $id) { id name } }', { id: ws.campaign.id });
      return { status: result.status, code: gqlCode(result.body), channel: 'GRAPHQL' };
    },
  },
};

const CASES = Object.entries(GUARDED).flatMap(([permission, probes]) =>
  Object.entries(probes).map(([route, probe]) => ({ permission: permission as Permission, route, probe })),
);

describe('permissions', () => {
  let gw: TestGateway;
  let ws: TestWorkspace;

  beforeAll(async () => {
    gw = await startGateway({ DUPLICATE_RATE_LIMIT: '10000' });
    ws = await gw.workspace('perms');
  });

  afterAll(() => gw.close());

  it('are read in exactly one place of the code: the service\'s authorize method', () => {
    const files = (readdirSync('src', { recursive: true }) as string[]).filter((file) => file.endsWith('.ts'));
    const reads = files.flatMap((file) =>
      [...readFileSync(join('src', file), 'utf8').matchAll(/\.permissions\.has\(/g)].map(() => file),
    );
    expect(reads).toEqual([join('domain', 'service.ts')]);
    const service = readFileSync('src/domain/service.ts', 'utf8');
    const authorize = service.slice(service.indexOf('  async authorize('));
    expect(authorize.slice(0, authorize.indexOf('\n  }\n'))).toContain('principal.permissions.has(permission)');
  });

  it.each(CASES)('$route: refused without $permission (PERMISSION_DENIED recorded), allowed with it', async ({ permission, probe }) => {
    const without = await ws.addKey(PERMISSIONS.filter((candidate) => candidate !== permission));
    const refused = await probe(gw, ws, without.key);
    expect(refused.code).toBe('FORBIDDEN');
    expect(refused.status).toBe(refused.channel === 'REST' ? 403 : 200);
    const denied = await gw.app.store.listEvents(ws.workspace.id, { apiKeyId: without.keyId, types: ['PERMISSION_DENIED'] }, { first: 10 });
    expect(denied).toHaveLength(1);
    expect(denied[0]).toMatchObject({ channel: refused.channel, ip: '127.0.0.1', details: { permission } });

    const only = await ws.addKey([permission]);
    const allowed = await probe(gw, ws, only.key);
    expect(allowed.code).toBeNull();
    expect(allowed.status).toBeLessThan(300);
    expect(await gw.app.store.listEvents(ws.workspace.id, { apiKeyId: only.keyId, types: ['PERMISSION_DENIED'] }, { first: 10 })).toEqual([]);
  });

  it('checks the duplication permission before the body is read: an invalid body still gets 403', async () => {
    const { key } = await ws.addKey(['campaigns.list']);
    for (const body of ['{"campaign_id": 42}', '{not json', '[]']) {
      const result = await http(gw.baseUrl, 'POST', '/campaigns/duplicate', { headers: { ...json, ...bearer(key) }, body });
      expect(result.status).toBe(403);
      expect(result.body).toEqual({ message: 'Access Denied', code: 'FORBIDDEN' });
    }
  });

  it('refuses one GraphQL field and still answers the others', async () => {
    const { key } = await ws.addKey(['campaigns.duplicate']);
    const result = await graphql(gw.baseUrl, key, 'query($id: ID!) { campaign(id: $id) { id } securityEvents { edges { node { id } } } }', { id: ws.campaign.id });
    expect(result.status).toBe(200);
    expect(result.body.errors).toHaveLength(1);
    expect(result.body.errors[0]).toMatchObject({ path: ['campaign'], extensions: { code: 'FORBIDDEN' } });
    expect(result.body.data).toEqual({ campaign: null, securityEvents: { edges: expect.any(Array) } });
    const denied = await graphql(gw.baseUrl, key, '{ securityEvents(filter: {types: [PERMISSION_DENIED]}) { edges { node { details } } } }');
    expect(denied.body.data.securityEvents.edges).toEqual([{ node: { details: { permission: 'campaigns.details', requestId: result.headers['x-request-id'] } } }]);
  });

  it('refuses a list field alone: the job and the events asked for beside it are still answered', async () => {
    const { key } = await ws.addKey(['campaigns.duplicate']);
    const accepted = await graphql(gw.baseUrl, key, 'mutation($id: ID!) { duplicateCampaign(input: {campaignId: $id, name: "Copy"}) { job { id } } }', { id: ws.campaign.id });
    const job = accepted.body.data.duplicateCampaign.job.id;
    const result = await graphql(
      gw.baseUrl,
      key,
      `query($job: ID!) {
        duplicationJob(id: $job) { id status }
        securityEvents(first: 5) { edges { node { type jobId } } }
        campaigns(first: 5) { edges { node { id } } }
      }`,
      { job },
    );
    expect(result.status).toBe(200);
    expect(result.body.errors).toEqual([expect.objectContaining({ path: ['campaigns'], extensions: { code: 'FORBIDDEN' } })]);
    expect(result.body.data).toEqual({
      duplicationJob: { id: job, status: expect.any(String) },
      securityEvents: { edges: expect.arrayContaining([{ node: { type: 'CAMPAIGN_DUPLICATION_REQUESTED', jobId: job } }]) },
      campaigns: null,
    });
  });

  it('records one PERMISSION_DENIED per refused permission and request, however many fields ask for it', async () => {
    const { key } = await ws.addKey(['campaigns.duplicate']);
    const result = await graphql(gw.baseUrl, key, 'query($id: ID!) { a: campaign(id: $id) { id } b: campaign(id: $id) { name } c: campaigns { edges { node { id } } } }', { id: ws.campaign.id });
    expect(result.body.errors.map((error: any) => [error.path, error.extensions.code]).sort()).toEqual([
      [['a'], 'FORBIDDEN'],
      [['b'], 'FORBIDDEN'],
      [['c'], 'FORBIDDEN'],
    ]);
    const denied = await graphql(gw.baseUrl, key, '{ securityEvents(filter: {types: [PERMISSION_DENIED]}) { edges { node { details } } } }');
    const permissions = denied.body.data.securityEvents.edges.map((edge: any) => edge.node.details.permission);
    expect(permissions.sort()).toEqual(['campaigns.details', 'campaigns.list']);
  });

  it('records at most ten PERMISSION_DENIED events a minute per key, and refuses every request all the same', async () => {
    const { key, keyId } = await ws.addKey(['campaigns.duplicate'], 'flooding');
    const other = await ws.addKey(['campaigns.duplicate'], 'bystander');
    for (let index = 0; index < 14; index += 1) {
      expect(gqlCode((await graphql(gw.baseUrl, key, '{ campaigns { edges { node { id } } } }')).body)).toBe('FORBIDDEN');
    }
    expect(gqlCode((await graphql(gw.baseUrl, other.key, '{ campaigns { edges { node { id } } } }')).body)).toBe('FORBIDDEN');
    const recorded = await gw.app.store.listEvents(ws.workspace.id, { apiKeyId: keyId, types: ['PERMISSION_DENIED'] }, { first: 50 });
    expect(recorded).toHaveLength(10);
    expect(await gw.app.store.listEvents(ws.workspace.id, { apiKeyId: other.keyId, types: ['PERMISSION_DENIED'] }, { first: 50 })).toHaveLength(1);
  });

  it('counts a key used from outside its allowlist in the same budget', async () => {
    const created = await gw.app.admin.createKey({ workspace: ws.workspace.id, name: 'office', permissions: ['campaigns.list'], allowedCidrs: ['10.0.0.0/8'] });
    for (let index = 0; index < 12; index += 1) {
      expect(gqlCode((await graphql(gw.baseUrl, created.key, '{ campaigns { edges { node { id } } } }')).body)).toBe('FORBIDDEN');
    }
    const recorded = await gw.app.store.listEvents(ws.workspace.id, { apiKeyId: created.record.id, types: ['PERMISSION_DENIED'] }, { first: 50 });
    expect(recorded).toHaveLength(10);
    expect(recorded.every((event) => event.details.reason === 'ip_not_allowed')).toBe(true);
  });

  describe('security_events.read', () => {
    let first: { key: string; keyId: string };
    let second: { key: string; keyId: string };
    let reader: { key: string; keyId: string };
    const jobs: Record<string, string[]> = {};

    beforeAll(async () => {
      first = await ws.addKey(['campaigns.duplicate'], 'first');
      second = await ws.addKey(['campaigns.duplicate'], 'second');
      reader = await ws.addKey(['security_events.read'], 'reader');
      for (const [name, who] of [['first', first], ['second', second]] as const) {
        jobs[name] = [];
        for (const client of transports) {
          const accepted = await client.duplicate(gw.baseUrl, who.key, { campaignId: ws.campaign.id, name: `${name} copy` });
          jobs[name].push(accepted.jobId!);
        }
        // A refusal is an event of the key too.
        await graphql(gw.baseUrl, who.key, '{ campaigns { edges { node { id } } } }');
      }
      const all = [...jobs.first, ...jobs.second];
      await waitFor(async () => {
        const states = await Promise.all(all.map((id) => gw.app.store.getJob(ws.workspace.id, id)));
        return states.every((job) => job?.status === 'SUCCEEDED');
      });
    });

    const events = async (key: string, filter: Record<string, unknown> = {}) => {
      const result = await graphql(gw.baseUrl, key, EVENTS_QUERY, { filter });
      expect(result.status).toBe(200);
      expect(result.body.errors).toBeUndefined();
      return result.body.data.securityEvents.edges.map((edge: any) => edge.node);
    };

    it('without it, a key sees exactly the events its own requests caused, and can poll its own jobs', async () => {
      const seen = await events(first.key);
      expect(new Set(seen.map((event: any) => event.apiKey.id))).toEqual(new Set([first.keyId]));
      expect(seen.map((event: any) => event.type).sort()).toEqual(
        ['CAMPAIGN_DUPLICATED', 'CAMPAIGN_DUPLICATED', 'CAMPAIGN_DUPLICATION_REQUESTED', 'CAMPAIGN_DUPLICATION_REQUESTED', 'PERMISSION_DENIED'],
      );
      expect(seen.every((event: any) => event.channel !== null)).toBe(true);
      for (const jobId of jobs.first) {
        const polled = await events(first.key, { jobId });
        expect(polled.map((event: any) => event.type)).toEqual(['CAMPAIGN_DUPLICATED', 'CAMPAIGN_DUPLICATION_REQUESTED']);
        expect(polled[0].job).toEqual({ id: jobId });
      }
      // Key lifecycle events are not caused by the key's requests, even when asked for by type.
      expect(await events(first.key, { types: ['API_KEY_CREATED'] })).toEqual([]);
    });

    it('without it, another key\'s events and jobs of the same workspace are invisible on every filter and route', async () => {
      expect(await events(first.key, { apiKeyId: second.keyId })).toEqual([]);
      for (const jobId of jobs.second) {
        expect(await events(first.key, { jobId })).toEqual([]);
        for (const client of transports) {
          const answer = await client.job(gw.baseUrl, first.key, jobId);
          expect(answer.job).toBeNull();
          expect(answer.code).toBeNull();
        }
      }
    });

    it('with it, a key sees every event and job of its workspace', async () => {
      const seen = await events(reader.key);
      const keys = new Set(seen.map((event: any) => event.apiKey?.id));
      expect(keys).toEqual(new Set([ws.keyId, first.keyId, second.keyId, reader.keyId, ...keys]));
      expect(seen.map((event: any) => event.type)).toEqual(expect.arrayContaining(['API_KEY_CREATED', 'PERMISSION_DENIED', 'CAMPAIGN_DUPLICATED']));
      expect(await events(reader.key, { apiKeyId: second.keyId, types: ['CAMPAIGN_DUPLICATION_REQUESTED'] })).toHaveLength(2);
      for (const jobId of [...jobs.first, ...jobs.second]) {
        for (const client of transports) {
          expect((await client.job(gw.baseUrl, reader.key, jobId)).job).toMatchObject({ id: jobId, status: 'SUCCEEDED' });
        }
        const polled = await events(reader.key, { jobId });
        expect(polled[0].job).toEqual({ id: jobId });
      }
    });
  });
});

describe('refusals past the PERMISSION_DENIED budget', () => {
  let gw: TestGateway;
  let ws: TestWorkspace;

  beforeAll(async () => {
    // Two events a second, so that a window passes within the test.
    gw = await startGateway({}, { refusalEventLimiter: new RateLimiterMemory({ points: 2, duration: 1 }) });
    ws = await gw.workspace('budget');
  });

  afterAll(() => gw.close());

  it('are counted in the next event the key records: every refusal is in the log, as a row or in a count', async () => {
    const { key, keyId } = await ws.addKey(['campaigns.duplicate']);
    const events = () => gw.app.store.listEvents(ws.workspace.id, { apiKeyId: keyId, types: ['PERMISSION_DENIED'] }, { first: 100 });
    let refusals = 0;
    const counted = await waitFor(async () => {
      expect(gqlCode((await graphql(gw.baseUrl, key, '{ campaigns { edges { node { id } } } }')).body)).toBe('FORBIDDEN');
      refusals += 1;
      const recorded = await events();
      return recorded.some((event) => event.details.unrecordedBefore !== undefined) && recorded;
    });
    expect(counted[0].details).toEqual({ permission: 'campaigns.list', requestId: expect.any(String), unrecordedBefore: expect.any(Number) });
    const unrecorded = counted.reduce((sum, event) => sum + Number(event.details.unrecordedBefore ?? 0), 0);
    expect(unrecorded).toBeGreaterThan(0);
    expect(counted.length + unrecorded).toBe(refusals);
  });
});

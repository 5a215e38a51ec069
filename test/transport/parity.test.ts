import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStore } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { dependencyUnavailable, ERROR_CODES, GatewayError, limitsUnavailable, type ErrorCode } from '../../src/domain/errors.js';
import type { Quota } from '../../src/domain/ports.js';
import {
  bearer,
  graphql,
  http,
  json,
  recordingLogger,
  startGateway,
  storeFailingOn,
  storeHeldOn,
  waitFor,
  type HttpResult,
  type TestGateway,
  type TestWorkspace,
} from '../support/gateway.js';
import { ManualClock } from '../support/clock.js';
import { jobTotal } from '../support/store-checks.js';
import { STORES } from '../support/stores.js';
import { jobEvents, transports, type DuplicateArgs, type DuplicateOutcome, type Transport } from '../support/transports.js';

let gateway: TestGateway;
let ws: TestWorkspace;
let otherWs: TestWorkspace;

function expectError(outcome: DuplicateOutcome, code: ErrorCode, transport: string) {
  expect(outcome.jobId).toBeNull();
  expect(outcome.code).toBe(ERROR_CODES[code].graphqlCode);
  expect(outcome.restCode).toBe(code);
  if (transport === 'REST') expect(outcome.status).toBe(ERROR_CODES[code].httpStatus);
}

const long = (n: number) => 'x'.repeat(n);

const CAMPAIGN = 'query ($id: ID!) { campaign(id: $id) { id name description tagNames draft duplicatedFrom } }';

/** The id of the copy a job made, once it has succeeded. */
async function copyOf(jobId: string): Promise<string> {
  const seen = await waitFor(async () => {
    const events = await jobEvents(gateway.baseUrl, ws.key, jobId);
    return events.job?.status === 'SUCCEEDED' && events;
  });
  return seen.job!.resultCampaignId!;
}

/** Every campaign of the key's workspace as `campaigns` lists it, page by page, by id. */
async function listedCampaigns(key: string): Promise<Map<string, { id: string; duplicatedFrom: string | null }>> {
  const query = 'query ($after: String) { campaigns(first: 200, after: $after) { edges { node { id duplicatedFrom } } pageInfo { hasNextPage endCursor } } }';
  const listed = new Map<string, { id: string; duplicatedFrom: string | null }>();
  for (let after: string | null = null; ; ) {
    const page: any = (await graphql(gateway.baseUrl, key, query, { after })).body.data.campaigns;
    for (const edge of page.edges) listed.set(edge.node.id, edge.node);
    if (!page.pageInfo.hasNextPage) return listed;
    after = page.pageInfo.endCursor;
  }
}

/**
 * The cases that hold on every store, run on each: a store answers the same duplication, lookup and page the same
 * way through both doors.
 */
for (const store of STORES) {
  describe.skipIf(store.skip)(`on a ${store.name} store`, () => {
    beforeAll(async () => {
      gateway = await store.startGateway({ DUPLICATE_RATE_LIMIT: '100000' });
      ws = await gateway.workspace();
      otherWs = await gateway.workspace();
    });

    afterAll(async () => {
      await gateway?.close();
    });

    describe.each(transports)('duplicateCampaign over $name', (transport) => {
      const valid = (): DuplicateArgs => ({ campaignId: ws.campaign.id, name: 'Copy of welcome' });

      it('accepts a valid request at once with a pending job', async () => {
        const outcome = await transport.duplicate(gateway.baseUrl, ws.key, { ...valid(), description: 'new', tagNames: ['promo'] });
        expect(outcome.status).toBe(transport.name === 'REST' ? 202 : 200);
        expect(outcome.jobId).toMatch(/^[0-9a-f-]{36}$/);
        const job = await gateway.app.store.getJob(ws.workspace.id, outcome.jobId!);
        expect(job).toMatchObject({ sourceCampaignId: ws.campaign.id, name: 'Copy of welcome', tagNames: ['promo'], channel: transport.name });
        expect(outcome.response.headers['x-ratelimit-limit']).toBe('100000');
      });

      it('runs the job to SUCCEEDED, as seen through securityEvents(filter: {jobId})', async () => {
        const { jobId } = await transport.duplicate(gateway.baseUrl, ws.key, { ...valid(), tagNames: ['newsletter'] });
        const seen = await waitFor(async () => {
          const events = await jobEvents(gateway.baseUrl, ws.key, jobId!);
          return events.types.includes('CAMPAIGN_DUPLICATED') && events;
        });
        expect(seen.types).toEqual(['CAMPAIGN_DUPLICATED', 'CAMPAIGN_DUPLICATION_REQUESTED']);
        expect(seen.job?.status).toBe('SUCCEEDED');
        const copy = await gateway.app.store.getCampaign(ws.workspace.id, seen.job!.resultCampaignId!);
        expect(copy).toMatchObject({
          name: 'Copy of welcome',
          description: ws.campaign.description,
          tagNames: ['newsletter'],
          draft: true,
          duplicatedFrom: ws.campaign.id,
          body: ws.campaign.body,
        });
      });

      it.each([
        ['names a description and tags', { description: 'for the EU', tagNames: ['promo', 'newsletter'] }, { description: 'for the EU', tagNames: ['promo', 'newsletter'] }],
        ['names neither', {}, { description: 'source campaign', tagNames: ['onboarding'] }],
      ])("makes a copy, when the request %s, with those or else the source's, linked to its source in campaign(id) and campaigns", async (_label, optional, expected) => {
        expect({ description: ws.campaign.description, tagNames: ws.campaign.tagNames }).toEqual({ description: 'source campaign', tagNames: ['onboarding'] });
        const { jobId } = await transport.duplicate(gateway.baseUrl, ws.key, { ...valid(), ...optional });
        const copyId = await copyOf(jobId!);

        const read = await graphql(gateway.baseUrl, ws.key, CAMPAIGN, { id: copyId });
        expect(read.body.data.campaign).toEqual({ id: copyId, name: 'Copy of welcome', ...expected, draft: true, duplicatedFrom: ws.campaign.id });
        const source = await graphql(gateway.baseUrl, ws.key, CAMPAIGN, { id: ws.campaign.id });
        expect(source.body.data.campaign).toMatchObject({ id: ws.campaign.id, duplicatedFrom: null });

        const listed = await listedCampaigns(ws.key);
        expect(listed.get(copyId)).toEqual({ id: copyId, duplicatedFrom: ws.campaign.id });
        expect(listed.get(ws.campaign.id)).toEqual({ id: ws.campaign.id, duplicatedFrom: null });
      });

      it("shows the job's API key by id and exact name through duplicationJob(id)", async () => {
        const { key, keyId } = await ws.addKey(['campaigns.duplicate'], `EU team's key (${transport.name})`);
        const { jobId } = await transport.duplicate(gateway.baseUrl, key, valid());
        const read = await graphql(gateway.baseUrl, ws.key, 'query ($id: ID!) { duplicationJob(id: $id) { id apiKey { id name } } }', { id: jobId });
        expect(read.body.data.duplicationJob).toEqual({ id: jobId, apiKey: { id: keyId, name: `EU team's key (${transport.name})` } });
      });

      const REQUESTED_EVENT = `query ($job: ID!) {
        securityEvents(filter: {jobId: $job, types: [CAMPAIGN_DUPLICATION_REQUESTED]}) {
          edges { node { type apiKey { id name } channel ip jobId campaignId details } }
        }
      }`;

      it.each([
        ['every field', { description: 'for the EU', tagNames: ['promo', 'newsletter'] }, { description: 'for the EU', tagNames: ['promo', 'newsletter'] }],
        ['only the required fields', {}, { description: null, tagNames: null }],
      ])('records what was asked, with %s, in CAMPAIGN_DUPLICATION_REQUESTED as securityEvents shows it', async (_label, optional, recorded) => {
        const { jobId, response: accepted } = await transport.duplicate(gateway.baseUrl, ws.key, { ...valid(), ...optional });
        const response = await graphql(gateway.baseUrl, ws.key, REQUESTED_EVENT, { job: jobId });
        expect(response.body.data.securityEvents.edges.map((edge: any) => edge.node)).toEqual([
          {
            type: 'CAMPAIGN_DUPLICATION_REQUESTED',
            apiKey: { id: ws.keyId, name: (await gateway.app.store.findApiKey(ws.keyId))!.name },
            channel: transport.name,
            ip: '127.0.0.1',
            jobId,
            campaignId: ws.campaign.id,
            details: { name: 'Copy of welcome', ...recorded, requestId: accepted.headers['x-request-id'] },
          },
        ]);
      });

      it.each([
        ['no key', null, undefined],
        ['a malformed key', 'cgw_short', undefined],
        ['a well-formed key nobody issued', null, 'Bearer cgw_0000000000000000000000000000000000000A'],
        ['an empty bearer', null, 'Bearer '],
        ['another scheme', null, 'Basic dXNlcjpwYXNz'],
      ])('refuses %s as UNAUTHENTICATED', async (_label, key, authorization) => {
        const outcome = await transport.duplicate(gateway.baseUrl, key, valid(), { headers: { authorization } });
        expectError(outcome, 'UNAUTHENTICATED', transport.name);
        expect(outcome.status).toBe(401);
        expect(outcome.message).toBe('Invalid API key');
        // RFC 9110: a 401 names the scheme to authenticate with.
        expect(outcome.response.headers['www-authenticate']).toBe('Bearer');
      });

      it('refuses a revoked key on the very next request, a duplication or a job lookup', async () => {
        const { key, keyId } = await ws.addKey(['campaigns.duplicate']);
        const { jobId } = await transport.duplicate(gateway.baseUrl, key, valid());
        expect(jobId).not.toBeNull();
        await gateway.app.admin.revokeKey(keyId);
        expectError(await transport.duplicate(gateway.baseUrl, key, valid()), 'UNAUTHENTICATED', transport.name);
        const lookup = await transport.job(gateway.baseUrl, key, jobId!);
        expect({ status: lookup.status, code: lookup.code, scheme: lookup.response.headers['www-authenticate'] }).toEqual({
          status: 401,
          code: 'UNAUTHENTICATED',
          scheme: 'Bearer',
        });
      });

      it('checks the permission before the input: 403 before 400, and records PERMISSION_DENIED', async () => {
        const { key, keyId } = await ws.addKey(['campaigns.list']);
        const outcome = await transport.duplicate(gateway.baseUrl, key, { campaignId: ws.campaign.id, name: '' });
        expectError(outcome, 'FORBIDDEN', transport.name);
        expect(outcome.message).toBe('Access Denied');
        expect(outcome.response.headers['www-authenticate']).toBeUndefined();
        const events = await gateway.app.store.listEvents(ws.workspace.id, { apiKeyId: keyId }, { first: 10 });
        expect(events.map((event) => [event.type, event.channel, event.details.permission])).toContainEqual([
          'PERMISSION_DENIED',
          transport.name,
          'campaigns.duplicate',
        ]);
      });

      const invalid: [string, () => DuplicateArgs, string][] = [
        ['campaign id missing', () => ({ name: 'n' }), 'campaignId'],
        ['campaign id empty', () => ({ campaignId: '', name: 'n' }), 'campaignId'],
        ['campaign id too long', () => ({ campaignId: long(129), name: 'n' }), 'campaignId'],
        ['name missing', () => ({ campaignId: ws.campaign.id }), 'name'],
        ['name blank', () => ({ campaignId: ws.campaign.id, name: '   ' }), 'name'],
        ['name too long', () => ({ campaignId: ws.campaign.id, name: long(256) }), 'name'],
        ['name with a control character', () => ({ campaignId: ws.campaign.id, name: 'a\u0000b' }), 'name'],
        ['description too long', () => ({ campaignId: ws.campaign.id, name: 'n', description: long(4097) }), 'description'],
        ['an empty tag', () => ({ campaignId: ws.campaign.id, name: 'n', tagNames: [''] }), 'tagNames'],
        ['too many tags', () => ({ campaignId: ws.campaign.id, name: 'n', tagNames: Array.from({ length: 51 }, (_, i) => `t${i}`) }), 'tagNames'],
        ['a tag that does not exist', () => ({ campaignId: ws.campaign.id, name: 'n', tagNames: ['promo', 'no-such-tag'] }), 'tagNames'],
      ];

      it.each(invalid)('refuses %s as BAD_USER_INPUT, naming the field', async (_label, args, field) => {
        // A job an earlier test accepted may finish meanwhile: only the number of jobs must stay.
        const before = await jobTotal(gateway.app.store);
        const outcome = await transport.duplicate(gateway.baseUrl, ws.key, args());
        expectError(outcome, 'BAD_USER_INPUT', transport.name);
        const text = [outcome.message, ...outcome.details].join(' ');
        const name = transport.name === 'REST' ? field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`) : field;
        expect(text).toContain(name);
        expect(await jobTotal(gateway.app.store)).toBe(before);
      });

      it('takes exactly 50 tags, the most a request may name, and refuses 51 that all exist', async () => {
        const tags = Array.from({ length: 51 }, (_, i) => `limit-${i}`);
        await gateway.app.store.upsertTags(ws.workspace.id, tags);
        const fifty = await transport.duplicate(gateway.baseUrl, ws.key, { ...valid(), tagNames: tags.slice(0, 50) });
        expect(fifty.code).toBeNull();
        expect((await gateway.app.store.getJob(ws.workspace.id, fifty.jobId!))?.tagNames).toEqual(tags.slice(0, 50));

        const before = await jobTotal(gateway.app.store);
        const fiftyOne = await transport.duplicate(gateway.baseUrl, ws.key, { ...valid(), tagNames: tags });
        expectError(fiftyOne, 'BAD_USER_INPUT', transport.name);
        expect(fiftyOne.details).toEqual([transport.name === 'REST' ? "'tag_names' must have at most 50 tags" : 'tagNames: must have at most 50 tags']);
        expect(await jobTotal(gateway.app.store)).toBe(before);
      });

      it('counts the limits in characters (code points): as many emoji as letters, though each is two UTF-16 units', async () => {
        const emoji = (n: number) => '\u{1F680}'.repeat(n);
        await gateway.app.store.upsertTags(ws.workspace.id, [emoji(100)]);
        const args = { campaignId: ws.campaign.id, name: emoji(255), description: emoji(4096), tagNames: [emoji(100)] };
        const atTheLimits = await transport.duplicate(gateway.baseUrl, ws.key, args);
        expect(atTheLimits.code).toBeNull();
        expect(await gateway.app.store.getJob(ws.workspace.id, atTheLimits.jobId!)).toMatchObject({ name: args.name, description: args.description, tagNames: args.tagNames });

        const rendered = (field: string, message: string) => (transport.name === 'REST' ? `'${field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}' ${message}` : `${field}: ${message}`);
        for (const [field, over, limit] of [['name', { name: emoji(256) }, 255], ['description', { description: emoji(4097) }, 4096], ['tagNames', { tagNames: [emoji(101)] }, 100]] as const) {
          const refused = await transport.duplicate(gateway.baseUrl, ws.key, { ...args, ...over });
          expectError(refused, 'BAD_USER_INPUT', transport.name);
          expect(refused.details).toEqual([rendered(field, `must be at most ${limit} characters`)]);
        }
      });

      it('counts the limits on the text as it is kept, composed: what composes longer is refused, what composes shorter taken', async () => {
        // U+1D160 (a musical note) is one code point that NFC turns into three.
        const note = (n: number) => '\u{1D160}'.repeat(n);
        const expands = await transport.duplicate(gateway.baseUrl, ws.key, { ...valid(), name: note(255), description: note(1366) });
        expectError(expands, 'BAD_USER_INPUT', transport.name);
        expect(expands.details).toEqual(
          transport.name === 'REST'
            ? ["'name' must be at most 255 characters", "'description' must be at most 4096 characters"]
            : ['name: must be at most 255 characters', 'description: must be at most 4096 characters'],
        );
        const fits = await transport.duplicate(gateway.baseUrl, ws.key, { ...valid(), name: note(85), description: note(1365) });
        expect(fits.code).toBeNull();
        expect(await gateway.app.store.getJob(ws.workspace.id, fits.jobId!)).toMatchObject({ name: note(85).normalize('NFC'), description: note(1365).normalize('NFC') });
        // 255 accented letters typed with combining accents are 510 code points as sent, 255 as kept.
        const accented = 'e\u0301'.repeat(255);
        const composes = await transport.duplicate(gateway.baseUrl, ws.key, { ...valid(), name: accented });
        expect(composes.code).toBeNull();
        expect((await gateway.app.store.getJob(ws.workspace.id, composes.jobId!))?.name).toBe('\u00e9'.repeat(255));
      });

      it('counts the limits once spaces around the name and tags are trimmed, as they are dropped', async () => {
        const tag = `t${'x'.repeat(99)}`;
        await gateway.app.store.upsertTags(ws.workspace.id, [tag]);
        const outcome = await transport.duplicate(gateway.baseUrl, ws.key, { ...valid(), name: ` ${'a'.repeat(255)} `, tagNames: [`${tag} `] });
        expect(outcome.code).toBeNull();
        expect(await gateway.app.store.getJob(ws.workspace.id, outcome.jobId!)).toMatchObject({ name: 'a'.repeat(255), tagNames: [tag] });
      });

      it('refuses a name or description holding an API key, which the events and the upstream would show', async () => {
        const before = await jobTotal(gateway.app.store);
        const refused = await transport.duplicate(gateway.baseUrl, ws.key, { ...valid(), name: `Copy ${ws.key}`, description: `key: ${ws.key.slice(0, 12)}` });
        expectError(refused, 'BAD_USER_INPUT', transport.name);
        expect(refused.details).toEqual(
          transport.name === 'REST'
            ? ["'name' must not hold an API key", "'description' must not hold an API key"]
            : ['name: must not hold an API key', 'description: must not hold an API key'],
        );
        // REST says it in Braze's place for it too: the message.
        if (transport.name === 'REST') expect(refused.message).toBe("'name' must not hold an API key; 'description' must not hold an API key");
        expect(await jobTotal(gateway.app.store)).toBe(before);
      });

      it('calls a lone surrogate invalid Unicode, whatever else it is not', async () => {
        const refused = await transport.duplicate(gateway.baseUrl, ws.key, { ...valid(), name: '\ud800', tagNames: ['\udc00'] });
        expectError(refused, 'BAD_USER_INPUT', transport.name);
        expect(refused.details).toEqual(
          transport.name === 'REST' ? ["'name' must be valid Unicode", "'tag_names' must be valid Unicode"] : ['name: must be valid Unicode', 'tagNames: must be valid Unicode'],
        );
      });

      it('finds a tag stored composed when the request names it decomposed, and keeps the name and description composed', async () => {
        const composed = 'caf\u00e9';
        const decomposed = 'cafe\u0301';
        await gateway.app.store.upsertTags(ws.workspace.id, [composed]);
        const outcome = await transport.duplicate(gateway.baseUrl, ws.key, { ...valid(), name: decomposed, description: decomposed, tagNames: [decomposed] });
        expect(outcome.code).toBeNull();
        expect(await gateway.app.store.getJob(ws.workspace.id, outcome.jobId!)).toMatchObject({ name: composed, description: composed, tagNames: [composed] });
      });

      it('refuses a tag that only looks like one of the workspace, showing the invisible character that tells them apart', async () => {
        const outcome = await transport.duplicate(gateway.baseUrl, ws.key, { ...valid(), tagNames: ['promo\u200B'] });
        expect(outcome.details).toEqual([transport.name === 'REST' ? "'tag_names' contains unknown tag 'promo\\u200B'" : "tagNames: contains unknown tag 'promo\\u200B'"]);
      });

      it('accepts a single tag name given as a string as one tag', async () => {
        const outcome = await transport.duplicate(gateway.baseUrl, ws.key, { ...valid(), tagNames: 'promo' });
        const job = await gateway.app.store.getJob(ws.workspace.id, outcome.jobId!);
        expect(job?.tagNames).toEqual(['promo']);
      });

      it("answers a campaign of another workspace exactly like one that does not exist", async () => {
        const unknown = await transport.duplicate(gateway.baseUrl, ws.key, { campaignId: '00000000-0000-4000-8000-000000000000', name: 'n' });
        const foreign = await transport.duplicate(gateway.baseUrl, ws.key, { campaignId: otherWs.campaign.id, name: 'n' });
        expectError(unknown, 'BAD_USER_INPUT', transport.name);
        expect(unknown.message).toContain('Invalid Campaign ID');
        expect({ ...foreign, response: undefined }).toEqual({ ...unknown, response: undefined });
      });
    });

    it("answers duplicateCampaign with the job's API key by id and exact name", async () => {
      const { key, keyId } = await ws.addKey(['campaigns.duplicate', 'campaigns.details'], "Zoë's key — marketing");
      const response = await graphql(
        gateway.baseUrl,
        key,
        'mutation ($input: DuplicateCampaignInput!) { duplicateCampaign(input: $input) { job { status apiKey { id name } } } }',
        { input: { campaignId: ws.campaign.id, name: 'Copy of welcome' } },
      );
      expect(response.body.data.duplicateCampaign.job).toEqual({ status: 'PENDING', apiKey: { id: keyId, name: "Zoë's key — marketing" } });
    });

    describe('connections in local mode', () => {
      const connection = (field: string) =>
        `query ($first: Int, $after: String) { ${field}(first: $first, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }`;

      // A fresh workspace has one campaign, and one event: its key's creation.
      it.each([
        ['securityEvents', (team: TestWorkspace) => Promise.all([team.addKey(['campaigns.list']), team.addKey(['campaigns.list'])])],
        ['campaigns', (team: TestWorkspace) => Promise.all(['second', 'third'].map((name) => gateway.app.admin.addCampaign(team.workspace.id, { name, description: null, tagNames: [], body: {} })))],
      ])('%s: a last page that is exactly full says there is no next page', async (field, addTwo) => {
        const team = await gateway.workspace();
        await addTwo(team);
        const page = async (first: number, after?: string) =>
          (await graphql(gateway.baseUrl, team.key, connection(field), { first, after })).body.data[field];
        expect((await page(200)).edges).toHaveLength(3);

        const whole = await page(3);
        expect(whole.edges).toHaveLength(3);
        expect(whole.pageInfo.hasNextPage).toBe(false);
        const head = await page(2);
        expect(head.pageInfo.hasNextPage).toBe(true);
        const tail = await page(1, head.pageInfo.endCursor);
        expect(tail.pageInfo.hasNextPage).toBe(false);
        expect([...head.edges, ...tail.edges]).toEqual(whole.edges);
      });

      it.each(['securityEvents', 'campaigns'])('%s: pageInfo has Relay\'s start cursor, and no previous page when paging forward', async (field) => {
        const team = await gateway.workspace();
        await Promise.all([team.addKey(['campaigns.list']), gateway.app.admin.addCampaign(team.workspace.id, { name: 'second', description: null, tagNames: [], body: {} })]);
        const page = async (first: number, after?: string) =>
          (await graphql(gateway.baseUrl, team.key, connection(field), { first, after })).body.data[field];
        const head = await page(1);
        expect(head.pageInfo).toEqual({ hasNextPage: true, hasPreviousPage: false, startCursor: head.edges[0].cursor, endCursor: head.edges[0].cursor });
        const tail = await page(1, head.pageInfo.endCursor);
        // Edges come before `after`, but forward paging does not look back (the specification allows false).
        expect(tail.pageInfo).toEqual({ hasNextPage: false, hasPreviousPage: false, startCursor: tail.edges[0].cursor, endCursor: tail.edges[0].cursor });
        expect((await page(1, tail.pageInfo.endCursor)).pageInfo).toEqual({ hasNextPage: false, hasPreviousPage: false, startCursor: null, endCursor: null });
      });

      it.each([
        ['securityEvents', (team: TestWorkspace) => Promise.all(Array.from({ length: 51 }, () => team.addKey(['campaigns.list'])))],
        ['campaigns', (team: TestWorkspace) => Promise.all(Array.from({ length: 51 }, (_, index) => gateway.app.admin.addCampaign(team.workspace.id, { name: `c${index}`, description: null, tagNames: [], body: {} })))],
      ])('%s: first: null is the default page of 50, not the largest one', async (field, addMore) => {
        const team = await gateway.workspace();
        await addMore(team);
        const page = (await graphql(gateway.baseUrl, team.key, connection(field), { first: null })).body.data[field];
        expect(page.edges).toHaveLength(50);
        expect(page.pageInfo.hasNextPage).toBe(true);
      });
    });

    describe('a refused root list', () => {
      const both = `query ($campaigns: Int, $campaignsAfter: String, $events: Int, $eventsAfter: String) {
        campaigns(first: $campaigns, after: $campaignsAfter) { edges { node { id } } }
        securityEvents(first: $events, after: $eventsAfter) { edges { node { id } } }
      }`;

      it.each([
        ['campaigns', 'a cursor it never returned', { campaignsAfter: 'bm90LWEtY3Vyc29y' }, 'after'],
        ['campaigns', 'first: 0', { campaigns: 0 }, 'first'],
        ['securityEvents', 'a cursor it never returned', { eventsAfter: 'bm90LWEtY3Vyc29y' }, 'after'],
        ['securityEvents', 'first: 0', { events: 0 }, 'first'],
        // 200, the most, is answered: 'a last page that is exactly full' asks for it.
        ['campaigns', 'first: 201', { campaigns: 201 }, 'first'],
        ['securityEvents', 'first: 201', { events: 201 }, 'first'],
      ])('%s with %s is null with its error at its path, and the other list is still answered', async (refused, _label, variables, field) => {
        const response = await graphql(gateway.baseUrl, ws.key, both, variables);
        expect(response.status).toBe(200);
        expect(response.body.errors).toEqual([
          expect.objectContaining({ path: [refused], extensions: { code: 'BAD_USER_INPUT', issues: [expect.objectContaining({ field })] } }),
        ]);
        const answered = refused === 'campaigns' ? 'securityEvents' : 'campaigns';
        expect(response.body.data[refused]).toBeNull();
        expect(response.body.data[answered].edges.length).toBeGreaterThan(0);
      });
    });

    it("refuses a campaigns cursor of another workspace's campaign, rather than answer an empty page that reads as the end", async () => {
      const other = await gateway.workspace();
      const query = 'query ($after: String) { campaigns(first: 5, after: $after) { edges { node { id } } pageInfo { hasNextPage } } }';
      const response = await graphql(gateway.baseUrl, ws.key, query, { after: Buffer.from(`c:${other.campaign.id}`).toString('base64url') });
      expect(response.body).toEqual({
        data: { campaigns: null },
        errors: [
          expect.objectContaining({
            path: ['campaigns'],
            extensions: { code: 'BAD_USER_INPUT', issues: [{ field: 'after', message: 'names no campaign of this workspace' }] },
          }),
        ],
      });
      const own = await graphql(gateway.baseUrl, other.key, query, { after: Buffer.from(`c:${other.campaign.id}`).toString('base64url') });
      expect(own.body).toEqual({ data: { campaigns: { edges: [], pageInfo: { hasNextPage: false } } } });
    });

    describe("BAD_USER_INPUT's two shapes over GraphQL, as the README shows them", () => {
      const mutation = 'mutation ($input: DuplicateCampaignInput!) { duplicateCampaign(input: $input) { job { id } } }';

      it("the gateway's validation refuses the field: HTTP 200, the error at its path with issues", async () => {
        const response = await graphql(gateway.baseUrl, ws.key, mutation, { input: { campaignId: ws.campaign.id, name: ' ' } });
        expect(response.status).toBe(200);
        expect(response.body).toEqual({
          errors: [
            {
              message: "Invalid request: 'name' must be a non-empty string",
              locations: [{ line: 1, column: 46 }],
              path: ['duplicateCampaign'],
              extensions: { code: 'BAD_USER_INPUT', issues: [{ field: 'name', message: 'must be a non-empty string' }] },
            },
          ],
          data: { duplicateCampaign: null },
        });
      });

      it.each([
        ['a field of the wrong type', { campaignId: 'c', name: 5 }],
        ['a required field missing', { name: 'n' }],
      ])("GraphQL's coercion of the variables refuses the request, %s: HTTP 400, no data, no path, no issues", async (_label, input) => {
        const response = await graphql(gateway.baseUrl, ws.key, mutation, { input });
        expect(response.status).toBe(400);
        expect(response.body).toEqual({
          errors: [{ message: expect.stringMatching(/^Variable "\$input" got invalid value/), locations: [{ line: 1, column: 11 }], extensions: { code: 'BAD_USER_INPUT' } }],
        });
      });
    });
  });
}

describe('securityEvents(filter: {since, until}, after) over GraphQL', () => {
  const clock = new ManualClock(new Date('2030-01-01T00:00:00.000Z'));
  let timed: TestGateway;

  beforeAll(async () => {
    timed = await startGateway({}, { clock });
  });

  afterAll(async () => {
    await timed?.close();
  });

  it('includes events at `since` and excludes those at `until`, as the schema documents', async () => {
    const team = await timed.workspace();
    const since = new Date('2030-01-01T10:00:00.000Z');
    const until = new Date('2030-01-01T11:00:00.000Z');
    const at: [string, number][] = [
      ['before since', since.getTime() - 1],
      ['at since', since.getTime()],
      ['inside', since.getTime() + 30 * 60_000],
      ['just before until', until.getTime() - 1],
      ['at until', until.getTime()],
      ['after until', until.getTime() + 60_000],
    ];
    for (const [index, [name, time]] of at.entries()) {
      clock.advance(time - clock.now().getTime());
      const { jobId } = await transports[index % 2].duplicate(timed.baseUrl, team.key, { campaignId: team.campaign.id, name });
      expect(jobId).not.toBeNull();
    }
    const query = `query ($filter: SecurityEventFilter) {
      securityEvents(filter: $filter, first: 200) { edges { node { occurredAt details } } }
    }`;
    const names = async (window: { since?: Date; until?: Date }) => {
      const filter = { types: ['CAMPAIGN_DUPLICATION_REQUESTED'], ...window };
      const response = await graphql(timed.baseUrl, team.key, query, { filter });
      return response.body.data.securityEvents.edges.map((edge: any) => edge.node.details.name);
    };
    expect(await names({ since, until })).toEqual(['just before until', 'inside', 'at since']);
    expect(await names({ since })).toEqual(['after until', 'at until', 'just before until', 'inside', 'at since']);
    expect(await names({ until })).toEqual(['just before until', 'inside', 'at since', 'before since']);
  });

  it('rounds bounds finer than a millisecond up to the next, in the GraphQL filter and the CSV range alike', async () => {
    const team = await timed.workspace();
    clock.advance(Date.parse('2030-01-01T12:00:13.628Z') - clock.now().getTime());
    const { jobId } = await transports[0].duplicate(timed.baseUrl, team.key, { campaignId: team.campaign.id, name: 'at 13.628' });
    expect(jobId).not.toBeNull();
    clock.advance(60_000);
    const query = `query ($filter: SecurityEventFilter) {
      securityEvents(filter: $filter) { edges { node { details } } }
    }`;
    const listed = async (since: string, until: string) => {
      const filter = { types: ['CAMPAIGN_DUPLICATION_REQUESTED'], since, until };
      const response = await graphql(timed.baseUrl, team.key, query, { filter });
      return response.body.data.securityEvents.edges.map((edge: any) => edge.node.details.name);
    };
    const downloaded = async (start: string, end: string) => {
      const response = await http(timed.baseUrl, 'GET', `/security_events/download?start=${start}&end=${end}`, { headers: bearer(team.key) });
      expect(response.status).toBe(200);
      return response.text.split('\n').filter((line) => line.includes('at 13.628')).length;
    };
    for (const [since, until, holds] of [
      ['2030-01-01T12:00:13.6279Z', '2030-01-01T12:00:13.6281Z', true],
      ['2030-01-01T12:00:13.627000001Z', '2030-01-01T12:00:13.628000001Z', true],
      ['2030-01-01T12:00:13.6280Z', '2030-01-01T12:00:13.6290Z', true],
      ['2030-01-01T12:00:13.6281Z', '2030-01-01T12:00:13.7Z', false],
      ['2030-01-01T12:00:13.6Z', '2030-01-01T12:00:13.6280Z', false],
    ] as const) {
      expect(await listed(since, until), `${since} to ${until}`).toEqual(holds ? ['at 13.628'] : []);
      expect(await downloaded(since, until), `${since} to ${until}`).toBe(holds ? 1 : 0);
    }
  });

  it('refuses a window that holds no event, `until` not after `since`, as the download refuses its range', async () => {
    const team = await timed.workspace();
    const query = 'query ($filter: SecurityEventFilter) { securityEvents(filter: $filter) { edges { node { id } } } }';
    const same = (at: string) => `: both come to ${at}, as each is taken to the millisecond, a finer fraction rounded up to the next`;
    for (const [since, until, why] of [
      ['2030-01-02T00:00:00.000Z', '2030-01-01T00:00:00.000Z', ''],
      ['2030-01-01T00:00:00.000Z', '2030-01-01T00:00:00.000Z', same('2030-01-01T00:00:00.000Z')],
      // The caller's `until` is after its `since`, but not by a whole millisecond: the refusal must say why it is refused.
      ['2030-01-01T00:00:00.0001Z', '2030-01-01T00:00:00.0009Z', same('2030-01-01T00:00:00.001Z')],
    ]) {
      const listed = await graphql(timed.baseUrl, team.key, query, { filter: { since, until } });
      expect(listed.status).toBe(200);
      expect(listed.body).toEqual({
        errors: [
          expect.objectContaining({
            message: `Invalid date range: 'until' must be after since${why}`,
            path: ['securityEvents'],
            extensions: { code: 'BAD_USER_INPUT', issues: [{ field: 'until', message: `must be after since${why}` }] },
          }),
        ],
        data: { securityEvents: null },
      });
      const downloaded = await http(timed.baseUrl, 'GET', `/security_events/download?start=${since}&end=${until}`, { headers: bearer(team.key) });
      expect(downloaded.status).toBe(400);
      expect(downloaded.body).toEqual({ message: 'Invalid date range', code: 'BAD_USER_INPUT', errors: [`'end' must be after start${why}`] });
    }
    // An empty list of types is a filter that matches nothing, as its description says, not an error.
    expect((await graphql(timed.baseUrl, team.key, query, { filter: { types: [] } })).body).toEqual({ data: { securityEvents: { edges: [] } } });
  });

  // Last: it prunes every event this gateway's store holds.
  it("refuses the cursor of an event pruned since it was listed, saying to start again, rather than end the list there", async () => {
    const team = await timed.workspace();
    await team.addKey(['campaigns.list']);
    const query = 'query ($after: String) { securityEvents(first: 1, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } } }';
    const first = (await graphql(timed.baseUrl, team.key, query, {})).body.data.securityEvents;
    expect(first.pageInfo.hasNextPage).toBe(true);

    // As retention would, with a cutoff just past the page's event: the older event goes with it.
    expect((await timed.app.store.pruneEvents(new Date(clock.now().getTime() + 1), 1000, null)).next).toBeNull();
    const next = await graphql(timed.baseUrl, team.key, query, { after: first.pageInfo.endCursor });
    expect(next.status).toBe(200);
    expect(next.body).toEqual({
      errors: [
        expect.objectContaining({
          message:
            "The event this cursor points at is not in this workspace: 'after' names no event of this workspace (deleted once past its retention period, or never this workspace's): start again from the first page",
          path: ['securityEvents'],
          extensions: { code: 'BAD_USER_INPUT', issues: [{ field: 'after', message: expect.stringContaining('start again from the first page') }] },
        }),
      ],
      data: { securityEvents: null },
    });
  });
});

describe('the quota', () => {
  let limited: TestGateway;

  beforeAll(async () => {
    limited = await startGateway({ DUPLICATE_RATE_LIMIT: '100', DUPLICATE_RATE_WINDOW_SECONDS: '60' });
  });

  afterAll(async () => {
    await limited?.close();
  });

  it('is shared by both transports: 60 REST and 40 GraphQL calls spend it, then both get 429', async () => {
    const team = await limited.workspace();
    const args = { campaignId: team.campaign.id, name: 'copy' };
    const [restTransport, graphqlTransport] = transports;
    const accepted = await Promise.all([
      ...Array.from({ length: 60 }, () => restTransport.duplicate(limited.baseUrl, team.key, args)),
      ...Array.from({ length: 40 }, () => graphqlTransport.duplicate(limited.baseUrl, team.key, args)),
    ]);
    expect(accepted.filter((outcome) => outcome.jobId !== null)).toHaveLength(100);

    for (const transport of transports) {
      const refused = await transport.duplicate(limited.baseUrl, team.key, args);
      expectError(refused, 'RATE_LIMITED', transport.name);
      expect(refused.status).toBe(429);
      expect(refused.message).toBe('Rate limit exceeded');
      expect(Number(refused.response.headers['retry-after'])).toBeGreaterThan(0);
      expect(Number(refused.response.headers['retry-after'])).toBeLessThanOrEqual(60);
      expect(refused.response.headers['x-ratelimit-remaining']).toBe('0');
      expect(Number(refused.response.headers['x-ratelimit-reset'])).toBeGreaterThan(Date.now() / 1000);
    }
    const other = await limited.workspace();
    expect((await transports[0].duplicate(limited.baseUrl, other.key, { campaignId: other.campaign.id, name: 'x' })).jobId).not.toBeNull();
  });

  it('refuses the field past the quota and keeps the others, as the README shows it', async () => {
    const team = await limited.workspace();
    const input = { campaignId: team.campaign.id, name: 'copy' };
    for (let index = 0; index < 99; index++) expect((await transports[0].duplicate(limited.baseUrl, team.key, input)).jobId).not.toBeNull();
    const mutation = [
      'mutation ($input: DuplicateCampaignInput!) {',
      '  first: duplicateCampaign(input: $input) { job { id status } }',
      '  second: duplicateCampaign(input: $input) { job { id status } }',
      '}',
    ].join('\n');
    const response = await graphql(limited.baseUrl, team.key, mutation, { input });
    expect(response.status).toBe(200);
    expect(response.body).toEqual({
      errors: [
        {
          message: 'Rate limit exceeded',
          locations: [{ line: 3, column: 3 }],
          path: ['second'],
          extensions: { code: 'RATE_LIMITED', retryAfterSeconds: expect.any(Number) },
        },
      ],
      data: { first: { job: { id: expect.any(String), status: 'PENDING' } }, second: null },
    });
  });

  it('counts every executed duplicateCampaign field, so aliases cannot multiply one request', async () => {
    const team = await limited.workspace();
    const fields = Array.from(
      { length: 3 },
      (_, i) => `c${i}: duplicateCampaign(input: {campaignId: "${team.campaign.id}", name: "alias ${i}"}) { job { id } }`,
    );
    const response = await graphql(limited.baseUrl, team.key, `mutation { ${fields.join('\n')} }`);
    expect(Object.keys(response.body.data)).toHaveLength(3);
    expect(response.headers['x-ratelimit-remaining']).toBe('97');
    const jobs = await limited.app.store.listEvents(team.workspace.id, { types: ['CAMPAIGN_DUPLICATION_REQUESTED'] }, { first: 10 });
    expect(jobs).toHaveLength(3);
  });
});

describe('X-RateLimit-* on every answer to a duplication by a known caller', () => {
  const LIMIT = 5;
  const dir = mkdtempSync(join(tmpdir(), 'cgw-ratelimit-'));
  let gw: TestGateway;
  /** While set, enqueueJob waits for it: a request held after its idempotency key was reserved. */
  let hold: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    const env = { DATA_DIR: dir, DUPLICATE_RATE_LIMIT: String(LIMIT), DUPLICATE_RATE_WINDOW_SECONDS: '3600' };
    const store = storeHeldOn(await createStore(loadConfig(env), { olderSchema: 'upgrade' }), ['enqueueJob'], () => hold?.());
    gw = await startGateway(env, { store });
  });

  afterAll(async () => {
    await gw?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const valid = (team: TestWorkspace): DuplicateArgs => ({ campaignId: team.campaign.id, name: 'copy' });
  const duplicate = (transport: Transport, team: TestWorkspace, args: DuplicateArgs, idempotencyKey?: string) =>
    transport.duplicate(gw.baseUrl, team.key, args, { idempotencyKey });
  /** Bytes no client of the transport's own would send, to the transport's endpoint. */
  const raw = (transport: Transport, team: TestWorkspace, body: string | Buffer, headers: Record<string, string> = {}) =>
    http(gw.baseUrl, 'POST', transport.endpoint, { headers: { ...json, ...bearer(team.key), ...headers }, body });

  /** The second of two requests with one idempotency key, sent while the first is being accepted. */
  async function whileInFlight(transport: Transport, team: TestWorkspace): Promise<HttpResult> {
    let arrived!: () => void;
    let release!: () => void;
    const reached = new Promise<void>((resolve) => (arrived = resolve));
    const released = new Promise<void>((resolve) => (release = resolve));
    hold = () => {
      hold = undefined;
      arrived();
      return released;
    };
    const first = duplicate(transport, team, valid(team), 'held');
    await reached;
    const second = await duplicate(transport, team, valid(team), 'held');
    release();
    expect((await first).jobId).not.toBeNull();
    return second.response;
  }

  /** An idempotency key accepted once, then sent with another body; `spend` first spends the rest of the quota. */
  const reusedWithAnotherBody = (spend: boolean) => async (transport: Transport, team: TestWorkspace) => {
    expect((await duplicate(transport, team, valid(team), 'reused')).jobId).not.toBeNull();
    for (let index = 1; spend && index < LIMIT; index++) expect((await duplicate(transport, team, valid(team))).jobId).not.toBeNull();
    return (await duplicate(transport, team, { ...valid(team), name: 'other' }, 'reused')).response;
  };

  type PerTransport<T> = Record<Transport['name'], T>;
  const both = <T>(value: T): PerTransport<T> => ({ REST: value, GRAPHQL: value });
  /** A refusal GraphQL answers with an error at the field's path, in an HTTP 200. */
  const fieldError = (status: number): PerTransport<number> => ({ REST: status, GRAPHQL: 200 });

  // Each case runs in a fresh workspace; `remaining` is what its answer must say is left (null: no headers).
  const cases: {
    name: string;
    status: PerTransport<number>;
    /** REST's code; GraphQL answers with its GraphQL name, and with it as `reason` where that name differs. */
    code: ErrorCode | null;
    remaining: PerTransport<number | null>;
    send: (transport: Transport, team: TestWorkspace) => Promise<HttpResult>;
  }[] = [
    { name: 'accepted', status: { REST: 202, GRAPHQL: 200 }, code: null, remaining: both(LIMIT - 1), send: async (t, team) => (await duplicate(t, team, valid(team))).response },
    {
      name: 'invalid fields, after the quota point',
      status: fieldError(400),
      code: 'BAD_USER_INPUT',
      remaining: both(LIMIT - 1),
      send: async (t, team) => (await duplicate(t, team, { campaignId: team.campaign.id, name: '   ' })).response,
    },
    {
      // Braze's order over REST; GraphQL's type system refuses the variables before any resolver runs.
      name: 'a field of the wrong type',
      status: both(400),
      code: 'BAD_USER_INPUT',
      remaining: { REST: LIMIT - 1, GRAPHQL: null },
      send: async (t, team) => (await duplicate(t, team, { campaignId: team.campaign.id, name: 5 })).response,
    },
    { name: 'an unknown campaign', status: fieldError(400), code: 'BAD_USER_INPUT', remaining: both(LIMIT - 1), send: async (t, team) => (await duplicate(t, team, { campaignId: 'nope', name: 'n' })).response },
    { name: 'a bad idempotency key', status: fieldError(400), code: 'BAD_USER_INPUT', remaining: both(LIMIT), send: async (t, team) => (await duplicate(t, team, valid(team), 'a b')).response },
    {
      name: 'the permission missing',
      status: fieldError(403),
      code: 'FORBIDDEN',
      remaining: both(LIMIT),
      send: async (t, team) => (await duplicate(t, { ...team, key: (await team.addKey(['campaigns.list'])).key }, valid(team))).response,
    },
    { name: 'an idempotency key in flight', status: fieldError(409), code: 'IDEMPOTENCY_IN_FLIGHT', remaining: both(LIMIT - 1), send: whileInFlight },
    { name: 'an idempotency key reused with another body', status: fieldError(422), code: 'IDEMPOTENCY_MISMATCH', remaining: both(LIMIT - 1), send: reusedWithAnotherBody(false) },
    { name: 'an idempotency key reused with another body, the quota spent', status: fieldError(422), code: 'IDEMPOTENCY_MISMATCH', remaining: both(0), send: reusedWithAnotherBody(true) },
    {
      name: 'the quota spent',
      status: both(429),
      code: 'RATE_LIMITED',
      remaining: both(0),
      send: async (t, team) => {
        for (let index = 0; index < LIMIT; index++) expect((await duplicate(t, team, valid(team))).jobId).not.toBeNull();
        return (await duplicate(t, team, valid(team))).response;
      },
    },
    { name: 'no key: no workspace, so no quota to show', status: both(401), code: 'UNAUTHENTICATED', remaining: both(null), send: async (t, team) => (await duplicate(t, { ...team, key: 'cgw_nope' }, valid(team))).response },
    // Refused before the request is read: REST knows the caller by then, GraphQL does not yet know the operation.
    { name: 'malformed JSON', status: both(400), code: 'BAD_USER_INPUT', remaining: { REST: LIMIT, GRAPHQL: null }, send: (t, team) => raw(t, team, '{"campaign_id": ') },
    { name: 'a body over the limit', status: both(413), code: 'PAYLOAD_TOO_LARGE', remaining: { REST: LIMIT, GRAPHQL: null }, send: async (t, team) => (await duplicate(t, team, { ...valid(team), name: 'x'.repeat(70 * 1024) })).response },
    { name: 'text/plain', status: both(415), code: 'UNSUPPORTED_MEDIA_TYPE', remaining: { REST: LIMIT, GRAPHQL: null }, send: (t, team) => raw(t, team, '{}', { 'content-type': 'text/plain' }) },
    { name: 'an empty body', status: both(400), code: 'BAD_USER_INPUT', remaining: { REST: LIMIT, GRAPHQL: null }, send: (t, team) => raw(t, team, '') },
    {
      name: 'a charset other than UTF-8',
      status: both(415),
      code: 'UNSUPPORTED_MEDIA_TYPE',
      remaining: { REST: LIMIT, GRAPHQL: null },
      send: (t, team) => raw(t, team, Buffer.from(t.body({ ...valid(team), name: 'Café' }), 'latin1'), { 'content-type': 'application/json; charset=iso-8859-1' }),
    },
    {
      name: 'bytes that are not UTF-8',
      status: both(400),
      code: 'BAD_USER_INPUT',
      remaining: { REST: LIMIT, GRAPHQL: null },
      send: (t, team) => raw(t, team, Buffer.from(t.body({ ...valid(team), name: 'Café' }), 'latin1')),
    },
    {
      name: 'a content coding',
      status: both(415),
      code: 'UNSUPPORTED_MEDIA_TYPE',
      remaining: { REST: LIMIT, GRAPHQL: null },
      send: (t, team) => raw(t, team, gzipSync(t.body(valid(team))), { 'content-encoding': 'gzip' }),
    },
  ];

  describe.each(transports)('over $name', (transport) => {
    it.each(cases)('$name', async ({ status, code, remaining, send }) => {
      const team = await gw.workspace();
      const before = Date.now() / 1000;
      const response = await send(transport, team);
      expect(response.status).toBe(status[transport.name]);
      // GraphQL names some codes otherwise (both idempotency refusals are CONFLICT), and then gives REST's as `reason`.
      if (transport.name === 'GRAPHQL') {
        const extensions = response.body.errors?.[0]?.extensions;
        const graphqlCode = code === null ? null : ERROR_CODES[code].graphqlCode;
        expect([extensions?.code ?? null, extensions?.reason]).toEqual([graphqlCode, graphqlCode === code ? undefined : code]);
      } else if (code !== null) expect([response.body.code, response.body.message]).toEqual([code, expect.any(String)]);
      const left = remaining[transport.name];
      if (left === null) {
        for (const name of ['x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset']) expect(response.headers[name]).toBeUndefined();
        return;
      }
      expect(response.headers['x-ratelimit-limit']).toBe(String(LIMIT));
      expect(response.headers['x-ratelimit-remaining']).toBe(String(left));
      const reset = Number(response.headers['x-ratelimit-reset']);
      expect(reset).toBeGreaterThan(before);
      expect(reset).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000) + 3600);
    });
  });
});

describe.each(transports)('a duplication refused while the quota cannot be read, over $name', (transport) => {
  let gw: TestGateway;
  let team: TestWorkspace;

  beforeAll(async () => {
    const outage = () => Promise.reject(dependencyUnavailable(new Error('quota store unreachable')));
    const quota: Quota = { limit: 5, consume: outage, peek: outage, refund: outage };
    gw = await startGateway({}, { quota });
    team = await gw.workspace();
  });

  afterAll(async () => {
    await gw?.close();
  });

  const noQuotaHeaders = (response: HttpResult) => {
    for (const name of ['x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset']) expect(response.headers[name]).toBeUndefined();
  };

  // Neither refusal needs the quota: the answer stands, without the state it could not read.
  it('is still refused for the missing permission', async () => {
    const { key } = await team.addKey(['campaigns.list']);
    const outcome = await transport.duplicate(gw.baseUrl, key, { campaignId: team.campaign.id, name: 'n' });
    expectError(outcome, 'FORBIDDEN', transport.name);
    noQuotaHeaders(outcome.response);
  });

  it('is still refused for a bad idempotency key', async () => {
    const outcome = await transport.duplicate(gw.baseUrl, team.key, { campaignId: team.campaign.id, name: 'n' }, { idempotencyKey: 'a b' });
    expectError(outcome, 'BAD_USER_INPUT', transport.name);
    noQuotaHeaders(outcome.response);
  });

  it('is refused as unavailable when it would take a point', async () => {
    const outcome = await transport.duplicate(gw.baseUrl, team.key, { campaignId: team.campaign.id, name: 'n' });
    expectError(outcome, 'UNAVAILABLE', transport.name);
    expect(outcome.status).toBe(503);
    expect(outcome.response.headers['retry-after']).toBe('5');
    noQuotaHeaders(outcome.response);
  });
});

describe.each(transports)('a duplication that fails inside the gateway after its quota point, over $name', (transport) => {
  const LIMIT = 5;
  const logs = recordingLogger();
  let gw: TestGateway;

  beforeAll(async () => {
    gw = await startGateway({ DUPLICATE_RATE_LIMIT: String(LIMIT) }, { logger: logs.logger }, {
      wrapStore: (store) => storeFailingOn(store, ['enqueueJob'], () => true),
    });
  });

  afterAll(async () => {
    await gw?.close();
  });

  it('says so without details, shows the point it spent, and logs what went wrong', async () => {
    const team = await gw.workspace();
    const outcome = await transport.duplicate(gw.baseUrl, team.key, { campaignId: team.campaign.id, name: 'n' });
    expectError(outcome, 'INTERNAL', transport.name);
    expect(outcome.message).toBe('Internal server error');
    expect(outcome.response.text).not.toContain('/var/secret');
    expect(outcome.response.headers['x-ratelimit-remaining']).toBe(String(LIMIT - 1));
    const requestId = outcome.response.headers['x-request-id'];
    const logged = logs.lines.map((line) => JSON.parse(line)).filter((line) => line.reqId === requestId && line.level === 50);
    expect(logged.map((line) => line.err.message)).toEqual(['disk /var/secret/gateway.db exploded']);
  });
});

describe.each(transports)('a duplication refused for an outage while the quota store is silent, over $name', (transport) => {
  const LIMIT = 5;
  const never = () => new Promise<never>(() => undefined);
  let quotaFails = false;
  let peeks = 0;
  let gw: TestGateway;
  let team: TestWorkspace;

  beforeAll(async () => {
    // A quota store that stops answering, as PostgreSQL does when it holds the limiters and goes silent: a take fails
    // once its statement is given up, and a look or a refund is left hanging as that statement was.
    const quota: Quota = {
      limit: LIMIT,
      consume: async () => {
        if (quotaFails) throw limitsUnavailable(new Error('Query read timeout'));
        return { limit: LIMIT, remaining: LIMIT - 1, resetAt: new Date(Date.now() + 60_000) };
      },
      peek: () => {
        peeks += 1;
        return never();
      },
      refund: never,
    };
    gw = await startGateway({}, { quota }, {
      wrapStore: (store) => storeFailingOn(store, ['enqueueJob'], () => !quotaFails, () => dependencyUnavailable(new Error('Query read timeout'))),
    });
    team = await gw.workspace();
  });

  afterAll(async () => {
    await gw?.close();
  });

  it('answers a failed take at once, without asking the silent store for the state', async () => {
    quotaFails = true;
    const outcome = await transport.duplicate(gw.baseUrl, team.key, { campaignId: team.campaign.id, name: 'n' });
    expectError(outcome, 'UNAVAILABLE', transport.name);
    expect(outcome.response.headers['x-ratelimit-remaining']).toBeUndefined();
    expect(peeks).toBe(0);
  });

  it('answers a failed enqueue without waiting out the refund of its point, reporting the point as taken', async () => {
    quotaFails = false;
    const outcome = await transport.duplicate(gw.baseUrl, team.key, { campaignId: team.campaign.id, name: 'n' });
    expectError(outcome, 'UNAVAILABLE', transport.name);
    expect(outcome.response.headers['x-ratelimit-remaining']).toBe(String(LIMIT - 1));
  });
});

describe.each(transports)('a duplication refused as unavailable after its quota point, not for an outage of its own, over $name', (transport) => {
  const LIMIT = 5;
  let gw: TestGateway;

  beforeAll(async () => {
    // UNAVAILABLE, but not a DependencyUnavailableError: what an upstream outage raises. The store stands in
    // for the dependency, failing where the request has already taken its point.
    gw = await startGateway({ DUPLICATE_RATE_LIMIT: String(LIMIT) }, {}, {
      wrapStore: (store) => storeFailingOn(store, ['enqueueJob'], () => true, () => new GatewayError('UNAVAILABLE', 'The upstream answered 503')),
    });
  });

  afterAll(async () => {
    await gw?.close();
  });

  it("keeps its point: only an outage of the instance's own store or quota store is given back", async () => {
    const team = await gw.workspace();
    const args = { campaignId: team.campaign.id, name: 'n' };
    const first = await transport.duplicate(gw.baseUrl, team.key, args);
    expectError(first, 'UNAVAILABLE', transport.name);
    expect(first.response.headers['x-ratelimit-remaining']).toBe(String(LIMIT - 1));
    // Spent in the quota itself, not only in the answer.
    const second = await transport.duplicate(gw.baseUrl, team.key, args);
    expect(second.response.headers['x-ratelimit-remaining']).toBe(String(LIMIT - 2));
  });
});

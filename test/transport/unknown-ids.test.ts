/**
 * Ids no row holds (a NUL in them, a shape the gateway never makes) are answered like unknown ids on both
 * transports and both stores: PostgreSQL cannot even take text with a NUL, which must not become a 500.
 * What validation refuses is refused the same way whatever the store.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isGatewayId } from '../../src/domain/ids.js';
import type { GatewayStore } from '../../src/domain/ports.js';
import type { SecurityEventFilter } from '../../src/domain/types.js';
import { bearer, graphql, http, rawHttp, recordingLogger, storeFailingOn, type TestGateway, type TestWorkspace } from '../support/gateway.js';
import { STORES } from '../support/stores.js';
import { rest, transports, type DuplicateArgs } from '../support/transports.js';

const ENV = { WORKER_CONCURRENCY: '0' };

const CAMPAIGN = 'query ($id: ID!) { campaign(id: $id) { id } }';
const EVENTS = 'query ($filter: SecurityEventFilter, $after: String) { securityEvents(filter: $filter, after: $after) { edges { node { type } } pageInfo { hasNextPage endCursor } } }';
const NO_EVENTS = { data: { securityEvents: { edges: [], pageInfo: { hasNextPage: false, endCursor: null } } } };

for (const { name, skip, startGateway } of STORES) {
  describe.skipIf(skip)(`ids no row holds, on a ${name} store`, () => {
    let gateway: TestGateway;
    let ws: TestWorkspace;
    let jobId: string;
    /** The ids every job lookup of the store was asked for. */
    const jobLookups: string[] = [];
    /** The filters every event listing of the store was given. */
    const eventLookups: SecurityEventFilter[] = [];
    const { logger, lines } = recordingLogger();

    beforeAll(async () => {
      const recordLookups = (store: GatewayStore) =>
        storeFailingOn(
          storeFailingOn(store, ['getJob'], (_workspaceId, id) => {
            jobLookups.push(String(id));
            return false;
          }),
          ['listEvents'],
          (_workspaceId, filter) => {
            eventLookups.push(filter as SecurityEventFilter);
            return false;
          },
        );
      gateway = await startGateway(ENV, { logger }, { wrapStore: recordLookups });
      ws = await gateway.workspace();
      jobId = (await rest.duplicate(gateway.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'kept' })).jobId!;
    });

    afterAll(async () => {
      await gateway?.close();
    });

    beforeEach(() => {
      lines.length = 0;
      jobLookups.length = 0;
      eventLookups.length = 0;
    });

    afterEach(() => {
      // Nothing here is the gateway's fault: no "unexpected error" (level 50) or worse.
      expect(lines.map((line) => JSON.parse(line)).filter((line) => line.level >= 50)).toEqual([]);
    });

    describe.each(transports)('over $name', (transport) => {
      it('answers a job id no job has like an unknown one, without looking up an id the gateway never makes', async () => {
        expect((await transport.job(gateway.baseUrl, ws.key, jobId)).job?.id).toBe(jobId);
        const unknown = await transport.job(gateway.baseUrl, ws.key, '00000000-0000-4000-8000-000000000000');
        expect(unknown).toMatchObject({ status: transport.name === 'REST' ? 404 : 200, code: null, job: null });
        for (const id of ['a\u0000b', `${jobId}\u0000`, '\u0000', 'j'.repeat(37), 'not-a-job']) {
          const outcome = await transport.job(gateway.baseUrl, ws.key, id);
          expect({ id, status: outcome.status, code: outcome.code, body: outcome.response.body }).toEqual({
            id,
            status: unknown.status,
            code: null,
            body: unknown.response.body,
          });
        }
        expect(jobLookups.filter((id) => !isGatewayId(id))).toEqual([]);
      });

      const refused: [string, () => DuplicateArgs, string][] = [
        ['campaign id', () => ({ campaignId: `${ws.campaign.id}\u0000`, name: 'n' }), 'campaign'],
        ['name', () => ({ campaignId: ws.campaign.id, name: 'a\u0000b' }), 'name'],
        ['description', () => ({ campaignId: ws.campaign.id, name: 'n', description: 'a\u0000b' }), 'description'],
        ['tags', () => ({ campaignId: ws.campaign.id, name: 'n', tagNames: ['promo', 'pro\u0000mo'] }), 'tag'],
        ['single tag', () => ({ campaignId: ws.campaign.id, name: 'n', tagNames: 'pro\u0000mo' }), 'tag'],
      ];

      it.each(refused)('refuses a NUL in the %s as BAD_USER_INPUT naming the field, with an idempotency key or without', async (_label, args, field) => {
        for (const idempotencyKey of [undefined, `nul-${transport.name}-${field}`]) {
          const outcome = await transport.duplicate(gateway.baseUrl, ws.key, args(), { idempotencyKey });
          expect(outcome).toMatchObject({ status: transport.name === 'REST' ? 400 : 200, code: 'BAD_USER_INPUT', jobId: null });
          expect([outcome.message, ...outcome.details].join(' ')).toContain(field);
        }
      });
    });

    it('answers a campaign id holding NUL with no campaign', async () => {
      expect((await graphql(gateway.baseUrl, ws.key, CAMPAIGN, { id: ws.campaign.id })).body).toEqual({ data: { campaign: { id: ws.campaign.id } } });
      for (const id of ['a\u0000b', `${ws.campaign.id}\u0000`]) {
        const response = await graphql(gateway.baseUrl, ws.key, CAMPAIGN, { id });
        expect({ id, status: response.status, body: response.body }).toEqual({ id, status: 200, body: { data: { campaign: null } } });
      }
    });

    it('lists no events for a job or key id no job or key has', async () => {
      expect((await graphql(gateway.baseUrl, ws.key, EVENTS, { filter: { jobId } })).body.data.securityEvents.edges).toEqual([
        { node: { type: 'CAMPAIGN_DUPLICATION_REQUESTED' } },
      ]);
      for (const filter of [{ jobId: 'a\u0000b' }, { jobId: `${jobId}\u0000` }, { apiKeyId: `${ws.keyId}\u0000` }, { apiKeyId: 'k'.repeat(37) }]) {
        const response = await graphql(gateway.baseUrl, ws.key, EVENTS, { filter });
        expect({ filter, status: response.status, body: response.body }).toEqual({ filter, status: 200, body: NO_EVENTS });
      }
      // Only the listing for the job that exists reached the store.
      expect(eventLookups).toHaveLength(1);
      expect(eventLookups[0].jobId).toBe(jobId);
    });

    it('refuses a cursor, an idempotency key or a download range holding NUL as invalid input', async () => {
      const cursor = await graphql(gateway.baseUrl, ws.key, EVENTS, { after: Buffer.from(`e:${jobId}\u0000`).toString('base64url') });
      expect(cursor.body.errors[0].extensions.code).toBe('BAD_USER_INPUT');
      const key = await transports[1].duplicate(gateway.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'n' }, { idempotencyKey: 'k\u0000' });
      expect(key).toMatchObject({ code: 'BAD_USER_INPUT', jobId: null });
      const range = await http(gateway.baseUrl, 'GET', '/security_events/download?start=2026-01-01%00&end=2026-01-02', { headers: bearer(ws.key) });
      expect(range.status).toBe(400);
      // HTTP itself cannot carry a NUL in a header: Node refuses the request before any route sees it.
      for (const header of [`Authorization: Bearer ${ws.key}\u0000`, `Idempotency-Key: k\u0000`]) {
        const { head } = await rawHttp(gateway.baseUrl, `GET /duplication_jobs/${jobId} HTTP/1.1\r\nHost: x\r\n${header}\r\n\r\n`);
        expect(head).toMatch(/^HTTP\/1\.1 400 /);
      }
    });
  });
}

/**
 * The jobs of a query's events are read from the store in one statement per batch, not one per event, and are
 * answered as duplicationJob(id) answers them: of the key's workspace, and another key's only with
 * security_events.read.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { GatewayStore } from '../../src/domain/ports.js';
import { eventFixture } from '../support/fixtures.js';
import { graphql, type HttpResult, type TestGateway } from '../support/gateway.js';
import { STORES } from '../support/stores.js';
import { rest } from '../support/transports.js';

const ENV = { WORKER_CONCURRENCY: '0' };

/** Three aliases of a page of events, each with its job, as the costliest query the limits allow asks. */
const EVENTS_WITH_THEIR_JOBS = `{
  a: securityEvents(first: 50) { edges { node { jobId job { id status } } } }
  b: securityEvents(first: 50) { edges { node { jobId job { id } } } }
  c: securityEvents(first: 50, filter: {types: [CAMPAIGN_DUPLICATION_REQUESTED]}) { edges { node { jobId job { id } } } }
}`;

/** Each alias's events about a job, as [jobId, the id of the job answered or null]. */
function eventJobs(response: HttpResult): Record<string, (string | null)[][]> {
  expect(response.body.errors).toBeUndefined();
  const pages = Object.entries(response.body.data as Record<string, { edges: { node: { jobId: string | null; job: { id: string } | null } }[] }>);
  return Object.fromEntries(pages.map(([alias, page]) => [alias, page.edges.filter(({ node }) => node.jobId !== null).map(({ node }) => [node.jobId, node.job?.id ?? null])]));
}

for (const kind of STORES) {
  describe.skipIf(kind.skip)(`the jobs of a query's events, on a ${kind.name} store`, () => {
    let gateway: TestGateway | undefined;

    afterEach(async () => {
      await gateway?.close();
      gateway = undefined;
    });

    it('are read in one statement per batch, each job once, and answered as duplicationJob answers them', async () => {
      const reads: { getJob: number; getJobs: string[][] } = { getJob: 0, getJobs: [] };
      gateway = await kind.startGateway(ENV, {}, {
        wrapStore: (store) =>
          new Proxy(store, {
            get(target, property) {
              const value = Reflect.get(target, property, target);
              if (property === 'getJob') reads.getJob += 1;
              if (property === 'getJobs') {
                return (workspaceId: string, ids: readonly string[]) => {
                  reads.getJobs.push([...ids]);
                  return target.getJobs(workspaceId, ids);
                };
              }
              return typeof value === 'function' ? value.bind(target) : value;
            },
          }) as GatewayStore,
      });
      const ws = await gateway.workspace();
      const limited = await ws.addKey(['campaigns.duplicate']);
      const duplicate = async (key: string) => (await rest.duplicate(gateway!.baseUrl, key, { campaignId: ws.campaign.id, name: 'copy' })).jobId!;
      const mine = [await duplicate(limited.key), await duplicate(limited.key)];
      const theirs = [await duplicate(ws.key), await duplicate(ws.key)];
      const elsewhere = await gateway.workspace('elsewhere');
      const foreign = (await rest.duplicate(gateway.baseUrl, elsewhere.key, { campaignId: elsewhere.campaign.id, name: 'copy' })).jobId!;
      // Events naming a job the limited key may not see: another key's, and another workspace's.
      for (const jobId of [theirs[0], foreign]) {
        await gateway.app.store.insertEvent(eventFixture(ws.workspace.id, { apiKeyId: limited.keyId, jobId, occurredAt: new Date() }));
      }
      reads.getJob = 0;

      // With security_events.read: every event of the workspace, each with its job, but the other workspace's.
      const all = eventJobs(await graphql(gateway.baseUrl, ws.key, EVENTS_WITH_THEIR_JOBS));
      const expected = [[foreign, null], [theirs[0], theirs[0]], ...[...mine, ...theirs].reverse().map((id) => [id, id])];
      for (const alias of ['a', 'b', 'c']) expect(all[alias]).toEqual(expected);
      expect(reads.getJob).toBe(0);
      // One batch for the three lists, or one per list where their reads end in turns of their own (PostgreSQL).
      expect(reads.getJobs.length).toBeGreaterThanOrEqual(1);
      expect(reads.getJobs.length).toBeLessThanOrEqual(3);
      expect(reads.getJobs.flat().sort()).toEqual([foreign, ...mine, ...theirs].sort());

      // Without it: the key's own events, and their jobs but another key's.
      const own = eventJobs(await graphql(gateway.baseUrl, limited.key, EVENTS_WITH_THEIR_JOBS));
      for (const alias of ['a', 'b', 'c']) expect(own[alias]).toEqual([[foreign, null], [theirs[0], null], ...[...mine].reverse().map((id) => [id, id])]);
      expect(reads.getJob).toBe(0);
    });
  });
}

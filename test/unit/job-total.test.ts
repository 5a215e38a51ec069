/** jobTotal (test/support/store-checks.ts), which many suites use to show a refused request made no job. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GatewayStore } from '../../src/domain/ports.js';
import type { TestGateway } from '../support/gateway.js';
import { jobTotal } from '../support/store-checks.js';
import { STORES } from '../support/stores.js';
import { rest } from '../support/transports.js';

for (const kind of STORES) {
  describe.skipIf(kind.skip)(`jobTotal on a ${kind.name} store`, () => {
    let gateway: TestGateway;

    beforeAll(async () => {
      gateway = await kind.startGateway({ WORKER_CONCURRENCY: '0' });
      const ws = await gateway.workspace();
      expect((await rest.duplicate(gateway.baseUrl, ws.key, { campaignId: ws.campaign.id, name: 'one job' })).status).toBe(202);
    });

    afterAll(async () => {
      await gateway?.close();
    });

    it('counts a job once though a worker claims it between the count of PENDING and that of RUNNING', async () => {
      const { store } = gateway.app;
      let pendingCounted: Promise<number> | undefined;
      let claimed = false;
      // The first count of RUNNING waits for that of PENDING, then the job is claimed: it was PENDING when counted so.
      const claimedWhileCounting = new Proxy(store, {
        get(target, property) {
          const value = Reflect.get(target, property, target);
          if (property !== 'countJobs') return typeof value === 'function' ? value.bind(target) : value;
          return async (status: Parameters<GatewayStore['countJobs']>[0]) => {
            if (status === 'PENDING' && !pendingCounted) return (pendingCounted = target.countJobs(status));
            if (status === 'RUNNING' && !claimed) {
              claimed = true;
              await pendingCounted;
              expect(await target.claimJobs('a worker', 1, new Date(), new Date(Date.now() + 60_000))).toHaveLength(1);
            }
            return target.countJobs(status);
          };
        },
      });
      expect(await jobTotal(claimedWhileCounting)).toBe(1);
    });
  });
}

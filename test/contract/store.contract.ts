import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EVENT_TIME_SKEW_MS } from '../../src/adapters/rows.js';
import { AdminService, ErasureInterrupted } from '../../src/domain/admin.js';
import { exportLines, type ExportLine } from '../../src/domain/export.js';
import { newId } from '../../src/domain/ids.js';
import { EXPORT_TABLES, type GatewayStore, type JobFailure, type ListOptions } from '../../src/domain/ports.js';
import { SECURITY_EVENT_TYPES, type SecurityEvent, type SecurityEventFilter, type SecurityEventType } from '../../src/domain/types.js';
import { apiKeyFixture, at, campaignFixture, eventFixture, jobFixture, workspaceFixture } from '../support/fixtures.js';
import { jobCounts } from '../support/store-checks.js';

export interface StoreHarness {
  /** A store on a fresh, empty database that is not migrated yet. */
  create(): Promise<GatewayStore>;
  /** Another store on the same database, as a second gateway instance would open it. The caller closes it. */
  open(store: GatewayStore): Promise<GatewayStore>;
  /** Marks the store's database as migrated to `version`, as a newer gateway would leave it. */
  setSchemaVersion(store: GatewayStore, version: number): Promise<void>;
  /** Closes the store and drops whatever create() made. */
  destroy(store: GatewayStore): Promise<void>;
  /** Per table of the store's database, every table, the rows with one of `ids` in any column. */
  rowsNaming(store: GatewayStore, ids: string[]): Promise<Record<string, number>>;
}

/** The behaviour every store adapter promises. Run unchanged against each adapter. */
export function storeContract(name: string, harness: StoreHarness): void {
  describe(`store contract: ${name}`, () => {
    let store: GatewayStore;
    let ws: string;
    let other: string;

    beforeEach(async () => {
      store = await harness.create();
      await store.migrate();
      const a = workspaceFixture();
      const b = workspaceFixture();
      await store.createWorkspace(a);
      await store.createWorkspace(b);
      ws = a.id;
      other = b.id;
    });

    afterEach(async () => {
      await harness.destroy(store);
    });

    it('refuses a second workspace of the same name, even when two creations race past the admin check, answering false', async () => {
      const [first] = await store.listWorkspaces();
      // An answer, not the driver's unique violation: the admin service words it as it words the name it finds taken.
      await expect(store.createWorkspace({ ...workspaceFixture(), name: first.name })).resolves.toBe(false);
      expect((await store.listWorkspaces()).filter((workspace) => workspace.name === first.name)).toHaveLength(1);
      await expect(store.createWorkspace(workspaceFixture())).resolves.toBe(true);
    });

    it('answers false to a key of a workspace deleted since it was found, writing neither the key nor its event', async () => {
      const gone = workspaceFixture();
      await store.createWorkspace(gone);
      await store.deleteWorkspace(gone.id, new Date());
      const key = apiKeyFixture(gone.id);
      await expect(store.insertApiKey(key, eventFixture(gone.id, { type: 'API_KEY_CREATED', apiKeyId: key.id }))).resolves.toBe(false);
      expect(Object.values(await harness.rowsNaming(store, [gone.id, key.id])).every((rows) => rows === 0)).toBe(true);
      const kept = apiKeyFixture(ws);
      await expect(store.insertApiKey(kept, eventFixture(ws, { type: 'API_KEY_CREATED', apiKeyId: kept.id }))).resolves.toBe(true);
    });

    it('migrates idempotently and answers pings', async () => {
      await store.migrate();
      await expect(store.ping()).resolves.toBeUndefined();
    });

    it('refuses a database a newer gateway has migrated, naming both versions', async () => {
      await harness.setSchemaVersion(store, 99);
      const older = await harness.open(store);
      try {
        await expect(older.migrate()).rejects.toThrow(
          /has schema version 99, newer than this gateway's \d+: .* restore the backup taken before the upgrade; downgrading is not supported/,
        );
      } finally {
        await older.close();
      }
    });

    it('reads its schema version again, finding the one a newer gateway migrated it to while it was open', async () => {
      expect(await store.newerSchema()).toBeNull();
      await harness.setSchemaVersion(store, 99);
      const newer = await store.newerSchema();
      expect(newer).toMatchObject({ found: 99, known: expect.any(Number) });
      expect(newer?.message).toMatch(new RegExp(`has schema version 99, newer than this gateway's ${newer?.known}: a newer campaign-gateway has updated it since this one started`));
    });

    it('finds workspaces by id or by name and lists them', async () => {
      const found = await store.findWorkspace(ws);
      expect(found?.id).toBe(ws);
      expect((await store.findWorkspace(found!.name))?.id).toBe(ws);
      expect(await store.findWorkspace('no-such-workspace')).toBeNull();
      expect((await store.listWorkspaces()).map((w) => w.id).sort()).toEqual([ws, other].sort());
    });

    it('stores keys by hash, lists, revokes once and records both events', async () => {
      const key = apiKeyFixture(ws, { allowedCidrs: ['10.0.0.0/8'], expiresAt: at(5000), permissions: ['campaigns.list', 'campaigns.duplicate'] });
      await store.insertApiKey(key, eventFixture(ws, { type: 'API_KEY_CREATED', apiKeyId: key.id }));
      expect(await store.findApiKeyByHash(key.hash)).toEqual(key);
      expect(await store.findApiKey(key.id)).toEqual(key);
      expect(await store.findApiKeyByHash('f'.repeat(64))).toBeNull();
      expect((await store.listApiKeys(ws)).map((k) => k.id)).toEqual([key.id]);
      expect(await store.listApiKeys(other)).toEqual([]);

      expect(await store.revokeApiKey(key.id, at(10), eventFixture(ws, { type: 'API_KEY_REVOKED', apiKeyId: key.id }))).toBe(true);
      expect(await store.revokeApiKey(key.id, at(20), eventFixture(ws, { type: 'API_KEY_REVOKED', apiKeyId: key.id }))).toBe(false);
      expect((await store.findApiKey(key.id))?.revokedAt).toEqual(at(10));
      const events = await store.listEvents(ws, { apiKeyId: key.id }, { first: 10 });
      expect(events.map((e) => e.type)).toEqual(['API_KEY_REVOKED', 'API_KEY_CREATED']);

      expect((await store.findApiKeyByHash(key.hash))?.revokedAt).toEqual(at(10));
      await store.touchApiKey(key, at(30));
      expect((await store.findApiKey(key.id))?.lastUsedAt).toEqual(at(30));
      expect((await store.findApiKeyByHash(key.hash))?.lastUsedAt).toEqual(at(30));
    });

    it('rotates a key, finding it by the new hash and, during the overlap, the old one', async () => {
      const key = apiKeyFixture(ws);
      await store.insertApiKey(key, eventFixture(ws, { type: 'API_KEY_CREATED' }));
      const newHash = 'a'.repeat(64);
      expect(await store.rotateApiKey(key.id, key.hash, newHash, 'cgw_newkey', at(1000), eventFixture(ws, { type: 'API_KEY_CREATED' }))).toBe(true);
      const rotated = await store.findApiKeyByHash(newHash);
      expect(rotated).toMatchObject({ id: key.id, hash: newHash, prefix: 'cgw_newkey', previousHash: key.hash, previousHashExpiresAt: at(1000) });
      expect((await store.findApiKeyByHash(key.hash))?.id).toBe(key.id);

    });

    it('keeps the secret a rotation without overlap replaced, valid at no time, and forgets it at the next rotation', async () => {
      const key = apiKeyFixture(ws);
      await store.insertApiKey(key, eventFixture(ws, { type: 'API_KEY_CREATED' }));
      const newHash = 'a'.repeat(64);
      expect(await store.rotateApiKey(key.id, key.hash, newHash, 'cgw_newkey', null, eventFixture(ws, { type: 'API_KEY_ROTATED', apiKeyId: key.id }))).toBe(true);
      // Found by the replaced secret, so that its later use is the key's: refused as rotated_out, not as unknown.
      expect(await store.findApiKeyByHash(key.hash)).toMatchObject({ id: key.id, hash: newHash, previousHash: key.hash, previousHashExpiresAt: null });

      const newer = 'b'.repeat(64);
      expect(await store.rotateApiKey(key.id, newHash, newer, 'cgw_newer', null, eventFixture(ws, { type: 'API_KEY_ROTATED', apiKeyId: key.id }))).toBe(true);
      // A key keeps one earlier secret: the first one replaced is no longer the key's.
      expect(await store.findApiKeyByHash(key.hash)).toBeNull();
      expect(await store.findApiKeyByHash(newHash)).toMatchObject({ id: key.id, hash: newer, previousHash: newHash, previousHashExpiresAt: null });
    });

    it('does not rotate a revoked key: it keeps its secret, stays revoked and records nothing', async () => {
      const key = apiKeyFixture(ws);
      await store.insertApiKey(key, eventFixture(ws, { type: 'API_KEY_CREATED', apiKeyId: key.id }));
      await store.revokeApiKey(key.id, at(10), eventFixture(ws, { type: 'API_KEY_REVOKED', apiKeyId: key.id }));

      const newHash = 'c'.repeat(64);
      const rotation = eventFixture(ws, { type: 'API_KEY_ROTATED', apiKeyId: key.id });
      expect(await store.rotateApiKey(key.id, key.hash, newHash, 'cgw_revived', at(1000), rotation)).toBe(false);
      expect(await store.findApiKey(key.id)).toEqual({ ...key, revokedAt: at(10) });
      expect(await store.findApiKeyByHash(newHash)).toBeNull();
      expect((await store.findApiKeyByHash(key.hash))?.revokedAt).toEqual(at(10));
      const events = await store.listEvents(ws, { apiKeyId: key.id }, { first: 10 });
      expect(events.map((e) => e.type)).toEqual(['API_KEY_REVOKED', 'API_KEY_CREATED']);
    });

    it('does not rotate a key whose secret is no longer the one the rotation read: it keeps both hashes and records nothing', async () => {
      const key = apiKeyFixture(ws);
      await store.insertApiKey(key, eventFixture(ws, { type: 'API_KEY_CREATED', apiKeyId: key.id }));
      const first = 'd'.repeat(64);
      expect(await store.rotateApiKey(key.id, key.hash, first, 'cgw_first', at(1000), eventFixture(ws, { type: 'API_KEY_ROTATED', apiKeyId: key.id }))).toBe(true);
      const rotated = await store.findApiKey(key.id);

      // A second rotation that read the key before the first one committed.
      const stale = 'e'.repeat(64);
      expect(await store.rotateApiKey(key.id, key.hash, stale, 'cgw_stale', at(2000), eventFixture(ws, { type: 'API_KEY_ROTATED', apiKeyId: key.id }))).toBe(false);
      expect(await store.findApiKey(key.id)).toEqual(rotated);
      expect(rotated).toMatchObject({ hash: first, previousHash: key.hash, previousHashExpiresAt: at(1000) });
      expect(await store.findApiKeyByHash(stale)).toBeNull();
      expect((await store.findApiKeyByHash(key.hash))?.id).toBe(key.id);
      const events = await store.listEvents(ws, { apiKeyId: key.id }, { first: 10 });
      expect(events.map((e) => e.type)).toEqual(['API_KEY_ROTATED', 'API_KEY_CREATED']);
    });

    it('keeps campaigns and tags per workspace and pages campaigns newest first', async () => {
      const campaigns = [];
      for (let i = 0; i < 5; i += 1) {
        const campaign = campaignFixture(ws, { name: `c${i}` });
        await store.insertCampaign(campaign);
        campaigns.push(campaign);
      }
      expect(await store.getCampaign(ws, campaigns[0].id)).toEqual(campaigns[0]);
      expect(await store.getCampaign(other, campaigns[0].id)).toBeNull();
      const first = await store.listCampaigns(ws, { first: 2 });
      expect(first.map((campaign) => campaign.name)).toEqual(['c4', 'c3']);
      const next = await store.listCampaigns(ws, { first: 10, beforeId: first[1].id });
      expect(next.map((campaign) => campaign.name)).toEqual(['c2', 'c1', 'c0']);
      expect(await store.listCampaigns(other, { first: 10 })).toEqual([]);
      // A cursor naming another workspace's row, or no row, lists nothing.
      expect(await store.listCampaigns(other, { first: 10, beforeId: first[1].id })).toEqual([]);
      expect(await store.listCampaigns(ws, { first: 10, beforeId: 'no-such-campaign' })).toEqual([]);

      await store.upsertTags(ws, ['promo', 'email', 'promo']);
      expect(await store.missingTags(ws, ['promo', 'nope', 'email'])).toEqual(['nope']);
      expect(await store.missingTags(other, ['promo'])).toEqual(['promo']);
      // The same name is another workspace's own tag.
      await store.upsertTags(other, ['promo']);
      expect(await store.missingTags(other, ['promo'])).toEqual([]);
    });

    it('pages a workspace’s campaigns newest first, at any page size and from any cursor, however another workspace’s fall between them', async () => {
      // The other workspace's campaigns come in runs: one longer than any page, between this workspace's older
      // campaigns and its newest, and shorter ones among the newest.
      const order = [...Array(12).fill(ws), ...Array(15).fill(other), ...Array.from({ length: 12 }, (_, i) => (i % 3 === 1 ? other : ws)), other];
      const mine: string[] = [];
      for (const workspaceId of order) {
        const campaign = campaignFixture(workspaceId);
        await store.insertCampaign(campaign);
        if (workspaceId === ws) mine.unshift(campaign.id);
      }
      let compared = 0;
      for (const first of [1, 2, 5, 7, mine.length, mine.length + 1]) {
        for (const start of [undefined, ...mine]) {
          const seen: string[] = [];
          let beforeId = start;
          for (;;) {
            const page = await store.listCampaigns(ws, { first, beforeId });
            seen.push(...page.map((campaign) => campaign.id));
            if (page.length < first) break;
            beforeId = page.at(-1)!.id;
          }
          const expected = start === undefined ? mine : mine.slice(mine.indexOf(start) + 1);
          expect(seen, `${first} from ${start}`).toEqual(expected);
          compared += expected.length;
        }
      }
      expect(compared).toBeGreaterThan(1000);
    });

    it('enqueues a job with its event in one step, visible only in its workspace', async () => {
      const job = jobFixture(ws, { tagNames: ['promo'], description: 'd' });
      await store.enqueueJob(job, eventFixture(ws, { jobId: job.id }));
      expect(await store.getJob(ws, job.id)).toEqual(job);
      expect(await store.getJob(other, job.id)).toBeNull();
      expect((await store.listEvents(ws, { jobId: job.id }, { first: 5 })).map((e) => e.type)).toEqual(['CAMPAIGN_DUPLICATION_REQUESTED']);
      expect(await store.countJobs('PENDING')).toBe(1);
    });

    it('reads the jobs of a list of ids in one call, only those of the workspace asked for', async () => {
      const mine = [jobFixture(ws, { runAt: at(0) }), jobFixture(ws, { runAt: at(1) })];
      const theirs = jobFixture(other, { runAt: at(2) });
      for (const job of [...mine, theirs]) await store.enqueueJob(job, eventFixture(job.workspaceId, { jobId: job.id }));
      const asked = [mine[1].id, theirs.id, randomUUID(), mine[0].id, 'not\u0000stored', mine[1].id];
      const found = await store.getJobs(ws, asked);
      expect(found.sort((a, b) => a.id.localeCompare(b.id))).toEqual([...mine].sort((a, b) => a.id.localeCompare(b.id)));
      expect(await store.getJobs(other, asked)).toEqual([theirs]);
      expect(await store.getJobs(ws, [])).toEqual([]);
    });

    it('keeps the id of the request that asked for a job, for the worker that claims it; none when it has none', async () => {
      const traced = jobFixture(ws, { requestId: 'trace-42.a:b', runAt: at(0) });
      const untraced = jobFixture(ws, { requestId: null, runAt: at(1) });
      for (const job of [traced, untraced]) await store.enqueueJob(job, eventFixture(ws, { jobId: job.id }));
      expect((await store.getJob(ws, traced.id))?.requestId).toBe('trace-42.a:b');
      expect((await store.getJob(ws, untraced.id))?.requestId).toBeNull();
      const claimed = await store.claimJobs('a', 10, at(1000), at(31_000));
      expect(claimed.map(({ id, requestId }) => ({ id, requestId }))).toEqual([
        { id: traced.id, requestId: 'trace-42.a:b' },
        { id: untraced.id, requestId: null },
      ]);
    });

    it('claims due jobs once, with a lease, and counts the attempt', async () => {
      const due = jobFixture(ws, { runAt: at(0) });
      const later = jobFixture(ws, { runAt: at(60_000) });
      await store.enqueueJob(due, eventFixture(ws));
      await store.enqueueJob(later, eventFixture(ws));
      const claimed = await store.claimJobs('a', 10, at(1000), at(31_000));
      expect(claimed.map((j) => j.id)).toEqual([due.id]);
      expect(claimed[0]).toMatchObject({ status: 'RUNNING', leaseOwner: 'a', leaseExpiresAt: at(31_000), attempts: 1 });
      expect(await store.claimJobs('b', 10, at(2000), at(32_000))).toEqual([]);
    });

    describe('jobs for the operator', () => {
      /** A job accepted at `ms`, its id made then, as the gateway makes them. */
      const jobAt = (workspaceId: string, ms: number) => jobFixture(workspaceId, { id: newId(at(ms).getTime()), createdAt: at(ms), runAt: at(ms) });
      const ids = (jobs: { id: string }[]) => jobs.map((job) => job.id);
      const cancelled = (jobId: string, workspaceId = ws): JobFailure => ({
        status: 'FAILED',
        resultCampaignId: null,
        error: { code: 'CANCELLED', message: 'Failed by an operator: sent before the restore' },
        event: eventFixture(workspaceId, { type: 'CAMPAIGN_DUPLICATION_FAILED', jobId }),
      });

      it('lists jobs newest first, a page at a time, by workspace, status and acceptance time', async () => {
        const jobs = [jobAt(ws, 1000), jobAt(other, 2000), jobAt(ws, 3000), jobAt(ws, 4000), jobAt(other, 5000)];
        for (const job of jobs) await store.enqueueJob(job, eventFixture(job.workspaceId, { jobId: job.id }));
        const [running] = await store.claimJobs('w', 1, at(1500), at(60_000));
        expect(running.id).toBe(jobs[0].id);

        expect(ids(await store.listJobs({}, 10, null))).toEqual(ids([...jobs].reverse()));
        const first = await store.listJobs({ workspaceId: ws }, 2, null);
        expect(ids(first)).toEqual([jobs[3].id, jobs[2].id]);
        expect(ids(await store.listJobs({ workspaceId: ws }, 2, first[1].id))).toEqual([jobs[0].id]);
        expect(await store.listJobs({ workspaceId: ws, status: 'RUNNING' }, 10, null)).toMatchObject([{ id: jobs[0].id, status: 'RUNNING', leaseOwner: 'w' }]);
        expect(ids(await store.listJobs({ status: 'PENDING', createdSince: at(3000) }, 10, null))).toEqual([jobs[4].id, jobs[3].id, jobs[2].id]);
        expect(await store.listJobs({ status: 'FAILED' }, 10, null)).toEqual([]);
        expect(await store.findJob(jobs[1].id)).toMatchObject({ id: jobs[1].id, workspaceId: other });
        expect(await store.findJob(randomUUID())).toBeNull();
      });

      it('lists the jobs of one key, with the address each request came from, a page at a time', async () => {
        const leaked = { apiKeyId: randomUUID(), apiKeyName: 'leaked' };
        const byKey = (ms: number, ip: string) => jobFixture(ws, { ...leaked, ip, id: newId(at(ms).getTime()), createdAt: at(ms), runAt: at(ms) });
        const jobs = [byKey(1000, '203.0.113.7'), jobAt(ws, 2000), byKey(3000, '198.51.100.9'), byKey(4000, '203.0.113.7'), jobAt(other, 5000)];
        for (const job of jobs) await store.enqueueJob(job, eventFixture(job.workspaceId, { jobId: job.id }));
        await store.claimJobs('w', 1, at(1500), at(60_000));

        const first = await store.listJobs({ workspaceId: ws, apiKeyId: leaked.apiKeyId }, 2, null);
        expect(first.map(({ id, ip }) => ({ id, ip }))).toEqual([
          { id: jobs[3].id, ip: '203.0.113.7' },
          { id: jobs[2].id, ip: '198.51.100.9' },
        ]);
        expect(ids(await store.listJobs({ workspaceId: ws, apiKeyId: leaked.apiKeyId }, 2, first[1].id))).toEqual([jobs[0].id]);
        expect(ids(await store.listJobs({ apiKeyId: leaked.apiKeyId, status: 'PENDING' }, 10, null))).toEqual([jobs[3].id, jobs[2].id]);
        expect(ids(await store.listJobs({ apiKeyId: leaked.apiKeyId, status: 'RUNNING' }, 10, null))).toEqual([jobs[0].id]);
        expect(await store.listJobs({ workspaceId: other, apiKeyId: leaked.apiKeyId }, 10, null)).toEqual([]);
        expect(await store.listJobs({ apiKeyId: 'no\u0000key' }, 10, null)).toEqual([]);
      });

      it('lists by acceptance time a job whose id an instance with a clock behind the database’s made', async () => {
        // Its id made by an instance an hour behind the time the database stamped it with.
        const skewed = jobFixture(ws, { id: newId(at(10_000).getTime() - 3_600_000), createdAt: at(10_000), runAt: at(10_000) });
        await store.enqueueJob(skewed, eventFixture(ws, { jobId: skewed.id }));
        expect(ids(await store.listJobs({ createdSince: at(10_000) }, 10, null))).toEqual([skewed.id]);
        expect(ids(await store.listJobs({ workspaceId: ws, createdSince: at(10_000) }, 10, null))).toEqual([skewed.id]);
      });

      it('fails a pending job and one whose lease expired, with its event in the same write, never one a worker holds or one finished', async () => {
        const [pending, expired, held, done] = [jobAt(ws, 0), jobAt(ws, 1), jobAt(ws, 2), jobAt(ws, 3)];
        for (const job of [expired, held, done]) {
          await store.enqueueJob(job, eventFixture(ws, { jobId: job.id }));
          await store.claimJobs(job.id, 1, at(10), at(job === expired ? 1000 : 60_000));
        }
        await store.enqueueJob(pending, eventFixture(ws, { jobId: pending.id }));
        expect(await store.finishJob(done.id, done.id, cancelled(done.id), at(20))).toBe(true);

        expect(await store.cancelJob(pending.id, cancelled(pending.id), at(2000))).toBe(true);
        expect(await store.cancelJob(expired.id, cancelled(expired.id), at(2000))).toBe(true);
        expect(await store.cancelJob(held.id, cancelled(held.id), at(2000))).toBe(false);
        expect(await store.cancelJob(done.id, cancelled(done.id), at(2000))).toBe(false);
        expect(await store.cancelJob(randomUUID(), cancelled(randomUUID()), at(2000))).toBe(false);

        for (const job of [pending, expired]) {
          expect(await store.getJob(ws, job.id)).toMatchObject({
            status: 'FAILED',
            finishedAt: at(2000),
            leaseOwner: null,
            leaseExpiresAt: null,
            error: { code: 'CANCELLED', message: 'Failed by an operator: sent before the restore' },
          });
          const failed = await store.listEvents(ws, { jobId: job.id, types: ['CAMPAIGN_DUPLICATION_FAILED'] }, { first: 10 });
          expect(failed).toHaveLength(1);
        }
        expect(await store.getJob(ws, held.id)).toMatchObject({ status: 'RUNNING', leaseOwner: held.id });
        expect(await store.listEvents(ws, { jobId: held.id, types: ['CAMPAIGN_DUPLICATION_FAILED'] }, { first: 10 })).toEqual([]);
        // Nothing left to claim: the worker whose lease expired finds its job gone from the queue.
        expect(await store.claimJobs('another', 10, at(3000), at(60_000))).toEqual([]);
        expect(await store.finishJob(expired.id, expired.id, cancelled(expired.id), at(3000))).toBe(false);
      });
    });

    it('tells how long the pending job due longest ago has been due, leaving out jobs not due yet and jobs not pending', async () => {
      expect(await store.oldestDueJobWaitMs(at(10_000))).toBeNull();
      const running = jobFixture(ws, { runAt: at(0) });
      await store.enqueueJob(running, eventFixture(ws));
      expect(await store.claimJobs('a', 1, at(500), at(60_000))).toMatchObject([{ id: running.id }]);
      const oldest = jobFixture(other, { runAt: at(1000) });
      const next = jobFixture(ws, { runAt: at(3000) });
      for (const job of [next, oldest, jobFixture(ws, { runAt: at(90_000) })]) await store.enqueueJob(job, eventFixture(job.workspaceId));
      expect(await store.oldestDueJobWaitMs(at(999))).toBeNull();
      expect(await store.oldestDueJobWaitMs(at(1000))).toBe(0);
      expect(await store.oldestDueJobWaitMs(at(5000))).toBe(4000);
      expect(await store.claimJobs('b', 1, at(5000), at(60_000))).toMatchObject([{ id: oldest.id }]);
      expect(await store.oldestDueJobWaitMs(at(5000))).toBe(2000);
    });

    it('honours the claim limit and lets concurrent claimers share the queue without overlap', async () => {
      const ids = [];
      for (let i = 0; i < 20; i += 1) {
        const job = jobFixture(ws, { runAt: at(i) });
        ids.push(job.id);
        await store.enqueueJob(job, eventFixture(ws));
      }
      expect(await store.claimJobs('a', 3, at(1000), at(9000))).toHaveLength(3);
      const batches = await Promise.all(['b', 'c', 'd', 'e'].map((owner) => store.claimJobs(owner, 5, at(1000), at(9000))));
      const claimed = batches.flat().map((j) => j.id);
      expect(new Set(claimed).size).toBe(claimed.length);
      expect(claimed.length).toBe(17);
    });

    it("names the expired lease each job was taken over from, and none for a job that was pending", async () => {
      const crashed = jobFixture(ws, { runAt: at(0) });
      await store.enqueueJob(crashed, eventFixture(ws, { jobId: crashed.id }));
      await store.claimJobs('dead', 1, at(0), at(1000));
      const pending = jobFixture(ws, { runAt: at(1) });
      await store.enqueueJob(pending, eventFixture(ws, { jobId: pending.id }));
      const claimed = await store.claimJobs('b', 5, at(1500), at(9000));
      expect(claimed.map(({ id, takenOverFrom }) => ({ id, takenOverFrom }))).toEqual([
        { id: crashed.id, takenOverFrom: 'dead' },
        { id: pending.id, takenOverFrom: undefined },
      ]);
      expect(await store.getJob(ws, crashed.id)).not.toHaveProperty('takenOverFrom');
    });

    it('reclaims a job whose lease expired, and only the new owner can finish it', async () => {
      const job = jobFixture(ws);
      await store.enqueueJob(job, eventFixture(ws));
      await store.claimJobs('dead', 1, at(0), at(1000));
      expect(await store.claimJobs('b', 1, at(500), at(2000))).toEqual([]);
      const [reclaimed] = await store.claimJobs('b', 1, at(1500), at(9000));
      expect(reclaimed).toMatchObject({ id: job.id, leaseOwner: 'b', attempts: 2, takenOverFrom: 'dead' });

      const copy = campaignFixture(ws, { duplicatedFrom: job.sourceCampaignId });
      const outcome = {
        status: 'SUCCEEDED' as const,
        resultCampaignId: copy.id,
        error: null,
        newCampaign: copy,
        event: eventFixture(ws, { type: 'CAMPAIGN_DUPLICATED', jobId: job.id }),
      };
      expect(await store.finishJob(job.id, 'dead', outcome, at(1600))).toBe(false);
      expect(await store.getCampaign(ws, copy.id)).toBeNull();
      expect(await store.finishJob(job.id, 'b', outcome, at(1700))).toBe(true);
      expect(await store.finishJob(job.id, 'b', outcome, at(1800))).toBe(false);
      expect(await store.getJob(ws, job.id)).toMatchObject({ status: 'SUCCEEDED', resultCampaignId: copy.id, finishedAt: at(1700), leaseOwner: null });
      expect(await store.getCampaign(ws, copy.id)).toEqual(copy);
      expect((await store.listEvents(ws, { jobId: job.id, types: ['CAMPAIGN_DUPLICATED'] }, { first: 5 })).length).toBe(1);
    });

    it('records a failure with its error, retries with a due time, and releases without counting', async () => {
      const failing = jobFixture(ws);
      const retried = jobFixture(ws);
      const released = jobFixture(ws);
      for (const job of [failing, retried, released]) await store.enqueueJob(job, eventFixture(ws));
      await store.claimJobs('w', 3, at(0), at(10_000));

      const error = { code: 'UPSTREAM_BAD_REQUEST' as const, message: 'Invalid Campaign ID' };
      await store.finishJob(failing.id, 'w', { status: 'FAILED', resultCampaignId: null, error, event: eventFixture(ws, { type: 'CAMPAIGN_DUPLICATION_FAILED', jobId: failing.id }) }, at(100));
      expect(await store.getJob(ws, failing.id)).toMatchObject({ status: 'FAILED', error });

      expect(await store.retryJob(retried.id, 'w', at(5000), { code: 'UPSTREAM_UNAVAILABLE', message: 'busy' }, at(100))).toBe(true);
      expect(await store.getJob(ws, retried.id)).toMatchObject({ status: 'PENDING', runAt: at(5000), attempts: 1, error: { code: 'UPSTREAM_UNAVAILABLE' } });
      expect(await store.retryJob(retried.id, 'w', at(5000), null, at(100))).toBe(false);
      expect(await store.claimJobs('x', 5, at(4999), at(20_000))).toEqual([]);
      expect((await store.claimJobs('x', 5, at(5000), at(20_000))).map((j) => j.id)).toEqual([retried.id]);

      expect(await store.releaseJobs('w', at(200))).toBe(1);
      expect(await store.getJob(ws, released.id)).toMatchObject({ status: 'PENDING', attempts: 0, leaseOwner: null });
      expect(await jobCounts(store)).toEqual({ PENDING: 1, RUNNING: 1, SUCCEEDED: 0, FAILED: 1 });
    });

    it('counts, across retries, the attempts known to have made nothing upstream, and gives the count with the next claim', async () => {
      const job = jobFixture(ws);
      await store.enqueueJob(job, eventFixture(ws));
      const error = { code: 'UPSTREAM_UNREACHABLE' as const, message: 'The connection to the upstream failed' };
      const [first] = await store.claimJobs('w', 1, at(0), at(10_000));
      expect(first).toMatchObject({ attempts: 1, upstreamUnactedAttempts: 0 });
      expect(await store.retryJob(job.id, 'w', at(100), error, at(10), true)).toBe(true);
      const [second] = await store.claimJobs('x', 1, at(100), at(10_000));
      expect(second).toMatchObject({ attempts: 2, upstreamUnactedAttempts: 1 });
      // A retry that says nothing, as an earlier version's, counts an attempt that may have acted.
      expect(await store.retryJob(job.id, 'x', at(200), error, at(110))).toBe(true);
      const [third] = await store.claimJobs('y', 1, at(200), at(10_000));
      expect(third).toMatchObject({ attempts: 3, upstreamUnactedAttempts: 1 });
      expect(await store.retryJob(job.id, 'y', at(300), error, at(210), true)).toBe(true);
      // Deferred, the attempt the claim counted is given back, and the count stays.
      const [fourth] = await store.claimJobs('z', 1, at(300), at(10_000));
      expect(await store.deferJob(job.id, 'z', at(400), at(310))).toBe(true);
      expect(fourth).toMatchObject({ id: job.id, attempts: 4, upstreamUnactedAttempts: 2 });
      const [fifth] = await store.claimJobs('v', 1, at(400), at(10_000));
      expect(fifth).toMatchObject({ id: job.id, attempts: 4, upstreamUnactedAttempts: 2 });
    });

    it("releases keeping the attempts, counted as ones that may have acted, for the owner's jobs only", async () => {
      const [kept, other] = [jobFixture(ws), jobFixture(ws)];
      for (const job of [kept, other]) await store.enqueueJob(job, eventFixture(ws));
      const error = { code: 'UPSTREAM_UNREACHABLE' as const, message: 'The connection to the upstream failed' };
      await store.claimJobs('w', 1, at(0), at(10_000));
      expect(await store.retryJob(kept.id, 'w', at(100), error, at(10), true)).toBe(true);
      expect(await store.claimJobs('x', 1, at(100), at(10_000))).toMatchObject([{ id: kept.id, attempts: 2 }]);
      expect(await store.claimJobs('y', 1, at(100), at(10_000))).toMatchObject([{ id: other.id, attempts: 1 }]);

      expect(await store.releaseJobs('x', at(200), { keepAttempts: true })).toBe(1);
      expect(await store.getJob(ws, kept.id)).toMatchObject({ status: 'PENDING', attempts: 2, runAt: at(200), leaseOwner: null, error });
      expect(await store.getJob(ws, other.id)).toMatchObject({ status: 'RUNNING', attempts: 1, leaseOwner: 'y' });
      expect(await store.claimJobs('z', 1, at(200), at(10_000))).toMatchObject([{ id: kept.id, attempts: 3, upstreamUnactedAttempts: 1 }]);
    });

    it('defers a running job to a later time without counting the attempt, for its owner only', async () => {
      const job = jobFixture(ws);
      await store.enqueueJob(job, eventFixture(ws));
      await store.claimJobs('w', 1, at(0), at(10_000));
      expect(await store.deferJob(job.id, 'other', at(5000), at(100))).toBe(false);
      expect(await store.deferJob(job.id, 'w', at(5000), at(100))).toBe(true);
      expect(await store.getJob(ws, job.id)).toMatchObject({ status: 'PENDING', attempts: 0, runAt: at(5000), leaseOwner: null });
      expect(await store.claimJobs('x', 1, at(4999), at(20_000))).toEqual([]);
      expect(await store.claimJobs('x', 1, at(5000), at(20_000))).toMatchObject([{ id: job.id, attempts: 1 }]);
    });

    it('retries a job for the lease that owns it only: an expired lease cannot take back a job claimed again', async () => {
      const job = jobFixture(ws, { runAt: at(0) });
      await store.enqueueJob(job, eventFixture(ws, { jobId: job.id }));
      await store.claimJobs('dead', 1, at(0), at(1000));
      await store.claimJobs('b', 1, at(1500), at(9000));
      const owned = await store.getJob(ws, job.id);
      expect(owned).toMatchObject({ status: 'RUNNING', leaseOwner: 'b', leaseExpiresAt: at(9000), attempts: 2, error: null });

      expect(await store.retryJob(job.id, 'dead', at(60_000), { code: 'UPSTREAM_UNAVAILABLE', message: 'busy' }, at(1600))).toBe(false);
      expect(await store.getJob(ws, job.id)).toEqual(owned);
      expect((await store.listEvents(ws, { jobId: job.id }, { first: 5 })).map((e) => e.type)).toEqual(['CAMPAIGN_DUPLICATION_REQUESTED']);

      expect(await store.retryJob(job.id, 'b', at(5000), null, at(1700))).toBe(true);
      expect(await store.getJob(ws, job.id)).toMatchObject({ status: 'PENDING', runAt: at(5000), attempts: 2, leaseOwner: null });
    });

    describe('turns between workspaces', () => {
      /** Enqueues `count` jobs of a workspace, one after the other, each due a millisecond after the one before, from `from`. */
      const enqueueJobs = async (workspaceId: string, count: number, from: number) => {
        const jobs = Array.from({ length: count }, (_, i) => jobFixture(workspaceId, { runAt: at(from + i), createdAt: at(from + i) }));
        for (const job of jobs) await store.enqueueJob(job, eventFixture(workspaceId, { jobId: job.id }));
        return jobs;
      };
      /** The ids of the jobs `count` claims of one job each take at `now`, in order. */
      const claimOneByOne = async (count: number, now: number) => {
        const ids: string[] = [];
        for (let i = 0; i < count; i += 1) ids.push(...(await store.claimJobs('w', 1, at(now), at(now + 60_000))).map((job) => job.id));
        return ids;
      };
      const ids = (jobs: { id: string }[]) => jobs.map((job) => job.id);

      it('takes a job a workspace sends after another’s backlog of 50 among the next two, and the backlog in its order', async () => {
        const backlog = await enqueueJobs(ws, 50, 0);
        const [late] = await enqueueJobs(other, 1, 50);
        const claimed = await claimOneByOne(51, 1000);
        expect(claimed.slice(0, 2)).toContain(late.id);
        expect(claimed.filter((id) => id !== late.id)).toEqual(ids(backlog));
      });

      it('gives jobs of one workspace enqueued all at once a turn each: another’s jobs sent after them alternate with them', async () => {
        const wave = Array.from({ length: 40 }, (_, i) => jobFixture(ws, { runAt: at(i), createdAt: at(i) }));
        // All at once: on PostgreSQL each enqueue has a connection and a transaction of its own.
        await Promise.all(wave.map((job) => store.enqueueJob(job, eventFixture(ws, { jobId: job.id }))));
        const later = await enqueueJobs(other, 40, 100);
        const claimed = await claimOneByOne(80, 1000);
        // Turn by turn, one job of each: the wave's turns are as many as its jobs, and the first job sent after it
        // waits for one of them.
        const pairs = Array.from({ length: 40 }, (_, turn) => claimed.slice(2 * turn, 2 * turn + 2));
        expect(pairs.map((pair) => pair.filter((id) => ids(wave).includes(id)).length)).toEqual(Array(40).fill(1));
        expect(claimed.filter((id) => !ids(wave).includes(id))).toEqual(ids(later));
      });

      it('alternates between two workspaces that queued three jobs each, one after the other', async () => {
        const first = await enqueueJobs(ws, 3, 0);
        const second = await enqueueJobs(other, 3, 3);
        expect(await claimOneByOne(6, 1000)).toEqual(ids([first[0], second[0], first[1], second[1], first[2], second[2]]));
      });

      it('holds no workspace’s older jobs against it: its next job goes among the first three after another’s backlog', async () => {
        await enqueueJobs(ws, 100, 0);
        const ran = await store.claimJobs('w', 100, at(1000), at(60_000));
        expect(ran).toHaveLength(100);
        for (const job of ran) {
          const event = eventFixture(ws, { type: 'CAMPAIGN_DUPLICATED', jobId: job.id });
          expect(await store.finishJob(job.id, 'w', { status: 'SUCCEEDED', resultCampaignId: null, error: null, event }, at(2000))).toBe(true);
        }
        await enqueueJobs(other, 100, 3000);
        const [next] = await enqueueJobs(ws, 1, 3100);
        // Its last job had the clock's turn, as the backlog's first has: its next turn is the backlog's second's.
        expect(await claimOneByOne(3, 5000)).toContain(next.id);
      });

      it('keeps a deferred and a retried job in their place: due again, they go before the jobs queued after them', async () => {
        const third = workspaceFixture();
        await store.createWorkspace(third);
        const [a1, a2, a3] = await enqueueJobs(ws, 3, 0);
        const [b1, b2, b3] = await enqueueJobs(other, 3, 3);
        expect(await claimOneByOne(1, 10)).toEqual([a1.id]);
        expect(await store.deferJob(a1.id, 'w', at(5000), at(10))).toBe(true);
        // Not due again yet: the deferred job is stepped over, and the retried one below.
        expect(await claimOneByOne(2, 20)).toEqual(ids([b1, a2]));
        expect(await store.retryJob(a2.id, 'w', at(5000), { code: 'UPSTREAM_UNAVAILABLE', message: 'busy' }, at(20))).toBe(true);
        expect(await claimOneByOne(2, 30)).toEqual(ids([b2, a3]));
        const [a4] = await enqueueJobs(ws, 1, 100);
        const [c1] = await enqueueJobs(third.id, 1, 101);
        const [b4] = await enqueueJobs(other, 1, 102);
        // a4 and b4 follow their workspaces' last jobs (a3, b3); c1, of a workspace new to the queue, takes b3's turn.
        expect(await claimOneByOne(6, 5000)).toEqual(ids([a1, a2, b3, c1, a4, b4]));
      });

      it('claims a job retried into the future not before its time, and at its time before the jobs of later turns', async () => {
        const [retried] = await enqueueJobs(ws, 1, 0);
        const [b1, b2, b3] = await enqueueJobs(other, 4, 1);
        expect(await claimOneByOne(1, 10)).toEqual([retried.id]);
        expect(await store.retryJob(retried.id, 'w', at(5000), { code: 'UPSTREAM_UNAVAILABLE', message: 'busy' }, at(10))).toBe(true);
        expect(await store.countJobs('PENDING')).toBe(5);
        expect(ids(await store.claimJobs('w', 2, at(4999), at(60_000)))).toEqual(ids([b1, b2]));
        expect(ids(await store.claimJobs('w', 2, at(5000), at(60_000)))).toEqual(ids([retried, b3]));
      });

      it('keeps a backlog its turns while another workspace sends its next job each time its last is claimed', async () => {
        const backlog = await enqueueJobs(other, 5, 0);
        let [sent] = await enqueueJobs(ws, 1, 100);
        const claimed: string[] = [];
        for (let round = 1; round <= 10; round += 1) {
          claimed.push(...(await claimOneByOne(1, 1000)));
          if (claimed.includes(sent.id)) [sent] = await enqueueJobs(ws, 1, 100 + round);
        }
        expect(claimed.filter((id) => ids(backlog).includes(id))).toEqual(ids(backlog));
      });

      it('takes a job whose lease expired before any pending job, whatever its turn', async () => {
        const [crashed] = await enqueueJobs(ws, 1, 0);
        await store.claimJobs('dead', 1, at(0), at(1000));
        const waiting = await enqueueJobs(other, 2, 1);
        expect(ids(await store.claimJobs('b', 2, at(2000), at(9000)))).toEqual(ids([crashed, waiting[0]]));
      });
    });

    it('filters events and pages them newest first, stable under concurrent inserts, per workspace', async () => {
      const jobId = randomUUID();
      const keyId = randomUUID();
      for (let i = 0; i < 30; i += 1) {
        await store.insertEvent(
          eventFixture(ws, {
            occurredAt: at(i * 1000),
            type: i % 3 === 0 ? 'CAMPAIGN_DUPLICATED' : 'CAMPAIGN_DUPLICATION_REQUESTED',
            jobId: i % 2 === 0 ? jobId : null,
            apiKeyId: i < 10 ? keyId : null,
            details: { i },
          }),
        );
      }
      await store.insertEvent(eventFixture(other, { jobId }));

      const all = await store.listEvents(ws, {}, { first: 100 });
      expect(all.map((e) => e.details.i)).toEqual([...Array(30).keys()].reverse());
      expect((await store.listEvents(ws, { jobId }, { first: 100 })).length).toBe(15);
      expect((await store.listEvents(ws, { types: ['CAMPAIGN_DUPLICATED'] }, { first: 100 })).length).toBe(10);
      expect((await store.listEvents(ws, { types: [] }, { first: 100 })).length).toBe(0);
      expect((await store.listEvents(ws, { apiKeyId: keyId }, { first: 100 })).length).toBe(10);
      const window = await store.listEvents(ws, { since: at(5000), until: at(8000) }, { first: 100 });
      expect(window.map((e) => e.details.i)).toEqual([7, 6, 5]);
      expect((await store.listEvents(other, {}, { first: 100 })).length).toBe(1);

      // Paged by sequence number (the download) and by a row's id (a client's cursor), alike.
      for (const after of [(event: SecurityEvent) => ({ beforeSeq: event.seq }), (event: SecurityEvent) => ({ beforeId: event.id })]) {
        const seen: number[] = [];
        let before: Omit<ListOptions, 'first'> = {};
        for (;;) {
          const page = await store.listEvents(ws, { types: ['CAMPAIGN_DUPLICATED', 'CAMPAIGN_DUPLICATION_REQUESTED'] }, { first: 7, ...before });
          seen.push(...page.map((e) => e.details.i as number));
          await store.insertEvent(eventFixture(ws, { type: 'PERMISSION_DENIED', details: { i: -1 } }));
          if (page.length < 7) break;
          before = after(page.at(-1)!);
        }
        expect(seen).toEqual([...Array(30).keys()].reverse());
      }
    });

    it("refuses a cursor whose event was pruned, or is another workspace's, rather than answer an empty page that reads as the list's end", async () => {
      // A job still running keeps its old events past the cutoff, as at any retention edge with a job in progress.
      const running = jobFixture(ws, { runAt: at(10_000_000) });
      await store.enqueueJob(running, eventFixture(ws, { occurredAt: at(0), jobId: running.id, details: { i: 0 } }));
      for (let i = 1; i <= 8; i += 1) await store.insertEvent(eventFixture(ws, { occurredAt: at(i * 1000), details: { i } }));
      const otherEvent = eventFixture(other, { occurredAt: at(9000) });
      await store.insertEvent(otherEvent);
      const filters: SecurityEventFilter[] = [{}, { since: at(0), until: at(9000) }, { types: ['CAMPAIGN_DUPLICATION_REQUESTED', 'PERMISSION_DENIED'] }, { until: at(9000), types: ['CAMPAIGN_DUPLICATION_REQUESTED'] }];
      const firstPage = await store.listEvents(ws, {}, { first: 3 });
      expect(firstPage.map((e) => e.details.i)).toEqual([8, 7, 6]);

      expect((await store.pruneEvents(at(6500), 100, null)).deleted).toBe(6);
      // Worded for both: a pruned event's cursor, and another workspace's.
      const gone = {
        code: 'BAD_USER_INPUT',
        issues: [{ field: 'after', message: "names no event of this workspace (deleted once past its retention period, or never this workspace's): start again from the first page" }],
      };
      for (const filter of filters) {
        await expect(store.listEvents(ws, filter, { first: 3, beforeId: firstPage[2].id }), JSON.stringify(filter)).rejects.toMatchObject(gone);
        // Another workspace's event is refused alike, saying no more than of a pruned one.
        await expect(store.listEvents(ws, filter, { first: 3, beforeId: otherEvent.id })).rejects.toMatchObject(gone);
        // A cursor whose event is kept pages on past the pruned ones, to the end of the list, which is no refusal.
        const [kept] = await store.listEvents(ws, filter, { first: 1, beforeId: firstPage[1].id });
        expect(kept.details.i).toBe(0);
        expect(await store.listEvents(ws, filter, { first: 3, beforeId: kept.id })).toEqual([]);
      }
    });

    it('lists after an event the events recorded after it, in the order they were recorded, whatever their times, paged down to it', async () => {
      // Stamped out of the order they are recorded in, as events stamped before a slow commit are.
      const stamps = [5000, 1000, 9000, 3000, 7000, 2000, 8000];
      const written: SecurityEvent[] = [];
      for (const [i, time] of stamps.entries()) {
        await store.insertEvent(eventFixture(ws, { occurredAt: at(time), details: { i } }));
        written.push((await store.listEvents(ws, {}, { first: 1 }))[0]);
      }
      await store.insertEvent(eventFixture(other, { occurredAt: at(4000) }));
      const from = written[2];
      const afterSeq = (await store.eventSeq(ws, from.id))!;
      expect(afterSeq).toBe(from.seq);
      const recordedAfter = [6, 5, 4, 3];
      const listed = async (filter: SecurityEventFilter, first: number) => {
        const seen: number[] = [];
        let beforeSeq: number | undefined;
        for (;;) {
          const page = await store.listEvents(ws, filter, { first, beforeSeq, afterSeq });
          seen.push(...page.map((e) => e.details.i as number));
          if (page.length < first) return seen;
          beforeSeq = page.at(-1)!.seq;
        }
      };
      for (const first of [1, 2, 100]) {
        expect(await listed({}, first)).toEqual(recordedAfter);
        // With a time window, both bounds apply: events recorded after `from` stamped within it.
        expect(await listed({ since: at(2000), until: at(8000) }, first)).toEqual([5, 4, 3]);
        expect(await listed({ types: ['CAMPAIGN_DUPLICATION_REQUESTED', 'PERMISSION_DENIED'], since: at(0) }, first)).toEqual(recordedAfter);
      }
      expect(await store.listEvents(ws, {}, { first: 10, afterSeq: written[6].seq })).toEqual([]);
    });

    it("gives no position for an event that was pruned, or is another workspace's, and lists after a pruned event's position as before", async () => {
      for (let i = 0; i < 4; i += 1) await store.insertEvent(eventFixture(ws, { occurredAt: at(i * 1000), details: { i } }));
      const otherEvent = eventFixture(other, { occurredAt: at(500) });
      await store.insertEvent(otherEvent);
      const [newest, , , oldest] = await store.listEvents(ws, {}, { first: 4 });
      expect(await store.eventSeq(ws, newest.id)).toBe(newest.seq);
      expect((await store.pruneEvents(at(1500), 100, null)).deleted).toBe(3);
      expect(await store.eventSeq(ws, oldest.id)).toBeNull();
      expect(await store.eventSeq(ws, otherEvent.id)).toBeNull();
      expect(await store.eventSeq(ws, randomUUID())).toBeNull();
      for (const filter of [{}, { since: at(0), until: at(9000) }, { types: ['CAMPAIGN_DUPLICATION_REQUESTED', 'PERMISSION_DENIED'] }] as SecurityEventFilter[]) {
        const listed = await store.listEvents(ws, filter, { first: 10, afterSeq: oldest.seq });
        expect(listed.map((e) => e.details.i), JSON.stringify(filter)).toEqual([3, 2]);
      }
    });

    it("leaves out the events of types a newer version wrote, filling each page from the known ones behind them, unless asked for every type", async () => {
      const jobId = randomUUID();
      const keyId = randomUUID();
      // As a newer version sharing the store in a rolling upgrade writes them: a type this one has no name for.
      const unknown = (i: number) => eventFixture(ws, { type: 'CAMPAIGN_ARCHIVED' as SecurityEventType, occurredAt: at(i * 1000), jobId, apiKeyId: keyId, details: { i } });
      await store.insertEvent(eventFixture(ws, { occurredAt: at(0), jobId, apiKeyId: keyId, details: { i: 0 } }));
      for (let i = 1; i <= 8; i += 1) await store.insertEvent(unknown(i));
      await store.insertEvent(eventFixture(ws, { type: 'API_KEY_REJECTED', occurredAt: at(9000), jobId, apiKeyId: keyId, details: { i: 9 } }));
      for (let i = 10; i <= 12; i += 1) await store.insertEvent(unknown(i));

      const window = { since: at(0), until: at(13_000) };
      for (const filter of [{}, { jobId }, { apiKeyId: keyId }, window, { ...window, apiKeyId: keyId }] as SecurityEventFilter[]) {
        // Pages of one, by both cursors: eight unknown events in a row between the two known ones end no listing early.
        for (const after of [(event: SecurityEvent) => ({ beforeSeq: event.seq }), (event: SecurityEvent) => ({ beforeId: event.id })]) {
          const first = await store.listEvents(ws, filter, { first: 2 });
          expect(first.map((e) => e.details.i), JSON.stringify(filter)).toEqual([9, 0]);
          expect((await store.listEvents(ws, filter, { first: 2, ...after(first[0]) })).map((e) => e.details.i)).toEqual([0]);
        }
      }
      expect(await store.listEvents(ws, { types: [...SECURITY_EVENT_TYPES] }, { first: 100 })).toHaveLength(2);

      const every = await store.listEvents(ws, { ...window, unknownTypes: true }, { first: 100 });
      expect(every.map((e) => e.details.i)).toEqual([12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
      expect(every[0].type).toBe('CAMPAIGN_ARCHIVED');
      const paged = await store.listEvents(ws, { ...window, unknownTypes: true }, { first: 3, beforeSeq: every[2].seq });
      expect(paged.map((e) => e.details.i)).toEqual([9, 8, 7]);
    });

    it('lists what a filter of several types selects, with any key, job, time window and cursor, as a filter of every event would', async () => {
      const MINUTE = 60_000;
      const [keyA, keyB] = [randomUUID(), randomUUID()];
      // Two common types, two rare ones, spread over the keys and jobs so that pages cross from one type to another.
      const typeOf = (i: number): SecurityEventType =>
        i % 17 === 5 ? 'CAMPAIGN_DUPLICATION_FAILED' : i % 23 === 7 ? 'PERMISSION_DENIED' : i % 3 === 0 ? 'CAMPAIGN_DUPLICATED' : 'CAMPAIGN_DUPLICATION_REQUESTED';
      const written: SecurityEvent[] = [];
      for (let i = 0; i < 120; i += 1) {
        const event = eventFixture(ws, {
          type: typeOf(i),
          occurredAt: at(i * MINUTE),
          apiKeyId: i % 7 === 3 ? keyB : i % 4 === 0 ? null : keyA,
          jobId: i % 2 === 0 ? `job-${i % 6}` : null,
        });
        await store.insertEvent(event);
        // Another workspace's events of the same types, keys and jobs, in between, are never listed.
        if (i % 10 === 0) await store.insertEvent({ ...eventFixture(other), type: event.type, occurredAt: event.occurredAt, apiKeyId: event.apiKeyId, jobId: event.jobId });
      }
      written.push(...(await store.listEvents(ws, {}, { first: 1000 })));
      expect(written).toHaveLength(120);

      const typeLists: (SecurityEventType[] | undefined)[] = [
        undefined,
        ['PERMISSION_DENIED'],
        ['CAMPAIGN_DUPLICATION_FAILED', 'PERMISSION_DENIED'],
        ['CAMPAIGN_DUPLICATED', 'PERMISSION_DENIED'],
        ['CAMPAIGN_DUPLICATION_REQUESTED', 'CAMPAIGN_DUPLICATED', 'CAMPAIGN_DUPLICATION_FAILED'],
        [...SECURITY_EVENT_TYPES],
        ['PERMISSION_DENIED', 'CAMPAIGN_DUPLICATED', 'PERMISSION_DENIED'],
      ];
      const windows = [{}, { since: at(40 * MINUTE + 1) }, { until: at(90 * MINUTE) }, { since: at(30 * MINUTE), until: at(75 * MINUTE + 1) }];
      const middle = written[60];
      const starts: [string, (event: SecurityEvent) => Omit<ListOptions, 'first'>][] = [
        ['seq', (event) => ({ beforeSeq: event.seq })],
        ['id', (event) => ({ beforeId: event.id })],
      ];
      let compared = 0;
      for (const types of typeLists) {
        for (const apiKeyId of [undefined, keyA, keyB]) {
          for (const jobId of [undefined, 'job-2']) {
            for (const window of windows) {
              const filter: SecurityEventFilter = { ...window, ...(types && { types }), ...(apiKeyId && { apiKeyId }), ...(jobId && { jobId }) };
              const selected = written.filter(
                (event) =>
                  (!types || types.includes(event.type)) &&
                  (!apiKeyId || event.apiKeyId === apiKeyId) &&
                  (!jobId || event.jobId === jobId) &&
                  (!filter.since || event.occurredAt >= filter.since) &&
                  (!filter.until || event.occurredAt < filter.until),
              );
              for (const [cursor, after] of starts) {
                // From the newest event, and from a cursor in the middle whose own event the filter may not select.
                for (const [start, expected] of [
                  [{}, selected],
                  [after(middle), selected.filter((event) => event.seq < middle.seq)],
                ] as const) {
                  const seen: string[] = [];
                  let before: Omit<ListOptions, 'first'> = start;
                  for (;;) {
                    const page = await store.listEvents(ws, filter, { first: 3, ...before });
                    seen.push(...page.map((event) => event.id));
                    if (page.length < 3) break;
                    before = after(page.at(-1)!);
                  }
                  expect(seen, `${JSON.stringify(filter)} by ${cursor} from ${JSON.stringify(start)}`).toEqual(expected.map((event) => event.id));
                  compared += expected.length;
                }
              }
            }
          }
        }
      }
      expect(compared).toBeGreaterThan(1000);
    });

    it('lists exactly the events of a narrow time window among many older and newer ones, however their stamps jitter at its edges', async () => {
      const MINUTE = 60_000;
      const since = 180 * MINUTE;
      const until = since + 20 * MINUTE;
      const keyId = randomUUID();
      // In the order they commit: the time each was stamped with, and a name for what it tests.
      const written: [number, string][] = [
        ...Array.from({ length: 60 }, (_, i): [number, string] => [i * 2 * MINUTE, `older ${i}`]),
        [since - EVENT_TIME_SKEW_MS - 1, 'last one stamped more than the skew before since'],
        [since, 'at since, committed before one stamped the whole skew earlier'],
        [since - EVENT_TIME_SKEW_MS, 'stamped the whole skew before since'],
        [since - 3000, 'before since'],
        [since + 1000, 'in 1'],
        [since - 1000, 'before since, committed after one inside'],
        [since - 1, 'just before since'],
        [since + 2000, 'in 2'],
        [since + 5 * MINUTE, 'in 3'],
        [until - 2000, 'in 4'],
        [until + 1000, 'after until'],
        [until - 1000, 'in 5, committed after one past until'],
        [until, 'at until'],
        [until - 1, 'in 6, just before until'],
        [until + EVENT_TIME_SKEW_MS - 1, 'stamped just under the skew after until'],
        [until - 1, 'in 7, committed after one stamped the whole skew later'],
        ...Array.from({ length: 60 }, (_, i): [number, string] => [until + EVENT_TIME_SKEW_MS + i * 2 * MINUTE, `newer ${i}`]),
      ];
      for (const [index, [time, name]] of written.entries()) {
        await store.insertEvent(
          eventFixture(ws, {
            occurredAt: at(time),
            type: index % 2 === 0 ? 'CAMPAIGN_DUPLICATED' : 'CAMPAIGN_DUPLICATION_REQUESTED',
            apiKeyId: index % 3 === 0 ? keyId : null,
            jobId: `job-${index % 4}`,
            details: { name, index },
          }),
        );
        // Another workspace's events, stamped inside the window or long before, change nothing in this one's.
        if (index === 70) await store.insertEvent(eventFixture(other, { occurredAt: at(since + MINUTE) }));
      }
      await store.insertEvent(eventFixture(other, { occurredAt: at(0) }));

      const newestFirst = [...written.keys()].reverse();
      const expected = (from: number, to: number, keep: (index: number) => boolean = () => true) =>
        newestFirst.filter((index) => written[index][0] >= from && written[index][0] < to && keep(index)).map((index) => written[index][1]);
      const names = (events: SecurityEvent[]) => events.map((event) => event.details.name);
      const window = { since: at(since), until: at(until) };

      expect(names(await store.listEvents(ws, window, { first: 200 }))).toEqual(expected(since, until));
      expect(expected(since, until)).toHaveLength(8);
      expect(names(await store.listEvents(ws, { since: at(since) }, { first: 200 }))).toEqual(expected(since, Infinity));
      expect(names(await store.listEvents(ws, { until: at(until) }, { first: 200 }))).toEqual(expected(-Infinity, until));
      expect(names(await store.listEvents(ws, { ...window, types: ['CAMPAIGN_DUPLICATED'] }, { first: 200 }))).toEqual(
        expected(since, until, (index) => index % 2 === 0),
      );
      expect(names(await store.listEvents(ws, { ...window, apiKeyId: keyId }, { first: 200 }))).toEqual(expected(since, until, (index) => index % 3 === 0));
      expect(names(await store.listEvents(ws, { ...window, jobId: 'job-1' }, { first: 200 }))).toEqual(expected(since, until, (index) => index % 4 === 1));
      // Windows that hold nothing, after every event and between two of them.
      expect(await store.listEvents(ws, { since: at(until + 10 * 24 * 60 * MINUTE) }, { first: 50 })).toEqual([]);
      expect(await store.listEvents(ws, { since: at(since + 6 * MINUTE), until: at(since + 7 * MINUTE) }, { first: 50 })).toEqual([]);

      // Paged, by sequence number (the download) and by a row's id (a client's cursor), alike.
      for (const after of [(event: SecurityEvent) => ({ beforeSeq: event.seq }), (event: SecurityEvent) => ({ beforeId: event.id })]) {
        const seen: unknown[] = [];
        let before: Omit<ListOptions, 'first'> = {};
        for (;;) {
          const page = await store.listEvents(ws, window, { first: 2, ...before });
          seen.push(...names(page));
          if (page.length < 2) break;
          before = after(page.at(-1)!);
        }
        expect(seen).toEqual(expected(since, until));
      }
    });

    it('never shows an event below one already seen in its workspace, however many instances write at once', async () => {
      // A poller that stops at the newest event it has seen relies on this: an event committed later than
      // another of its workspace also sorts above it.
      const second = await harness.open(store);
      try {
        const total = 400;
        let started = 0;
        const writer = async (instance: GatewayStore) => {
          while (started < total) {
            started += 1;
            await instance.insertEvent(eventFixture(ws, { details: { n: started } }));
          }
        };
        let writing = true;
        const writers = Promise.all([store, second].flatMap((instance) => Array.from({ length: 8 }, () => writer(instance)))).finally(
          () => (writing = false),
        );
        const seen = new Set<string>();
        const lateArrivals: number[] = [];
        let highest = 0;
        while (writing) {
          const fresh = (await store.listEvents(ws, {}, { first: 100 })).filter((event) => !seen.has(event.id));
          for (const event of fresh) {
            seen.add(event.id);
            if (event.seq < highest) lateArrivals.push(event.seq);
          }
          highest = Math.max(highest, ...fresh.map((event) => event.seq));
          await new Promise((resolve) => setImmediate(resolve));
        }
        await writers;
        expect(seen.size).toBeGreaterThan(0);
        expect(lateArrivals).toEqual([]);
      } finally {
        await second.close();
      }
    });

    it('reserves idempotency keys once per workspace and binds them to the job', async () => {
      const record = { workspaceId: ws, key: 'k1', requestHash: 'h1', jobId: null, createdAt: at(0), expiresAt: at(86_400_000) };
      expect(await store.reserveIdempotencyKey(record, at(-60_000))).toBeNull();
      expect(await store.reserveIdempotencyKey({ ...record, requestHash: 'h2' }, at(-60_000))).toMatchObject({ requestHash: 'h1', jobId: null });
      expect(await store.reserveIdempotencyKey({ ...record, workspaceId: other }, at(-60_000))).toBeNull();
      expect(await store.findIdempotencyKey(ws, 'k1')).toEqual(record);
      expect(await store.findIdempotencyKey(ws, 'k-unknown')).toBeNull();

      const job = jobFixture(ws);
      expect(await store.enqueueJob(job, eventFixture(ws), record)).toBe(true);
      expect(await store.findIdempotencyKey(ws, 'k1')).toEqual({ ...record, jobId: job.id });
      expect(await store.findIdempotencyKey(other, 'k1')).toMatchObject({ workspaceId: other, jobId: null });
      expect(await store.reserveIdempotencyKey({ ...record, createdAt: at(1000) }, at(-59_000))).toMatchObject({ jobId: job.id });
      await store.releaseIdempotencyKey(record);
      expect(await store.reserveIdempotencyKey({ ...record, createdAt: at(1000) }, at(-59_000))).toMatchObject({ jobId: job.id });

      const concurrent = await Promise.all(
        Array.from({ length: 10 }, () => store.reserveIdempotencyKey({ ...record, key: 'k2' }, at(-60_000))),
      );
      expect(concurrent.filter((holder) => holder === null)).toHaveLength(1);
    });

    it('answers a key holding NUL like any key it does not hold: nothing found, nothing changed', async () => {
      // Callers send such ids (`/duplication_jobs/a%00b`, "a\u0000b" in GraphQL); no row of the gateway holds one.
      const withNul = (value: string) => `${value}\u0000`;
      const key = apiKeyFixture(ws);
      await store.insertApiKey(key, eventFixture(ws, { type: 'API_KEY_CREATED', apiKeyId: key.id }));
      const campaign = campaignFixture(ws);
      await store.insertCampaign(campaign);
      await store.upsertTags(ws, ['promo']);
      const job = jobFixture(ws, { apiKeyId: key.id });
      await store.enqueueJob(job, eventFixture(ws, { jobId: job.id, apiKeyId: key.id }));
      const record = { workspaceId: ws, key: 'k', requestHash: 'h', jobId: null, createdAt: at(0), expiresAt: at(86_400_000) };
      await store.reserveIdempotencyKey(record, at(-60_000));

      expect(await store.getJob(ws, withNul(job.id))).toBeNull();
      expect(await store.getJob(ws, `a\u0000b`)).toBeNull();
      expect(await store.getCampaign(ws, withNul(campaign.id))).toBeNull();
      expect(await store.listCampaigns(ws, { first: 10, beforeId: withNul(campaign.id) })).toEqual([]);
      expect(await store.listEvents(ws, { jobId: withNul(job.id) }, { first: 10 })).toEqual([]);
      expect(await store.listEvents(ws, { apiKeyId: withNul(key.id) }, { first: 10 })).toEqual([]);
      expect(await store.listEvents(withNul(ws), {}, { first: 10 })).toEqual([]);
      // A list of types is read one type at a time: each read keeps the keys that no row can hold out of the server.
      const types: SecurityEventType[] = ['CAMPAIGN_DUPLICATION_REQUESTED', 'API_KEY_CREATED'];
      expect(await store.listEvents(ws, { types, apiKeyId: withNul(key.id) }, { first: 10 })).toEqual([]);
      expect(await store.listEvents(withNul(ws), { types }, { first: 10 })).toEqual([]);
      // As the cursor of any event the workspace does not hold.
      await expect(store.listEvents(ws, { types }, { first: 10, beforeId: withNul(key.id) })).rejects.toMatchObject({ code: 'BAD_USER_INPUT' });
      expect(await store.findWorkspace(withNul(ws))).toBeNull();
      expect(await store.findApiKey(withNul(key.id))).toBeNull();
      expect(await store.findApiKeyByHash(withNul(key.hash))).toBeNull();
      expect(await store.listApiKeys(withNul(ws))).toEqual([]);
      expect(await store.missingTags(ws, ['pro\u0000mo', 'promo', '\u0000'])).toEqual(['pro\u0000mo', '\u0000']);
      expect(await store.findIdempotencyKey(ws, withNul('k'))).toBeNull();

      const revoked = eventFixture(ws, { type: 'API_KEY_REVOKED', apiKeyId: key.id });
      expect(await store.revokeApiKey(withNul(key.id), at(10), revoked)).toBe(false);
      expect(await store.rotateApiKey(withNul(key.id), key.hash, 'a'.repeat(64), 'cgw_rotated', null, revoked)).toBe(false);
      await store.touchApiKey({ ...key, id: withNul(key.id) }, at(20));
      await store.releaseIdempotencyKey({ ...record, key: withNul('k') });
      expect(await store.findApiKey(key.id)).toEqual(key);
      expect(await store.findIdempotencyKey(ws, 'k')).toEqual(record);
      expect((await store.listEvents(ws, {}, { first: 10 })).map((event) => event.type)).toEqual(['CAMPAIGN_DUPLICATION_REQUESTED', 'API_KEY_CREATED']);
    });

    it('replaces abandoned reservations and expired keys', async () => {
      const record = { workspaceId: ws, key: 'k', requestHash: 'h1', jobId: null, createdAt: at(0), expiresAt: at(10_000) };
      await store.reserveIdempotencyKey(record, at(-60_000));
      const replacing = { ...record, requestHash: 'h2', createdAt: at(61_000), expiresAt: at(99_000) };
      expect(await store.reserveIdempotencyKey(replacing, at(1))).toBeNull();
      const job = jobFixture(ws);
      await store.enqueueJob(job, eventFixture(ws), replacing);
      expect(await store.reserveIdempotencyKey({ ...record, createdAt: at(98_000) }, at(38_000))).toMatchObject({ jobId: job.id, requestHash: 'h2' });
      expect(await store.reserveIdempotencyKey({ ...record, createdAt: at(99_000), expiresAt: at(200_000) }, at(39_000))).toBeNull();
    });

    it('keeps a key bound to a job until it expires, however long before the stale cutoff it was reserved', async () => {
      const record = { workspaceId: ws, key: 'k', requestHash: 'h1', jobId: null, createdAt: at(0), expiresAt: at(86_400_000) };
      expect(await store.reserveIdempotencyKey(record, at(-60_000))).toBeNull();
      const job = jobFixture(ws);
      expect(await store.enqueueJob(job, eventFixture(ws, { jobId: job.id }), record)).toBe(true);
      // Only a reservation that never got a job is stale: this one made a job, and still names it.
      const later = { ...record, requestHash: 'h2', createdAt: at(120_000), expiresAt: at(86_520_000) };
      expect(await store.reserveIdempotencyKey(later, at(60_000))).toEqual({ ...record, jobId: job.id });
      expect(await store.findIdempotencyKey(ws, 'k')).toEqual({ ...record, jobId: job.id });
    });

    it("makes no job for a request whose stalled reservation a retry replaced, and keeps the key on the retry's job", async () => {
      const first = { workspaceId: ws, key: 'k', requestHash: 'h', jobId: null, createdAt: at(0), expiresAt: at(86_400_000) };
      expect(await store.reserveIdempotencyKey(first, at(-60_000))).toBeNull();
      // The first request stalls for over a minute after reserving: the same request, retried, replaces it.
      const retry = { ...first, createdAt: at(61_000), expiresAt: at(86_461_000) };
      expect(await store.reserveIdempotencyKey(retry, at(1_000))).toBeNull();
      const early = jobFixture(ws);
      expect(await store.enqueueJob(early, eventFixture(ws, { jobId: early.id }), first)).toBe(false);
      const retried = jobFixture(ws);
      expect(await store.enqueueJob(retried, eventFixture(ws, { jobId: retried.id }), retry)).toBe(true);
      const late = jobFixture(ws);
      expect(await store.enqueueJob(late, eventFixture(ws, { jobId: late.id }), first)).toBe(false);

      expect(await store.findIdempotencyKey(ws, 'k')).toEqual({ ...retry, jobId: retried.id });
      expect(await store.getJob(ws, early.id)).toBeNull();
      expect(await store.getJob(ws, late.id)).toBeNull();
      expect((await jobCounts(store)).PENDING).toBe(1);
      expect((await store.listEvents(ws, {}, { first: 10 })).map((event) => event.jobId)).toEqual([retried.id]);
    });

    it("keeps a retry's reservation when the stalled request it replaced fails and releases its own", async () => {
      const first = { workspaceId: ws, key: 'k', requestHash: 'h', jobId: null, createdAt: at(0), expiresAt: at(86_400_000) };
      expect(await store.reserveIdempotencyKey(first, at(-60_000))).toBeNull();
      const retry = { ...first, createdAt: at(61_000), expiresAt: at(86_461_000) };
      expect(await store.reserveIdempotencyKey(retry, at(1_000))).toBeNull();
      await store.releaseIdempotencyKey(first);
      expect(await store.findIdempotencyKey(ws, 'k')).toEqual(retry);
      await store.releaseIdempotencyKey(retry);
      expect(await store.findIdempotencyKey(ws, 'k')).toBeNull();
    });

    it('prunes finished jobs, old events and expired keys in bounded batches, keeping the rest', async () => {
      const old = jobFixture(ws);
      const recent = jobFixture(ws);
      const pending = jobFixture(ws, { createdAt: at(0) });
      for (const job of [old, recent, pending]) await store.enqueueJob(job, eventFixture(ws, { occurredAt: at(0) }));
      await store.claimJobs('w', 2, at(0), at(1_000_000));
      const claimed = [old, recent];
      await store.finishJob(claimed[0].id, 'w', { status: 'FAILED', resultCampaignId: null, error: { code: 'INTERNAL_ERROR', message: 'x' }, event: eventFixture(ws, { occurredAt: at(100) }) }, at(100));
      await store.finishJob(claimed[1].id, 'w', { status: 'FAILED', resultCampaignId: null, error: { code: 'INTERNAL_ERROR', message: 'x' }, event: eventFixture(ws, { occurredAt: at(900_000) }) }, at(900_000));
      for (let i = 0; i < 5; i += 1) await store.insertEvent(eventFixture(ws, { occurredAt: at(i) }));

      expect(await store.pruneFinishedJobs(at(500_000), 10)).toBe(1);
      expect(await store.getJob(ws, old.id)).toBeNull();
      expect(await store.getJob(ws, recent.id)).not.toBeNull();
      expect(await store.getJob(ws, pending.id)).not.toBeNull();

      const first = await store.pruneEvents(at(500_000), 4, null);
      expect(first.deleted).toBe(4);
      expect(await store.pruneEvents(at(500_000), 100, first.next)).toEqual({ deleted: 5, next: null });
      expect((await store.listEvents(ws, {}, { first: 100 })).map((e) => e.occurredAt)).toEqual([at(900_000)]);

      await store.reserveIdempotencyKey({ workspaceId: ws, key: 'a', requestHash: 'h', jobId: null, createdAt: at(0), expiresAt: at(10) }, at(-1));
      await store.reserveIdempotencyKey({ workspaceId: ws, key: 'b', requestHash: 'h', jobId: null, createdAt: at(0), expiresAt: at(1000) }, at(-1));
      expect(await store.pruneIdempotencyKeys(at(500), 10)).toBe(1);
      expect(await store.reserveIdempotencyKey({ workspaceId: ws, key: 'b', requestHash: 'x', jobId: null, createdAt: at(1), expiresAt: at(1000) }, at(-1))).toMatchObject({ key: 'b' });
    });

    it('prunes old events of a pruned job and without a job, keeping those of a job still kept, finished or not', async () => {
      const kept = jobFixture(ws);
      const pending = jobFixture(ws, { runAt: at(10_000_000) });
      const running = jobFixture(ws);
      const gone = jobFixture(ws);
      // Accepted at the same moment, more of them than a batch: the cursor must step through ties.
      for (const job of [kept, pending, running, gone]) await store.enqueueJob(job, eventFixture(ws, { occurredAt: at(0), jobId: job.id }));
      await store.insertEvent(eventFixture(ws, { occurredAt: at(0), type: 'PERMISSION_DENIED' }));
      await store.insertEvent(eventFixture(ws, { occurredAt: at(5), type: 'PERMISSION_DENIED' }));
      expect((await store.claimJobs('w', 10, at(0), at(10_000_000))).map((job) => job.id).sort()).toEqual([kept.id, running.id, gone.id].sort());
      const failed = (jobId: string, time: number) =>
        store.finishJob(jobId, 'w', { status: 'FAILED', resultCampaignId: null, error: { code: 'INTERNAL_ERROR', message: 'x' }, event: eventFixture(ws, { type: 'CAMPAIGN_DUPLICATION_FAILED', occurredAt: at(time), jobId }) }, at(time));
      await failed(gone.id, 100);
      await store.insertEvent(eventFixture(ws, { occurredAt: at(200), type: 'API_KEY_CREATED' }));
      await failed(kept.id, 900_000);
      expect(await store.pruneFinishedJobs(at(500_000), 10)).toBe(1);

      // Every event is older than the cutoff; those of the kept, pending and running jobs stay.
      const batches = [];
      let batch = await store.pruneEvents(at(1_000_000), 2, null);
      batches.push(batch.deleted);
      while (batch.next) {
        batch = await store.pruneEvents(at(1_000_000), 2, batch.next);
        batches.push(batch.deleted);
      }
      expect(batches).toEqual([0, 1, 2, 2, 0]);
      const left = await store.listEvents(ws, {}, { first: 100 });
      expect(left.map((event) => [event.jobId, event.type])).toEqual([
        [kept.id, 'CAMPAIGN_DUPLICATION_FAILED'],
        [running.id, 'CAMPAIGN_DUPLICATION_REQUESTED'],
        [pending.id, 'CAMPAIGN_DUPLICATION_REQUESTED'],
        [kept.id, 'CAMPAIGN_DUPLICATION_REQUESTED'],
      ]);
      expect(await store.pruneEvents(at(1_000_000), 100, null)).toEqual({ deleted: 0, next: null });
    });

    /** A workspace with a row in every table a workspace has rows in, its ids (its own and its keys') with it. */
    async function populate(workspaceId: string): Promise<{ ids: string[]; hash: string; finished: string }> {
      const key = apiKeyFixture(workspaceId);
      await store.insertApiKey(key, eventFixture(workspaceId, { type: 'API_KEY_CREATED', apiKeyId: key.id, apiKeyName: 'acme ci', ip: null }));
      await store.upsertTags(workspaceId, ['onboarding']);
      await store.insertCampaign(campaignFixture(workspaceId, { name: 'Spring sale' }));
      const reservation = { workspaceId, key: 'idem-1', requestHash: 'h', jobId: null, createdAt: at(0), expiresAt: at(86_400_000) };
      await store.reserveIdempotencyKey(reservation, at(-60_000));
      const [finished, running, pending] = [jobFixture(workspaceId, { apiKeyId: key.id, requestId: 'req-1' }), jobFixture(workspaceId), jobFixture(workspaceId, { runAt: at(10_000) })];
      await store.enqueueJob(finished, eventFixture(workspaceId, { jobId: finished.id, apiKeyId: key.id, ip: '203.0.113.7' }), reservation);
      await store.claimJobs(`w-${workspaceId}`, 1, at(0), at(1000));
      await store.finishJob(finished.id, `w-${workspaceId}`, { status: 'SUCCEEDED', resultCampaignId: null, error: null, newCampaign: campaignFixture(workspaceId), event: eventFixture(workspaceId, { type: 'CAMPAIGN_DUPLICATED', jobId: finished.id }) }, at(100));
      for (const job of [running, pending]) await store.enqueueJob(job, eventFixture(workspaceId, { jobId: job.id }));
      await store.insertEvent(eventFixture(workspaceId, { type: 'PERMISSION_DENIED', apiKeyId: key.id, ip: '203.0.113.8' }));
      return { ids: [workspaceId, key.id], hash: key.hash, finished: finished.id };
    }

    const nonZero = (counts: Record<string, number>) => Object.fromEntries(Object.entries(counts).filter(([, count]) => count > 0));

    describe('erasing a workspace', () => {
      it('deletes every row of the workspace from every table in one step, and nothing of another', async () => {
        const erased = await populate(ws);
        const kept = await populate(other);
        const otherBefore = await harness.rowsNaming(store, kept.ids);
        // A second instance that has looked the key up (and may keep it) refuses it from the erasure on.
        const second = await harness.open(store);
        try {
          expect(await second.findApiKeyByHash(erased.hash)).not.toBeNull();
          const before = nonZero(await harness.rowsNaming(store, erased.ids));
          expect(Object.keys(before)).toEqual(expect.arrayContaining(['workspaces', 'api_keys', 'tags', 'campaigns', 'jobs', 'security_events', 'idempotency_keys']));

          const deletion = await store.deleteWorkspace(ws, at(200));
          expect(deletion).toEqual({ deleted: true, rows: expect.objectContaining({ workspaces: 1, api_keys: 1, tags: 1, campaigns: 2, jobs: 3, security_events: 6, idempotency_keys: 1 }) });
          // Each table's count is what it held of the workspace (a job's events and key name it by id too).
          expect(nonZero((deletion as { rows: Record<string, number> }).rows)).toEqual(before);
          expect(nonZero(await harness.rowsNaming(store, erased.ids))).toEqual({});
          expect(await second.findApiKeyByHash(erased.hash)).toBeNull();
          expect(await store.findWorkspace(ws)).toBeNull();
          expect(await store.getJob(ws, erased.finished)).toBeNull();
          expect(await store.listEvents(ws, {}, { first: 10 })).toEqual([]);
        } finally {
          await second.close();
        }
        expect(await harness.rowsNaming(store, kept.ids)).toEqual(otherBefore);
        expect(await store.findApiKeyByHash(kept.hash)).not.toBeNull();
        expect(await store.getJob(other, kept.finished)).not.toBeNull();
        expect(await store.listEvents(other, {}, { first: 10 })).toHaveLength(6);
        // The workspace's queued jobs went with it: the other's are all there is to claim.
        expect((await store.claimJobs('after', 10, at(20_000), at(30_000))).map((job) => job.workspaceId)).toEqual([other, other]);
      });

      it('deletes nothing while one of its jobs runs under a lease, and goes once the lease has expired', async () => {
        const erased = await populate(ws);
        await store.claimJobs('worker', 1, at(1000), at(60_000));
        const before = await harness.rowsNaming(store, erased.ids);
        expect(await store.deleteWorkspace(ws, at(59_999))).toEqual({ deleted: false, running: 1, leaseEndsAt: at(60_000) });
        expect(await harness.rowsNaming(store, erased.ids)).toEqual(before);
        expect(await store.deleteWorkspace(ws, at(60_000))).toMatchObject({ deleted: true, rows: { workspaces: 1, jobs: 3 } });
        expect(nonZero(await harness.rowsNaming(store, erased.ids))).toEqual({});
      });
    });

    describe('erasing a workspace in batches', () => {
      /** The store, its erasure stopping (as on a crash or Ctrl-C) once `batches` batches have committed. */
      const stoppingAfter = (batches: number): GatewayStore =>
        new Proxy(store, {
          get(target, property) {
            const value = Reflect.get(target, property, target);
            if (property !== 'eraseWorkspaceRows') return typeof value === 'function' ? value.bind(target) : value;
            return async (...args: Parameters<GatewayStore['eraseWorkspaceRows']>) => {
              if (batches-- <= 0) throw new Error('stopped between batches');
              return target.eraseWorkspaceRows(...args);
            };
          },
        });
      const erase = async (on: GatewayStore) => new AdminService(on, { now: () => at(200) }, 2).deleteWorkspace(ws, (await store.findWorkspace(ws))!.name);

      /** populate's rows, and events enough for several batches of 2. */
      async function populateMany(workspaceId: string) {
        const populated = await populate(workspaceId);
        for (let i = 0; i < 5; i += 1) await store.insertEvent(eventFixture(workspaceId, { type: 'PERMISSION_DENIED' }));
        return populated;
      }

      it('deletes a workspace of more rows than a batch holds, every row of it, and nothing of another', async () => {
        const erased = await populateMany(ws);
        const kept = await populateMany(other);
        const otherBefore = await harness.rowsNaming(store, kept.ids);
        const before = nonZero(await harness.rowsNaming(store, erased.ids));
        expect(before.security_events).toBe(11);

        const { rows } = await erase(store);
        expect(nonZero(rows)).toEqual(before);
        expect(nonZero(await harness.rowsNaming(store, erased.ids))).toEqual({});
        expect(await harness.rowsNaming(store, kept.ids)).toEqual(otherBefore);
      });

      it('leaves a workspace stopped part-way one no key can use and no job can be claimed from, and a second run finishes it', async () => {
        const erased = await populateMany(ws);
        await populateMany(other);
        // Said as an erasure interrupted, with what stopped it: its first step committed, so not a failure that changed nothing.
        const stopped = await erase(stoppingAfter(3)).catch((error: unknown) => error);
        expect(stopped).toBeInstanceOf(ErasureInterrupted);
        expect((stopped as ErasureInterrupted).cause).toEqual(new Error('stopped between batches'));

        expect(await store.findWorkspace(ws)).not.toBeNull();
        expect(await store.findApiKeyByHash(erased.hash)).toBeNull();
        expect((await store.claimJobs('after', 10, at(20_000), at(30_000))).map((job) => job.workspaceId)).toEqual([other, other]);
        const left = nonZero(await harness.rowsNaming(store, erased.ids));
        expect(left).toMatchObject({ workspaces: 1, security_events: 11 - 3 * 2 });

        // The second run deletes what the first left, and says so.
        const { rows } = await erase(store);
        expect(nonZero(rows)).toEqual(left);
        expect(nonZero(await harness.rowsNaming(store, erased.ids))).toEqual({});
      });

      it('goes on past a batch that found fewer rows than it asked for, as when the pruner took some, leaving none to the last step', async () => {
        const erased = await populateMany(ws);
        let raced = false;
        let lastStep: Awaited<ReturnType<GatewayStore['deleteWorkspace']>> = null;
        const racing = new Proxy(store, {
          get(target, property) {
            const value = Reflect.get(target, property, target);
            if (property === 'eraseWorkspaceRows') {
              return async (workspaceId: string, table: Parameters<GatewayStore['eraseWorkspaceRows']>[1], limit: number) => {
                if (raced || table !== 'security_events') return target.eraseWorkspaceRows(workspaceId, table, limit);
                raced = true;
                return target.eraseWorkspaceRows(workspaceId, table, limit - 1);
              };
            }
            if (property === 'deleteWorkspace') {
              return async (...args: Parameters<GatewayStore['deleteWorkspace']>) => (lastStep = await target.deleteWorkspace(...args));
            }
            return typeof value === 'function' ? value.bind(target) : value;
          },
        });

        const { rows } = await erase(racing);
        expect(raced).toBe(true);
        expect(rows.security_events).toBe(11);
        expect(lastStep).toMatchObject({ deleted: true, rows: expect.objectContaining({ security_events: 0 }) });
        expect(nonZero(await harness.rowsNaming(store, erased.ids))).toEqual({});
      });

      it('deletes nothing while one of its jobs runs under a lease', async () => {
        const erased = await populateMany(ws);
        await store.claimJobs('worker', 1, at(1000), at(60_000));
        const before = await harness.rowsNaming(store, erased.ids);
        await expect(erase(store)).rejects.toThrow(`has 1 job running, leased until ${at(60_000).toISOString()}: nothing was deleted`);
        expect(await harness.rowsNaming(store, erased.ids)).toEqual(before);
      });
    });

    describe('exporting a workspace', () => {
      it('reads every row that names the workspace or its keys, table by table, page by page, and none of another workspace', async () => {
        const exported = await populate(ws);
        const kept = await populate(other);
        // More rows than a page in the tables a workspace may hold many of, and pages that end on a table's last row.
        for (let i = 0; i < 4; i += 1) await store.insertCampaign(campaignFixture(ws));
        for (let i = 0; i < 3; i += 1) await store.enqueueJob(jobFixture(ws), eventFixture(ws));
        await store.upsertTags(ws, ['a', 'b', 'c']);
        const claimed = (await store.claimJobs('instance-host:4242', 100, at(1000), at(60_000))).find((job) => job.workspaceId === ws)!;
        const named = nonZero(await harness.rowsNaming(store, exported.ids));
        const lines: ExportLine[] = [];
        for await (const line of exportLines(store, ws, 2)) lines.push(line);

        const counted: Record<string, number> = {};
        for (const line of lines) counted[line.table] = (counted[line.table] ?? 0) + 1;
        // The queue's turn (PostgreSQL) is a counter of the scheduler's, not a row of the workspace's data.
        const { job_queue_turns: _turns, ...rows } = named;
        expect(counted).toEqual(rows);
        expect(counted).toMatchObject({ workspaces: 1, api_keys: 1, tags: 4, campaigns: 6, jobs: 6, security_events: 9, idempotency_keys: 1 });
        expect(lines.map((line) => line.table)).toEqual([...EXPORT_TABLES].flatMap((table) => Array(counted[table]).fill(table)));
        const text = JSON.stringify(lines);
        expect(text).not.toContain(other);
        expect(text).not.toContain(kept.ids[1]);
        // Each row once, in the order of its key.
        const keysOf = (table: string, key: string) => lines.filter((line) => line.table === table).map((line) => line[key] as string | number);
        for (const [table, key] of [['campaigns', 'id'], ['jobs', 'id'], ['security_events', 'seq'], ['tags', 'name']] as const) {
          const keys = keysOf(table, key);
          expect(new Set(keys).size).toBe(keys.length);
        }
        expect(keysOf('security_events', 'seq')).toEqual([...keysOf('security_events', 'seq')].sort((a, b) => Number(a) - Number(b)));
        // Never a key's secret, nor what tells one reservation from another.
        expect(text).not.toContain(exported.hash);
        expect(lines.find((line) => line.table === 'api_keys')).not.toHaveProperty('hash');
        // Nor the instance running a job, which is the operator's.
        const running = lines.find((line) => line.table === 'jobs' && line.id === claimed.id);
        expect(running).toMatchObject({ status: 'RUNNING', leaseExpiresAt: at(60_000) });
        expect(running).not.toHaveProperty('leaseOwner');
        expect(text).not.toContain('instance-host');
        expect(lines.find((line) => line.table === 'idempotency_keys')).toEqual({
          table: 'idempotency_keys', workspaceId: ws, key: 'idem-1', jobId: exported.finished, createdAt: at(0), expiresAt: at(86_400_000),
        });
        expect(lines[0]).toEqual({ table: 'workspaces', ...(await store.findWorkspace(ws)) });
      });

      it('finds nothing for a workspace that does not exist, or an id no row can hold', async () => {
        for (const id of ['no-such-workspace', 'a\u0000b']) {
          for (const table of EXPORT_TABLES) expect(await store.exportRows(id, table, null, 10)).toEqual({ rows: [], next: null });
        }
      });
    });

    describe('importing rows another store exported', () => {
      it('writes each page as exportRows read it, every column kept, and goes on from the rows it was given', async () => {
        const copied = await populate(ws);
        await populate(other);
        // A job left RUNNING under a lease (its gateway stopped without handing it back).
        const [running] = await store.claimJobs('instance-host:4242', 1, at(1000), at(60_000));
        const copy = await harness.create();
        try {
          await copy.migrate();
          let lastSeq = 0;
          for (const id of [ws, other]) {
            for (const table of EXPORT_TABLES) {
              const page = await store.exportRows(id, table, null, 1000);
              await copy.importRows(table, page.rows);
              expect(await copy.exportRows(id, table, null, 1000)).toEqual(page);
              if (table === 'security_events') lastSeq = Math.max(lastSeq, ...page.rows.map((row) => (row as SecurityEvent).seq));
            }
          }
          for (const table of EXPORT_TABLES) expect(await copy.countRows(table)).toEqual(await store.countRows(table));
          expect(await copy.findApiKeyByHash(copied.hash)).toEqual(await store.findApiKeyByHash(copied.hash));
          expect(await copy.findIdempotencyKey(ws, 'idem-1')).toEqual(await store.findIdempotencyKey(ws, 'idem-1'));

          // Events written later number after the copied ones, and campaigns added later list first.
          await copy.insertEvent(eventFixture(ws, { type: 'PERMISSION_DENIED' }));
          expect((await copy.listEvents(ws, {}, { first: 1 }))[0].seq).toBeGreaterThan(lastSeq);
          const added = campaignFixture(ws);
          await copy.insertCampaign(added);
          expect((await copy.listCampaigns(ws, { first: 1 }))[0].id).toBe(added.id);
          // The running job is taken over once its lease ends, and the pending ones are claimed, as in the source.
          const claimed = await copy.claimJobs('new-instance', 10, at(70_000), at(130_000));
          expect(claimed.find((job) => job.id === running.id)).toMatchObject({ takenOverFrom: 'instance-host:4242', attempts: running.attempts + 1 });
          expect(claimed.map((job) => job.id).sort()).toEqual((await store.claimJobs('source', 10, at(70_000), at(130_000))).map((job) => job.id).sort());
          // Rows already there are refused, not merged.
          await expect(copy.importRows('workspaces', [(await store.findWorkspace(ws))!])).rejects.toThrow();
        } finally {
          await harness.destroy(copy);
        }
      });

      it('counts apart the rows of a workspace erased while requests still wrote', async () => {
        await populate(ws);
        await populate(other);
        expect(await store.deleteWorkspace(ws, at(200))).toMatchObject({ deleted: true });
        // Written by requests that passed authentication before the erasure: events and idempotency keys have no foreign key.
        await store.insertEvent(eventFixture(ws, { type: 'PERMISSION_DENIED' }));
        await store.reserveIdempotencyKey({ workspaceId: ws, key: 'late', requestHash: 'h', jobId: null, createdAt: at(300), expiresAt: at(86_400_000) }, at(-60_000));
        const counts = Object.fromEntries(await Promise.all(EXPORT_TABLES.map(async (table) => [table, await store.countRows(table)] as const)));
        expect(counts.workspaces).toEqual({ ofWorkspaces: 1, orphaned: 0 });
        expect(counts.security_events.orphaned).toBe(1);
        expect(counts.idempotency_keys).toEqual({ ofWorkspaces: 1, orphaned: 1 });
        for (const table of ['api_keys', 'tags', 'campaigns', 'jobs'] as const) expect(counts[table].orphaned).toBe(0);
      });
    });

    it('migrates one fresh database once when several instances start at the same moment', async () => {
      const fresh = await harness.create();
      const others = await Promise.all([harness.open(fresh), harness.open(fresh)]);
      try {
        await Promise.all([fresh, ...others].map((instance) => instance.migrate()));
        expect(await fresh.hasWorkspaces()).toBe(false);
        const workspace = workspaceFixture();
        await others[0].createWorkspace(workspace);
        expect((await others[1].findWorkspace(workspace.name))?.id).toBe(workspace.id);
        expect(await fresh.listWorkspaces()).toHaveLength(1);
        expect(await fresh.hasWorkspaces()).toBe(true);
        await Promise.all([fresh, ...others].map((instance) => instance.migrate()));
        expect(await others[1].listWorkspaces()).toHaveLength(1);
      } finally {
        await Promise.all(others.map((instance) => instance.close()));
        await harness.destroy(fresh);
      }
    });

    it('shares one queue between instances: concurrent claims never overlap and one finish wins', async () => {
      const second = await harness.open(store);
      try {
        const jobs = Array.from({ length: 30 }, (_, i) => jobFixture(ws, { runAt: at(i) }));
        for (const job of jobs) await store.enqueueJob(job, eventFixture(ws, { jobId: job.id }));
        const handles = [store, second];
        const batches = await Promise.all(
          ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'].map((owner, i) => handles[i % 2].claimJobs(owner, 5, at(1000), at(9000))),
        );
        const claimed = batches.flat();
        expect(new Set(claimed.map((job) => job.id)).size).toBe(30);
        expect(claimed).toHaveLength(30);
        expect(await second.countJobs('RUNNING')).toBe(30);

        // Both instances see the leases run out and race for the same jobs.
        const again = await Promise.all([store.claimJobs('x', 30, at(10_000), at(20_000)), second.claimJobs('y', 30, at(10_000), at(20_000))]);
        expect(again.flat()).toHaveLength(30);
        expect(new Set(again.flat().map((job) => job.id)).size).toBe(30);

        const [job] = again.flat();
        const copies = [campaignFixture(ws), campaignFixture(ws)];
        const finish = (instance: GatewayStore, owner: string, copy: (typeof copies)[number]) =>
          instance.finishJob(job.id, owner, {
            status: 'SUCCEEDED',
            resultCampaignId: copy.id,
            error: null,
            newCampaign: copy,
            event: eventFixture(ws, { type: 'CAMPAIGN_DUPLICATED', jobId: job.id }),
          }, at(11_000));
        const owner = job.leaseOwner!;
        const results = await Promise.all([finish(store, owner, copies[0]), finish(second, owner, copies[1])]);
        expect(results.filter(Boolean)).toHaveLength(1);
        const written = await Promise.all(copies.map((copy) => second.getCampaign(ws, copy.id)));
        expect(written.filter((campaign) => campaign !== null)).toHaveLength(1);
        expect(await store.listEvents(ws, { jobId: job.id, types: ['CAMPAIGN_DUPLICATED'] }, { first: 5 })).toHaveLength(1);
      } finally {
        await second.close();
      }
    });
  });
}

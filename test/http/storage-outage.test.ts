import { copyFileSync, mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SqliteStore } from '../../src/adapters/sqlite/store.js';
import type { GatewayStore } from '../../src/domain/ports.js';
import {
  bearer,
  graphql,
  http,
  json,
  recordingLogger,
  startGateway,
  storeHeldOn,
  waitFor,
  type HttpResult,
  type TestGateway,
  type TestWorkspace,
} from '../support/gateway.js';

const DUPLICATE = 'mutation($input: DuplicateCampaignInput!) { duplicateCampaign(input: $input) { job { id status } } }';
/** 12 KiB as UTF-8, in the job row and again in its event: neither fits in a page, so each needs new pages. */
const LONG_DESCRIPTION = '€'.repeat(4096);

interface LogLine {
  level: number;
  msg: string;
  reqId?: string;
  err?: { message: string; code?: string };
}

/** The embedded store whose disk fills up, or whose file disappears, under a running gateway. */
describe('the embedded store when its storage fails', () => {
  let gateway: TestGateway | undefined;
  const dirs: string[] = [];

  afterEach(async () => {
    await gateway?.close();
    gateway = undefined;
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  /** A gateway on a SQLite store of the test's own, in a directory the test may take away, with its log kept. */
  async function start(wrap: (store: SqliteStore) => GatewayStore = (store) => store) {
    const dir = mkdtempSync(join(tmpdir(), 'cgw-storage-'));
    dirs.push(dir);
    const sqlite = new SqliteStore({ filename: join(dir, 'gateway.db') });
    await sqlite.migrate();
    const { logger, lines } = recordingLogger();
    // A lease of a second: a job whose outcome could not be recorded is claimed again soon after the disk recovers.
    gateway = await startGateway({ JOB_LEASE_SECONDS: '1', DUPLICATE_RATE_LIMIT: '1000' }, { store: wrap(sqlite), logger });
    const logs = () => lines.map((line) => JSON.parse(line) as LogLine);
    return { dir, sqlite, gateway, logs, tenant: await gateway.workspace() };
  }

  const duplicateOverRest = (target: TestGateway, tenant: TestWorkspace, name: string, description?: string, campaignId = tenant.campaign.id) =>
    http(target.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(tenant.key) },
      body: JSON.stringify({ campaign_id: campaignId, name, description }),
    });
  const duplicateOverGraphql = (target: TestGateway, tenant: TestWorkspace, name: string, description?: string) =>
    graphql(target.baseUrl, tenant.key, DUPLICATE, { input: { campaignId: tenant.campaign.id, name, description } });
  const jobStatus = async (target: TestGateway, tenant: TestWorkspace, jobId: string) =>
    (await http(target.baseUrl, 'GET', `/duplication_jobs/${jobId}`, { headers: bearer(tenant.key) })).body.status as string;
  const readiness = async (target: TestGateway) => {
    const response = await http(target.baseUrl, 'GET', '/readyz');
    return { status: response.status, body: response.body };
  };

  /** Both transports answer 503 with Retry-After and nothing of the cause; each refusal is one warning naming it. */
  function expectRefused(rest: HttpResult, mutation: HttpResult, logs: LogLine[], cause: RegExp) {
    expect(rest.status).toBe(503);
    expect(rest.headers['retry-after']).toBe('5');
    expect(rest.body).toEqual({ message: 'Service unavailable' });
    expect(mutation.status).toBe(503);
    expect(mutation.headers['retry-after']).toBe('5');
    expect(mutation.body).toEqual({
      errors: [expect.objectContaining({ message: 'Service unavailable', path: ['duplicateCampaign'], extensions: { code: 'SERVICE_UNAVAILABLE', retryAfterSeconds: 5 } })],
      data: { duplicateCampaign: null },
    });
    for (const refused of [rest, mutation]) {
      const lines = logs.filter((line) => line.reqId === refused.headers['x-request-id'] && line.level >= 40);
      expect(lines).toEqual([expect.objectContaining({ level: 40, msg: 'a dependency is unavailable', err: expect.objectContaining({ message: expect.stringMatching(cause) }) })]);
    }
  }

  it('refuses writes with 503 on a full disk, reports the store down, and recovers by itself once there is room', async () => {
    let outcomeHeld!: () => void;
    const outcomeReached = new Promise<void>((resolve) => (outcomeHeld = resolve));
    let releaseOutcome!: () => void;
    let holdOutcome: Promise<void> | undefined = new Promise<void>((resolve) => (releaseOutcome = resolve));
    const { sqlite, gateway, logs, tenant } = await start((store) =>
      storeHeldOn(store, ['finishJob'], () => {
        outcomeHeld();
        return holdOutcome;
      }),
    );
    expect(await readiness(gateway)).toEqual({ status: 200, body: { status: 'ready', checks: { store: { status: 'up', backend: 'sqlite' }, quota: { status: 'up', backend: 'memory' } } } });

    // Accepted while there is room; its copy, of a campaign with a body of 64 KiB, is to be written once the disk is full.
    const large = await gateway.app.admin.addCampaign(tenant.workspace.id, { name: 'large', description: null, tagNames: [], body: { html: 'x'.repeat(65_536) } });
    const early = await duplicateOverRest(gateway, tenant, 'accepted before the disk filled', undefined, large.id);
    expect(early.status).toBe(202);
    await outcomeReached;
    await sqlite.holdSize(true);

    const rest = await duplicateOverRest(gateway, tenant, 'on a full disk', LONG_DESCRIPTION);
    const mutation = await duplicateOverGraphql(gateway, tenant, 'on a full disk', LONG_DESCRIPTION);
    expectRefused(rest, mutation, logs(), /disk is full/);
    const down = await readiness(gateway);
    expect(down).toEqual({
      status: 503,
      body: {
        status: 'not ready',
        message: 'store: not reachable or failing (SQLITE_FULL)',
        checks: { store: { status: 'down', message: 'not reachable or failing (SQLITE_FULL)' }, quota: { status: 'up', backend: 'memory' } },
      },
    });

    // The worker cannot record the early job's copy either: a warning, and the job is kept to be run again.
    holdOutcome = undefined;
    releaseOutcome();
    const workerWarning = await waitFor(async () => logs().find((line) => line.msg === 'recording the job outcome failed: the store is unavailable'));
    expect(workerWarning).toMatchObject({ level: 40, err: { code: 'SQLITE_FULL' } });
    expect(await jobStatus(gateway, tenant, early.body.job_id)).toBe('running');
    expect(logs().filter((line) => line.level >= 50)).toEqual([]);

    await sqlite.holdSize(false);
    expect(await readiness(gateway)).toMatchObject({ status: 200, body: { status: 'ready' } });
    const accepted = await duplicateOverRest(gateway, tenant, 'after the disk recovered', LONG_DESCRIPTION);
    expect(accepted.status).toBe(202);
    const viaGraphql = await duplicateOverGraphql(gateway, tenant, 'after the disk recovered', LONG_DESCRIPTION);
    expect(viaGraphql.status).toBe(200);
    for (const jobId of [early.body.job_id, accepted.body.job_id, viaGraphql.body.data.duplicateCampaign.job.id]) {
      await waitFor(async () => (await jobStatus(gateway, tenant, jobId)) === 'succeeded');
    }
    expect(logs().filter((line) => line.level >= 50)).toEqual([]);
  });

  it('refuses writes with 503 once its data directory is removed, instead of accepting jobs into a file no restart finds', async () => {
    let claims = 0;
    const { dir, gateway, logs, tenant } = await start((store) => storeHeldOn(store, ['claimJobs'], () => void (claims += 1)));
    const before = await duplicateOverRest(gateway, tenant, 'before the directory was removed');
    expect(before.status).toBe(202);
    await waitFor(async () => (await jobStatus(gateway, tenant, before.body.job_id)) === 'succeeded');
    const backup = join(mkdtempSync(join(tmpdir(), 'cgw-backup-')), 'gateway.db');
    dirs.push(dirname(backup));
    copyFileSync(join(dir, 'gateway.db'), backup);

    rmSync(dir, { recursive: true });
    const rest = await duplicateOverRest(gateway, tenant, 'after the directory was removed');
    const mutation = await duplicateOverGraphql(gateway, tenant, 'after the directory was removed');
    expectRefused(rest, mutation, logs(), /no longer at/);
    expect(await readiness(gateway)).toMatchObject({
      status: 503,
      body: { status: 'not ready', checks: { store: { status: 'down', message: 'not reachable or failing (ENOENT)' } } },
    });
    // The worker keeps polling, and says once that the store is unavailable, not at every claim that fails.
    const claimsSoFar = claims;
    await waitFor(async () => claims >= claimsSoFar + 3);
    expect(logs().filter((line) => line.msg === 'the store is unavailable; claiming jobs again once it answers')).toEqual([
      expect.objectContaining({ level: 40, err: expect.objectContaining({ code: 'ENOENT' }) }),
    ]);

    // A copy put back at the path is another file: the store still refuses, until it is restarted on that file.
    mkdirSync(dir);
    copyFileSync(backup, join(dir, 'gateway.db'));
    expect(await readiness(gateway)).toMatchObject({ status: 503, body: { checks: { store: { status: 'down', message: 'not reachable or failing (ESTALE)' } } } });
    expect((await duplicateOverRest(gateway, tenant, 'into the copy')).status).toBe(503);
    expect(logs().filter((line) => line.level >= 50)).toEqual([]);
  });

  it('serves again once the file it opened is back at its path', async () => {
    const { dir, gateway, tenant } = await start();
    expect((await duplicateOverRest(gateway, tenant, 'before the directory moved')).status).toBe(202);
    const away = `${dir}-away`;
    dirs.push(away);
    renameSync(dir, away);
    expect((await duplicateOverRest(gateway, tenant, 'while the directory is away')).status).toBe(503);
    expect((await readiness(gateway)).status).toBe(503);

    renameSync(away, dir);
    expect(await readiness(gateway)).toMatchObject({ status: 200, body: { status: 'ready' } });
    const after = await duplicateOverRest(gateway, tenant, 'after the directory came back');
    expect(after.status).toBe(202);
    await waitFor(async () => (await jobStatus(gateway, tenant, after.body.job_id)) === 'succeeded');
  });
});

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT, runCli } from '../../src/cli/commands.js';
import { AdminService } from '../../src/domain/admin.js';
import { newId } from '../../src/domain/ids.js';
import type { Clock, GatewayStore } from '../../src/domain/ports.js';
import { ManualClock } from '../support/clock.js';
import { eventFixture, jobFixture } from '../support/fixtures.js';
import { startGateway, type TestGateway } from '../support/gateway.js';
import { rest } from '../support/transports.js';

/** The CLI run in this process at the time `at` says, on the gateway's store, with what it prints. */
async function cliAt(at: Clock, dataDir: string, argv: string[]) {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, { env: { DATA_DIR: dataDir }, clock: at, stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) });
  return { code, stdout, stderr };
}

describe('the jobs a leaked key queued', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'cgw-cli-leak-'));
  const clock = new ManualClock(new Date('2026-06-01T00:00:00.000Z'));
  let gw: TestGateway;
  const cli = (...argv: string[]) => cliAt(clock, dataDir, argv);
  const cliJson = async (...argv: string[]) => {
    const result = await cli(...argv, '--json');
    expect(result).toMatchObject({ code: EXIT.ok, stderr: '' });
    return JSON.parse(result.stdout);
  };

  beforeAll(async () => {
    // No worker: the queued jobs stay queued, as behind an upstream's pace.
    gw = await startGateway({ DATA_DIR: dataDir, TRUST_PROXY: '127.0.0.1', WORKER_CONCURRENCY: '0' }, { clock });
  });

  afterAll(async () => {
    await gw.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('are counted by keys revoke, listed by key with their addresses, and failed by key, but for the one a worker holds', async () => {
    const workspace = await cliJson('workspaces', 'create', 'leaky');
    const campaign = await gw.app.admin.addCampaign(workspace.id, { name: 'Welcome', description: null, tagNames: [], body: {} });
    const keyNamed = (name: string) => cliJson('keys', 'create', '--workspace', 'leaky', '--name', name, '--permissions', 'campaigns.duplicate');
    const [leaked, other] = [await keyNamed('integration'), await keyNamed('other integration')];
    const queue = async (key: string, ip: string) => {
      const accepted = await rest.duplicate(gw.baseUrl, key, { campaignId: campaign.id, name: 'Copy' }, { headers: { 'x-forwarded-for': ip } });
      expect(accepted.status).toBe(202);
      clock.advance(1);
      return accepted.jobId!;
    };
    const attacker = '203.0.113.7';
    const client = '198.51.100.9';
    const held = await queue(leaked.key, attacker);
    const [fromAttacker, fromClient, ofOther] = [await queue(leaked.key, attacker), await queue(leaked.key, client), await queue(other.key, client)];
    // Another instance's worker holds the first, under a lease of a minute.
    const leaseEnds = new Date(clock.now().getTime() + 60_000);
    expect((await gw.app.store.claimJobs('another instance', 1, clock.now(), leaseEnds)).map((job) => job.id)).toEqual([held]);

    // Revoking says what it leaves running, on stderr; stdout keeps its one line.
    expect(await cli('keys', 'revoke', leaked.id)).toEqual({
      code: EXIT.ok,
      stdout: `Revoked key "integration" (id ${leaked.id}); requests with it are refused from now on.\n`,
      stderr:
        `Its jobs still run: 2 PENDING, 1 RUNNING (jobs list --key ${leaked.id}). ` +
        `To fail those no worker holds, for good: npm run -s cli -- jobs fail --key ${leaked.id} --reason '<why>' --confirm\n`,
    });
    expect(await cliJson('keys', 'revoke', leaked.id)).toMatchObject({
      alreadyRevoked: true,
      jobs: { pending: 2, running: 1, failCommand: `npm run -s cli -- jobs fail --key ${leaked.id} --reason '<why>' --confirm` },
    });

    // Its jobs alone, newest first, each with its key and the address its request came from.
    const listed = await cliJson('jobs', 'list', '--key', leaked.id);
    expect(listed.map(({ id, ip, apiKey, status }: Record<string, unknown>) => ({ id, ip, apiKey, status }))).toEqual([
      { id: fromClient, ip: client, apiKey: { id: leaked.id, name: 'integration' }, status: 'PENDING' },
      { id: fromAttacker, ip: attacker, apiKey: { id: leaked.id, name: 'integration' }, status: 'PENDING' },
      { id: held, ip: attacker, apiKey: { id: leaked.id, name: 'integration' }, status: 'RUNNING' },
    ]);
    expect((await cliJson('jobs', 'list', '--key', leaked.id, '--workspace', 'leaky', '--status', 'RUNNING')).map((job: { id: string }) => job.id)).toEqual([held]);
    await cliJson('workspaces', 'create', 'elsewhere');
    expect(await cli('jobs', 'list', '--key', leaked.id, '--workspace', 'elsewhere')).toEqual({
      code: EXIT.failed,
      stdout: '',
      stderr: `campaign-gateway: key ${leaked.id} is not of workspace "elsewhere": leave out --workspace\n`,
    });
    expect(await cli('jobs', 'list', '--key', 'no-such-key')).toMatchObject({ code: EXIT.failed, stderr: "campaign-gateway: No key 'no-such-key'\n" });

    expect(await cli('jobs', 'fail', '--reason', 'leaked', '--confirm')).toMatchObject({ code: EXIT.usage });
    expect(await cli('jobs', 'fail', held, '--key', leaked.id, '--reason', 'leaked', '--confirm')).toMatchObject({ code: EXIT.usage });
    expect(await cli('jobs', 'fail', '--key', leaked.id, '--reason', 'leaked')).toMatchObject({ code: EXIT.usage });

    // The pending ones fail, each as `jobs fail` fails it; the one a worker holds is named, not forced.
    expect(await cli('jobs', 'fail', '--key', leaked.id, '--reason', 'key leaked', '--operator', 'on-call', '--confirm')).toEqual({
      code: EXIT.failed,
      stdout:
        `Failed 2 jobs of key "integration" (id ${leaked.id}) with error CANCELLED: they will not run.\n` +
        `Job ${held} was not failed: a worker holds it, its lease ends at ${leaseEnds.toISOString()} (try again after it).\n`,
      stderr: `campaign-gateway: 1 job of key ${leaked.id} was not failed: a worker holds it\n`,
    });
    for (const id of [fromAttacker, fromClient]) {
      expect(await gw.app.store.getJob(workspace.id, id)).toMatchObject({ status: 'FAILED', error: { code: 'CANCELLED', message: 'Failed by an operator: key leaked' } });
      const [event] = await gw.app.store.listEvents(workspace.id, { jobId: id, types: ['CAMPAIGN_DUPLICATION_FAILED'] }, { first: 10 });
      expect(event.details).toMatchObject({ error: { code: 'CANCELLED' }, reason: 'key leaked', operator: 'on-call' });
    }
    expect(await gw.app.store.getJob(workspace.id, held)).toMatchObject({ status: 'RUNNING' });
    expect(await gw.app.store.getJob(workspace.id, ofOther)).toMatchObject({ status: 'PENDING' });

    // Its lease over, its worker gone: it fails too.
    const afterLease = new ManualClock(new Date(leaseEnds.getTime() + 1));
    const again = await cliAt(afterLease, dataDir, ['jobs', 'fail', '--key', leaked.id, '--reason', 'key leaked', '--confirm', '--json']);
    expect(again).toMatchObject({ code: EXIT.ok, stderr: '' });
    expect(JSON.parse(again.stdout)).toEqual({ key: { id: leaked.id, name: 'integration' }, failed: 1, held: [] });
    expect(await gw.app.store.getJob(workspace.id, held)).toMatchObject({ status: 'FAILED' });
    expect(await cli('jobs', 'fail', '--key', other.id, '--reason', 'tidying up', '--confirm')).toEqual({
      code: EXIT.ok,
      stdout: `Failed 1 job of key "other integration" (id ${other.id}) with error CANCELLED: it will not run.\n`,
      stderr: '',
    });
    expect(await cli('jobs', 'fail', '--key', leaked.id, '--reason', 'key leaked', '--confirm')).toEqual({
      code: EXIT.ok,
      stdout: `Failed no job of key "integration" (id ${leaked.id}): none was PENDING or RUNNING.\n`,
      stderr: '',
    });
  });

  describe('a job a worker hands back to the queue while they are failed', () => {
    /**
     * Three pending jobs of a new key, the oldest claimed by a worker; and an AdminService on the gateway's store in
     * which that worker hands it back (a retry) the `nth` time it is refused: after the command found it held.
     */
    async function handedBack(name: string, nth: number) {
      const workspace = await cliJson('workspaces', 'create', name);
      const key = await cliJson('keys', 'create', '--workspace', name, '--name', 'integration', '--permissions', 'campaigns.duplicate');
      const ids = [];
      for (let n = 0; n < 3; n += 1) {
        const job = jobFixture(workspace.id, { id: newId(clock.now().getTime() + n), apiKeyId: key.id, apiKeyName: key.name, runAt: clock.now() });
        await gw.app.store.enqueueJob(job, eventFixture(workspace.id, { jobId: job.id }));
        ids.push(job.id);
      }
      const store = gw.app.store;
      const [held] = await store.claimJobs('worker', 1, clock.now(), new Date(clock.now().getTime() + 60_000));
      expect(held.id).toBe(ids[0]);
      let refusals = 0;
      const wrapped = new Proxy(store, {
        get(target, property, receiver) {
          if (property !== 'cancelJob') return Reflect.get(target, property, receiver);
          return async (...args: Parameters<GatewayStore['cancelJob']>) => {
            const cancelled = await target.cancelJob(...args);
            if (!cancelled && args[0] === held.id && ++refusals === nth) {
              expect(await target.retryJob(held.id, 'worker', clock.now(), null, clock.now())).toBe(true);
            }
            return cancelled;
          };
        },
      });
      const failed: number[] = [];
      const result = await new AdminService(wrapped, clock).failKeyJobs(key.id, { reason: 'key leaked' }, (count) => void failed.push(count));
      return { workspace, held, result, failed };
    }

    it('fails it too, in another pass', async () => {
      const { workspace, held, result, failed } = await handedBack('handed back', 1);
      expect({ failed: result.failed, held: result.held }).toEqual({ failed: 3, held: [] });
      expect(failed).toEqual([1, 2, 3]);
      expect(await gw.app.store.getJob(workspace.id, held.id)).toMatchObject({ status: 'FAILED', error: { code: 'CANCELLED' } });
    });

    it('names it when it was handed back in the pass that failed nothing', async () => {
      const { workspace, held, result } = await handedBack('handed back late', 2);
      expect({ failed: result.failed, held: result.held.map(({ id, status }) => ({ id, status })) }).toEqual({ failed: 2, held: [{ id: held.id, status: 'PENDING' }] });
      expect(await gw.app.store.getJob(workspace.id, held.id)).toMatchObject({ status: 'PENDING' });
    });
  });

  it('fails any number of a key’s pending jobs, a page at a time', async () => {
    const workspace = await cliJson('workspaces', 'create', 'busy');
    const key = await cliJson('keys', 'create', '--workspace', 'busy', '--name', 'busy integration', '--permissions', 'campaigns.duplicate');
    const count = 1234;
    for (let n = 0; n < count; n += 1) {
      const job = jobFixture(workspace.id, { id: newId(clock.now().getTime() + n), apiKeyId: key.id, apiKeyName: key.name, runAt: clock.now() });
      await gw.app.store.enqueueJob(job, eventFixture(workspace.id, { jobId: job.id }));
    }
    expect(await cliJson('keys', 'revoke', key.id)).toMatchObject({ jobs: { pending: count, running: 0 } });
    expect(await cliJson('jobs', 'fail', '--key', key.id, '--reason', 'leaked', '--confirm')).toEqual({ key: { id: key.id, name: key.name }, failed: count, held: [] });
    expect(await gw.app.store.listJobs({ workspaceId: workspace.id, status: 'PENDING' }, 10, null)).toEqual([]);
  });
});

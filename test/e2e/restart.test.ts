import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { GATEWAY_ENTRY } from '../support/build.js';
import { bearer, graphql, http, json, metricSample, waitFor } from '../support/gateway.js';
import { startFakeBraze } from '../support/fake-braze.js';
import { spawnGateway, type GatewayProcess } from '../support/process.js';
import { jobEvents } from '../support/transports.js';

const dataDir = mkdtempSync(join(tmpdir(), 'cgw-e2e-'));
const processes: GatewayProcess[] = [];

afterAll(async () => {
  for (const gateway of processes) gateway.child.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
});

interface CurlCall {
  method: 'GET' | 'POST';
  url: string;
  headers: Record<string, string>;
  body: string | undefined;
}

/** The curl commands in printed text, read the way a shell and curl would read them (only the options the banner uses). */
function curlCommands(text: string): CurlCall[] {
  const commands = text.replace(/\\\n/g, ' ').split('\n').filter((line) => /^\s*curl\s/.test(line));
  return commands.map((command) => {
    const words = [...command.matchAll(/'([^']*)'|(\S+)/g)].map((match) => match[1] ?? match[2]).slice(1);
    const call: CurlCall = { method: 'GET', url: '', headers: {}, body: undefined };
    let explicitMethod = false;
    for (let index = 0; index < words.length; index += 1) {
      const word = words[index];
      if (word === '-X') {
        call.method = words[++index] as CurlCall['method'];
        explicitMethod = true;
      } else if (word === '-H') {
        const header = words[++index];
        const colon = header.indexOf(':');
        call.headers[header.slice(0, colon).trim().toLowerCase()] = header.slice(colon + 1).trim();
      } else if (word === '-d') {
        call.body = words[++index];
        if (!explicitMethod) call.method = 'POST';
      } else if (/^https?:\/\//.test(word)) {
        call.url = word;
      } else if (word !== '-sS') {
        throw new Error(`unexpected curl argument ${word} in: ${command}`);
      }
    }
    return call;
  });
}

async function send(call: CurlCall) {
  const response = await request(call.url, { method: call.method, headers: call.headers, body: call.body });
  const text = await response.body.text();
  return { status: response.statusCode, text, body: JSON.parse(text) };
}

describe('a real gateway process', () => {
  it('seeds a demo workspace on first start, and a job accepted just before a kill -9 completes after a restart', async () => {
    const first = await spawnGateway({ DATA_DIR: dataDir, WORKER_CONCURRENCY: '0' });
    processes.push(first);
    const key = /^\s+(cgw_[0-9A-Za-z]+)$/m.exec(first.output())?.[1];
    const campaignId = /"campaign_id":"([0-9a-f-]{36})"/.exec(first.output())?.[1];
    expect(key).toBeDefined();
    expect(campaignId).toBeDefined();

    const accepted = await http(first.baseUrl, 'POST', '/campaigns/duplicate', {
      headers: { ...json, ...bearer(key!) },
      body: JSON.stringify({ campaign_id: campaignId, name: 'Survives a crash' }),
    });
    expect(accepted.status).toBe(202);
    const jobId = accepted.body.job_id as string;
    first.child.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');

    const second = await spawnGateway({ DATA_DIR: dataDir });
    processes.push(second);
    expect(second.output()).not.toContain('cgw_');
    const done = await waitFor(async () => {
      const events = await jobEvents(second.baseUrl, key!, jobId);
      return events.job?.status === 'SUCCEEDED' && events;
    });
    expect(done.types).toEqual(['CAMPAIGN_DUPLICATED', 'CAMPAIGN_DUPLICATION_REQUESTED']);

    second.child.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
  });

  it('finishes the jobs a kill -9 left running as soon as it starts again, without waiting for their leases to run out', async () => {
    const fresh = mkdtempSync(join(tmpdir(), 'cgw-e2e-running-'));
    const braze = await startFakeBraze('braze-restart-key');
    try {
      // Leases of an hour, and calls that do not time out before the kill: only the restart can end them in time.
      const env = { DATA_DIR: fresh, UPSTREAM_URL: braze.url, UPSTREAM_API_KEY: braze.apiKey, UPSTREAM_TIMEOUT_MS: '600000', JOB_LEASE_SECONDS: '3600' };
      const first = await spawnGateway(env);
      processes.push(first);
      const key = /^\s+(cgw_[0-9A-Za-z]+)$/m.exec(first.output())?.[1];
      expect(key).toBeDefined();
      // Braze receives each job's first call and never answers it: every job is RUNNING when the process is killed.
      braze.answer('POST /campaigns/duplicate', () => ({ hang: true }));
      const jobIds: string[] = [];
      const requestIds = new Map<string, string>();
      for (const [index, campaign] of braze.campaigns.entries()) {
        const accepted = await http(first.baseUrl, 'POST', '/campaigns/duplicate', {
          headers: { ...json, ...bearer(key!) },
          body: JSON.stringify({ campaign_id: campaign.id, name: `Running at the kill ${index}` }),
        });
        expect(accepted.status).toBe(202);
        jobIds.push(accepted.body.job_id as string);
        requestIds.set(accepted.body.job_id as string, accepted.headers['x-request-id'] as string);
      }
      await waitFor(async () => braze.requestsTo('POST /campaigns/duplicate').length === jobIds.length);
      first.child.kill('SIGKILL');
      expect((await first.exited).signal).toBe('SIGKILL');
      braze.answer('POST /campaigns/duplicate', null);

      const second = await spawnGateway(env);
      processes.push(second);
      const query = `query Job($id: ID!) {
        duplicationJob(id: $id) { status attempts }
        securityEvents(filter: {jobId: $id}) { edges { node { type details } } }
      }`;
      for (const jobId of jobIds) {
        const done = await waitFor(async () => {
          const { body } = await graphql(second.baseUrl, key!, query, { id: jobId });
          return body.data.duplicationJob.status === 'SUCCEEDED' && body.data;
        });
        // One outcome, its run the second: the killed run's attempt counts, as a lease that ran out would have.
        expect(done.duplicationJob.attempts).toBe(2);
        const events = done.securityEvents.edges.map((edge: { node: { type: string; details: { attempts?: number } } }) => edge.node);
        expect(events.map((event: { type: string }) => event.type)).toEqual(['CAMPAIGN_DUPLICATED', 'CAMPAIGN_DUPLICATION_REQUESTED']);
        expect(events[0].details.attempts).toBe(2);
      }
      // Taken over as after a lease that ran out, and said so: each killed call may have reached Braze, which got two.
      const takenOver = second.logs.filter((line) => line.msg === 'took over a job whose lease expired; in upstream mode the upstream may have received it twice');
      expect(takenOver.map((line) => line.jobId).sort()).toEqual([...jobIds].sort());
      for (const line of takenOver) {
        expect(line.previousLeaseOwner.split(':').slice(0, 2)).toEqual([hostname(), String(first.child.pid)]);
        // What the README's Logs section says the line carries, to find the job's request and its copies in Braze.
        expect(line).toMatchObject({ level: 40, component: 'worker', reqId: requestIds.get(line.jobId), attempts: 2 });
      }
      // And counted where the README's alerts look for it.
      const metrics = await http(second.baseUrl, 'GET', '/metrics');
      expect(metricSample(metrics.text, 'gateway_duplication_jobs_taken_over_total')).toBe(jobIds.length);
      const calls = braze.requestsTo('POST /campaigns/duplicate').map((call) => JSON.parse(call.body).name as string);
      expect(calls.sort()).toEqual(braze.campaigns.flatMap((_, index) => Array(2).fill(`Running at the kill ${index}`)));

      second.child.kill('SIGTERM');
      expect((await second.exited).code).toBe(0);
    } finally {
      await braze.close();
      rmSync(fresh, { recursive: true, force: true });
    }
  });

  it("prints a first-start banner whose REST and GraphQL curl examples work exactly as printed", async () => {
    const fresh = mkdtempSync(join(tmpdir(), 'cgw-e2e-banner-'));
    try {
      // No worker: the jobs the examples start stay PENDING, so what the poll example answers is known.
      const gateway = await spawnGateway({ DATA_DIR: fresh, HOST: '127.0.0.1', WORKER_CONCURRENCY: '0' });
      processes.push(gateway);
      const banner = gateway.output();
      expect(banner).toContain('This key is shown only once; store it now:');
      const [restCall, graphqlCall, pollCall] = curlCommands(banner);
      expect([restCall, graphqlCall, pollCall].map((call) => call?.url)).toEqual([
        `${gateway.baseUrl}/campaigns/duplicate`,
        `${gateway.baseUrl}/graphql`,
        `${gateway.baseUrl}/graphql`,
      ]);

      const rest = await send(restCall);
      expect(rest.status, rest.text).toBe(202);
      expect(rest.body).toMatchObject({ message: 'success', status: 'pending' });

      const mutation = await send(graphqlCall);
      expect(mutation.status, mutation.text).toBe(200);
      expect(mutation.body.errors).toBeUndefined();
      const job = mutation.body.data.duplicateCampaign.job;
      expect(job).toEqual({ id: expect.any(String), status: 'PENDING' });

      const poll = await send({ ...pollCall, body: pollCall.body!.replace('JOB_ID', job.id) });
      expect(poll.body.errors).toBeUndefined();
      expect(poll.body.data).toEqual({
        securityEvents: { edges: [{ node: { type: 'CAMPAIGN_DUPLICATION_REQUESTED', occurredAt: expect.any(String) } }] },
        duplicationJob: { status: 'PENDING', resultCampaignId: null },
      });

      // The explorer's address, on a line of its own, serves the explorer's page.
      const explorerUrl = /^ {2}(http:\S+\/graphql)$/m.exec(banner)?.[1];
      expect(explorerUrl).toBe(`${gateway.baseUrl}/graphql`);
      const page = await fetch(explorerUrl!, { headers: { accept: 'text/html' } });
      expect([page.status, page.headers.get('content-type')]).toEqual([200, 'text/html; charset=utf-8']);
      expect(await page.text()).toContain('explorer-config');
    } finally {
      rmSync(fresh, { recursive: true, force: true });
    }
  });

  it("prints, in upstream mode, a banner that lists Braze's campaigns and duplicates one of them as printed", async () => {
    const fresh = mkdtempSync(join(tmpdir(), 'cgw-e2e-upstream-banner-'));
    const braze = await startFakeBraze('braze-banner-key');
    try {
      const gateway = await spawnGateway({ DATA_DIR: fresh, UPSTREAM_URL: braze.url, UPSTREAM_API_KEY: braze.apiKey, WORKER_CONCURRENCY: '0' });
      processes.push(gateway);
      const banner = gateway.output();
      expect(banner).not.toContain('sample campaigns');
      const [listCall, restCall, graphqlCall, pollCall] = curlCommands(banner);
      const listed = await send(listCall);
      expect(listed.body.errors).toBeUndefined();
      const ids = listed.body.data.campaigns.edges.map((edge: { node: { id: string } }) => edge.node.id);
      expect(ids.sort()).toEqual(braze.campaigns.map((campaign) => campaign.id).sort());
      const withCampaign = (call: CurlCall) => ({ ...call, body: call.body!.replace('CAMPAIGN_ID', ids[0]) });

      const rest = await send(withCampaign(restCall));
      expect(rest.status, rest.text).toBe(202);
      const mutation = await send(withCampaign(graphqlCall));
      expect(mutation.body.errors).toBeUndefined();
      const job = mutation.body.data.duplicateCampaign.job;
      expect(job).toEqual({ id: expect.any(String), status: 'PENDING' });
      const poll = await send({ ...pollCall, body: pollCall.body!.replace('JOB_ID', job.id) });
      expect(poll.body.data.duplicationJob).toEqual({ status: 'PENDING', resultCampaignId: null });
    } finally {
      await braze.close();
      rmSync(fresh, { recursive: true, force: true });
    }
  });

  it('makes the demo key only once it listens: a first start that cannot bind leaves the next one to show it', async () => {
    const fresh = mkdtempSync(join(tmpdir(), 'cgw-e2e-port-'));
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = holder.address() as AddressInfo;
      await expect(spawnGateway({ DATA_DIR: fresh, PORT: String(port), WORKER_CONCURRENCY: '0' }, 20_000)).rejects.toThrow(/EADDRINUSE/);
      const next = await spawnGateway({ DATA_DIR: fresh, WORKER_CONCURRENCY: '0' });
      processes.push(next);
      expect(next.output()).toMatch(/^\s+cgw_[0-9A-Za-z]+$/m);
    } finally {
      holder.close();
      rmSync(fresh, { recursive: true, force: true });
    }
  });

  it('in production seeds nothing, prints no key, and says how to make the first workspace', async () => {
    const fresh = mkdtempSync(join(tmpdir(), 'cgw-e2e-prod-'));
    try {
      const production = await spawnGateway({ DATA_DIR: fresh, NODE_ENV: 'production', WORKER_CONCURRENCY: '0' });
      processes.push(production);
      expect(production.output()).not.toContain('cgw_');
      // The CLI as an image runs it: compiled, without tsx writing its cache to a temporary directory.
      expect(production.logs.map((line) => line.msg)).toContain('no workspace yet: create one and its keys with the CLI (node dist/cli/main.js --help)');
      production.child.kill('SIGTERM');
      // The whole answer and the output, so that a stop ending otherwise says how.
      expect(await production.exited, production.output()).toEqual({ code: 0, signal: null });
    } finally {
      rmSync(fresh, { recursive: true, force: true });
    }
  });

  it('stops cleanly on a SIGTERM sent the moment its port opens, while it is still seeding', async () => {
    const fresh = mkdtempSync(join(tmpdir(), 'cgw-e2e-early-'));
    try {
      const child = spawn(process.execPath, [GATEWAY_ENTRY], {
        cwd: fileURLToPath(new URL('../..', import.meta.url)),
        env: { PATH: process.env.PATH ?? '', DATA_DIR: fresh, PORT: '0', LOG_LEVEL: 'info', WORKER_CONCURRENCY: '0' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const exited = once(child, 'exit');
      for await (const line of createInterface({ input: child.stdout! })) {
        // fastify's own line, written as the port opens and before the demo workspace is seeded.
        if (line.includes('"Server listening at ')) {
          child.kill('SIGTERM');
          break;
        }
      }
      expect(await exited).toEqual([0, null]);
    } finally {
      rmSync(fresh, { recursive: true, force: true });
    }
  });

  it('stops with one clear line naming the variable when the configuration is invalid', async () => {
    await expect(spawnGateway({ DATA_DIR: dataDir, PORT: 'eighty' }, 10_000)).rejects.toThrow(
      /campaign-gateway: invalid configuration: PORT must be a whole number/,
    );
  });
});

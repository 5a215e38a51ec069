/**
 * How long the costliest `securityEvents` query the default limits allow takes on SQLite, where its reads hold the
 * main thread: three aliases of a page of 150 events, every field, each with its job. With `--without-job` the
 * same query without `job`, for comparison.
 *
 *   npx tsx bench/event-jobs.ts [--events 3000] [--requests 100] [--without-job]
 *
 * The workspace has `events` jobs, each with its CAMPAIGN_DUPLICATION_REQUESTED event, written straight into a fresh
 * store. Requests are sent one after another over loopback, after 10 not timed; the CPU time is the process's, the
 * client's included, divided by the requests.
 */
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { eventFixture, jobFixture } from '../test/support/fixtures.js';
import { graphql, startGateway } from '../test/support/gateway.js';

const { values } = parseArgs({
  options: {
    events: { type: 'string', default: '3000' },
    requests: { type: 'string', default: '100' },
    'without-job': { type: 'boolean', default: false },
  },
});

const JOB = 'job { id status name resultCampaignId updatedAt error { code message } }';
const EVENT = `id type occurredAt apiKey { id name } channel ip jobId campaignId details ${values['without-job'] ? '' : JOB}`;
const QUERY = `{ ${['a', 'b', 'c'].map((alias) => `${alias}: securityEvents(first: 150) { edges { node { ${EVENT} } } }`).join(' ')} }`;

const gateway = await startGateway({ WORKER_CONCURRENCY: '0' });
try {
  const ws = await gateway.workspace();
  for (let index = 0; index < Number(values.events); index += 1) {
    const job = jobFixture(ws.workspace.id, { apiKeyId: ws.keyId, sourceCampaignId: ws.campaign.id });
    await gateway.app.store.enqueueJob(job, eventFixture(ws.workspace.id, { apiKeyId: ws.keyId, jobId: job.id, occurredAt: new Date() }));
  }
  const samples: number[] = [];
  let cpu = process.cpuUsage();
  for (let index = 0; index < 10 + Number(values.requests); index += 1) {
    const started = performance.now();
    const response = await graphql(gateway.baseUrl, ws.key, QUERY);
    if (response.body.errors) throw new Error(JSON.stringify(response.body.errors));
    if (index >= 10) samples.push(performance.now() - started);
    if (index === 9) cpu = process.cpuUsage();
  }
  const { user, system } = process.cpuUsage(cpu);
  samples.sort((a, b) => a - b);
  const at = (quantile: number) => samples[Math.floor(quantile * (samples.length - 1))].toFixed(1);
  console.log(`${values['without-job'] ? 'without job' : 'with job'}: ${samples.length} requests, median ${at(0.5)} ms, p90 ${at(0.9)} ms, CPU ${((user + system) / 1000 / samples.length).toFixed(1)} ms a request`);
} finally {
  await gateway.close();
}

import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type autocannon from 'autocannon';
import { runLoad } from './lib/load.js';
import { startBaseline, startGateway, stop } from './lib/processes.js';
import { firstPage, graphqlDuplicate, isFirstPage, isGraphQLAccepted, isJobPolled, isRestAccepted, pollJob, restDuplicate } from './lib/scenarios.js';
import { prepareWorkspace, seedFinishedJobs } from './lib/store.js';

/** Poll scenarios run on a store of this many finished jobs, two events each. */
const POLL_JOBS = 5_000;

/**
 * Profiles one scenario: a gateway under `node --cpu-prof`, loaded for a while, then the functions with the
 * most self time. `npx tsx bench/profile.ts --scenario graphql-accept --seconds 8` (also rest-accept,
 * baseline, poll-job and poll-page, the latter two on 10,000 events).
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Self time per function and per package over the last `windowMs` of the profile (the measured load), in µs per request. */
function summarize(profile: CpuProfile, windowMs: number, requests: number, top: number): string {
  const hitsByNode = new Map<number, number>();
  let time = profile.endTime;
  for (let index = profile.samples.length - 1; index >= 0 && time >= profile.endTime - windowMs * 1000; index -= 1) {
    const delta = profile.timeDeltas[index + 1] ?? 0;
    hitsByNode.set(profile.samples[index], (hitsByNode.get(profile.samples[index]) ?? 0) + delta);
    time -= profile.timeDeltas[index];
  }
  const byFunction = new Map<string, number>();
  const byArea = new Map<string, number>();
  for (const node of profile.nodes) {
    const hits = hitsByNode.get(node.id) ?? 0;
    if (hits === 0) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const file = url.startsWith('file://') ? relative(ROOT, fileURLToPath(url)) : url || '(native)';
    const name = `${functionName || '(anonymous)'} ${file}:${lineNumber + 1}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + hits);
    const area = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(file)?.[1] ?? (file.startsWith('src/') ? file : functionName.startsWith('(') ? functionName : 'node internals');
    byArea.set(area, (byArea.get(area) ?? 0) + hits);
  }
  const total = [...byArea.values()].reduce((sum, hits) => sum + hits, 0);
  const rows = (map: Map<string, number>) =>
    [...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, hits]) => `${((100 * hits) / total).toFixed(1).padStart(6)} % ${(hits / requests).toFixed(1).padStart(8)} µs/req  ${name}`);
  return ['by area:', ...rows(byArea), '', 'by function (self time):', ...rows(byFunction)].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { scenario: { type: 'string', default: 'rest-accept' }, seconds: { type: 'string', default: '8' }, connections: { type: 'string', default: '50' }, top: { type: 'string', default: '30' } } });
  const root = mkdtempSync(join(tmpdir(), 'cgw-profile-'));
  const profiles = join(root, 'profiles');
  try {
    const workspace = await prepareWorkspace(join(root, 'data'), 'bench');
    const nodeArgs = ['--cpu-prof', `--cpu-prof-dir=${profiles}`];
    const gateway = values.scenario === 'baseline' ? await startBaseline(nodeArgs) : await startGateway(join(root, 'data'), { WORKER_CONCURRENCY: '0' }, nodeArgs);
    const scenarios: Record<string, [autocannon.Request, (body: string) => boolean]> = {
      'graphql-accept': [graphqlDuplicate(workspace), isGraphQLAccepted],
      'poll-job': [pollJob(workspace, POLL_JOBS), isJobPolled],
      'poll-page': [firstPage(workspace), isFirstPage],
    };
    const [request, verifyBody] = scenarios[values.scenario] ?? [restDuplicate(workspace), isRestAccepted];
    if (values.scenario.startsWith('poll-')) seedFinishedJobs(join(root, 'data'), workspace, 0, POLL_JOBS);
    const load = { url: gateway.baseUrl, connections: Number(values.connections), requests: [request], verifyBody };
    await runLoad({ ...load, durationSeconds: 2 });
    const result = await runLoad({ ...load, durationSeconds: Number(values.seconds) });
    await stop(gateway);
    process.stdout.write(`${values.scenario}: ${result.requestsPerSecond} req/s, p50 ${result.latencyMs.p50} ms\n`);
    // One profile per thread, named CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile; thread 0 is the main thread.
    const files = readdirSync(profiles).filter((name) => name.endsWith('.cpuprofile'));
    for (const file of files.sort((a, b) => Number(a.split('.')[4]) - Number(b.split('.')[4]))) {
      const thread = Number(file.split('.')[4]) === 0 ? 'main thread' : `worker thread ${file.split('.')[4]}`;
      const profile = JSON.parse(readFileSync(join(profiles, file), 'utf8')) as CpuProfile;
      process.stdout.write(`\n== ${thread}\n${summarize(profile, result.durationSeconds * 1000, result.requests, Number(values.top))}\n`);
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`profile: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});

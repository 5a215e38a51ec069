import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { request } from 'undici';
import { round, runLoad, type LoadOptions, type LoadResult } from './lib/load.js';
import { collectGarbage, rssMb, startBaseline, startDurableFloor, startGateway, stop, type ServerProcess } from './lib/processes.js';
import {
  firstPage,
  graphqlDuplicate,
  isFirstPage,
  isGraphQLAccepted,
  isJobPolled,
  isRestAccepted,
  pollJob,
  restDuplicate,
} from './lib/scenarios.js';
import { prepareWorkspace, queueState, seedFinishedJobs, seedPendingJobs, unfinishedJobs, type BenchWorkspace } from './lib/store.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface Budget {
  /**
   * Rounds of baseline, durable-floor, rest-accept and graphql-accept, and of polls on the small and on the large store,
   * each set interleaved; each scenario keeps its best round.
   */
  rounds: number;
  /** When set, every measured run sends this many requests instead of running for a duration. */
  requestsPerRun?: number;
  /** Accept, poll and memory scenarios on one gateway instead of one each. */
  shareGateway?: boolean;
  warmupSeconds: number;
  durationSeconds: number;
  connections: number;
  pollConnections: number;
  pollDurationSeconds: number;
  eventsSmall: number;
  eventsLarge: number;
  workerJobs: number;
  memoryFirst: number;
  memorySecond: number;
}

const BUDGETS: Record<'full' | 'quick' | 'tiny', Budget> = {
  full: {
    rounds: 2,
    warmupSeconds: 2,
    durationSeconds: 8,
    connections: 50,
    pollConnections: 10,
    pollDurationSeconds: 5,
    eventsSmall: 10_000,
    eventsLarge: 1_000_000,
    workerJobs: 20_000,
    memoryFirst: 50_000,
    memorySecond: 250_000,
  },
  quick: {
    rounds: 1,
    warmupSeconds: 1,
    durationSeconds: 3,
    connections: 50,
    pollConnections: 10,
    pollDurationSeconds: 1.5,
    eventsSmall: 10_000,
    eventsLarge: 100_000,
    workerJobs: 4_000,
    memoryFirst: 5_000,
    memorySecond: 15_000,
  },
  /** Only for the shape test: every scenario runs, none long enough to mean anything. */
  tiny: {
    rounds: 1,
    requestsPerRun: 40,
    shareGateway: true,
    warmupSeconds: 0,
    durationSeconds: 1,
    connections: 4,
    pollConnections: 2,
    pollDurationSeconds: 1,
    eventsSmall: 200,
    eventsLarge: 2_000,
    workerJobs: 100,
    memoryFirst: 100,
    memorySecond: 400,
  },
};

interface Ratio {
  value: number;
  target: number;
  /** `min`: the value must be at least the target; `max`: at most. */
  kind: 'min' | 'max';
  met: boolean;
  description: string;
}

const ratio = (value: number, target: number, kind: Ratio['kind'], description: string): Ratio => ({
  value: round(value),
  target,
  kind,
  met: Number.isFinite(value) && (kind === 'min' ? value >= target : value <= target),
  description,
});

const log = (message: string) => process.stderr.write(`bench: ${message}\n`);

/** One measured run of a scenario, after a warm-up run that lets the JIT and the caches settle. */
async function measure(name: string, options: Omit<LoadOptions, 'durationSeconds' | 'amount'>, budget: Budget, durationSeconds: number): Promise<LoadResult> {
  if (budget.warmupSeconds > 0) await runLoad({ ...options, durationSeconds: budget.warmupSeconds });
  const result = await runLoad(budget.requestsPerRun ? { ...options, amount: budget.requestsPerRun } : { ...options, durationSeconds });
  log(`${name}: ${result.requestsPerSecond} req/s, p50 ${result.latencyMs.p50} ms${result.valid ? '' : ' (INVALID)'}`);
  return result;
}

const best = (results: LoadResult[]): LoadResult =>
  results.reduce((a, b) => (b.valid && (!a.valid || b.requestsPerSecond > a.requestsPerSecond) ? b : a));

const ACCEPT = ['baseline', 'durable-floor', 'rest-accept', 'graphql-accept'] as const;

async function acceptScenarios(budget: Budget, baseline: ServerProcess, floor: ServerProcess, gateway: ServerProcess, workspace: BenchWorkspace) {
  const rest = { requests: [restDuplicate(workspace)], verifyBody: isRestAccepted };
  const scenarios = {
    baseline: { ...rest, url: baseline.baseUrl, serverPid: baseline.child.pid },
    'durable-floor': { ...rest, url: floor.baseUrl, serverPid: floor.child.pid },
    'rest-accept': { ...rest, url: gateway.baseUrl, serverPid: gateway.child.pid },
    'graphql-accept': { requests: [graphqlDuplicate(workspace)], verifyBody: isGraphQLAccepted, url: gateway.baseUrl, serverPid: gateway.child.pid },
  };
  const rounds: Record<(typeof ACCEPT)[number], LoadResult[]> = { baseline: [], 'durable-floor': [], 'rest-accept': [], 'graphql-accept': [] };
  for (let i = 0; i < budget.rounds; i += 1) {
    for (const name of ACCEPT) {
      rounds[name].push(await measure(name, { ...scenarios[name], connections: budget.connections }, budget, budget.durationSeconds));
    }
  }
  return {
    baseline: best(rounds.baseline),
    'durable-floor': best(rounds['durable-floor']),
    'rest-accept': best(rounds['rest-accept']),
    'graphql-accept': best(rounds['graphql-accept']),
  };
}

interface PollStore {
  gateway: ServerProcess;
  dataDir: string;
  workspace: BenchWorkspace;
  events: number;
}

/**
 * The small and the large store each have a gateway, measured in alternation so that a slower spell of the
 * machine does not fall on one size only. The large store is filled just before, while its gateway runs: a
 * file written minutes earlier may have left the OS page cache, and the ratio would then measure the disk.
 */
async function pollScenarios(budget: Budget, stores: Record<'small' | 'large', PollStore>) {
  const startedAt = Date.now();
  seedFinishedJobs(stores.large.dataDir, stores.large.workspace, 0, stores.large.events / 2);
  log(`seeded ${stores.large.events} events in ${((Date.now() - startedAt) / 1000).toFixed(1)} s`);
  const rounds: Record<'small' | 'large', { job: LoadResult[]; page: LoadResult[] }> = { small: { job: [], page: [] }, large: { job: [], page: [] } };
  for (let i = 0; i < budget.rounds; i += 1) {
    for (const size of ['small', 'large'] as const) {
      const { gateway, workspace, events } = stores[size];
      const common = { connections: budget.pollConnections, url: gateway.baseUrl, serverPid: gateway.child.pid };
      const job = { ...common, requests: [pollJob(workspace, events / 2)], verifyBody: isJobPolled };
      rounds[size].job.push(await measure(`poll-job @ ${events} events`, job, budget, budget.pollDurationSeconds));
      const page = { ...common, requests: [firstPage(workspace)], verifyBody: isFirstPage };
      rounds[size].page.push(await measure(`poll-page @ ${events} events`, page, budget, budget.pollDurationSeconds));
    }
  }
  const bestOf = (size: 'small' | 'large') => ({ job: best(rounds[size].job), page: best(rounds[size].page) });
  return { small: bestOf('small'), large: bestOf('large') };
}

async function workerScenario(budget: Budget, gateway: ServerProcess, dataDir: string, workspace: BenchWorkspace) {
  seedPendingJobs(dataDir, workspace, budget.workerJobs);
  const startedAt = Date.now();
  // One accepted request wakes the worker at once instead of at its next poll.
  const { headers, body } = restDuplicate(workspace);
  const wake = await request(`${gateway.baseUrl}/campaigns/duplicate`, { method: 'POST', headers, body: body as string });
  await wake.body.text();
  if (wake.statusCode !== 202) throw new Error(`waking the worker failed with ${wake.statusCode}`);
  const deadline = startedAt + 600_000;
  while (unfinishedJobs(dataDir) > 0) {
    if (Date.now() > deadline) throw new Error('the worker did not drain its queue within 10 minutes');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const state = queueState(dataDir);
  const jobs = budget.workerJobs + 1;
  const seconds = ((state.lastFinishedAt ?? Date.now()) - startedAt) / 1000;
  const result = { jobs, seconds: round(seconds), jobsPerSecond: round(jobs / seconds, 1), valid: state.succeeded === jobs && state.failed === 0 };
  log(`worker: ${result.jobsPerSecond} jobs/s${result.valid ? '' : ' (INVALID)'}`);
  return result;
}

async function memoryScenario(budget: Budget, gateway: ServerProcess, workspace: BenchWorkspace) {
  // Both doors, alternately, so that whatever either keeps per request would show.
  const options = {
    url: gateway.baseUrl,
    connections: budget.connections,
    requests: [restDuplicate(workspace), graphqlDuplicate(workspace)],
    verifyBody: (body: string) => isRestAccepted(body) || isGraphQLAccepted(body),
  };
  // RSS is read twice after each run: as it is, and after a full garbage collection. Only the second shows what
  // the gateway keeps; the first lands anywhere in the collector's cycle, tens of MiB either way.
  const first = await runLoad({ ...options, amount: budget.memoryFirst });
  const rssFirstUncollected = rssMb(gateway);
  await collectGarbage(gateway);
  const rssFirst = rssMb(gateway);
  const second = await runLoad({ ...options, amount: budget.memorySecond - budget.memoryFirst });
  const rssSecondUncollected = rssMb(gateway);
  await collectGarbage(gateway);
  const rssSecond = rssMb(gateway);
  const result = {
    requestsFirst: first.requests,
    rssMbFirst: round(rssFirst, 1),
    rssMbFirstUncollected: round(rssFirstUncollected, 1),
    requestsSecond: first.requests + second.requests,
    rssMbSecond: round(rssSecond, 1),
    rssMbSecondUncollected: round(rssSecondUncollected, 1),
    growth: round(rssSecond / rssFirst - 1),
    valid: first.valid && second.valid,
  };
  log(`memory: ${result.rssMbFirst} MiB after ${result.requestsFirst}, ${result.rssMbSecond} MiB after ${result.requestsSecond} (after a full GC)`);
  return result;
}

const pad = (value: string | number, width: number) => String(value).padStart(width);

function table(report: Report): string {
  const lines = [`campaign-gateway benchmark (${report.mode}, ${report.machine.cpus} × ${report.machine.cpuModel}, load ${report.machine.loadAverage.join(' ')})`, ''];
  lines.push(
    `${'scenario'.padEnd(28)}${pad('req/s', 10)}${pad('p50 ms', 10)}${pad('p97.5 ms', 10)}${pad('p99 ms', 10)}${pad('CPU µs/req', 12)}${pad('(load gen)', 11)}${pad('disk KiB/req', 14)}  valid`,
  );
  for (const [name, result] of Object.entries(report.scenarios)) {
    lines.push(
      `${name.padEnd(28)}${pad(result.requestsPerSecond, 10)}${pad(result.latencyMs.p50, 10)}${pad(result.latencyMs.p97_5, 10)}${pad(result.latencyMs.p99, 10)}${pad(result.cpuMicrosPerRequest.server ?? '-', 12)}${pad(result.cpuMicrosPerRequest.loadGenerator, 11)}${pad(result.serverDiskKibPerRequest ?? '-', 14)}  ${result.valid ? 'yes' : 'NO'}`,
    );
  }
  lines.push('', `worker: ${report.worker.jobs} jobs in ${report.worker.seconds} s = ${report.worker.jobsPerSecond} jobs/s${report.worker.valid ? '' : ' (INVALID)'}`);
  const m = report.memory;
  lines.push(
    `memory: RSS after a full GC ${m.rssMbFirst} MiB after ${m.requestsFirst} accepted requests, ${m.rssMbSecond} MiB after ${m.requestsSecond} ` +
      `(before it: ${m.rssMbFirstUncollected} and ${m.rssMbSecondUncollected})${m.valid ? '' : ' (INVALID)'}`,
    '',
  );
  lines.push(`${'ratio'.padEnd(34)}${pad('value', 10)}${pad('target', 12)}  met`);
  for (const [name, r] of Object.entries(report.ratios)) {
    lines.push(`${name.padEnd(34)}${pad(r.value, 10)}${pad(`${r.kind === 'min' ? '≥' : '≤'} ${r.target}`, 12)}  ${r.met ? 'yes' : 'NO'}`);
  }
  lines.push('', 'for reference (no target)');
  for (const [name, r] of Object.entries(report.references)) lines.push(`${name.padEnd(34)}${pad(r.value, 10)}`);
  lines.push('', `valid: ${report.valid ? 'yes' : 'NO'}`);
  return lines.join('\n');
}

type Report = Awaited<ReturnType<typeof run>>;

async function run(mode: keyof typeof BUDGETS, connections?: number) {
  const budget = { ...BUDGETS[mode], ...(connections ? { connections } : {}) };
  const startedAt = new Date();
  const machine = {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    totalMemoryMb: Math.round(totalmem() / 1024 / 1024),
    loadAverage: loadavg().map((value) => round(value, 2)),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
  };
  const root = mkdtempSync(join(tmpdir(), 'cgw-bench-'));
  // Each gateway has its own store, so that no scenario measures what another left behind; a tiny run shares
  // one worker-less gateway, as it only checks that everything runs.
  const requestPath = join(root, 'requests');
  const dirs = budget.shareGateway
    ? { accept: requestPath, pollSmall: requestPath, pollLarge: join(root, 'poll-large'), worker: join(root, 'worker'), memory: requestPath }
    : {
        accept: join(root, 'accept'),
        pollSmall: join(root, 'poll-small'),
        pollLarge: join(root, 'poll-large'),
        worker: join(root, 'worker'),
        memory: join(root, 'memory'),
      };
  const servers: ServerProcess[] = [];
  try {
    const acceptWs = await prepareWorkspace(dirs.accept, 'bench-accept');
    const pollSmallWs = await prepareWorkspace(dirs.pollSmall, 'bench-poll-small');
    const pollLargeWs = await prepareWorkspace(dirs.pollLarge, 'bench-poll-large');
    const workerWs = await prepareWorkspace(dirs.worker, 'bench-worker');
    const memoryWs = await prepareWorkspace(dirs.memory, 'bench-memory');
    seedFinishedJobs(dirs.pollSmall, pollSmallWs, 0, budget.eventsSmall / 2);

    // The accept, poll and memory gateways run without a worker: what they measure is the request path.
    const gateways = new Map<string, Promise<ServerProcess>>();
    // The memory scenario's gateway takes an inspector session on loopback, through which the bench asks for a
    // full garbage collection before reading RSS.
    for (const dir of new Set([dirs.accept, dirs.pollSmall, dirs.pollLarge, dirs.memory])) {
      gateways.set(dir, startGateway(dir, { WORKER_CONCURRENCY: '0' }, dir === dirs.memory ? ['--inspect=127.0.0.1:0'] : []));
    }
    gateways.set(dirs.worker, startGateway(dirs.worker));
    const baselineStart = startBaseline();
    const floorStart = startDurableFloor(join(root, 'durable-floor'));
    const started = await Promise.allSettled([baselineStart, floorStart, ...gateways.values()]);
    for (const outcome of started) if (outcome.status === 'fulfilled') servers.push(outcome.value);
    const failed = started.find((outcome) => outcome.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    const [baseline, floor] = await Promise.all([baselineStart, floorStart]);
    const [acceptGw, pollSmallGw, pollLargeGw, workerGw, memoryGw] = await Promise.all(
      [dirs.accept, dirs.pollSmall, dirs.pollLarge, dirs.worker, dirs.memory].map((dir) => gateways.get(dir)!),
    );
    log(`servers up in ${((Date.now() - startedAt.getTime()) / 1000).toFixed(1)} s`);

    const accept = await acceptScenarios(budget, baseline, floor, acceptGw, acceptWs);
    const poll = await pollScenarios(budget, {
      small: { gateway: pollSmallGw, dataDir: dirs.pollSmall, workspace: pollSmallWs, events: budget.eventsSmall },
      large: { gateway: pollLargeGw, dataDir: dirs.pollLarge, workspace: pollLargeWs, events: budget.eventsLarge },
    });
    const worker = await workerScenario(budget, workerGw, dirs.worker, workerWs);
    const memory = await memoryScenario(budget, memoryGw, memoryWs);

    const scenarios = {
      ...accept,
      'poll-job@small': { ...poll.small.job, events: budget.eventsSmall },
      'poll-job@large': { ...poll.large.job, events: budget.eventsLarge },
      'poll-page@small': { ...poll.small.page, events: budget.eventsSmall },
      'poll-page@large': { ...poll.large.page, events: budget.eventsLarge },
    };
    const ratios = {
      restVsBaseline: ratio(accept['rest-accept'].requestsPerSecond / accept.baseline.requestsPerSecond, 0.5, 'min', 'rest-accept req/s ÷ baseline req/s'),
      graphqlVsRest: ratio(accept['graphql-accept'].requestsPerSecond / accept['rest-accept'].requestsPerSecond, 0.7, 'min', 'graphql-accept req/s ÷ rest-accept req/s'),
      pollJobLargeVsSmall: ratio(poll.large.job.latencyMs.p50 / poll.small.job.latencyMs.p50, 1.3, 'max', 'poll-job p50 latency at large ÷ at small event count'),
      pollPageLargeVsSmall: ratio(poll.large.page.latencyMs.p50 / poll.small.page.latencyMs.p50, 1.3, 'max', 'poll-page p50 latency at large ÷ at small event count'),
      rssGrowth: ratio(memory.growth, 0.1, 'max', 'RSS after second count of requests ÷ after first, minus 1'),
      workerJobsPerSecond: ratio(worker.jobsPerSecond, 2000, 'min', 'jobs drained per second (absolute, SQLite)'),
    };
    // What the rest-accept ratio is made of: the price of the durable commit, and the gateway's own work.
    const references = {
      floorVsBaseline: {
        value: round(accept['durable-floor'].requestsPerSecond / accept.baseline.requestsPerSecond),
        description: 'durable-floor req/s ÷ baseline req/s: what committing each request durably costs on this machine',
      },
      restVsFloor: {
        value: round(accept['rest-accept'].requestsPerSecond / accept['durable-floor'].requestsPerSecond),
        description: 'rest-accept req/s ÷ durable-floor req/s: what the gateway\'s own work costs on top',
      },
    };
    const valid = Object.values(scenarios).every((result) => result.valid) && worker.valid && memory.valid;
    return {
      version: 1,
      mode,
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      machine,
      budget,
      scenarios,
      worker,
      memory,
      ratios,
      references,
      valid,
    };
  } finally {
    await Promise.all(servers.map(stop));
    rmSync(root, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { quick: { type: 'boolean' }, tiny: { type: 'boolean' }, out: { type: 'string' }, connections: { type: 'string' } },
  });
  const mode = values.tiny ? 'tiny' : values.quick ? 'quick' : 'full';
  const out = resolve(values.out ?? join(ROOT, 'bench/results/latest.json'));
  const report = await run(mode, values.connections ? Number(values.connections) : undefined);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(`${table(report)}\n\nwritten to ${out}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});

import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from 'undici';
import { DEFAULT_READ_BUDGET_PER_MINUTE } from '../src/domain/read-budget.js';
import { processCpuMicros, round } from './lib/load.js';
import { startGateway, stop, type ServerProcess } from './lib/processes.js';
import { isRestAccepted, restDuplicate } from './lib/scenarios.js';
import { prepareWorkspace, seedFinishedJobs, type BenchWorkspace } from './lib/store.js';

/**
 * How much one workspace's reads slow another workspace's duplications on the embedded store, with the read
 * budget on (its default) and off: the victim sends `POST /campaigns/duplicate` at a steady pace while the noisy
 * workspace loops the costliest query GRAPHQL_MAX_COST allows.
 */

/** Enough finished jobs (two events each) that every page of the noisy query is full. */
const NOISY_JOBS = 2_000;
const MEASURED_MS = 10_000;
const VICTIM_INTERVAL_MS = 20;
const WARMUP_REQUESTS = 100;
/** Noisy queries a third workspace sends before the measured time, and with the budget on, refusals after them. */
const WARMUP_QUERIES = 100;
const WARMUP_REFUSALS = 500;
const ROUNDS = 2;

const JOB_FIELDS =
  'id status sourceCampaignId name description tagNames keepsSourceTags channel apiKey { id name } attempts error { code message } createdAt updatedAt finishedAt resultCampaignId pollAfterSeconds';
const EVENT_FIELDS = `id type occurredAt apiKey { id name } channel ip jobId campaignId details job { ${JOB_FIELDS} }`;

/** Three aliases of one page of events, every field of an event and of its job: what SECURITY.md calls the costliest query. */
const noisyQuery = (first: number): string => {
  const page = `securityEvents(first: ${first}) { edges { cursor node { ${EVENT_FIELDS} } } pageInfo { hasNextPage endCursor } }`;
  return `query Noisy { a: ${page} b: ${page} c: ${page} }`;
};

const headers = (workspace: BenchWorkspace) => ({ 'content-type': 'application/json', authorization: `Bearer ${workspace.key}` });

async function graphql(client: Client, workspace: BenchWorkspace, query: string): Promise<{ status: number; headers: Record<string, unknown>; body: any }> {
  const response = await client.request({ method: 'POST', path: '/graphql', headers: headers(workspace), body: JSON.stringify({ query }) });
  return { status: response.statusCode, headers: response.headers, body: await response.body.json() };
}

const log = (message: string) => process.stderr.write(`noisy-neighbour: ${message}\n`);

interface Store {
  dataDir: string;
  noisy: BenchWorkspace;
  victim: BenchWorkspace;
  /** Warms the gateway's query and refusal paths with its own budget, not the noisy workspace's. */
  warm: BenchWorkspace;
}

async function prepareStore(): Promise<Store> {
  const dataDir = mkdtempSync(join(tmpdir(), 'cgw-noisy-'));
  const noisy = await prepareWorkspace(dataDir, 'noisy');
  const victim = await prepareWorkspace(dataDir, 'victim');
  const warm = await prepareWorkspace(dataDir, 'warm');
  seedFinishedJobs(dataDir, noisy, 0, NOISY_JOBS);
  seedFinishedJobs(dataDir, warm, NOISY_JOBS, 2 * NOISY_JOBS);
  return { dataDir, noisy, victim, warm };
}

/**
 * The largest `first` whose query the gateway accepts, and that query's estimated cost: the refusal of a costlier
 * one says its cost, which grows by the same amount with each item of `first`.
 */
async function calibrate(client: Client, noisy: BenchWorkspace): Promise<{ first: number; cost: number; maxCost: number }> {
  const costOf = async (first: number) => {
    const answer = await graphql(client, noisy, noisyQuery(first));
    const extensions = answer.body.errors?.[0]?.extensions;
    if (extensions?.code !== 'GRAPHQL_VALIDATION_FAILED' || typeof extensions.cost !== 'number') {
      throw new Error(`first: ${first} was not refused for its cost: ${JSON.stringify(answer.body).slice(0, 300)}`);
    }
    return { cost: extensions.cost as number, maxCost: extensions.maxCost as number };
  };
  const at200 = await costOf(200);
  const perItem = at200.cost - (await costOf(199)).cost;
  const fixed = at200.cost - 200 * perItem;
  const first = Math.floor((at200.maxCost - fixed) / perItem);
  // Throws unless one item more is refused: the cost must grow as assumed.
  await costOf(first + 1);
  const answer = await graphql(client, noisy, noisyQuery(first));
  const full = ['a', 'b', 'c'].every((alias) => {
    const edges = answer.body.data?.[alias]?.edges;
    return Array.isArray(edges) && edges.length === first && edges.every((edge: any) => edge.node.job?.status === 'SUCCEEDED');
  });
  if (answer.status !== 200 || answer.body.errors !== undefined || !full) {
    throw new Error(`the noisy query with first: ${first} did not answer full pages: ${answer.status} ${JSON.stringify(answer.body).slice(0, 300)}`);
  }
  return { first, cost: fixed + first * perItem, maxCost: at200.maxCost };
}

type ClientKind = 'ignores-429' | 'honours-retry-after';

interface Condition {
  name: string;
  budget: 'off' | 'on' | null;
  connections: number;
  kind: ClientKind | null;
}

const CONDITIONS: Condition[] = [
  { name: 'quiet', budget: null, connections: 0, kind: null },
  { name: 'budget off, K=1', budget: 'off', connections: 1, kind: 'ignores-429' },
  { name: 'budget off, K=8', budget: 'off', connections: 8, kind: 'ignores-429' },
  { name: 'budget on, K=1, ignores 429', budget: 'on', connections: 1, kind: 'ignores-429' },
  { name: 'budget on, K=1, honours Retry-After', budget: 'on', connections: 1, kind: 'honours-retry-after' },
  { name: 'budget on, K=8, ignores 429', budget: 'on', connections: 8, kind: 'ignores-429' },
  { name: 'budget on, K=8, honours Retry-After', budget: 'on', connections: 8, kind: 'honours-retry-after' },
];

interface NoisyCounts {
  ok: number;
  refused: number;
  other: number;
  /** When the last 200 came, from the start of the measured time: where a budget's allowance ran out. */
  lastOkAfterMs: number;
}

/**
 * One noisy connection: the next query as soon as an answer comes back, or, for a client that honours
 * Retry-After, once the seconds a 429 names have passed, or never again when they outlast the measured time.
 */
async function noisyLoop(client: Client, workspace: BenchWorkspace, query: string, kind: ClientKind, endsAt: number, counts: NoisyCounts): Promise<void> {
  const body = JSON.stringify({ query });
  while (performance.now() < endsAt) {
    const response = await client.request({ method: 'POST', path: '/graphql', headers: headers(workspace), body });
    await response.body.dump();
    if (response.statusCode === 200) {
      counts.ok += 1;
      counts.lastOkAfterMs = performance.now() - (endsAt - MEASURED_MS);
    } else if (response.statusCode === 429) {
      counts.refused += 1;
      if (kind === 'honours-retry-after') {
        const waitMs = Number(response.headers['retry-after']) * 1000;
        if (performance.now() + waitMs >= endsAt) return;
        await sleep(waitMs);
      }
    } else counts.other += 1;
  }
}

/**
 * The victim's duplications, one connection, one every VICTIM_INTERVAL_MS: a request whose answer comes later than
 * the next slot is followed at once, without catching up the slots it missed, so each latency is one caller's wait.
 */
async function victimLoop(client: Client, workspace: BenchWorkspace, endsAt: number): Promise<{ latencies: number[]; accepted: number }> {
  const { headers: requestHeaders, body } = restDuplicate(workspace);
  const latencies: number[] = [];
  let accepted = 0;
  let next = performance.now();
  while (next < endsAt) {
    const sentAt = performance.now();
    const response = await client.request({ method: 'POST', path: '/campaigns/duplicate', headers: requestHeaders as Record<string, string>, body: body as string });
    const text = await response.body.text();
    latencies.push(performance.now() - sentAt);
    if (response.statusCode === 202 && isRestAccepted(text)) accepted += 1;
    next = Math.max(next + VICTIM_INTERVAL_MS, performance.now());
    await sleep(Math.max(0, next - performance.now()));
  }
  return { latencies, accepted };
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

interface Result {
  condition: string;
  loadAverageAtStart: number;
  victim: { requests: number; accepted: number; p50: number; p90: number; p99: number; max: number };
  noisy: NoisyCounts;
  serverCpuMs: number;
}

async function runCondition(condition: Condition, query: string): Promise<Result> {
  const store = await prepareStore();
  let gateway: ServerProcess | undefined;
  const clients: Client[] = [];
  try {
    // A fresh gateway on a fresh store, so each condition's budget minute starts with it; no worker, so that the
    // loop serves requests only.
    gateway = await startGateway(store.dataDir, {
      WORKER_CONCURRENCY: '0',
      READ_BUDGET_PER_MINUTE: condition.budget === 'on' ? String(DEFAULT_READ_BUDGET_PER_MINUTE) : '0',
    });
    const victimClient = new Client(gateway.baseUrl);
    clients.push(victimClient);
    // A fresh process runs its first seconds of each path several times slower: the accept path is warmed, and the
    // noisy query's (answers, and with the budget on its refusals) by a third workspace, whose budget it spends.
    for (let i = 0; i < WARMUP_REQUESTS; i += 1) {
      const { headers: h, body } = restDuplicate(store.victim);
      await (await victimClient.request({ method: 'POST', path: '/campaigns/duplicate', headers: h as Record<string, string>, body: body as string })).body.dump();
    }
    let refusals = 0;
    for (let answered = 0; answered < WARMUP_QUERIES && refusals < WARMUP_REFUSALS; ) {
      const status = (await graphql(victimClient, store.warm, query)).status;
      if (status === 200) answered += 1;
      else if (status === 429) refusals += 1;
      else throw new Error(`the warm-up query was answered ${status}`);
    }
    while (condition.budget === 'on' && refusals < WARMUP_REFUSALS) {
      if ((await graphql(victimClient, store.warm, query)).status === 429) refusals += 1;
    }
    const noisyClients = Array.from({ length: condition.connections }, () => new Client(gateway!.baseUrl));
    clients.push(...noisyClients);
    const loadAverageAtStart = round(loadavg()[0], 2);
    const cpuBefore = processCpuMicros(gateway.child.pid) ?? 0;
    const endsAt = performance.now() + MEASURED_MS;
    const noisy: NoisyCounts = { ok: 0, refused: 0, other: 0, lastOkAfterMs: 0 };
    const [victim] = await Promise.all([
      victimLoop(victimClient, store.victim, endsAt),
      ...noisyClients.map((client) => noisyLoop(client, store.noisy, query, condition.kind!, endsAt, noisy)),
    ]);
    const serverCpuMs = ((processCpuMicros(gateway.child.pid) ?? 0) - cpuBefore) / 1000;
    const sorted = [...victim.latencies].sort((a, b) => a - b);
    const result = {
      condition: condition.name,
      loadAverageAtStart,
      victim: {
        requests: sorted.length,
        accepted: victim.accepted,
        p50: round(percentile(sorted, 50), 1),
        p90: round(percentile(sorted, 90), 1),
        p99: round(percentile(sorted, 99), 1),
        max: round(sorted[sorted.length - 1], 1),
      },
      noisy: { ...noisy, lastOkAfterMs: round(noisy.lastOkAfterMs, 0) },
      serverCpuMs: round(serverCpuMs, 0),
    };
    log(`${condition.name}: victim p50 ${result.victim.p50} ms, noisy ${noisy.ok} × 200, ${noisy.refused} × 429`);
    return result;
  } finally {
    await Promise.all(clients.map((client) => client.close()));
    if (gateway) await stop(gateway);
    rmSync(store.dataDir, { recursive: true, force: true });
  }
}

const pad = (value: string | number, width: number) => String(value).padStart(width);

function table(index: number, results: Result[]): string {
  const lines = [
    `round ${index}`,
    `${'condition'.padEnd(38)}${pad('load', 6)}${pad('sent', 6)}${pad('202', 6)}${pad('p50', 8)}${pad('p90', 8)}${pad('p99', 8)}${pad('max', 8)}${pad('noisy 200', 11)}${pad('429', 7)}${pad('other', 7)}${pad('last 200 s', 12)}${pad('CPU ms', 8)}`,
  ];
  for (const r of results) {
    const v = r.victim;
    lines.push(
      `${r.condition.padEnd(38)}${pad(r.loadAverageAtStart, 6)}${pad(v.requests, 6)}${pad(v.accepted, 6)}${pad(v.p50, 8)}${pad(v.p90, 8)}${pad(v.p99, 8)}${pad(v.max, 8)}${pad(r.noisy.ok, 11)}${pad(r.noisy.refused, 7)}${pad(r.noisy.other, 7)}${pad(r.noisy.ok ? (r.noisy.lastOkAfterMs / 1000).toFixed(1) : '-', 12)}${pad(r.serverCpuMs, 8)}`,
    );
  }
  return lines.join('\n');
}

/**
 * The gateway's CPU per answer of each kind, from one round's figures: a duplication's from the quiet run,
 * a noisy 200's from the budget-off runs less the victim's share, a 429's from the budget-on runs that ignore 429s
 * less the victim's and the 200s' shares.
 */
function cpuPerAnswer(results: Result[]) {
  const byName = new Map(results.map((r) => [r.condition, r]));
  const quiet = byName.get('quiet')!;
  const duplication = quiet.serverCpuMs / quiet.victim.requests;
  const noisy200 = ['budget off, K=1', 'budget off, K=8'].map((name) => {
    const r = byName.get(name)!;
    return (r.serverCpuMs - r.victim.requests * duplication) / r.noisy.ok;
  });
  const refused = ['budget on, K=1, ignores 429', 'budget on, K=8, ignores 429'].map((name) => {
    const r = byName.get(name)!;
    return (r.serverCpuMs - r.victim.requests * duplication - r.noisy.ok * noisy200[0]) / r.noisy.refused;
  });
  return { duplicationMs: round(duplication, 3), noisy200Ms: noisy200.map((v) => round(v, 2)), refused429Ms: refused.map((v) => round(v, 3)) };
}

async function main(): Promise<void> {
  const calibration = await (async () => {
    const store = await prepareStore();
    const gateway = await startGateway(store.dataDir, { WORKER_CONCURRENCY: '0', READ_BUDGET_PER_MINUTE: '0' });
    const client = new Client(gateway.baseUrl);
    try {
      return await calibrate(client, store.noisy);
    } finally {
      await client.close();
      await stop(gateway);
      rmSync(store.dataDir, { recursive: true, force: true });
    }
  })();
  log(`noisy query: three aliases of securityEvents(first: ${calibration.first}), estimated cost ${calibration.cost} of ${calibration.maxCost}`);
  const query = noisyQuery(calibration.first);
  const rounds: Result[][] = [];
  for (let i = 0; i < ROUNDS; i += 1) {
    // The second round runs the conditions in the other order, so that a slower spell of the machine does not
    // fall on the same conditions twice.
    const order = i % 2 === 0 ? CONDITIONS : [...CONDITIONS].reverse();
    const results: Result[] = [];
    for (const condition of order) results.push(await runCondition(condition, query));
    rounds.push(CONDITIONS.map((condition) => results.find((r) => r.condition === condition.name)!));
  }
  const summary = {
    noisyQuery: { first: calibration.first, estimatedCost: calibration.cost, maxCost: calibration.maxCost },
    readBudgetPerMinute: DEFAULT_READ_BUDGET_PER_MINUTE,
    measuredSeconds: MEASURED_MS / 1000,
    victimIntervalMs: VICTIM_INTERVAL_MS,
    noisyJobs: NOISY_JOBS,
    rounds,
    serverCpuPerAnswer: rounds.map(cpuPerAnswer),
  };
  process.stdout.write(`${rounds.map((results, i) => table(i + 1, results)).join('\n\n')}\n\n${JSON.stringify(summary, null, 2)}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`noisy-neighbour: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});

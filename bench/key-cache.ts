/**
 * How often the embedded store's key cache answers an authentication, and what an authentication costs, for an
 * operator with many keys. The gateway's own service authenticates (`GatewayService.authenticate`, as every
 * request does, writing each key's last use at most once a minute) on a SQLite store, eight requests per turn
 * of the event loop, with a clock that moves 1 ms per request: 1,000 requests a second.
 *
 *   npx tsx bench/key-cache.ts [--seconds 180] [--runs 1]
 *
 * Scenarios: 20,000 keys, 90 % of the requests with 1,000 of them (the rest with any key); 5,000 keys used
 * evenly. Hits are the lookups the store answered without reading the key (statements counted); they and the
 * time per authentication (wall clock of the main thread) are taken over the last two thirds of the simulated
 * time, once every key in use has been read and written its first last use.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { ManualClock } from '../test/support/clock.js';
import { countStatements, KEY_BY_HASH } from '../test/support/statements.js';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '180' }, runs: { type: 'string', default: '1' } } });
const requests = Number(values.seconds) * 1000;
const REQUESTS_PER_TURN = 8;

interface Scenario {
  name: string;
  keys: number;
  /** The keys that get `hotShare` of the requests; the others go to any key. */
  hot: number;
  hotShare: number;
}

const scenarios: Scenario[] = [
  { name: '20,000 keys, 90 % on 1,000', keys: 20_000, hot: 1_000, hotShare: 0.9 },
  { name: '5,000 keys, evenly', keys: 5_000, hot: 5_000, hotShare: 1 },
];

/** A seeded generator (mulberry32), so that every run and every version sees the same requests. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function run(scenario: Scenario): Promise<{ hits: number; microsPerAuthentication: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'cgw-key-cache-'));
  const clock = new ManualClock();
  const app = await buildApp(loadConfig({ DATA_DIR: dir, LOG_LEVEL: 'silent', SEED_DEMO: 'false' }), { clock });
  try {
    const keys: string[] = [];
    // Four keys per workspace, made through the gateway's own code, a few hundred per commit.
    for (let first = 0; first < scenario.keys; first += 400) {
      const made = await Promise.all(
        Array.from({ length: Math.min(100, (scenario.keys - first) / 4) }, async (_, index) => {
          const workspace = await app.admin.createWorkspace(`ws-${first + index * 4}`);
          return Promise.all([1, 2, 3, 4].map((n) => app.admin.createKey({ workspace: workspace.id, name: `key ${n}`, permissions: ['campaigns.duplicate'] })));
        }),
      );
      keys.push(...made.flat().map((created) => created.key));
    }
    const loads = countStatements(app.store, KEY_BY_HASH);
    const next = random(1);
    const pick = () => keys[Math.floor(next() < scenario.hotShare ? next() * scenario.hot : next() * keys.length)];
    const warmUp = Math.floor(requests / 3 / REQUESTS_PER_TURN) * REQUESTS_PER_TURN;
    let loadsBefore = 0;
    let started = 0;
    for (let sent = 0; sent < requests; sent += REQUESTS_PER_TURN) {
      if (sent === warmUp) {
        loadsBefore = loads();
        started = performance.now();
      }
      await Promise.all(
        Array.from({ length: REQUESTS_PER_TURN }, () => {
          clock.advance(1);
          return app.service.authenticate({ authorization: `Bearer ${pick()}`, ip: '127.0.0.1', channel: 'REST', requestId: 'bench' });
        }),
      );
      await new Promise((resolve) => setImmediate(resolve));
    }
    const measured = requests - warmUp;
    return { hits: 1 - (loads() - loadsBefore) / measured, microsPerAuthentication: ((performance.now() - started) * 1000) / measured };
  } finally {
    await app.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

for (let round = 0; round < Number(values.runs); round += 1) {
  for (const scenario of scenarios) {
    const { hits, microsPerAuthentication } = await run(scenario);
    console.log(`${scenario.name.padEnd(28)} hits ${(hits * 100).toFixed(1).padStart(5)} %  ${microsPerAuthentication.toFixed(1).padStart(6)} µs per authentication`);
  }
}

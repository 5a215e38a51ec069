import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'cgw-bench-shape-'));

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const number = expect.any(Number);
const latency = { p50: number, p97_5: number, p99: number, mean: number };
const cpu = { server: number, loadGenerator: number };
const load = { requests: number, durationSeconds: number, requestsPerSecond: number, latencyMs: latency, cpuMicrosPerRequest: cpu, serverDiskKibPerRequest: number, non2xx: 0, mismatches: 0, errors: 0, valid: true };
const reference = { value: number, description: expect.any(String) };
const ratio = { value: number, target: number, kind: expect.stringMatching(/^(min|max)$/), met: expect.any(Boolean), description: expect.any(String) };

/** Only the shape of the report: timings from a run this small mean nothing, so none is asserted. */
describe('npm run bench', () => {
  it('runs every scenario against real processes and writes the report, every answer verified', async () => {
    const out = join(dir, 'report.json');
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--tiny', '--out', out], {
      cwd: ROOT,
      timeout: 90_000,
    });
    expect(stdout).toContain('restVsBaseline');

    const report = JSON.parse(readFileSync(out, 'utf8'));
    expect(report).toEqual({
      version: 1,
      mode: 'tiny',
      startedAt: expect.any(String),
      finishedAt: expect.any(String),
      machine: { cpus: number, cpuModel: expect.any(String), totalMemoryMb: number, loadAverage: expect.any(Array), node: process.version, platform: expect.any(String) },
      budget: expect.objectContaining({ connections: number, eventsSmall: number, eventsLarge: number, workerJobs: number, memoryFirst: number, memorySecond: number }),
      scenarios: {
        baseline: load,
        'durable-floor': load,
        'rest-accept': load,
        'graphql-accept': load,
        'poll-job@small': { ...load, events: report.budget.eventsSmall },
        'poll-job@large': { ...load, events: report.budget.eventsLarge },
        'poll-page@small': { ...load, events: report.budget.eventsSmall },
        'poll-page@large': { ...load, events: report.budget.eventsLarge },
      },
      worker: { jobs: report.budget.workerJobs + 1, seconds: number, jobsPerSecond: number, valid: true },
      memory: {
        requestsFirst: report.budget.memoryFirst,
        rssMbFirst: number,
        rssMbFirstUncollected: number,
        requestsSecond: report.budget.memorySecond,
        rssMbSecond: number,
        rssMbSecondUncollected: number,
        growth: number,
        valid: true,
      },
      ratios: {
        restVsBaseline: ratio,
        graphqlVsRest: ratio,
        pollJobLargeVsSmall: ratio,
        pollPageLargeVsSmall: ratio,
        rssGrowth: ratio,
        workerJobsPerSecond: ratio,
      },
      references: { floorVsBaseline: reference, restVsFloor: reference },
      valid: true,
    });
    for (const result of Object.values(report.scenarios) as { requests: number; cpuMicrosPerRequest: typeof cpu }[]) {
      expect(result.requests).toBeGreaterThan(0);
      // autocannon's own time is counted in µs, so it cannot be zero; the server's comes in 10 ms ticks, which a
      // run this small may not fill.
      expect(result.cpuMicrosPerRequest.loadGenerator).toBeGreaterThan(0);
      expect(result.cpuMicrosPerRequest.server).toBeGreaterThanOrEqual(0);
    }
  }, 120_000);
});

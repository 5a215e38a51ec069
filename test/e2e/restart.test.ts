import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { bearer, http, json, waitFor } from '../support/gateway.js';
import { spawnGateway, type GatewayProcess } from '../support/process.js';
import { jobEvents } from '../support/transports.js';

const dataDir = mkdtempSync(join(tmpdir(), 'cgw-e2e-'));
const processes: GatewayProcess[] = [];

afterAll(async () => {
  for (const gateway of processes) gateway.child.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
});

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
      expect(production.logs.map((line) => line.msg)).toContain('no workspace yet: create one and its keys with the CLI (npm run cli -- --help)');
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
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
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

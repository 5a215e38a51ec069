import { readFileSync } from 'node:fs';
import { WebSocket } from 'undici';
import { spawnGateway, type GatewayProcess } from '../../test/support/process.js';

/**
 * What the gateway runs with in every scenario; the quota and the read budget are raised, still taken, so that load
 * measures work, not refusals.
 */
const GATEWAY_ENV = {
  NODE_ENV: 'production',
  LOG_LEVEL: 'warn',
  SEED_DEMO: 'false',
  DUPLICATE_RATE_LIMIT: '1000000000',
  READ_BUDGET_PER_MINUTE: '1000000000',
};

export type ServerProcess = GatewayProcess;

/**
 * A real gateway process on `dataDir`; WORKER_CONCURRENCY=0 keeps the worker out of the way. Run from the sources
 * through tsx, as the baseline is, so that both are the same kind of process.
 */
export async function startGateway(dataDir: string, env: Record<string, string> = {}, nodeArgs: string[] = []): Promise<ServerProcess> {
  // At LOG_LEVEL=warn the gateway does not log that it listens: readiness is /healthz on a chosen port.
  return spawnGateway({ ...GATEWAY_ENV, DATA_DIR: dataDir, ...env }, { entry: 'src/main.ts', timeoutMs: 120_000, ownPort: true, nodeArgs });
}

export function startBaseline(nodeArgs: string[] = []): Promise<ServerProcess> {
  return spawnGateway({ NODE_ENV: 'production' }, { entry: 'bench/baseline-server.ts', listeningMessage: 'baseline is listening', timeoutMs: 120_000, nodeArgs });
}

/** The baseline plus a durable commit per request (bench/durable-floor-server.ts), its database in `dataDir`. */
export function startDurableFloor(dataDir: string): Promise<ServerProcess> {
  return spawnGateway(
    { NODE_ENV: 'production', DATA_DIR: dataDir },
    { entry: 'bench/durable-floor-server.ts', listeningMessage: 'durable floor is listening', timeoutMs: 120_000 },
  );
}

export async function stop(server: ServerProcess): Promise<void> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return;
  server.child.kill('SIGTERM');
  await server.exited;
}

/** Resident set size of a running process, in MiB (Linux /proc). */
export function rssMb(server: ServerProcess): number {
  const status = readFileSync(`/proc/${server.child.pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!match) throw new Error('VmRSS not found in /proc/<pid>/status');
  return Number(match[1]) / 1024;
}

/**
 * A full garbage collection in a server started with `--inspect=127.0.0.1:0`, through the inspector protocol
 * (`HeapProfiler.collectGarbage`): afterwards RSS holds what the server keeps, not garbage awaiting collection.
 */
export async function collectGarbage(server: ServerProcess): Promise<void> {
  const url = /Debugger listening on (ws:\/\/\S+)/.exec(server.output())?.[1];
  if (!url) throw new Error('the server was not started with --inspect');
  const socket = new WebSocket(url);
  try {
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = () => reject(new Error(`cannot reach the inspector at ${url}`));
    });
    const collected = new Promise<void>((resolve, reject) => {
      socket.onmessage = (event) => {
        const answer = JSON.parse(String(event.data)) as { id?: number; error?: { message: string } };
        if (answer.id !== 1) return;
        if (answer.error) reject(new Error(`HeapProfiler.collectGarbage failed: ${answer.error.message}`));
        else resolve();
      };
    });
    socket.send(JSON.stringify({ id: 1, method: 'HeapProfiler.collectGarbage' }));
    await collected;
  } finally {
    socket.close();
  }
}

import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { GATEWAY_ENTRY } from './build.js';
import { waitFor } from './wait.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** What output() keeps: enough for any banner or error, bounded however long the process logs. */
const OUTPUT_LIMIT = 1024 * 1024;

export interface GatewayProcess {
  child: ChildProcess;
  baseUrl: string;
  port: number;
  /** Everything the process printed so far (the last MiB of it), stdout and stderr. */
  output(): string;
  /** Every JSON log line the process printed so far, parsed. */
  logs: Record<string, any>[];
  /** Resolves with the exit code (or signal) once the process has ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface SpawnOptions {
  /** What to run, relative to the project root: the build by default; a TypeScript file is run through tsx. */
  entry?: string;
  /** The `msg` of the JSON log line, carrying `url`, that says the server is listening. */
  listeningMessage?: string;
  /**
   * Instead of waiting for that line (which a quiet LOG_LEVEL hides): listen on a free port chosen up front
   * and be ready once `GET /healthz` answers 200 there. A port another process takes meanwhile is retried.
   */
  ownPort?: boolean;
  timeoutMs?: number;
  /** Extra node options, e.g. `--cpu-prof`. */
  nodeArgs?: string[];
  /** Run as this user and group instead of the test's (which must then be root). */
  user?: { uid: number; gid: number };
  /** Told everything the process printed so far (as output()), each time it prints more: to act while it starts. */
  onOutput?: (output: string, child: ChildProcess) => void;
}

async function healthy(baseUrl: string): Promise<boolean> {
  try {
    const response = await request(`${baseUrl}/healthz`);
    await response.body.dump();
    return response.statusCode === 200;
  } catch {
    return false;
  }
}

/** Whether a server could listen on the loopback port right now. */
async function canListen(port: number): Promise<boolean> {
  const server = createServer();
  const listening = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => resolve(true));
  });
  if (listening) await new Promise((resolve) => server.close(resolve));
  return listening;
}

const LOWEST_PORT = 10_000;

/** The first port of the kernel's ephemeral range (Linux), or undefined where it cannot be read. */
function ephemeralRangeStart(): number | undefined {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > LOWEST_PORT ? low : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A port nothing listens on right now, for a process that must be told its port up front. Where it can, it
 * is picked below the ephemeral range, from which the kernel gives ports to outgoing connections and to
 * `listen(0)`: between this check and the process's bind, no other test's connection can take it there.
 */
export async function freePort(): Promise<number> {
  const rangeStart = ephemeralRangeStart();
  if (rangeStart !== undefined) {
    for (let attempt = 0; attempt < 100; attempt += 1) {
      const port = randomInt(LOWEST_PORT, rangeStart);
      if (await canListen(port)) return port;
    }
  }
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (!address || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** Whether anything still accepts connections on the port. */
export function isListening(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      done(true);
    });
    socket.once('error', () => done(false));
  });
}

class PortTaken extends Error {}

/**
 * Starts the gateway (the build, as `npm start` does) or another entry as a real child process and waits until it logs that it is
 * listening. PORT defaults to 0: the process picks a free port and logs its URL.
 */
export async function spawnGateway(env: Record<string, string>, timeoutMsOrOptions: number | SpawnOptions = {}): Promise<GatewayProcess> {
  const options = typeof timeoutMsOrOptions === 'number' ? { timeoutMs: timeoutMsOrOptions } : timeoutMsOrOptions;
  if (!options.ownPort) return spawnOnce(env, options);
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await spawnOnce(env, options, await freePort());
    } catch (error) {
      if (!(error instanceof PortTaken) || attempt === 3) throw error;
    }
  }
}

/**
 * What a gateway started with `env` wrote before it exited, when it failed to start; 'started' if it started
 * (it is then killed).
 */
export async function startFailureOf(env: Record<string, string>, options: SpawnOptions = {}): Promise<string> {
  return spawnGateway(env, options).then(
    async (started) => {
      started.child.kill('SIGKILL');
      await started.exited;
      return 'started';
    },
    (error: Error) => error.message,
  );
}

async function spawnOnce(env: Record<string, string>, options: SpawnOptions, healthzPort?: number): Promise<GatewayProcess> {
  const { entry = GATEWAY_ENTRY, listeningMessage = 'campaign-gateway is listening', timeoutMs = 30_000, nodeArgs = [], user, onOutput } = options;
  const loader = entry.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const child = spawn(process.execPath, [...nodeArgs, ...loader, entry], {
    cwd: ROOT,
    ...user,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      PORT: '0',
      LOG_LEVEL: 'info',
      ...env,
      ...(healthzPort === undefined ? {} : { PORT: String(healthzPort) }),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const logs: Record<string, any>[] = [];
  const append = (text: string) => {
    output += text;
    if (output.length > OUTPUT_LIMIT) output = output.slice(-OUTPUT_LIMIT);
    onOutput?.(output, child);
  };
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  child.stderr!.on('data', (chunk: Buffer) => append(chunk.toString()));
  const lines = createInterface({ input: child.stdout! });
  const listening = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${entry} did not start within ${timeoutMs} ms:\n${output}`)), timeoutMs);
    lines.on('line', (line) => {
      append(`${line}\n`);
      if (!line.startsWith('{')) return;
      try {
        const logLine = JSON.parse(line) as { msg?: string; url?: string };
        logs.push(logLine);
        if (logLine.msg === listeningMessage && logLine.url) {
          clearTimeout(timer);
          resolve(logLine.url);
        }
      } catch {
        // not a log line
      }
    });
    void exited.then(({ code }) => {
      clearTimeout(timer);
      const Failure = output.includes('EADDRINUSE') ? PortTaken : Error;
      reject(new Failure(`${entry} exited with ${code} before listening:\n${output}`));
    });
    if (healthzPort !== undefined) {
      const url = `http://127.0.0.1:${healthzPort}`;
      const ended = () => child.exitCode !== null || child.signalCode !== null;
      void waitFor(async () => ended() || (await healthy(url)), timeoutMs).then(() => {
        clearTimeout(timer);
        resolve(url);
      }, reject);
    }
  });
  const baseUrl = await listening;
  return { child, baseUrl, port: Number(new URL(baseUrl).port), output: () => output, logs, exited };
}

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from 'undici';
import type { PostgresStore } from '../../src/adapters/postgres/store.js';
import { createStore } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { AdminService } from '../../src/domain/admin.js';
import { systemClock, type GatewayStore } from '../../src/domain/ports.js';
import { createTestWorkspace, http, waitFor, type TestWorkspace } from '../support/gateway.js';
import { createTestDatabase, openPostgresStore, TEST_DATABASE_URL, withAdmin } from '../support/postgres.js';
import { freePort, spawnGateway as spawnGatewayProcess } from '../support/process.js';
import { transports, type Transport } from '../support/transports.js';


export const TEST_REDIS_URL = process.env.TEST_REDIS_URL;

/** A gateway running as its own process (`node dist/main.js`, as `npm start` runs it), as an operator would run it. */
export interface ChildGateway {
  name: string;
  pid: number;
  port: number;
  baseUrl: string;
  /** Its JSON log lines, as they arrive. */
  logs: Record<string, any>[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  signal(signal: NodeJS.Signals): void;
  /** SIGKILL if it is still running, then wait for it. */
  kill(): Promise<void>;
}

/** Starts a gateway process on a port of its own and waits until its readiness says every dependency is ok. */
export async function spawnGateway(name: string, env: Record<string, string>): Promise<ChildGateway> {
  const dataDir = mkdtempSync(join(tmpdir(), 'cgw-scale-'));
  const removeDataDir = () => rmSync(dataDir, { recursive: true, force: true });
  const started = await spawnGatewayProcess(
    { TMPDIR: process.env.TMPDIR ?? tmpdir(), NODE_ENV: 'test', HOST: '127.0.0.1', SEED_DEMO: 'false', DATA_DIR: dataDir, ...env },
    { ownPort: true, timeoutMs: 60_000 },
  ).catch((error: unknown) => {
    removeDataDir();
    throw error;
  });
  const { child, exited } = started;
  void exited.then(removeDataDir);
  const ended = () => child.exitCode !== null || child.signalCode !== null;
  const gateway: ChildGateway = {
    name,
    pid: child.pid!,
    port: started.port,
    baseUrl: started.baseUrl,
    logs: started.logs,
    exited,
    signal: (signal) => {
      if (!ended()) child.kill(signal);
    },
    async kill() {
      gateway.signal('SIGKILL');
      await exited;
    },
  };
  try {
    await waitFor(async () => {
      if (ended()) throw new Error(`gateway ${name} exited during start-up: ${started.output()}`);
      return (await readiness(gateway).catch(() => null))?.status === 'ready';
    }, 60_000, 100);
  } catch (error) {
    await gateway.kill();
    throw error;
  }
  return gateway;
}

export async function readiness(gateway: { baseUrl: string }): Promise<{ code: number; status?: string; checks?: Record<string, any> }> {
  const response = await http(gateway.baseUrl, 'GET', '/readyz');
  return { code: response.status, ...response.body };
}

export interface DuplicateAttempt {
  gateway: string;
  transport: Transport['name'];
  /**
   * accepted: a job id; limited: RATE_LIMITED with HTTP 429 on either transport; anything else is named by its
   * status, code and message, so that a tally that went wrong says what the gateway answered.
   */
  outcome: 'accepted' | 'limited' | `other: ${number} ${string}`;
  status: number;
  jobId?: string;
}

/** One duplicate request over either transport, classified the same way for both. */
export async function duplicate(
  gateway: ChildGateway,
  transport: Transport,
  key: string,
  campaignId: string,
  name: string,
  dispatcher?: Agent,
): Promise<DuplicateAttempt> {
  const answer = await transport.duplicate(gateway.baseUrl, key, { campaignId, name }, { dispatcher });
  const outcome: DuplicateAttempt['outcome'] = answer.jobId
    ? 'accepted'
    : answer.status === 429 && answer.code === 'RATE_LIMITED'
      ? 'limited'
      : `other: ${answer.status} ${answer.code} ${answer.message}`;
  return { gateway: gateway.name, transport: transport.name, outcome, status: answer.status, jobId: answer.jobId ?? undefined };
}

/**
 * Sends `count` duplicate requests at once, spread evenly over the gateways and both transports.
 * `connections` bounds the sockets per gateway; the requests beyond it queue in the client.
 */
export async function duplicateMany(
  gateways: ChildGateway[],
  key: string,
  campaignId: string,
  count: number,
  connections = 32,
): Promise<DuplicateAttempt[]> {
  const agent = new Agent({ connections, pipelining: 1 });
  try {
    return await Promise.all(
      Array.from({ length: count }, (_, i) =>
        duplicate(gateways[i % gateways.length], transports[Math.floor(i / gateways.length) % 2], key, campaignId, `copy ${i}`, agent),
      ),
    );
  } finally {
    await agent.close();
  }
}

export const tally = <T extends string>(values: T[]): Partial<Record<T, number>> =>
  values.reduce<Partial<Record<T, number>>>((counts, value) => ({ ...counts, [value]: (counts[value] ?? 0) + 1 }), {});

/** Runs a command as the `postgres` user when this process is root (PostgreSQL refuses to run as root). */
function asPostgres(command: string, args: string[]): void {
  const [file, argv] = process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args];
  execFileSync(file, argv, { stdio: 'pipe' });
}

function postgresBin(): string {
  const base = '/usr/lib/postgresql';
  const version = existsSync(base)
    ? readdirSync(base).sort((a, b) => Number(a) - Number(b)).at(-1)
    : undefined;
  if (!version) throw new Error('no PostgreSQL server binaries under /usr/lib/postgresql');
  return join(base, version, 'bin');
}

/** A PostgreSQL cluster of this suite's own, in a temporary directory, that it may stop and start at will. */
export interface PrivateCluster {
  url: string;
  start(): void;
  stop(): void;
  destroy(): void;
}

export async function createPrivateCluster(): Promise<PrivateCluster> {
  const bin = postgresBin();
  const dir = mkdtempSync(join(tmpdir(), 'cgw-pg-'));
  if (process.getuid?.() === 0) execFileSync('chown', ['postgres', dir]);
  const data = join(dir, 'data');
  const port = await freePort();
  asPostgres(join(bin, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync']);
  const pgCtl = join(bin, 'pg_ctl');
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`;
  const cluster: PrivateCluster = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start: () => asPostgres(pgCtl, ['start', '-w', '-D', data, '-l', join(dir, 'log'), '-o', options]),
    stop: () => asPostgres(pgCtl, ['stop', '-w', '-m', 'fast', '-D', data]),
    destroy: () => {
      try {
        asPostgres(pgCtl, ['stop', '-w', '-m', 'immediate', '-D', data]);
      } catch {
        // Already stopped.
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  cluster.start();
  return cluster;
}


/** A store of one suite, seeded and inspected from here, and the gateways it starts on it. */
export interface SharedStore {
  store: GatewayStore;
  admin: AdminService;
  gateways: ChildGateway[];
  /** Starts gateways at the same moment, all on this store (they migrate it together). */
  spawn(names: string[], env?: Record<string, string>): Promise<ChildGateway[]>;
  workspace(): Promise<TestWorkspace>;
  close(): Promise<void>;
}

/** `store`, shared with the gateways started with `env` (which selects it); `dispose` removes it once all are closed. */
function sharing<S extends GatewayStore>(store: S, env: Record<string, string>, dispose: () => Promise<void>) {
  const admin = new AdminService(store, systemClock);
  const gateways: ChildGateway[] = [];
  const shared: SharedStore & { store: S } = {
    store,
    admin,
    gateways,
    async spawn(names, extra = {}) {
      const results = await Promise.allSettled(names.map((name) => spawnGateway(name, { ...env, ...extra })));
      const started = results.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
      gateways.push(...started);
      const failed = results.find((result) => result.status === 'rejected');
      if (failed) throw failed.reason;
      return started;
    },
    workspace: () => createTestWorkspace(store, admin, undefined, ['campaigns.duplicate', 'security_events.read']),
    async close() {
      await Promise.all(gateways.map((gateway) => gateway.kill()));
      await store.close();
      await dispose();
    },
  };
  return shared;
}

/** A fresh database for one suite, a store on it for seeding and inspecting, and its gateways. */
export interface SharedDatabase extends SharedStore {
  url: string;
  store: PostgresStore;
  query<T = Record<string, any>>(text: string, values?: unknown[]): Promise<T[]>;
}

export async function sharedDatabase(): Promise<SharedDatabase> {
  const database = await createTestDatabase();
  // Commits that do not wait for the disk: the suites here test what instances do together, and the other suites'
  // fsyncs on the same disk can make a commit take 100 ms, so that a burst's commits in one workspace, which its
  // event lock serialises, would outlast that lock's 8 s wait and be refused as an outage. The server crashing is
  // the only loss this allows, and no suite crashes the shared server.
  await withAdmin((client) => client.query(`ALTER DATABASE ${new URL(database.url).pathname.slice(1)} SET synchronous_commit = off`));
  const store = openPostgresStore(database.url);
  return {
    ...sharing(store, { DATABASE_URL: database.url }, database.drop),
    url: database.url,
    query: async (text, values) => (await store.pool.query(text, values)).rows,
  };
}

/** The embedded store's file in a fresh data directory, opened here as the gateways started on it open it. */
export async function sharedSqlite(): Promise<SharedStore> {
  const dataDir = mkdtempSync(join(tmpdir(), 'cgw-scale-'));
  const store = await createStore(loadConfig({ DATA_DIR: dataDir }), { olderSchema: 'upgrade' });
  return sharing(store, { DATA_DIR: dataDir }, async () => rmSync(dataDir, { recursive: true, force: true }));
}

/** Every store a gateway can run on, for one suite run against each; PostgreSQL only where the tests have one (always under CI). */
export const sharedStores = [
  { kind: 'sqlite', missing: false, open: sharedSqlite },
  { kind: 'postgres', missing: !TEST_DATABASE_URL, open: sharedDatabase },
].filter((store) => !store.missing || process.env.CI);

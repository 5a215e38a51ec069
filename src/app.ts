import 'reflect-metadata';
import { dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { FastifyBaseLogger, FastifyInstance, FastifyServerOptions } from 'fastify';
import type { RateLimiterAbstract } from 'rate-limiter-flexible';
import type { BrazeClient, BrazeClientOptions, UpstreamObserver } from './adapters/braze-client.js';
import { memoryLimiter, memoryLimiters, postgresLimiters, sqliteLimiters, type LimiterBackend } from './adapters/limiter-backends.js';
import { RateLimiterAuthFailures } from './adapters/rate-limiter-auth-failures.js';
import { RateLimiterBudget } from './adapters/rate-limiter-budget.js';
import { RateLimiterQuota } from './adapters/rate-limiter-quota.js';
import { backupSqliteStore } from './adapters/sqlite/backup.js';
import { whenDataDirFree } from './adapters/sqlite/data-dir-lock.js';
import { sharedStorePaths } from './adapters/sqlite/file-modes.js';
import { SqliteStore } from './adapters/sqlite/store.js';
import { StoreCampaignReader } from './adapters/store-campaign-reader.js';
import { UpstreamPacer } from './adapters/upstream-pacer.js';
import { ClockOffset } from './clock-offset.js';
import { longestStopMs, type Config } from './config.js';
import { AdminService } from './domain/admin.js';
import { DownloadSlots } from './domain/download-slots.js';
import {
  systemClock,
  type AuthFailureLimiter,
  type CampaignReader,
  type Clock,
  type Duplicator,
  type GatewayStore,
  type OlderSchema,
  type Quota,
  type SchemaVersions,
} from './domain/ports.js';
import { GatewayService } from './domain/service.js';
import { LocalDuplicator } from './duplicators/local.js';
import { InFlight } from './http/in-flight.js';
import type { DownloadClientLimits } from './http/security-events-download.js';
import { RepeatedFailureLog } from './failure-log.js';
import { RetentionPruner } from './jobs/retention.js';
import { JobWorker, RETRY_BACKOFF, type WorkerLogger } from './jobs/worker.js';
import { Readiness, STORE_DOWN_AFTER_MS, upstreamCheck } from './readiness.js';

export interface App {
  config: Config;
  http: FastifyInstance;
  service: GatewayService;
  admin: AdminService;
  store: GatewayStore;
  /** Where the quota and the other limits are counted: memory, postgres, redis (custom: a test's own quota). */
  quotaBackend: string;
  worker: JobWorker;
  retention: RetentionPruner;
  /** Starts the background work: the worker and the retention pruner. */
  start(): void;
  /**
   * Fails readiness for the drain period (SHUTDOWN_DRAIN_SECONDS) while everything still serves, then stops the
   * worker (handing back unfinished jobs), the HTTP server and the stores.
   */
  close(): Promise<void>;
}

export interface AppOverrides {
  store?: GatewayStore;
  quota?: Quota;
  clock?: Clock;
  /** Milliseconds that readiness checks are timed by, which only move forward: performance.now() unless a test moves them. */
  elapsedMs?: () => number;
  logger?: FastifyServerOptions['logger'];
  /** The limiter behind upstream pacing; instances given the same one share the pace. */
  upstreamLimiter?: RateLimiterAbstract;
  /** The limiter behind the refusal events' budget (PERMISSION_DENIED, API_KEY_REJECTED), for a window shorter than a minute. */
  refusalEventLimiter?: RateLimiterAbstract;
  logDestination?: NodeJS.WritableStream;
  /** What a security event download asks of its client, scaled down for a test (the DOWNLOAD_ constants by default). */
  downloadClientLimits?: Partial<DownloadClientLimits>;
  /** How the drain before closing waits out SHUTDOWN_DRAIN_SECONDS: a timer, unless a test ends it itself. */
  drainWait?: (drainMs: number) => Promise<void>;
  /** How often the worker looks for due jobs when nothing woke it; 500 ms by default. */
  workerPollIntervalMs?: number;
  /** The window of the event loop delay gauges (EVENT_LOOP_WINDOW_MS by default), shorter in a test. */
  eventLoopWindowMs?: number;
}

/** The embedded store's file, when no DATABASE_URL names a PostgreSQL one. */
export const sqliteFilename = (config: Config): string | null => (config.databaseUrl ? null : join(config.dataDir, 'gateway.db'));

export interface StoreOptions {
  /**
   * What to do with a store an older version left: `upgrade` it (the gateway, as it starts), or `refuse` it as it
   * is (the CLI, which may run beside older gateways still using it). A new store gets its schema either way.
   */
  olderSchema: OlderSchema;
  /** Hears of an embedded store's writer thread that died and was replaced. */
  onWriterRestart?: (error: Error) => void;
  /** Hears of a store an older version left, brought up to date, and how long that took. */
  onUpgrade?: (upgrade: SchemaVersions & { durationMs: number }) => void;
  /** Hears, once, that a PostgreSQL store waits for the migration lock another session holds, and who holds it. */
  onMigrationWait?: (message: string) => void;
  /** Hears why the store's schema could not be checked for parts its version lacks (SchemaVersions.unchecked). */
  onUnchecked?: (reason: string) => void;
  /** Each adapter's migrations in place of this version's: how tests stand for a gateway of another version. */
  migrations?: { sqlite?: readonly string[]; postgres?: readonly string[] };
  /**
   * The gateway's: hold an embedded store's DATA_DIR until closed, refusing to open it while another gateway process
   * has it, once that one has had `waitMs` to exit (`onWait` is told when the wait starts). The CLI does not hold it,
   * so that it works beside the gateway.
   */
  holdDataDir?: { waitMs: number; onWait: (message: string) => void };
  /** With holdDataDir, leave the store as it is: no reservation a stopped process left is freed (`store copy`'s source). */
  keepReservations?: boolean;
  /** Whose clock a PostgreSQL job queue keeps time by: the database's unless the gateway was given a clock. */
  jobTime?: 'database' | 'caller';
  /** `store copy`'s target: opened though a copy into it did not finish, which the copy itself refuses, in its words. */
  partlyCopied?: 'open';
}

/**
 * A data directory this process may not make, said in the operator's terms: the file system's own words name only a
 * path (`EACCES: permission denied, mkdir '/app/data'`), often the default ./data in a read-only image.
 */
function dataDirRefusal(error: unknown, directory: string): unknown {
  const { code, syscall } = error as NodeJS.ErrnoException;
  if (syscall !== 'mkdir' || !['EACCES', 'EPERM', 'EROFS'].includes(code ?? '')) return error;
  const uid = process.getuid?.();
  return new Error(
    `DATA_DIR ${directory} cannot be made (${(error as Error).message}): DATA_DIR must name a directory this process${uid === undefined ? '' : ` (uid ${uid})`} can write, ` +
      'such as a subdirectory of a writable volume',
    { cause: error },
  );
}

async function openSqliteStore(filename: string, options: StoreOptions): Promise<SqliteStore> {
  const { holdDataDir } = options;
  const open = () => {
    try {
      return new SqliteStore({ filename, onWriterRestart: options.onWriterRestart, migrations: options.migrations?.sqlite, holdDataDir: holdDataDir !== undefined, keepReservations: options.keepReservations });
    } catch (error) {
      throw dataDirRefusal(error, dirname(filename));
    }
  };
  return holdDataDir ? whenDataDirFree(open, holdDataDir.waitMs, holdDataDir.onWait) : open();
}

async function openPostgresStore(config: Config, options: StoreOptions): Promise<GatewayStore> {
  // node-postgres is loaded only for a PostgreSQL store: the CLI on the embedded one starts without it.
  const { PostgresStore } = await import('./adapters/postgres/store.js');
  return new PostgresStore({
    connectionString: config.databaseUrl!,
    poolMode: config.databasePoolMode,
    migrations: options.migrations?.postgres,
    onMigrationWait: options.onMigrationWait,
    jobTime: options.jobTime,
  });
}

/** PostgreSQL when DATABASE_URL is set (several instances can share it), the embedded SQLite file otherwise. */
export async function createStore(config: Config, options: StoreOptions): Promise<GatewayStore> {
  const filename = sqliteFilename(config);
  const store = filename === null ? await openPostgresStore(config, options) : await openSqliteStore(filename, options);
  try {
    const started = performance.now();
    const versions = await store.migrate(options.olderSchema);
    if (versions.from > 0 && versions.from < versions.to) options.onUpgrade?.({ from: versions.from, to: versions.to, durationMs: Math.round(performance.now() - started) });
    if (versions.unchecked) options.onUnchecked?.(versions.unchecked);
    if (options.partlyCopied !== 'open') await refusePartlyCopied(store, config);
  } catch (error) {
    await store.close();
    throw error;
  }
  return store;
}

/** The database a PostgreSQL URL names, for messages: never its user or password. */
export const databaseName = (url: string): string => decodeURIComponent(new URL(url).pathname.slice(1)) || '(the user’s default)';

/** How to empty a store a copy left half-way, so that the copy can run again: a PostgreSQL database, or a file. */
export function startAgainAfterCopy(store: { database: string } | { file: string }): string {
  if ('file' in store) return `delete ${store.file} and its -wal and -shm files, then run the copy again`;
  const { database } = store;
  return (
    `drop the database and make it again, empty (DROP DATABASE ${database}; CREATE DATABASE ${database} OWNER <the gateway's role>), ` +
    "or drop the schema of the gateway's tables and make it again (DROP SCHEMA <schema> CASCADE; CREATE SCHEMA <schema>), then run the copy again"
  );
}

/**
 * Refuses a store that `store copy` started to fill and did not finish: it holds part of the store copied, and a
 * gateway started on it served what was there (keys that work, a few thousand of 200,000 events) as if that were all.
 */
async function refusePartlyCopied(store: GatewayStore, config: Config): Promise<void> {
  const started = await store.copyStarted();
  if (started === null) return;
  const file = sqliteFilename(config);
  const where = file === null ? { database: databaseName(config.databaseUrl!) } : { file };
  const name = file === null ? 'the PostgreSQL database in DATABASE_URL' : `the embedded store ${file}`;
  throw new Error(
    `${name} holds part of a store: a store copy into it started at ${started.toISOString()} and did not finish, so no gateway may start on it. ` +
      `Start on the store it was copied from, or ${startAgainAfterCopy(where)} (see "Moving to PostgreSQL" in the README)`,
  );
}

/**
 * Copies the embedded store to `destination` as it is, whatever its schema version: a backup taken before an
 * upgrade must restore under the version that made it. PostgreSQL is pg_dump's, said before connecting.
 */
export async function backupStore(config: Config, destination: string, stopped?: () => boolean): Promise<{ file: string }> {
  const file = sqliteFilename(config);
  if (file === null) throw new Error('the store is the PostgreSQL database in DATABASE_URL: back it up with pg_dump');
  await backupSqliteStore(file, destination, stopped);
  return { file };
}

/**
 * Where every rate-limiter-flexible limiter keeps its counters (the caller quota, failed authentications,
 * refusal events and upstream pacing), so all instances share them: Redis when REDIS_URL is set, else the
 * PostgreSQL store's database, else memory (upstream pacing in the embedded store, so a restart keeps it).
 */
export async function createLimiterBackend(config: Config, store: GatewayStore): Promise<LimiterBackend> {
  // ioredis and node-postgres are loaded only when they are used: the CLI on the embedded store starts without them.
  if (config.redisUrl) {
    const { RedisLimiters } = await import('./adapters/redis/limiters.js');
    return new RedisLimiters(config.redisUrl, config.redisKeyPrefix);
  }
  if (store instanceof SqliteStore) return sqliteLimiters(store);
  const { PostgresStore } = await import('./adapters/postgres/store.js');
  if (store instanceof PostgresStore) return postgresLimiters(store.pool);
  return memoryLimiters();
}

/** A logger for parts built before the HTTP server that owns the real one; each line goes to `target()` as it is then. */
function lateLogger(target: () => FastifyBaseLogger | undefined): WorkerLogger {
  return {
    info: (object, message) => target()?.info(object, message),
    warn: (object, message) => target()?.warn(object, message),
    error: (object, message) => target()?.error(object, message),
  };
}

/** The longest window Braze counts a rate limit over (an hour): see `maxWait` in createUpstream. */
const UPSTREAM_LONGEST_LIMIT_MS = 60 * 60_000;

/**
 * The longest a 429's time is followed. Braze counts its limits per minute or per clock hour, so no honest 429 asks
 * for longer than an hour; the gateway's own window, when longer, is waited out by every pause anyway.
 */
const longestUpstreamPauseMs = (config: Config): number => Math.max(UPSTREAM_LONGEST_LIMIT_MS, config.upstreamRateWindowSeconds * 1000);

/**
 * Upstream mode's adapters, imported only when it is on: undici alone is about a quarter of a CLI command's start-up,
 * and the gateway on the embedded store never calls it.
 */
async function importUpstreamAdapters() {
  const [{ BrazeClient }, { BrazeCampaignReader }, { BrazeDuplicator }, { UpstreamCircuit }] = await Promise.all([
    import('./adapters/braze-client.js'),
    import('./adapters/braze-campaign-reader.js'),
    import('./duplicators/braze.js'),
    import('./duplicators/upstream-circuit.js'),
  ]);
  return { BrazeClient, BrazeCampaignReader, BrazeDuplicator, UpstreamCircuit };
}

type UpstreamAdapters = Awaited<ReturnType<typeof importUpstreamAdapters>>;

/** Upstream mode: the one client (and socket pool) shared by the duplicator, the campaign reader and readiness. */
function createUpstream(
  { BrazeClient }: UpstreamAdapters,
  config: Config,
  clock: Clock,
  logger: BrazeClientOptions['logger'],
  observer: UpstreamObserver,
): BrazeClient | null {
  if (!config.upstreamUrl || !config.upstreamApiKey) return null;
  return new BrazeClient({
    baseUrl: config.upstreamUrl,
    apiKey: config.upstreamApiKey,
    timeoutMs: config.upstreamTimeoutMs,
    connectTimeoutMs: config.upstreamConnectTimeoutMs,
    connections: Math.max(4, config.workerConcurrency * 2),
    clock,
    logger,
    observer,
    maxWait: {
      rateLimitedMs: longestUpstreamPauseMs(config),
      // A 408's or 5xx's time holds back one job's retry: no longer than the backoff's own longest wait, so that
      // JOB_MAX_ATTEMPTS bounds how long a job keeps retrying whatever the upstream says.
      unavailableMs: RETRY_BACKOFF.backoffMaxMs,
    },
  });
}

/**
 * Failed authentications per client IP, counted on the shared limiter backend so every instance sees them. The CLI's
 * are `sharedOnly`: lifting a block in its own memory, while Redis is down, would lift none.
 */
export function createAuthFailureLimiter(config: Config, limiters: LimiterBackend, sharedOnly = false): AuthFailureLimiter {
  return new RateLimiterAuthFailures(
    limiters.limiter({ keyPrefix: 'auth-failures', points: config.authFailureLimit, durationSeconds: config.authFailureWindowSeconds, sharedOnly }),
    config.authFailureBlockSeconds,
  );
}

/**
 * Refusal events (PERMISSION_DENIED and API_KEY_REJECTED together) a key records per minute: enough to see any
 * mistake, too few to bury the log.
 */
const REFUSAL_EVENTS_PER_MINUTE = 10;
/**
 * Security event downloads a key may make per minute. Each one is recorded, and one of an empty range takes about a
 * millisecond: unbounded, a leaked reader key wrote 15,000 events in 10 s (4-5 GB of store an hour). Ten a minute is
 * more than any export or integration needs.
 */
export const SECURITY_EVENT_DOWNLOADS_PER_MINUTE = 10;

/** A start held up by another process (on DATA_DIR, on the migration lock), said before the logger exists. */
const startupWait = (message: string): void => void process.stderr.write(`campaign-gateway: ${message}\n`);

/** The composition root: every adapter is chosen here and nowhere else. */
export async function buildApp(config: Config, overrides: AppOverrides = {}): Promise<App> {
  // Imported here rather than with the module, and before anything is opened: the CLI shares the store's composition
  // above and would otherwise load the HTTP and GraphQL stack, twice its start-up time, for every command.
  const [{ GatewayMetrics }, { buildHttpServer }, upstreamAdapters] = await Promise.all([
    import('./http/metrics.js'),
    import('./http/server.js'),
    config.upstreamUrl ? importUpstreamAdapters() : null,
  ]);
  const clock = overrides.clock ?? systemClock;
  // The HTTP server owns the logger and is built last; these only log once it exists.
  let storeLog: FastifyBaseLogger | undefined;
  let upstreamLog: FastifyBaseLogger | undefined;
  let metricsLog: FastifyBaseLogger | undefined;
  let serviceLog: FastifyBaseLogger | undefined;
  // Before the logger exists, the store may bring an older schema up to date: said once the logger is there.
  let upgrade: (SchemaVersions & { durationMs: number }) | undefined;
  let unchecked: string | undefined;
  const store =
    overrides.store ??
    (await createStore(config, {
      olderSchema: 'upgrade',
      // A gateway still stopping on DATA_DIR (a rolling restart) is waited for as long as its stop may take.
      holdDataDir: { waitMs: longestStopMs(config), onWait: startupWait },
      onMigrationWait: startupWait,
      onWriterRestart: (error) => storeLog?.error({ err: error }, 'the SQLite writer thread died; a new one took over'),
      onUpgrade: (done) => (upgrade = done),
      onUnchecked: (reason) => (unchecked = reason),
      // A clock given to the gateway (tests drive leases and retries with a manual one) is the queue's time too.
      jobTime: overrides.clock ? 'caller' : 'database',
    }));
  const limiters = await createLimiterBackend(config, store);
  // What a later step opened, closed should one fail (the schema build, Apollo's start, …), before the limiters and the
  // store: a failed start leaves no timer, connection or SQLite writer thread behind, nor DATA_DIR held.
  const opened: (() => unknown)[] = [];
  try {
    await limiters.connect();
    // Before this process's worker exists, so none of the leases is its own: on an embedded store it holds, the jobs a
    // killed process left RUNNING are taken over by the first claim, as they would be once their leases ran out.
    await store.endOrphanedLeases?.(clock.now());
    const quota =
      overrides.quota ??
      new RateLimiterQuota(
        limiters.limiter({ keyPrefix: 'duplicate', points: config.duplicateRateLimit, durationSeconds: config.duplicateRateWindowSeconds }),
      );
    const downloads = new DownloadSlots({ perWorkspace: config.downloadConcurrencyPerWorkspace, perInstance: config.downloadConcurrency }, clock);
    const metrics = new GatewayMetrics({
      store,
      clock,
      downloadsInProgress: () => downloads.inProgress,
      logger: lateLogger(() => metricsLog),
      eventLoopWindowMs: overrides.eventLoopWindowMs,
    });
    opened.push(() => metrics.close());
    const upstreamClient = upstreamAdapters && createUpstream(upstreamAdapters, config, clock, lateLogger(() => upstreamLog), metrics.upstreamObserver);
    // Upstream mode: the client, and the pace every duplication sent through it keeps.
    const upstream = upstreamAdapters && upstreamClient && {
      adapters: upstreamAdapters,
      client: upstreamClient,
      pacer: new UpstreamPacer(
        overrides.upstreamLimiter ??
          // Paced by each instance on its own, N instances would send N times the limit, and miss each other's pauses.
          // Kept across restarts: a gateway restarted (crashing, redeployed) would otherwise send a fresh window's worth
          // at once, and forget a pause the upstream asked for.
          limiters.limiter({
            keyPrefix: 'upstream',
            points: config.upstreamRateLimit,
            durationSeconds: config.upstreamRateWindowSeconds,
            sharedOnly: true,
            durable: true,
          }),
        longestUpstreamPauseMs(config),
        lateLogger(() => upstreamLog),
      ),
      circuit: new upstreamAdapters.UpstreamCircuit(lateLogger(() => upstreamLog), clock),
    };
    if (upstream) opened.push(() => upstream.client.close());
    const campaigns: CampaignReader = upstream
      ? new upstream.adapters.BrazeCampaignReader(
          upstream.client,
          new RateLimiterQuota(
            limiters.limiter({ keyPrefix: 'upstream-reads', points: config.upstreamReadRateLimit, durationSeconds: config.upstreamReadRateWindowSeconds }),
          ),
        )
      : new StoreCampaignReader(store);
    const duplicator: Duplicator = upstream
      ? new upstream.adapters.BrazeDuplicator(upstream.client, upstream.pacer, upstream.circuit, lateLogger(() => upstreamLog), clock)
      : new LocalDuplicator(store, clock);

    let worker: JobWorker | undefined;
    const service = new GatewayService({
      store,
      quota,
      authFailures: createAuthFailureLimiter(config, limiters),
      refusalEvents: new RateLimiterBudget(
        overrides.refusalEventLimiter ??
          // Named for the first refusal it counted: the README documents the key, and renaming it would reset the budgets.
          limiters.limiter({ keyPrefix: 'denied-permission-events', points: REFUSAL_EVENTS_PER_MINUTE, durationSeconds: 60 }),
      ),
      downloadEvents: new RateLimiterBudget(
        limiters.limiter({ keyPrefix: 'security-event-downloads', points: SECURITY_EVENT_DOWNLOADS_PER_MINUTE, durationSeconds: 60 }),
      ),
      // Counted by each instance on its own: what it protects is this instance's event loop and connections, and
      // counting in a shared store would put a write on every read (on PostgreSQL, one row per workspace, locked until
      // its commit, which the workspace's reads would queue on).
      ...(config.readBudgetPerMinute > 0
        ? { readBudget: new RateLimiterBudget(memoryLimiter({ keyPrefix: 'reads', points: config.readBudgetPerMinute, durationSeconds: 60 })) }
        : {}),
      campaigns,
      clock,
      upstreamPause: upstream?.pacer,
      upstreamCircuit: upstream?.circuit,
      onJobEnqueued: () => worker?.notify(),
      idempotencyTtlMs: config.idempotencyTtlMs,
      onQuotaRejected: (channel) => metrics.quotaRejected(channel),
      onReadBudgetRefused: (channel) => metrics.readBudgetRefused(channel),
      onAuthFailed: (channel, code) => metrics.authFailed(channel, code),
      onAuthBlocked: (channel) => metrics.authBlocked(channel),
      onClientBlocked: (block) =>
        serviceLog?.warn(
          block,
          `blocked ${block.client} for ${block.blockSeconds} s after too many failed authentications (the last: ${block.reason}); ` +
            'every request from it is refused with 429 until then, or until ' +
            // In memory, the CLI cannot reach the block (clients unblock says so): only this instance's restart lifts it.
            (limiters.kind === 'memory' ? 'this instance restarts, which forgets every block' : `'npm run -s cli -- clients unblock ${block.client}'`),
        ),
      onDuplication: (channel, outcome) => metrics.duplication(channel, outcome),
      onEventUnrecorded: (type) => metrics.eventUnrecorded(type),
      keyUseLog: new RepeatedFailureLog(
        lateLogger(() => serviceLog),
        clock,
        {
          failed: "could not record the API key's last use",
          stillFailing: "API keys' last use still cannot be recorded",
          recovered: "API keys' last use is recorded again",
        },
        { warningsOnly: true },
      ),
      keyRejectionLog: new RepeatedFailureLog(
        lateLogger(() => serviceLog),
        clock,
        {
          failed: 'could not record a rejected API key as an API_KEY_REJECTED event',
          stillFailing: 'rejected API keys still cannot be recorded as events',
          recovered: 'rejected API keys are recorded as events again',
        },
        { warningsOnly: true },
      ),
      downloads,
    });
    const admin = new AdminService(store, clock);
    // Only a database server has a clock of its own to measure this instance's against; SQLite shares the instance's.
    const clockOffset = store.databaseTime ? new ClockOffset(() => store.databaseTime!(), clock) : undefined;
    const readiness = new Readiness(
      {
        store: {
          neededToServe: true,
          // The embedded store's reads are local and its check reads first: what is left to be slow is its write,
          // which a slow disk slows while the instance still serves. A database server that does not answer within
          // the 2 s is more likely unreachable (packets dropped) than slow: down then.
          ...(store.kind === 'sqlite' ? { downAfterMs: STORE_DOWN_AFTER_MS } : {}),
          check: async () => {
            await store.ping();
            // A newer version migrated the store under this one (a rolling upgrade): this one may misread what it writes.
            const newer = await store.newerSchema();
            if (newer) return { status: 'down', backend: store.kind, message: newer.message };
            // On the store's check, measured against the store's server: a note, as on Redis's eviction risk, not a failure.
            const skew = await clockOffset?.measure();
            return skew ? { status: 'up', backend: store.kind, message: skew } : { status: 'up', backend: store.kind };
          },
        },
        // A limiter backend that can fall back (Redis) reports itself degraded; one that fails cannot count.
        quota: {
          neededToServe: true,
          check: async () => {
            const status = await limiters.check();
            await quota.peek('readiness');
            return overrides.quota ? { ...status, backend: 'custom' } : status;
          },
        },
        ...(upstream ? { upstream: upstreamCheck(upstream.client, upstream.pacer, upstream.circuit, clock) } : {}),
      },
      clock,
      overrides.elapsedMs,
    );
    metrics.watchDependencies(() => readiness.report());
    if (upstream) {
      metrics.watchUpstreamPause(upstream.pacer);
      metrics.watchUpstreamCircuit(upstream.circuit);
    }
    if (clockOffset) metrics.watchClockOffset(clockOffset);
    const inFlight = new InFlight();
    const http = await buildHttpServer({
      config,
      service,
      metrics,
      inFlight,
      clock,
      logger: overrides.logger,
      logDestination: overrides.logDestination,
      downloadClientLimits: overrides.downloadClientLimits,
      queryReadScopes: store.kind === 'postgres',
      checkReady: () => readiness.report(),
      checkLive: () => {
        const reason = store.unrecoverable?.() ?? null;
        return reason === null ? null : `store: ${reason}; restart the process`;
      },
    });
    opened.push(() => http.close());
    limiters.logTo(http.log.child({ component: 'limits' }));
    readiness.logTo(http.log.child({ component: 'readiness' }));
    clockOffset?.logTo(http.log.child({ component: 'clock' }));
    upstreamLog = http.log.child({ component: 'upstream' });
    storeLog = http.log.child({ component: 'store' });
    if (config.misspelledVariables.length > 0) {
      http.log.warn(
        { variables: Object.fromEntries(config.misspelledVariables.map(({ name, meant }) => [name, meant])) },
        `the gateway reads no variable named ${config.misspelledVariables.map(({ name, meant }) => `${name} (did you mean ${meant}?)`).join(', ')}: it is ignored`,
      );
    }
    // On in production only when asked for: said at each start, since it lets anyone read the schema without a key.
    if (config.production && config.explorer) http.log.warn('the GraphQL explorer and introspection are on in production (GRAPHQL_EXPLORER=true)');
    if (upgrade) storeLog.info(upgrade, `upgraded the store's schema from version ${upgrade.from} to ${upgrade.to}`);
    if (unchecked) storeLog.warn(unchecked);
    // An existing DATA_DIR keeps its mode (one made by hand, or by a version that did not restrict it): said, not changed.
    const storeFile = overrides.store ? null : sqliteFilename(config);
    const shared = storeFile === null ? [] : sharedStorePaths(storeFile);
    if (shared.length > 0) {
      storeLog.warn(
        { paths: shared },
        `other users of this machine can read or write the embedded store, which holds key hashes and security events: ${shared
          .map(({ path, mode, fix }) => `${path} is mode ${mode} (${fix})`)
          .join(', ')}`,
      );
    }
    metricsLog = http.log.child({ component: 'metrics' });
    serviceLog = http.log.child({ component: 'service' });
    worker = new JobWorker(
      store,
      duplicator,
      clock,
      {
        concurrency: config.workerConcurrency,
        leaseMs: config.jobLeaseMs,
        pollIntervalMs: overrides.workerPollIntervalMs ?? 500,
        maxAttempts: config.jobMaxAttempts,
        ...RETRY_BACKOFF,
      },
      http.log.child({ component: 'worker' }),
      metrics.workerObserver,
    );
    const jobWorker = worker;
    const retention = new RetentionPruner(
      store,
      clock,
      {
        jobRetentionMs: config.jobRetentionMs,
        eventRetentionMs: config.eventRetentionMs,
        intervalMs: config.retentionIntervalMs,
        batchSize: 1000,
      },
      http.log.child({ component: 'retention' }),
      metrics.retentionObserver,
    );

    let closed: Promise<void> | undefined;
    return {
      config,
      http,
      service,
      admin,
      store,
      quotaBackend: overrides.quota ? 'custom' : limiters.kind,
      worker: jobWorker,
      retention,
      start: () => {
        jobWorker.start();
        retention.start();
      },
      close: () =>
        (closed ??= (async () => {
          const started = performance.now();
          // Load balancers see /readyz fail, and stop sending requests here, before the listener closes: until then
          // requests keep arriving and would meet refused connections.
          readiness.stop();
          if (config.shutdownDrainMs > 0) {
            http.log.info({ drainMs: config.shutdownDrainMs }, 'draining: /readyz answers 503 while requests are still served');
            await (overrides.drainWait ?? delay)(config.shutdownDrainMs);
          }
          // In-flight requests and running jobs finish side by side, both within the grace period. A connection
          // still busy when it ends (a client sending its body slowly, a download read slowly) is cut, or close()
          // would wait for it. A download is given the grace like any request: most end well within it, and one cut
          // must be started again from its first row.
          const cutConnections = setTimeout(() => {
            http.log.warn({ graceMs: config.shutdownGraceMs, ...inFlight.summary() }, 'the shutdown grace period ended: cutting the connections still open');
            http.server.closeAllConnections();
          }, config.shutdownGraceMs);
          await Promise.all([
            http.close().finally(() => clearTimeout(cutConnections)),
            retention.stop(),
            jobWorker.stop(config.shutdownGraceMs),
          ]);
          metrics.close();
          await upstream?.client.close();
          await limiters.close();
          await store.close();
          http.log.info({ durationMs: Math.round(performance.now() - started) }, 'stopped');
        })()),
    };
  } catch (error) {
    for (const close of opened.reverse()) await Promise.resolve().then(close).catch(() => undefined);
    await limiters.close();
    if (!overrides.store) await store.close();
    throw error;
  }
}

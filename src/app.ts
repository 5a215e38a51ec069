import 'reflect-metadata';
import { join } from 'node:path';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import { PostgresStore } from './adapters/postgres/store.js';
import { givenQuota, memoryQuota, postgresQuota, type QuotaBackend } from './adapters/quota-backends.js';
import { RedisQuota } from './adapters/redis/quota.js';
import { SqliteStore } from './adapters/sqlite/store.js';
import { StoreCampaignReader } from './adapters/store-campaign-reader.js';
import type { Config } from './config.js';
import { AdminService } from './domain/admin.js';
import { systemClock, type CampaignReader, type Clock, type Duplicator, type GatewayStore, type Quota } from './domain/ports.js';
import { GatewayService } from './domain/service.js';
import { LocalDuplicator } from './duplicators/local.js';
import { buildHttpServer } from './http/server.js';
import { RetentionPruner } from './jobs/retention.js';
import { JobWorker } from './jobs/worker.js';
import { checkDependencies } from './readiness.js';

export interface App {
  config: Config;
  http: FastifyInstance;
  service: GatewayService;
  admin: AdminService;
  store: GatewayStore;
  worker: JobWorker;
  retention: RetentionPruner;
  /** Starts the background work: the worker and the retention pruner. */
  start(): void;
  /** Stops the worker (handing back unfinished jobs), the HTTP server and the stores. */
  close(): Promise<void>;
}

export interface AppOverrides {
  store?: GatewayStore;
  quota?: Quota;
  clock?: Clock;
  logger?: FastifyServerOptions['logger'];
}

/** PostgreSQL when DATABASE_URL is set (several instances can share it), the embedded SQLite file otherwise. */
export async function createStore(config: Config): Promise<GatewayStore> {
  const store = config.databaseUrl
    ? new PostgresStore({ connectionString: config.databaseUrl })
    : new SqliteStore({ filename: join(config.dataDir, 'gateway.db') });
  try {
    await store.migrate();
  } catch (error) {
    await store.close();
    throw error;
  }
  return store;
}

/** Redis when REDIS_URL is set, else the PostgreSQL store's database, else this process's memory. */
export function createQuota(config: Config, store: GatewayStore): QuotaBackend {
  const settings = { points: config.duplicateRateLimit, durationSeconds: config.duplicateRateWindowSeconds };
  if (config.redisUrl) return new RedisQuota(config.redisUrl, settings);
  if (store instanceof PostgresStore) return postgresQuota(store.pool, settings);
  return memoryQuota(settings);
}

/** The composition root: every adapter is chosen here and nowhere else. */
export async function buildApp(config: Config, overrides: AppOverrides = {}): Promise<App> {
  const clock = overrides.clock ?? systemClock;
  const store = overrides.store ?? (await createStore(config));
  const quotaBackend = overrides.quota ? givenQuota(overrides.quota) : createQuota(config, store);
  const quota = quotaBackend.quota;
  const campaigns: CampaignReader = new StoreCampaignReader(store);
  const duplicator: Duplicator = new LocalDuplicator(store, clock);

  let worker: JobWorker | undefined;
  const service = new GatewayService({
    store,
    quota,
    campaigns,
    clock,
    onJobEnqueued: () => worker?.notify(),
    idempotencyTtlMs: config.idempotencyTtlMs,
  });
  const admin = new AdminService(store, clock);
  const http = await buildHttpServer({
    config,
    service,
    logger: overrides.logger,
    checkReady: () =>
      checkDependencies({
        store: async () => {
          await store.ping();
          return { status: 'ok', backend: store.kind };
        },
        quota: () => quotaBackend.check(),
      }),
  });
  quotaBackend.logTo(http.log.child({ component: 'quota' }));
  worker = new JobWorker(
    store,
    duplicator,
    clock,
    {
      concurrency: config.workerConcurrency,
      leaseMs: config.jobLeaseMs,
      pollIntervalMs: 500,
      maxAttempts: config.jobMaxAttempts,
      backoffBaseMs: 1000,
      backoffMaxMs: 5 * 60_000,
    },
    http.log.child({ component: 'worker' }),
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
  );

  let closed: Promise<void> | undefined;
  return {
    config,
    http,
    service,
    admin,
    store,
    worker: jobWorker,
    retention,
    start: () => {
      jobWorker.start();
      retention.start();
    },
    close: () =>
      (closed ??= (async () => {
        // In-flight requests and running jobs finish side by side, both within the grace period.
        await Promise.all([http.close(), retention.stop(), jobWorker.stop(config.shutdownGraceMs)]);
        await quotaBackend.close();
        await store.close();
      })()),
  };
}

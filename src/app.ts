import 'reflect-metadata';
import { join } from 'node:path';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import { RateLimiterAuthFailures } from './adapters/rate-limiter-auth-failures.js';
import { RateLimiterQuota } from './adapters/rate-limiter-quota.js';
import { SqliteStore } from './adapters/sqlite/store.js';
import { StoreCampaignReader } from './adapters/store-campaign-reader.js';
import type { Config } from './config.js';
import { AdminService } from './domain/admin.js';
import {
  systemClock,
  type AuthFailureLimiter,
  type CampaignReader,
  type Clock,
  type Duplicator,
  type GatewayStore,
  type Quota,
} from './domain/ports.js';
import { GatewayService } from './domain/service.js';
import { LocalDuplicator } from './duplicators/local.js';
import { buildHttpServer } from './http/server.js';
import { RetentionPruner } from './jobs/retention.js';
import { JobWorker } from './jobs/worker.js';

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

/** The embedded store unless DATABASE_URL says otherwise. */
export async function createStore(config: Config): Promise<GatewayStore> {
  const store = new SqliteStore({ filename: join(config.dataDir, 'gateway.db') });
  await store.migrate();
  return store;
}

function createQuota(config: Config): Quota {
  return new RateLimiterQuota(
    new RateLimiterMemory({
      keyPrefix: 'duplicate',
      points: config.duplicateRateLimit,
      duration: config.duplicateRateWindowSeconds,
    }),
  );
}

/** Failed authentications per client IP: counted in this process. */
function createAuthFailureLimiter(config: Config): AuthFailureLimiter {
  return new RateLimiterAuthFailures(
    new RateLimiterMemory({ keyPrefix: 'auth-failures', points: config.authFailureLimit, duration: config.authFailureWindowSeconds }),
    config.authFailureBlockSeconds,
  );
}

/** The composition root: every adapter is chosen here and nowhere else. */
export async function buildApp(config: Config, overrides: AppOverrides = {}): Promise<App> {
  const clock = overrides.clock ?? systemClock;
  const store = overrides.store ?? (await createStore(config));
  const quota = overrides.quota ?? createQuota(config);
  const campaigns: CampaignReader = new StoreCampaignReader(store);
  const duplicator: Duplicator = new LocalDuplicator(store, clock);

  let worker: JobWorker | undefined;
  const service = new GatewayService({
    store,
    quota,
    authFailures: createAuthFailureLimiter(config),
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
    checkReady: () => store.ping(),
  });
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
        await http.close();
        await retention.stop();
        await jobWorker.stop();
        await store.close();
      })()),
  };
}

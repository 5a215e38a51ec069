import type pg from 'pg';
import { RateLimiterMemory, RateLimiterPostgres } from 'rate-limiter-flexible';
import type { Quota } from '../domain/ports.js';
import type { DependencyStatus } from '../readiness.js';
import { RateLimiterQuota } from './rate-limiter-quota.js';

export interface QuotaSettings {
  points: number;
  durationSeconds: number;
}

export interface QuotaLogger {
  info(object: object, message: string): void;
  warn(object: object, message: string): void;
}

/** A quota together with what it runs on: how that is doing, and how to let go of it. */
export interface QuotaBackend {
  readonly quota: Quota;
  check(): Promise<DependencyStatus>;
  /** From now on, report changes of the backend's health (and the current trouble, if any) to `logger`. */
  logTo(logger: QuotaLogger): void;
  close(): Promise<void>;
}

export const KEY_PREFIX = 'duplicate';

export const memoryLimiter = (settings: QuotaSettings) =>
  new RateLimiterMemory({ keyPrefix: KEY_PREFIX, points: settings.points, duration: settings.durationSeconds });

/** A quota whose state lives somewhere whose health is covered by another check (or needs none). */
function plainBackend(quota: Quota, backend: string): QuotaBackend {
  return {
    quota,
    check: async () => ({ status: 'ok', backend }),
    logTo: () => undefined,
    close: async () => undefined,
  };
}

/** Per process: right for one instance, not shared between several. */
export const memoryQuota = (settings: QuotaSettings): QuotaBackend => plainBackend(new RateLimiterQuota(memoryLimiter(settings)), 'memory');

/** Shared by every instance through the store's database (the `rate_limits` table its migrations create). */
export const postgresQuota = (pool: pg.Pool, settings: QuotaSettings): QuotaBackend =>
  plainBackend(
    new RateLimiterQuota(
      new RateLimiterPostgres({
        storeClient: pool,
        storeType: 'pool',
        tableName: 'rate_limits',
        tableCreated: true,
        keyPrefix: KEY_PREFIX,
        points: settings.points,
        duration: settings.durationSeconds,
      }),
    ),
    'postgres',
  );

/** Whatever quota the caller supplied. */
export const givenQuota = (quota: Quota): QuotaBackend => plainBackend(quota, 'custom');

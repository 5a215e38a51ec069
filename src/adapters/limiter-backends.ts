import type pg from 'pg';
import { RateLimiterMemory, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { DependencyStatus } from '../readiness.js';
import { inWindow, type LimiterWindow } from './limiter-window.js';
import { DatabaseTimeRateLimiterPostgres } from './postgres/database-time-limiter.js';
import { SqliteRateLimiter, type CounterTable } from './sqlite/rate-limiter.js';

export interface LimiterSettings {
  /** Keeps the counters of different limiters apart in a shared store. */
  keyPrefix: string;
  points: number;
  durationSeconds: number;
  /**
   * Fail its calls while the shared store cannot be reached, rather than count them in each instance on its own
   * (Redis's in-process fallback): for a limit that must hold for the instances together, as upstream pacing.
   */
  sharedOnly?: boolean;
  /**
   * Keep the counters across a restart on the embedded store too, whose other limiters count in memory: for upstream
   * pacing, which a restart must not reset (Redis and PostgreSQL keep every limiter's).
   */
  durable?: boolean;
}

export interface LimiterLogger {
  info(object: object, message: string): void;
  warn(object: object, message: string): void;
}

/**
 * Where rate-limiter-flexible keeps its counters: the caller quota, failed authentications, refusal events
 * and upstream pacing all take their limiters from one backend, so several instances share them.
 */
export interface LimiterBackend {
  /** Where the counters are: memory (on the embedded store, but for `durable` limiters), postgres or redis. */
  readonly kind: string;
  limiter(settings: LimiterSettings): RateLimiterAbstract;
  /**
   * At start: resolves once the backend answers, or cannot be reached yet (the instance then starts degraded
   * and reconnects by itself); rejects when it refuses the credentials it was given, which no retry fixes.
   */
  connect(): Promise<void>;
  check(): Promise<DependencyStatus>;
  /** From now on, report changes of the backend's health (and the current trouble, if any) to `logger`. */
  logTo(logger: LimiterLogger): void;
  close(): Promise<void>;
}

interface MemoryRecord {
  value: number;
  expiresAt: number | null;
}

/** RateLimiterMemory whose results carry their LimiterWindow. */
class WindowedMemoryLimiter extends RateLimiterMemory {
  /** The key's record while its window lasts: the library makes a new one for each window. */
  private current(rlKey: string): MemoryRecord | undefined {
    const storage = (this as unknown as { _memoryStorage: { _storage: Map<string, MemoryRecord> } })._memoryStorage._storage;
    const record = storage.get(rlKey);
    return record && (record.expiresAt === null || record.expiresAt > Date.now()) ? record : undefined;
  }

  /** Read right after the library's call, which changes the record synchronously, before any other call can. */
  private windowNow(key: string | number): LimiterWindow | undefined {
    const rlKey = this.getKey(key);
    const record = this.current(rlKey);
    if (!record) return undefined;
    return {
      end: record.expiresAt,
      giveBack: async (points) => {
        if (this.current(rlKey) !== record) return false;
        record.value -= points;
        return true;
      },
    };
  }

  private counted<T extends RateLimiterRes | null>(key: string | number, result: Promise<T>): Promise<T> {
    const window = this.windowNow(key);
    if (!window) return result;
    return result.then(
      (res) => res && inWindow(res, window),
      (rejection: unknown) => {
        throw rejection instanceof RateLimiterRes ? inWindow(rejection, window) : rejection;
      },
    );
  }

  override consume(key: string | number, points?: number, options?: { [key: string]: unknown }): Promise<RateLimiterRes> {
    return this.counted(key, super.consume(key, points, options));
  }

  override get(key: string | number, options?: { [key: string]: unknown }): Promise<RateLimiterRes | null> {
    // The library keeps a record until a timer drops it, and reads it as counting meanwhile: a window over counts nothing.
    if (!this.current(this.getKey(key))) return Promise.resolve(null);
    return this.counted(key, super.get(key, options));
  }
}

export const memoryLimiter = (settings: LimiterSettings): RateLimiterAbstract =>
  new WindowedMemoryLimiter({ keyPrefix: settings.keyPrefix, points: settings.points, duration: settings.durationSeconds });

/** Per process: right for one instance, not shared between several. */
export const memoryLimiters = (): LimiterBackend => ({
  kind: 'memory',
  limiter: memoryLimiter,
  connect: async () => undefined,
  check: async () => ({ status: 'up', backend: 'memory' }),
  logTo: () => undefined,
  close: async () => undefined,
});

/**
 * On the embedded store: in memory, but for `durable` limiters, whose counters are in the store's file. Writing the
 * others' there would put a write on every accepted request's path (the quota), beside the jobs' on the writer thread.
 */
export const sqliteLimiters = (table: CounterTable): LimiterBackend => ({
  ...memoryLimiters(),
  limiter: (settings) =>
    settings.durable
      ? new SqliteRateLimiter(table, { keyPrefix: settings.keyPrefix, points: settings.points, duration: settings.durationSeconds })
      : memoryLimiter(settings),
});

/**
 * The pool as rate-limiter-flexible's store, its statements unnamed. It names them (`rate_limits:rlflx-upsert` …),
 * so that each connection prepares them once; behind a pooler in transaction mode a connection's statements run in
 * whichever server session is free, where another connection may have prepared the same name already (42P05) or
 * this one's is missing (26000). Unnamed, a statement is prepared where it runs, which took no measurable time more.
 */
const unnamedStatements = (pool: pg.Pool) => ({
  query: (query: pg.QueryConfig) => pool.query({ text: query.text, values: query.values }),
});

/** Shared by every instance through the store's database (the `rate_limits` table its migrations create). */
export const postgresLimiters = (pool: pg.Pool): LimiterBackend => ({
  kind: 'postgres',
  limiter: (settings) =>
    new DatabaseTimeRateLimiterPostgres({
      storeClient: unnamedStatements(pool),
      storeType: 'pool',
      tableName: 'rate_limits',
      tableCreated: true,
      keyPrefix: settings.keyPrefix,
      points: settings.points,
      duration: settings.durationSeconds,
    }),
  // The store has connected (and migrated) already, and its own readiness check covers the database.
  connect: async () => undefined,
  check: async () => ({ status: 'up', backend: 'postgres' }),
  logTo: () => undefined,
  close: async () => undefined,
});

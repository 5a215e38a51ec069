import { createRequire } from 'node:module';
import { RateLimiterRes } from 'rate-limiter-flexible';

// The base of the library's own store limiters: typed, but not exported by its entry.
const RateLimiterStoreAbstract = createRequire(import.meta.url)(
  'rate-limiter-flexible/lib/RateLimiterStoreAbstract.js',
) as typeof import('rate-limiter-flexible').RateLimiterStoreAbstract;

/** A row of `rate_limits`: the points counted in the window, and when it ends (epoch ms; null: never). */
export interface CounterRow {
  points: number;
  expire: number | null;
}

/** Where the embedded store keeps rate-limiter-flexible's counters (SqliteStore). */
export interface CounterTable {
  upsertCounter(key: string, points: number, msDuration: number, forceExpire: boolean): Promise<CounterRow>;
  /** The counter while its window lasts. */
  readCounter(key: string): Promise<CounterRow | null>;
  deleteCounter(key: string): Promise<boolean>;
}

/**
 * A limiter whose counters are in the embedded store's file, so a restart keeps them. Not the library's
 * RateLimiterSQLite: it runs its statements synchronously on a connection of the caller's, a second writer beside
 * the writer thread, waiting for its lock on the event loop and outside its checks (a file replaced under the store,
 * storage failures). Here the writes go to the writer thread like every other, and the reads to the store's reads'
 * connection; the statements and results are the library's. These are the methods rate-limiter-flexible has a
 * custom store implement.
 */
export class SqliteRateLimiter extends RateLimiterStoreAbstract {
  constructor(
    private readonly table: CounterTable,
    options: { keyPrefix: string; points: number; duration: number },
  ) {
    super({ ...options, storeClient: table });
  }

  _upsert(key: string, points: number, msDuration: number, forceExpire = false): Promise<CounterRow> {
    return this.table.upsertCounter(key, points, msDuration, forceExpire);
  }

  _get(key: string): Promise<CounterRow | null> {
    return this.table.readCounter(key);
  }

  _delete(key: string): Promise<boolean> {
    return this.table.deleteCounter(key);
  }

  _getRateLimiterRes(_key: string, changedPoints: number, row: CounterRow): RateLimiterRes {
    const isFirstInDuration = changedPoints === row.points;
    const consumedPoints = isFirstInDuration ? changedPoints : row.points;
    const msBeforeNext = row.expire === null ? -1 : Math.max(row.expire - Date.now(), 0);
    return new RateLimiterRes(Math.max(this.points - consumedPoints, 0), msBeforeNext, consumedPoints, isFirstInDuration);
  }
}

import { RateLimiterPostgres, RateLimiterRes } from 'rate-limiter-flexible';
import { inWindow } from '../limiter-window.js';

/** The database server's time in epoch milliseconds, as the `expire` column holds it: one time for the statement. */
const NOW_MS = '(extract(epoch FROM statement_timestamp()) * 1000)::bigint';

interface CounterRow {
  points: number;
  /** bigint: pg gives it as a string. */
  expire: string | null;
  now: string;
}

/**
 * RateLimiterPostgres with its windows kept by the database server's clock. The library takes them from each
 * instance's (`Date.now()` in its statements): an instance 90 s ahead found every window opened by the others already
 * over and granted a second quota within the minute, and its failed authentications reset another's block. These
 * are the methods rate-limiter-flexible has a custom store implement (`_upsert`, `_get`, `_getRateLimiterRes`) and
 * its pruning of expired counters, on the same table with the same semantics but for the clock. The time left in a
 * window is measured on that clock too, so `Retry-After` is right whatever the instance's. Its results carry their
 * LimiterWindow, identified by the row's `expire`.
 */
export class DatabaseTimeRateLimiterPostgres extends RateLimiterPostgres {
  private table(): string {
    return (this as unknown as { _getTableIdentifier(): string })._getTableIdentifier();
  }

  private query(name: string, text: string, values: unknown[]): Promise<{ rows: CounterRow[]; rowCount: number | null }> {
    return (this as unknown as { _query(query: { name: string; text: string; values: unknown[] }): Promise<{ rows: CounterRow[]; rowCount: number | null }> })._query({ name, text, values });
  }

  /** The library asks for counters expired before an instant on this instance's clock: as long ago on the database's. */
  clearExpired(expire: number): Promise<void> {
    return this.query('clear-expired', `DELETE FROM ${this.table()} WHERE expire < ${NOW_MS} - $1::bigint`, [Date.now() - expire]).then(
      () => undefined,
      // As in the library: counters left behind are only rows, deleted at the next pass.
      () => undefined,
    );
  }

  _upsert(key: string, points: number, msDuration: number, forceExpire = false) {
    const table = this.table();
    // A window of no duration never ends (expire NULL), as in the library.
    const newExpire = `CASE WHEN $3::bigint > 0 THEN ${NOW_MS} + $3::bigint END`;
    const over = `(${table}.expire <= ${NOW_MS} OR $4::boolean)`;
    return this.query(
      forceExpire ? 'upsert-force' : 'upsert',
      `INSERT INTO ${table} (key, points, expire) VALUES ($1, $2, ${newExpire})
       ON CONFLICT (key) DO UPDATE SET
         points = CASE WHEN ${over} THEN $2 ELSE ${table}.points + $2 END,
         expire = CASE WHEN ${over} THEN ${newExpire} ELSE ${table}.expire END
       RETURNING points, expire, ${NOW_MS} AS now`,
      [key, points, msDuration, forceExpire],
    );
  }

  async _get(key: string) {
    const result = await this.query(
      'get',
      `SELECT points, expire, ${NOW_MS} AS now FROM ${this.table()} WHERE key = $1 AND (expire > ${NOW_MS} OR expire IS NULL)`,
      [key],
    );
    return result.rowCount === 0 ? null : result;
  }

  _getRateLimiterRes(key: string, changedPoints: number, result: { rows: CounterRow[] }) {
    const [row] = result.rows;
    const isFirstInDuration = changedPoints === row.points;
    const consumedPoints = isFirstInDuration ? changedPoints : row.points;
    const msBeforeNext = row.expire === null ? -1 : Math.max(Number(row.expire) - Number(row.now), 0);
    const res = new RateLimiterRes(Math.max(this.points - consumedPoints, 0), msBeforeNext, consumedPoints, isFirstInDuration);
    return inWindow(res, { end: row.expire === null ? null : Number(row.expire), giveBack: (points) => this.giveBack(key, points, row.expire) });
  }

  /** Gives points back to the counter while its window is the one that ended at `expire`, and has not ended yet. */
  private async giveBack(key: string, points: number, expire: string | null): Promise<boolean> {
    const result = await this.query(
      'give-back',
      `UPDATE ${this.table()} SET points = points - $2
       WHERE key = $1 AND expire IS NOT DISTINCT FROM $3::bigint AND (expire > ${NOW_MS} OR expire IS NULL)
       RETURNING points, expire, ${NOW_MS} AS now`,
      [key, points, expire],
    );
    return result.rowCount === 1;
  }
}

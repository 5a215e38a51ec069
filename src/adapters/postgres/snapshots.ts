import type pg from 'pg';
import { dependencyUnavailable, isStoreBusy, isUnavailable } from '../../domain/errors.js';
import { openReadScope, type ReadScope } from '../../domain/read-scope.js';
import { asOutage } from './outage.js';
import type { Queryable } from './pool.js';

interface Snapshot {
  client: pg.PoolClient;
  /** The first statement of the snapshot that failed: it aborted the transaction, so later reads fail with it. */
  failed?: unknown;
  /** Being given up: a read still arriving (work the operation left running) is read on its own. */
  closing?: boolean;
  /**
   * The end of the last statement given to the connection: the next one is sent after it, since node-postgres
   * deprecates a query given to a client already running one (pg@9 refuses it). Never fails.
   */
  last: Promise<void>;
}

/**
 * The reads of an open read scope (domain/read-scope.ts) in one REPEATABLE READ READ ONLY transaction, begun at
 * the scope's first read and committed when it ends: every statement of it sees the database as of its first one.
 * Its connection is held for the scope's length, and meanwhile the operation may write on another (an event, a key's
 * last use, the quota): with every connection of the pool held by a snapshot, each waiting for a second one, none
 * would ever get one. So snapshots hold at most one connection fewer than the pool has, and a pool of one
 * connection reads each statement on its own. A query that finds them all held waits for one as long as for a
 * connection of the pool (`waitMs`), and is then refused as the pool's exhaustion is: UNAVAILABLE, 503 with
 * Retry-After.
 */
export class Snapshots {
  private readonly held = new WeakMap<ReadScope, Promise<Snapshot>>();
  private readonly enabled: boolean;
  private free: number;
  private readonly waiting = new Set<() => void>();

  constructor(
    private readonly pool: pg.Pool,
    poolSize: number,
    private readonly waitMs: number,
  ) {
    this.enabled = poolSize > 1;
    this.free = poolSize - 1;
  }

  /** The queries waiting for a snapshot's connection now, every one the snapshots may hold being held. */
  get waitingCount(): number {
    return this.waiting.size;
  }

  /** Where a read goes: the open scope's snapshot, if it is made in one, or else `alone`. */
  reads(alone: Queryable): Queryable {
    const scope = openReadScope();
    if (scope === undefined || !this.enabled) return alone;
    return { query: ((text: string, values?: unknown[]) => this.query(scope, alone, text, values)) as Queryable['query'] };
  }

  private async query(scope: ReadScope, alone: Queryable, text: string, values?: unknown[]): Promise<pg.QueryResult> {
    let opening = this.held.get(scope);
    if (opening === undefined) {
      opening = this.open();
      this.held.set(scope, opening);
      const begun = opening;
      scope.onEnd(() => begun.then((snapshot) => this.close(snapshot), () => undefined));
    }
    const snapshot = await opening;
    if (snapshot.closing) return alone.query(text, values);
    return this.inOrder(snapshot, async () => {
      if (snapshot.failed !== undefined) throw asOutage(snapshot.failed);
      try {
        return await snapshot.client.query(text, values);
      } catch (error) {
        snapshot.failed ??= error;
        throw asOutage(error);
      }
    });
  }

  /** Runs `statement` once every statement given to the snapshot before it has ended, however they did. */
  private inOrder<T>(snapshot: Snapshot, statement: () => Promise<T>): Promise<T> {
    const result = snapshot.last.then(statement);
    snapshot.last = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  private async open(): Promise<Snapshot> {
    await this.take();
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (error) {
      this.give();
      throw asOutage(error);
    }
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    } catch (error) {
      client.release(error as Error);
      this.give();
      throw asOutage(error);
    }
    return { client, last: Promise.resolve() };
  }

  /** A connection lost or silent takes no COMMIT (the server ends the transaction with it) and is not reused. */
  private async close(snapshot: Snapshot): Promise<void> {
    snapshot.closing = true;
    const { client } = snapshot;
    let broken: Error | undefined;
    try {
      // After the statements given to it already, whose failure may have broken the connection.
      await this.inOrder(snapshot, async () => {
        const { failed } = snapshot;
        const answer = asOutage(failed);
        // One that only waited too long for a lock (a table a migration holds) works: its COMMIT rolls it back.
        broken = failed !== undefined && isUnavailable(answer) && !isStoreBusy(answer) ? (failed as Error) : undefined;
        if (broken === undefined) await client.query('COMMIT');
      });
    } catch (error) {
      broken = error as Error;
    } finally {
      client.release(broken);
      this.give();
    }
  }

  private take(): Promise<void> {
    if (this.free > 0) {
      this.free -= 1;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const taken = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiting.delete(taken);
        reject(dependencyUnavailable(new Error("timeout exceeded waiting for a connection for a query's snapshot")));
      }, this.waitMs);
      this.waiting.add(taken);
    });
  }

  /** The first query still waiting takes the connection given back (a Set iterates in insertion order). */
  private give(): void {
    const [next] = this.waiting;
    if (next) {
      this.waiting.delete(next);
      next();
    } else this.free += 1;
  }
}

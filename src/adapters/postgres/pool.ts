import pg from 'pg';
import { isUnavailable } from '../../domain/errors.js';
import { asOutage } from './outage.js';

export interface PostgresOptions {
  connectionString: string;
  /** Keep the tables in this schema instead of the role's default search_path (tests use one per run). */
  schema?: string;
  /** Connections per process; several instances share the server's max_connections. */
  poolSize?: number;
  /**
   * How long a query waits for the server's answer before its connection is given up. The statement timeout
   * is the server's own and needs a server that answers: one whose packets are dropped on a connection the
   * pool already holds would otherwise leave the query, and the request behind it, waiting for good.
   */
  queryTimeoutMs?: number;
  /** The schema's migrations, this version's unless a test stands for another version with its list. */
  migrations?: readonly string[];
}

/** No statement runs longer than this, waits for locks included. */
const STATEMENT_TIMEOUT_MS = 10_000;
/** How long a request waits for a connection (new or from the pool) before it fails. */
const CONNECTION_TIMEOUT_MS = 10_000;
/** Past the statement timeout, for the server's own cancellation to arrive first. */
const QUERY_TIMEOUT_MARGIN_MS = 2_000;

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** Connection settings shared by the pool and the migration connection. */
export function clientConfig(options: PostgresOptions): pg.ClientConfig {
  if (options.schema !== undefined && !SCHEMA_NAME.test(options.schema)) {
    throw new Error(`invalid schema name '${options.schema}'`);
  }
  return {
    connectionString: options.connectionString,
    application_name: 'campaign-gateway',
    keepAlive: true,
    connectionTimeoutMillis: CONNECTION_TIMEOUT_MS,
    // A crashed or stuck caller must not keep rows locked; the lease mechanism takes over instead.
    idle_in_transaction_session_timeout: 60_000,
    ...(options.schema ? { options: `-c search_path=${options.schema}` } : {}),
  };
}

export function createPool(options: PostgresOptions): pg.Pool {
  const pool = new pg.Pool({
    ...clientConfig(options),
    max: options.poolSize ?? 10,
    idleTimeoutMillis: 30_000,
    statement_timeout: STATEMENT_TIMEOUT_MS,
    query_timeout: options.queryTimeoutMs ?? STATEMENT_TIMEOUT_MS + QUERY_TIMEOUT_MARGIN_MS,
  });
  // Idle connections die when the server restarts. Without a listener that would crash the process; the pool
  // drops them, the next query opens a new one, and /readyz shows whether that works.
  pool.on('error', () => undefined);
  return pool;
}

export type Queryable = Pick<pg.PoolClient, 'query'>;

const rethrowAsOutage = (error: unknown): never => {
  throw asOutage(error);
};

/** The pool's queries, a lost or unreachable server reported as UNAVAILABLE (outage.ts). */
export function queriesOf(pool: pg.Pool): Queryable {
  return { query: ((text: string, values?: unknown[]) => pool.query(text, values).catch(rethrowAsOutage)) as Queryable['query'] };
}

/**
 * Runs `work` in one transaction on one connection; rolls back when it throws. A lost or unreachable server
 * is reported as UNAVAILABLE.
 */
export async function transaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect().catch(rethrowAsOutage);
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    const answer = asOutage(error);
    // A connection that is lost or stopped answering takes no ROLLBACK: the server rolls back when it goes.
    if (isUnavailable(answer)) broken = error as Error;
    else {
      await client.query('ROLLBACK').catch((rollbackError: Error) => {
        broken = rollbackError;
      });
    }
    throw answer;
  } finally {
    // A connection that could not roll back is discarded rather than reused.
    client.release(broken);
  }
}

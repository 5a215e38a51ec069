import pg from 'pg';
import { dependencyUnavailable, isUnavailable } from '../../domain/errors.js';
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
  // The server ends connections on restart, fast shutdown or pg_terminate_backend (57P01), and the network can
  // drop them, whatever they are doing. An 'error' event nobody listens for would end the process, and the pool
  // listens only while a connection is idle, so each one has a listener of its own for its whole life too. The
  // pool drops a dead idle connection; a checked-out one fails its next query, which is where it is reported
  // (see transaction()); the next query opens a new connection, and /readyz shows whether that works.
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
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
  // The connection's own error, once it is lost. Lost between two statements, it fails the next one with pg's
  // "not queryable", which says nothing of why: the server's error (57P01 …) is the one worth reporting.
  let lost: Error | undefined;
  const onLost = (error: Error) => {
    lost ??= error;
  };
  client.on('error', onLost);
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    // The transaction went with its connection, whatever `work` made of that.
    const answer = lost ? dependencyUnavailable(lost) : asOutage(error);
    // A connection that is lost or stopped answering takes no ROLLBACK: the server rolls back when it goes.
    if (isUnavailable(answer)) broken = lost ?? (error as Error);
    else {
      await client.query('ROLLBACK').catch((rollbackError: Error) => {
        broken = rollbackError;
      });
    }
    throw answer;
  } finally {
    client.off('error', onLost);
    // A connection that could not roll back is discarded rather than reused.
    client.release(broken);
  }
}

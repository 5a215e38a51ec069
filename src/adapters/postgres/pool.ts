import pg from 'pg';
import { dependencyUnavailable, isStoreBusy, isUnavailable } from '../../domain/errors.js';
import { asOutage, startupFailure } from './outage.js';

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
  /** How long a connection is waited for, new or from the pool (a query's snapshot waits as long for its own). */
  connectionTimeoutMs?: number;
  /** The schema's migrations, this version's unless a test stands for another version with its list. */
  migrations?: readonly string[];
  /** What a connection of the gateway's is on the server's side (DATABASE_POOL_MODE); `session` unless set. */
  poolMode?: PoolMode;
}

/**
 * `session`: each connection is a server session of its own for as long as it lasts, directly or through a pooler
 * in session mode (PgBouncer's `pool_mode = session`). `transaction`: a pooler in transaction mode gives each
 * transaction, and each statement outside one, whichever server session is free.
 */
export type PoolMode = 'session' | 'transaction';

/** Connections per process, unless the options say. */
export const DEFAULT_POOL_SIZE = 10;
/** No statement runs longer than this, waits for locks included. */
const STATEMENT_TIMEOUT_MS = 10_000;
/**
 * How long a statement of the pool's waits for one lock (a row, a table) before the server cancels it with 55P03, which
 * is answered UNAVAILABLE: a wait this long is a transaction that holds the lock and does not end (an instance frozen in
 * the middle of a write), where the statement timeout's 57014 could not be told from a slow query. Under half the
 * statement timeout, since a statement waits for a row twice at most, each wait bounded on its own (first for its place
 * among the row's waiters, then for the transaction holding it), and it must end at the lock timeout first. Ordinary
 * waits for a row take milliseconds. The waits the gateway makes by design (the event lock, the migrations) set their own.
 */
export const LOCK_TIMEOUT_MS = 4_000;
/** A crashed or stuck caller must not keep rows locked; the lease mechanism takes over instead. */
const IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000;
/** How long a request waits for a connection (new or from the pool) before it fails, unless the options say. */
export const CONNECTION_TIMEOUT_MS = 10_000;
/** Past the statement timeout, for the server's own cancellation to arrive first. */
const QUERY_TIMEOUT_MARGIN_MS = 2_000;

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Connection settings shared by the pool and the migration connection. Nothing of the session goes in the startup
 * packet: PgBouncer refuses a connection whose startup packet has a parameter it does not know
 * (`unsupported startup parameter`, 08P01), or drops it unsaid with `ignore_startup_parameters`. The session's
 * settings are set by startSession instead.
 */
export function clientConfig(options: PostgresOptions): pg.ClientConfig {
  if (options.schema !== undefined && !SCHEMA_NAME.test(options.schema)) {
    throw new Error(`invalid schema name '${options.schema}'`);
  }
  if (options.schema !== undefined && options.poolMode === 'transaction') {
    throw new Error('a schema of its own needs a session: in transaction mode the search_path is the role\'s');
  }
  return {
    connectionString: options.connectionString,
    application_name: 'campaign-gateway',
    keepAlive: true,
    connectionTimeoutMillis: options.connectionTimeoutMs ?? CONNECTION_TIMEOUT_MS,
  };
}

/**
 * Sets a new connection's session up: the pool's with the statement and lock timeouts; the migration connection's
 * without, since a migration may take longer (and bounds its waits for locks itself). In transaction mode it sets
 * nothing: a SET would stay on the one server session that ran it, under whichever connection gets that session next,
 * and miss the sessions every other statement runs in; a SET LOCAL in each transaction would leave out the statements
 * outside one, and add a round trip to each. There the role's own settings apply to every session, and requireRoleSettings checks them at start.
 */
export async function startSession(client: pg.ClientBase, options: PostgresOptions, purpose: 'queries' | 'migration'): Promise<void> {
  if (options.poolMode === 'transaction') return;
  const settings: [string, string][] = [
    ['idle_in_transaction_session_timeout', String(IDLE_IN_TRANSACTION_TIMEOUT_MS)],
    ...(purpose === 'queries'
      ? ([
          ['statement_timeout', String(STATEMENT_TIMEOUT_MS)],
          ['lock_timeout', String(LOCK_TIMEOUT_MS)],
        ] as [string, string][])
      : []),
    ...(options.schema ? [['search_path', options.schema] as [string, string]] : []),
  ];
  await client.query('SELECT set_config(name, setting, false) FROM unnest($1::text[], $2::text[]) AS s(name, setting)', [
    settings.map(([name]) => name),
    settings.map(([, setting]) => setting),
  ]);
}

/**
 * Behind a pooler in transaction mode, refuses start-up unless the role's own settings bound the gateway's
 * statements as startSession would, naming the statements that make them do so. A statement timeout above the
 * gateway's own would outlast the query timeout, which gives the connection up while the server still runs it. The
 * role's lock timeout is not asked for: without it a wait for a lock that a transaction holds and does not end fails
 * at the statement timeout, answered 500 rather than 503, which is no reason to refuse a start.
 */
export async function requireRoleSettings(pool: pg.Pool): Promise<void> {
  const { rows } = await pool
    .query(
      `SELECT current_setting('statement_timeout') AS statement, current_setting('idle_in_transaction_session_timeout') AS idle,
         (SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout') AS statement_ms,
         (SELECT setting::int FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout') AS idle_ms,
         quote_ident(current_user) AS role, quote_ident(current_database()) AS database`,
    )
    .catch((error: unknown) => {
      throw startupFailure(error, 'connect');
    });
  const found = rows[0] as { statement: string; idle: string; statement_ms: number; idle_ms: number; role: string; database: string };
  if (found.statement_ms > 0 && found.statement_ms <= STATEMENT_TIMEOUT_MS && found.idle_ms > 0) return;
  const alter = `ALTER ROLE ${found.role} IN DATABASE ${found.database} SET`;
  throw new Error(
    `with DATABASE_POOL_MODE=transaction the role's own settings must bound the gateway's statements, and they do not ` +
      `(statement_timeout = ${found.statement}, idle_in_transaction_session_timeout = ${found.idle}; the statement timeout must be ` +
      `more than 0 and at most ${STATEMENT_TIMEOUT_MS / 1000}s): ${alter} statement_timeout = '${STATEMENT_TIMEOUT_MS / 1000}s'; ` +
      `${alter} idle_in_transaction_session_timeout = '${IDLE_IN_TRANSACTION_TIMEOUT_MS / 1000}s'`,
  );
}

export function createPool(options: PostgresOptions): pg.Pool {
  const pool = new pg.Pool({
    ...clientConfig(options),
    max: options.poolSize ?? DEFAULT_POOL_SIZE,
    idleTimeoutMillis: 30_000,
    onConnect: (client) => startSession(client, options, 'queries'),
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

/**
 * The pool's queries, a lost or unreachable server reported as UNAVAILABLE (outage.ts). A connection whose statement
 * failed is given up, as pool.query does, unless the statement only waited too long for a lock: that connection works,
 * and replacing it would cost a new connection for each statement refused while a transaction keeps the lock.
 */
export function queriesOf(pool: pg.Pool): Queryable {
  const query = async (text: string, values?: unknown[]) => {
    const client = await pool.connect().catch(rethrowAsOutage);
    try {
      const result = await client.query(text, values);
      client.release();
      return result;
    } catch (error) {
      const answer = asOutage(error);
      client.release(isStoreBusy(answer) ? undefined : (error as Error));
      throw answer;
    }
  };
  return { query: query as Queryable['query'] };
}

/**
 * Runs `work` in one transaction on one connection; rolls back when it throws. A lost or unreachable server
 * is reported as UNAVAILABLE, as is a lock waited for too long, whose connection rolls back and is used again.
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
    // A connection that is lost or stopped answering takes no ROLLBACK: the server rolls back when it goes. One whose
    // statement waited too long for a lock has just been answered by the server: it works.
    if (isUnavailable(answer) && !isStoreBusy(answer)) broken = lost ?? (error as Error);
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

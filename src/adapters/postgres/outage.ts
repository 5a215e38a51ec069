import { dependencyUnavailable, storeBusy } from '../../domain/errors.js';

/** SQLSTATE read_only_sql_transaction. */
const READ_ONLY = '25006';
/** SQLSTATE lock_not_available: a lock waited for past the lock_timeout. */
export const LOCK_NOT_AVAILABLE = '55P03';

/**
 * Socket errors, and SQLSTATEs of PostgreSQL shutting down, refusing connections or out of them, that say
 * the server cannot be reached right now rather than that a statement failed (class 08 is "connection
 * exception"; class 28, "invalid authorization", is the role's password changed under running instances,
 * which the operator fixes outside the gateway like any outage).
 * EMFILE, ENFILE, EADDRNOTAVAIL and ENOBUFS are this host out of descriptors, ports or buffers for a new connection.
 */
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EMFILE',
  'ENFILE',
  'EADDRNOTAVAIL',
  'ENOBUFS',
  '57P01',
  '57P02',
  '57P03',
  '53300',
  // A write to a standby not yet promoted, or to a database set read-only, until it is not.
  READ_ONLY,
]);
/** SQLSTATE query_canceled: the statement timeout (or pg_cancel_backend) ended a statement. */
const QUERY_CANCELED = '57014';
/** SQLSTATE invalid_password: the password, or the user name, is wrong. */
const INVALID_PASSWORD = '28P01';

/** What pg and pg-pool say when a connection is lost, cannot be had in time, or stops answering. */
const UNREACHABLE_MESSAGES = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Query read timeout)/;

/**
 * The error a caller should get for `error`: UNAVAILABLE (503 with Retry-After) when the database cannot be
 * reached, carrying the original as its cause for the log; anything else unchanged. A lock waited for past the
 * lock_timeout (55P03) is UNAVAILABLE too: busy, not broken, so come back later; its cause, a LockWaitCancelled,
 * names the row as the server does.
 */
export function asOutage(error: unknown): unknown {
  if (!(error instanceof Error)) return error;
  const code = (error as { code?: unknown }).code;
  if (code === LOCK_NOT_AVAILABLE) return storeBusy(new LockWaitCancelled(lockWaitedFor(error), error));
  const unreachable =
    (typeof code === 'string' && (UNREACHABLE_CODES.has(code) || code.startsWith('08') || code.startsWith('28'))) || UNREACHABLE_MESSAGES.test(error.message);
  return unreachable ? dependencyUnavailable(error) : error;
}

/**
 * The error a caller should get for `error`, failing a statement that does nothing but wait for `lock` (described for
 * the log). Cancelled there, by its lock timeout or the statement timeout, it waited all that time for a transaction
 * that holds the lock and does not end (an instance frozen in the middle of a write): busy, not broken, so UNAVAILABLE,
 * its cause naming the lock. A statement cancelled anywhere else stays what it is: a query slow enough for the
 * timeout, which no retry makes faster. Any other error as asOutage answers it.
 */
export function asLockWaitOutage(error: unknown, lock: string): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  if (!(error instanceof Error) || (code !== QUERY_CANCELED && code !== LOCK_NOT_AVAILABLE)) return asOutage(error);
  return storeBusy(new LockWaitCancelled(lock, error));
}

/**
 * Why asOutage or asLockWaitOutage answered UNAVAILABLE for a wait for a lock: the lock, in words, with the server's
 * error (and its code: 55P03 at the lock timeout, 57014 at the statement timeout) as its cause; or, for a wait the
 * gateway gave up without the server, how it waited.
 */
export class LockWaitCancelled extends Error {
  readonly code?: string;

  constructor(lock: string, cause: Error, waited = `until the statement was cancelled (${cause.message})`) {
    super(`waited for ${lock} ${waited}: another transaction held it all that time`, { cause });
    this.name = 'LockWaitCancelled';
    const code = (cause as { code?: unknown }).code;
    if (typeof code === 'string') this.code = code;
  }
}

/**
 * The lock a 55P03 waited for, as far as the server says: for a row, the first line of its context names the row and
 * its table (`while updating tuple (0,1) in relation "jobs"`); the rest, if any, is the statement that waited.
 */
function lockWaitedFor(error: Error): string {
  const where = (error as { where?: unknown }).where;
  const row = typeof where === 'string' ? where.split('\n')[0] : '';
  return row ? `a lock (${row})` : 'a lock';
}

/**
 * Why the gateway could not start on the PostgreSQL database in DATABASE_URL, naming the setting and the
 * step: the driver's own words ("timeout expired", "permission denied for schema public") do not say it was
 * the database. Never the connection string itself, which may hold the password.
 */
export function startupFailure(error: unknown, step: 'connect' | 'migrate'): Error {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === INVALID_PASSWORD) {
    return new Error(`PostgreSQL refused the user name or password in DATABASE_URL (${code})`, { cause: error });
  }
  const what = error instanceof Error ? error.message : String(error);
  const suffix = typeof code === 'string' && !what.includes(code) ? ` (${code})` : '';
  // The rest of class 28 is the server refusing a login it was given right: a role that may not log in, a
  // pg_hba.conf with no entry for this client or without TLS. Its own words say which.
  if (typeof code === 'string' && code.startsWith('28')) {
    return new Error(`PostgreSQL refused the login in DATABASE_URL: ${what}${suffix}`, { cause: error });
  }
  // Even a store already up to date writes at start (its schema check's temporary tables): not a migration's failure.
  if (code === READ_ONLY) {
    return new Error(`the PostgreSQL database in DATABASE_URL takes no writes (a standby, or a database set read-only): ${what}${suffix}`, { cause: error });
  }
  return step === 'connect'
    ? new Error(`could not connect to the PostgreSQL database in DATABASE_URL: ${what}${suffix}`, { cause: error })
    : new Error(`could not create or update the gateway's tables in the PostgreSQL database in DATABASE_URL: ${what}${suffix}`, { cause: error });
}

import { LockWaitCancelled, asOutage as postgresOutage } from '../adapters/postgres/outage.js';
import { BUSY_TIMEOUT_MS } from '../adapters/sqlite/connection.js';
import { asOutage as sqliteOutage } from '../adapters/sqlite/outage.js';
import { GatewayError, isGatewayError, isUnavailable, unavailableCause } from '../domain/errors.js';
import { describeFailure } from '../readiness.js';

/** The store's own refusal to open as UNAVAILABLE when it is busy or cannot be reached; undefined for any other. */
export function storeUnavailable(error: unknown): GatewayError | undefined {
  const cause = error instanceof Error && error.cause !== undefined ? error.cause : error;
  if (!isUnavailable(sqliteOutage(error)) && !isUnavailable(postgresOutage(cause))) return undefined;
  return new GatewayError('UNAVAILABLE', unavailableMessage(error), { cause: error });
}

const BUSY = /^SQLITE_BUSY/;

/** Why the store is unavailable, in words for an operator, never the driver's alone ("database is locked"). */
export function unavailableMessage(error: unknown): string {
  const busy = busyStore(error);
  // Its transaction was rolled back with the wait.
  if (busy !== undefined) return `${busy}; nothing was changed, try again`;
  // The store's own words on opening: "could not connect to the PostgreSQL database in DATABASE_URL: …".
  if (!isGatewayError(error) && error instanceof Error) return error.message;
  return `${unreachable(error)}; try again`;
}

/**
 * Why the store is unavailable, as unavailableMessage says it but without what that left of the command: for a
 * command that had changed the store already when it failed (an erasure part-way).
 */
export function unavailableReason(error: unknown): string {
  return busyStore(error) ?? unreachable(error);
}

/** The store held by another (a lock waited for until the wait was given up), in words; undefined for another failure. */
function busyStore(error: unknown): string | undefined {
  const cause = unavailableCause(error) ?? error;
  const code = (cause as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && BUSY.test(code)) return `the store is busy: another process has held it locked for longer than ${BUSY_TIMEOUT_MS / 1000} s (${code})`;
  if (cause instanceof LockWaitCancelled) return `the store is busy: ${cause.message}`;
  return undefined;
}

const unreachable = (error: unknown): string => `the store cannot be reached (${describeFailure(error)})`;

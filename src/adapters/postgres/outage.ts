import { dependencyUnavailable } from '../../domain/errors.js';

/**
 * Socket errors, and SQLSTATEs of PostgreSQL shutting down, refusing connections or out of them, that say
 * the server cannot be reached right now rather than that a statement failed (class 08 is "connection
 * exception").
 */
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', '57P01', '57P02', '57P03', '53300']);
/** What pg and pg-pool say when a connection is lost or cannot be had in time. */
const UNREACHABLE_MESSAGES = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error)/;

/**
 * The error a caller should get for `error`: UNAVAILABLE (503 with Retry-After) when the database cannot be
 * reached, carrying the original as its cause for the log; anything else unchanged.
 */
export function asOutage(error: unknown): unknown {
  if (!(error instanceof Error)) return error;
  const code = (error as { code?: unknown }).code;
  const unreachable =
    (typeof code === 'string' && (UNREACHABLE_CODES.has(code) || code.startsWith('08'))) || UNREACHABLE_MESSAGES.test(error.message);
  return unreachable ? dependencyUnavailable(error) : error;
}

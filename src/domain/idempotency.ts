import type { IdempotencyRecord } from './types.js';

/** How long an idempotency key is remembered unless IDEMPOTENCY_TTL_HOURS says otherwise. */
export const DEFAULT_IDEMPOTENCY_TTL_HOURS = 24;

/**
 * Whether a record still holds its key: not expired, and not a reservation older than `staleBefore` that never
 * got a job (its request died). A record that no longer holds its key is replaced by the next request.
 */
export const holdsIdempotencyKey = (record: IdempotencyRecord, now: Date, staleBefore: Date): boolean =>
  record.expiresAt > now && !(record.jobId === null && record.createdAt < staleBefore);

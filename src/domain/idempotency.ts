import type { IdempotencyRecord } from './types.js';

/**
 * Whether a record still holds its key: not expired, and not a reservation older than `staleBefore` that never
 * got a job (its request died). A record that no longer holds its key is replaced by the next request.
 */
export const holdsIdempotencyKey = (record: IdempotencyRecord, now: Date, staleBefore: Date): boolean =>
  record.expiresAt > now && !(record.jobId === null && record.createdAt < staleBefore);

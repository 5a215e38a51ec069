import type { IdempotencyRecord } from './types.js';

/** How long an idempotency key is remembered unless IDEMPOTENCY_TTL_HOURS says otherwise. */
export const DEFAULT_IDEMPOTENCY_TTL_HOURS = 24;

/**
 * Whether a record still holds its key: not expired, and not a reservation older than `staleBefore` that never
 * got a job (its request died). A record that no longer holds its key is replaced by the next request.
 */
export const holdsIdempotencyKey = (record: IdempotencyRecord, now: Date, staleBefore: Date): boolean =>
  record.expiresAt > now && !(record.jobId === null && record.createdAt < staleBefore);

/**
 * Turns on a key among this process's requests: one holds it at a time, the others wait for it in the order
 * they asked. Only keys held or waited for are kept.
 */
export class KeyTurns {
  private readonly last = new Map<string, Promise<void>>();

  /** Waits for the key's turn; resolves to what ends it, which may be called more than once. */
  async take(key: string): Promise<() => void> {
    const previous = this.last.get(key);
    let end!: () => void;
    const turn = new Promise<void>((resolve) => (end = resolve));
    this.last.set(key, turn);
    await previous;
    return () => {
      if (this.last.get(key) === turn) this.last.delete(key);
      end();
    };
  }
}
